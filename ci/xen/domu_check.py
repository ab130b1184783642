"""Run inside the nested runner's PV domU: xenevt's own view of this guest, reported through xenstore.

The domU has no console the runner reads, so it writes one JSON line (well under xenstore's 4 KiB value limit)
to data/xenci-result in its own xenstore directory; dom0's test compares it with what Xen says of the domU.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

sys.path.insert(0, "/xenevt")


def report(obj: dict) -> None:
    subprocess.run(["xenstore-write", "data/xenci-result", json.dumps(obj, separators=(",", ":"))], check=False)


def main() -> int:
    try:
        domid = int(subprocess.run(["xenstore-read", "domid"], capture_output=True, text=True, check=True).stdout)
        os.environ["XENEVT_SELF_DOMID"] = str(domid)
        from xenevt import memory
        from xenevt.backend import select_backend
        from xenevt.dump import build_dump
        from xenevt.errors import XenevtError

        mem = memory.open_source(memory.Ask(self_kernel=True), lambda: select_backend("xen")).fifo_image().mem
        d = build_dump(mem, domid, "self")
        # Linux unmasks exactly the ports it has bound and enabled: the guest's own account of its ports
        unmasked = [p for p in range(1, mem.nr_ports) if not mem.word(p) & (1 << 30)]
        b = select_backend("xen")
        try:
            b.list_ports(domid)
            status = "ok"
        except XenevtError as e:  # a PV domU may not ask EVTCHNOP_status even of itself through privcmd
            status = f"errno {e.errno}: {e}"
        b.shutdown()
        report({"domid": domid, "abi": d.abi, "pages": d.nr_pages, "control_blocks": [v.control_block for v in d.vcpus],
                "broken": len(d.broken_queues()), "unmasked": unmasked, "status": status})
    except Exception as e:  # report it, with what lsevtchn says on the same question: dom0's test shows both
        lsevtchn = (glob.glob("/usr/lib/xen-*/bin/lsevtchn") or ["lsevtchn"])[0]
        ls = subprocess.run([lsevtchn, os.environ.get("XENEVT_SELF_DOMID", "0")], capture_output=True, text=True)
        report({"error": f"{type(e).__name__}: {e}; lsevtchn: rc {ls.returncode} {ls.stderr.strip()[:200]}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
