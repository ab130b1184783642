"""Run inside the nested runner's PV domUs: xenevt's own view of this guest, reported through xenstore.

The domU has no console the runner reads, so it writes one JSON line (well under xenstore's 4 KiB value limit)
to data/xenci-result in its own xenstore directory; dom0's test compares it with what Xen says of the domU.
Then it serves dom0's requests: a token written to data/xenci-request is answered in data/xenci-result-TOKEN
with a fresh look (dom0 changes the guest's ports, then asks what the guest sees now); "TOKEN unmask PORT" has
this guest unmask one of its own ports by hypercall (what its kernel would do), "TOKEN storm PORT SECONDS" has
it notify one of its ports in a loop (a rogue frontend) until SECONDS pass or dom0 writes its "-stop" key,
each answered with what it did.  The hypercalls need privcmd loaded unrestricted (the 2-level domU).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, "/xenevt")


def write(key: str, obj: dict) -> None:
    subprocess.run(["xenstore-write", key, json.dumps(obj, separators=(",", ":"))], check=False)


def read(key: str) -> str:
    r = subprocess.run(["xenstore-read", key], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


PLAIN = ("0x00000000", "0x40000000")  # a bound port at rest, a port Linux never bound: listed with a channel only


def fifo_view(dump: dict) -> dict:
    """A FIFO dump's facts that do not depend on where it was read from (dump --self here, dom0's
    dump --domain/--dump-core there, which list each channel's word too): each vCPU's READY bits and queue heads,
    every word not at rest (0, or plain MASKED)."""
    return {"vcpus": [[v.get("ready", []), v.get("heads", {})] for v in dump["vcpus"]],
            "words": [[w["port"], w["word"]] for w in dump["words"] if w["word"] not in PLAIN]}


def look(domid: int, ask_status: bool = True) -> dict:
    """What `xenevt dump --self` reads of this guest, FIFO or 2-level, as compact facts; with ``ask_status``,
    whether EVTCHNOP_status of its own ports goes through privcmd (asked once: it does not change)."""
    from xenevt import memory
    from xenevt.backend import select_backend
    from xenevt.dump import build_dump
    from xenevt.errors import XenevtError

    img = memory.open_source(memory.Ask(self_kernel=True)).image()
    mem = img.mem
    d = build_dump(mem, domid, "self", vcpu_known=img.vcpu_known)
    if d.abi == "FIFO":
        # Linux unmasks exactly the ports it has bound and enabled: the guest's own account of its ports
        unmasked = [p for p in range(1, mem.nr_ports) if not mem.word(p) & (1 << 30)]
        out = {"abi": d.abi, "pages": d.nr_pages, "control_blocks": [v.control_block for v in d.vcpus],
               "broken": len(d.broken_queues()), "unmasked": unmasked, "view": fifo_view(d.as_dict())}
    else:
        ports = range(1, d.nr_ports)
        unmasked = [p for p in ports if not mem.l2_bit("mask", p)]
        out = {"abi": d.abi, "source": img.source, "warnings": d.warnings[:4], "unmasked": unmasked,
               # the CPU Linux delivers each unmasked port on (its cpu_evtchn_mask), as Xen's notify vCPU
               "cpu": [mem.chan(p).notify_vcpu for p in unmasked],
               "pending": [p for p in ports if mem.l2_bit("pending", p)],
               "masked_pending": [p for p in ports if mem.l2_bit("pending", p) and mem.l2_bit("mask", p)],
               # per vCPU: [upcall_pending, upcall_mask, pending_sel], null where its vcpu_info was not read
               "vcpus": [[v.upcall_pending, v.upcall_mask, v.pending_sel] if v.known else None for v in d.vcpus],
               "next_upcall": [v.next_upcall for v in d.vcpus]}
    if ask_status:
        from xenevt.evidence.names import for_backend

        b = select_backend("xen")
        try:
            ports, front = [(domid, st) for st in b.list_ports(domid)], None
            out["status"] = "ok"
        except XenevtError as e:  # a PV domU may not ask EVTCHNOP_status even of itself through privcmd
            out["status"] = f"errno {e.errno}: {e}"
            ports, front = [], domid
        # this guest's names for its own vif ports, and the /proc/interrupts row each was tied to (as watch does)
        names = for_backend(b, ports, frontends_of=front)
        out["vif_irqs"] = {str(p): n.irq for (d, p), n in names.names.items() if d == domid and n.kind == "vif"}
        b.shutdown()
    return {"domid": domid} | out


def report(key: str, domid: int, ask_status: bool = True) -> None:
    try:
        write(key, look(domid, ask_status))
    except Exception as e:  # report it, with what lsevtchn says on the same question: dom0's test shows both
        lsevtchn = (glob.glob("/usr/lib/xen-*/bin/lsevtchn") or ["lsevtchn"])[0]
        ls = subprocess.run([lsevtchn, str(domid)], capture_output=True, text=True)
        write(key, {"error": f"{type(e).__name__}: {e}; lsevtchn: rc {ls.returncode} {ls.stderr.strip()[:200]}"})


EVTCHNOP_SEND, EVTCHNOP_UNMASK = 4, 9  # xen/include/public/event_channel.h


class Hypercalls:
    """HYPERVISOR_event_channel_op on this guest's own ports through libxencall (privcmd)."""

    def __init__(self):
        from xenevt import abi
        from xenevt.backend.xen import libs

        self.ffi, self.xcl, self.op = libs.ffi, libs.load("xencall"), abi.HYPERVISOR_event_channel_op
        self.h = self.xcl.xencall_open(libs.quiet_logger(), 0)
        if self.h == self.ffi.NULL:
            raise OSError(self.ffi.errno, "cannot open /dev/xen/privcmd (libxencall)")
        self.buf = self.xcl.xencall_alloc_buffer(self.h, 8)
        self.arg = int(self.ffi.cast("uintptr_t", self.buf))

    def call(self, cmd: int, port: int) -> int:
        self.ffi.cast("uint32_t *", self.buf)[0] = port
        return self.xcl.xencall2(self.h, self.op, cmd, self.arg)

    def storm(self, port: int, seconds: float, stop: str) -> dict:
        """EVTCHNOP_send on ``port`` as fast as this process can for ``seconds``, or until dom0 writes ``stop``
        (looked at about once a second): the sends, their rate and why it ended."""
        sent, t0 = 0, time.monotonic()
        end, look = t0 + seconds, t0 + 1
        why = "time"
        while time.monotonic() < end:
            for _ in range(200):
                if self.call(EVTCHNOP_SEND, port) < 0:
                    return {"error": f"EVTCHNOP_send {port}: errno {self.ffi.errno}", "sent": sent}
            sent += 200
            if time.monotonic() >= look:
                if read(stop):
                    why = "stopped"
                    break
                look = time.monotonic() + 1
        took = time.monotonic() - t0
        return {"sent": sent, "seconds": round(took, 2), "rate": round(sent / took), "ended": why}

    def close(self) -> None:
        self.xcl.xencall_free_buffer(self.h, self.buf)
        self.xcl.xencall_close(self.h)


def command(key: str, words: list[str]) -> None:
    """dom0's "unmask PORT" or "storm PORT SECONDS", done on this guest's own ports; the outcome to ``key``."""
    try:
        hc = Hypercalls()
        try:
            if words[0] == "unmask" and len(words) == 2:
                rc = hc.call(EVTCHNOP_UNMASK, int(words[1]))
                out = {"unmasked": int(words[1])} if rc == 0 else {"error": f"EVTCHNOP_unmask: errno {hc.ffi.errno}"}
            elif words[0] == "storm" and len(words) == 3:
                write(key + "-started", {"port": int(words[1])})
                out = hc.storm(int(words[1]), min(float(words[2]), 300.0), key + "-stop")
            else:
                out = {"error": f"unknown request {' '.join(words)!r}"}
        finally:
            hc.close()
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    write(key, out)


def main() -> int:
    try:
        domid = int(read("domid"))
    except ValueError:
        write("data/xenci-result", {"error": "cannot read this domain's id from xenstore"})
        return 1
    os.environ["XENEVT_SELF_DOMID"] = str(domid)
    report("data/xenci-result", domid)
    last = ""
    while True:
        # block until the request changes (the watch fires once when set, then on the change); a change between
        # our read and the next watch is caught when dom0 writes the token again
        t0 = time.monotonic()
        subprocess.run(["xenstore-watch", "-n", "2", "data/xenci-request"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        request = read("data/xenci-request")
        token, *words = request.split() or [""]
        if token and request != last and token.isalnum():
            last = request
            if words:
                command(f"data/xenci-result-{token}", words)
            else:
                report(f"data/xenci-result-{token}", domid, ask_status=False)
        elif time.monotonic() - t0 < 1:
            time.sleep(1)  # a watch that returns at once (an older tool's -n) costs a poll a second, no more


if __name__ == "__main__":
    sys.exit(main())
