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


PLAIN = (0, 0x40000000)  # a bound port at rest, a port Linux never bound: listed with a channel only


def fifo_view(dump: dict) -> dict:
    """A FIFO dump's facts that do not depend on where it was read from (dump --self here, dom0's
    dump --domain/--dump-core there, which list each channel's word too): each vCPU's READY bits and queue heads,
    every word not at rest (0, or plain MASKED)."""
    return {"vcpus": [[v.get("ready", []), v.get("heads", {})] for v in dump["vcpus"]],
            "words": [[w["port"], w["word"]] for w in dump["ports"] if w["word"] not in PLAIN]}


def look(domid: int, ask_status: bool = True) -> dict:
    """What `xenevt dump --self` reads of this guest, FIFO or 2-level, as compact facts; with ``ask_status``,
    whether EVTCHNOP_status of its own ports goes through privcmd (asked once: it does not change).  Only
    xenevt's public names: what any script in a guest may use."""
    import xenevt

    with xenevt.open("xen") as host:
        (d,) = host.dump(xenevt.Source.self_kernel(), all_words=True)  # every port, those at rest too
        if isinstance(d, xenevt.DomainDump):
            # Linux unmasks exactly the ports it has bound and enabled: the guest's own account of its ports
            unmasked = [w.port for w in d.words if w.port and not w.masked]
            out = {"abi": d.abi, "pages": d.nr_pages, "control_blocks": [v.control_block for v in d.vcpus],
                   "broken": len(d.broken_queues()), "unmasked": unmasked, "view": fifo_view(d.as_dict())}
        else:
            ports = [p for p in d.ports if p.port]
            unmasked = [p for p in ports if not p.masked]
            out = {"abi": d.abi, "source": d.source, "warnings": d.warnings[:4],
                   "unmasked": [p.port for p in unmasked],
                   # the CPU Linux delivers each unmasked port on (its cpu_evtchn_mask), as Xen's notify vCPU
                   "cpu": [p.vcpu for p in unmasked],
                   "pending": [p.port for p in ports if p.pending],
                   "masked_pending": [p.port for p in ports if p.pending and p.masked],
                   # per vCPU: [upcall_pending, upcall_mask, pending_sel], null where its vcpu_info was not read
                   "vcpus": [[v.upcall_pending, v.upcall_mask, v.pending_sel] if v.known else None
                             for v in d.vcpus],
                   "next_upcall": [v.next_upcall for v in d.vcpus]}
        if ask_status:
            try:
                chans = host.ports(domid)
                out["status"] = "ok"
                names = host.names(domid, chans)
            except xenevt.XenevtError as e:  # a PV domU may not ask EVTCHNOP_status even of itself (privcmd)
                out["status"] = f"errno {e.errno}: {e}"
                names = host.names(domid)  # its frontends' ports, named from its xenstore
            # this guest's names for its own vif ports, and the /proc/interrupts row each was tied to (as watch)
            out["vif_irqs"] = {str(p): n.irq for (dom, p), n in names.names.items()
                               if dom == domid and n.kind == "vif"}
    return {"domid": domid} | out


def report(key: str, domid: int, ask_status: bool = True) -> None:
    try:
        write(key, look(domid, ask_status))
    except Exception as e:  # report it, with what lsevtchn says on the same question: dom0's test shows both
        lsevtchn = (glob.glob("/usr/lib/xen-*/bin/lsevtchn") or ["lsevtchn"])[0]
        ls = subprocess.run([lsevtchn, str(domid)], capture_output=True, text=True)
        write(key, {"error": f"{type(e).__name__}: {e}; lsevtchn: rc {ls.returncode} {ls.stderr.strip()[:200]}"})


EVTCHNOP_SEND, EVTCHNOP_UNMASK = 4, 9  # xen/include/public/event_channel.h
HYPERVISOR_EVENT_CHANNEL_OP = 32  # xen/include/public/xen.h


class Hypercalls:
    """HYPERVISOR_event_channel_op on this guest's own ports through libxencall (privcmd), behind its kernel's
    back: what a kernel's own hypercall does, which no xenevt call offers (xenevt goes through the kernel)."""

    def __init__(self):
        import ctypes

        # by path where Debian puts it: a root without /etc/ld.so.cache (the runner's initramfs) finds no
        # multiarch library by soname alone
        where = [os.path.join(d, "libxencall.so.1") for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
                                                              "/usr/lib64", "/usr/lib")]
        path = next((p for p in where if os.path.exists(p)), "libxencall.so.1")
        self.lib = lib = ctypes.CDLL(path, use_errno=True)
        lib.xencall_open.restype = lib.xencall_alloc_buffer.restype = ctypes.c_void_p
        lib.xencall_open.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.xencall_alloc_buffer.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.xencall_free_buffer.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.xencall_close.argtypes = [ctypes.c_void_p]
        lib.xencall2.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint64, ctypes.c_uint64]
        self.h = lib.xencall_open(None, 0)  # (no logger: libxencall's own, on stderr, which nobody reads here)
        if not self.h:
            raise OSError(ctypes.get_errno(), "cannot open /dev/xen/privcmd (libxencall)")
        self.buf = lib.xencall_alloc_buffer(self.h, 8)
        if not self.buf:
            lib.xencall_close(self.h)
            raise OSError(ctypes.get_errno(), "cannot allocate a hypercall buffer (libxencall)")
        self.port = ctypes.c_uint32.from_address(self.buf)
        self.errno = ctypes.get_errno

    def call(self, cmd: int, port: int) -> int:
        self.port.value = port
        return self.lib.xencall2(self.h, HYPERVISOR_EVENT_CHANNEL_OP, cmd, self.buf)

    def storm(self, port: int, seconds: float, stop: str) -> dict:
        """EVTCHNOP_send on ``port`` as fast as this process can for ``seconds``, or until dom0 writes ``stop``
        (looked at about once a second): the sends, their rate and why it ended."""
        sent, t0 = 0, time.monotonic()
        end, look = t0 + seconds, t0 + 1
        why = "time"
        while time.monotonic() < end:
            for _ in range(200):
                if self.call(EVTCHNOP_SEND, port) < 0:
                    return {"error": f"EVTCHNOP_send {port}: errno {self.errno()}", "sent": sent}
            sent += 200
            if time.monotonic() >= look:
                if read(stop):
                    why = "stopped"
                    break
                look = time.monotonic() + 1
        took = time.monotonic() - t0
        return {"sent": sent, "seconds": round(took, 2), "rate": round(sent / took), "ended": why}

    def close(self) -> None:
        self.lib.xencall_free_buffer(self.h, self.buf)
        self.lib.xencall_close(self.h)


def exporter() -> dict:
    """`xenevt exporter --once` as a domU's monitoring agent would run it: its exit code, and what its exposition
    says (the domains it covers, whether the evidence was read, its series), small enough for xenstore."""
    r = subprocess.run([sys.executable, "-m", "xenevt", "exporter", "--once", "--timeout", "100"], capture_output=True,
                       text=True, timeout=200, cwd="/xenevt")
    if r.returncode != 0:
        return {"rc": r.returncode, "error": r.stderr.strip()[-300:]}
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for f in text_string_to_metric_families(r.stdout) for s in f.samples]
    return {"rc": 0, "series": len(samples),
            "domains": sorted({int(s.labels["domain"]) for s in samples if s.name == "xenevt_domain_info"}),
            "evidence": [s.value for s in samples if s.name == "xenevt_collect_success"
                         and s.labels.get("source") == "evidence"],
            "ports": sum(s.value for s in samples if s.name == "xenevt_ports"),
            "unread": [s.value for s in samples if s.name == "xenevt_evidence_unread"],
            "stderr": r.stderr.strip()[-300:]}


def online(cpu: int, wait: float = 60) -> dict:
    """What udev does when the toolstack adds a vCPU (xl vcpu-set): Linux marks the CPU present, userspace puts it
    online (this domU has no udev).  Waits for it to be present."""
    path = f"/sys/devices/system/cpu/cpu{cpu}/online"
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, "w") as f:
                f.write("1")
            return {"online": cpu}
        except OSError as e:
            if time.monotonic() > deadline:
                return {"error": f"cannot online CPU {cpu}: {e}"}
        time.sleep(0.5)


def command(key: str, words: list[str]) -> None:
    """dom0's "unmask PORT", "storm PORT SECONDS" (done on this guest's own ports) or "exporter"; the outcome to
    ``key``."""
    if words[0] == "online" and len(words) == 2 and words[1].isdigit():
        write(key, online(int(words[1])))
        return
    if words == ["exporter"]:
        try:
            out = exporter()
        except Exception as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        write(key, out)
        return
    try:
        hc = Hypercalls()
        try:
            if words[0] == "unmask" and len(words) == 2:
                rc = hc.call(EVTCHNOP_UNMASK, int(words[1]))
                out = {"unmasked": int(words[1])} if rc == 0 else {"error": f"EVTCHNOP_unmask: errno {hc.errno()}"}
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
