"""The ``xen`` backend: real event channels through libxenevtchn, libxenctrl and libxencall.

What real Xen allows shapes what this backend offers:
- ports bound through /dev/xen/evtchn (libxenevtchn) belong to this process and are
  closed when it exits; only those can be notified, unmasked, unbound or waited on;
- another domain's ports are reached through libxenctrl as dom0 does: their status,
  alloc_unbound on their behalf, reset;
- set_priority and bind_vcpu act on the calling domain's own ports (hypercalls through
  libxencall), as the ABI defines them.
Every failure becomes a ChannelError (through libs.check, right after the call) or
BackendUnavailable carrying errno, the call, the domain and the port.

The Backend here, one module as psutil keeps one per platform; beside it, by job: the C API and its loading
(libs.py), the send and consume loop (loop.py), the host's and domains' facts and the debug console
(hostinfo.py), another domain's memory (mapping.py), xenstore's names (xenstore.py).
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Any

from ... import abi
from ...dump.decode import abi_of
from ...errors import BackendUnavailable, ChannelError, XenevtError, channel_error
from ...memory.kcore import read_self, self_domid
from ...ports import NotifyResult, PortStatus, word_flag_dict
from .. import XEN_EVTCHN_DEVICE as XEN_DEVICE  # named once, where the backend is chosen
from . import hostinfo, libs, mapping
from .hostinfo import XEN_DOMINF_dying
from .libs import check, reason
from .loop import BATCH, EventLoop

if TYPE_CHECKING:
    from ...activity import Row
    from ...engine import DomainMemory



class XenBackend:
    name = "xen"
    ports_live_with_process = True
    kernel_interrupts = True  # activity(): /proc/interrupts rows, whose IRQ names tie ports to devices

    def __init__(self, caller: int | None = None):
        if caller is not None:
            raise BackendUnavailable("--as only applies to the simulator: on Xen the caller is this domain")
        try:
            self._evtchn = libs.load("xenevtchn")
        except BackendUnavailable as e:
            if not os.path.exists(XEN_DEVICE):
                raise BackendUnavailable(f"not running on Xen: {XEN_DEVICE} does not exist, and {e} "
                                         "(use --backend sim)") from None
            raise
        lg = libs.quiet_logger()
        self._h = self._evtchn.xenevtchn_open(lg, 0)
        if self._h == libs.ffi.NULL:
            err = libs.ffi.errno
            if err == errno.ENOENT:
                raise BackendUnavailable(f"not running on Xen: {XEN_DEVICE} does not exist (use --backend sim)")
            if err in (errno.EACCES, errno.EPERM):
                raise BackendUnavailable(f"cannot open {XEN_DEVICE}: permission denied (run as root)")
            raise BackendUnavailable(f"cannot open {XEN_DEVICE}: {reason(err)} ({errno.errorcode.get(err, err)})")
        self._xc: Any = None  # libxenctrl's handle (cffi), opened on first use
        self._call: tuple[Any, Any] | None = None  # (libxencall, its handle), opened on first use
        self._own: set[int] = set()          # ports bound through our handle (the C loop keeps a bitmap too)
        self._peer: dict[int, tuple[int, int]] = {}  # our interdomain ports' far ends, as bound or once asked
        self._sent: dict[int, NotifyResult] = {}     # a send's answer on a port whose peer is known: the same each time
        self._loop: EventLoop | None = None   # the C send and consume loop, made on first use
        self.domid = self_domid()
        self._logger = lg

    # --- library plumbing -----------------------------------------------------
    def _ctrl(self) -> tuple[Any, Any]:
        if self._xc is None:
            ctrl = libs.load("xenctrl")
            xc = ctrl.xc_interface_open(self._logger, self._logger, 0)
            if xc == libs.ffi.NULL:
                err = libs.ffi.errno
                raise BackendUnavailable(f"cannot open the hypervisor control interface (libxenctrl): {reason(err)}"
                                         f" ({errno.errorcode.get(err, err)})")
            self._ctrl_lib, self._xc = ctrl, xc
        return self._ctrl_lib, self._xc

    def _events(self, domain: int) -> EventLoop:
        if self._loop is None:
            fd = check(self._evtchn.xenevtchn_fd(self._h), "receive events of", domain)
            self._loop = EventLoop(self._evtchn, self._h, fd)
            for port in self._own:
                self._loop.own(port)
        return self._loop

    def _owned(self, port: int, owned: bool = True) -> None:
        if owned:
            self._own.add(port)
        else:
            self._own.discard(port)
            self._peer.pop(port, None)
            self._sent.pop(port, None)
        if self._loop is not None:
            self._loop.own(port, owned)

    def _mine(self, domain: int) -> bool:
        return self.domid is None and domain == 0 or domain == self.domid

    def _own_port(self, call: str, domain: int, port: int) -> None:
        if not self._mine(domain) or port not in self._own:
            raise channel_error(call, errno.EPERM, "on Xen only the process that bound a port through "
                                "/dev/xen/evtchn may do this (use `xenevt bind …`, which holds its port)",
                                domain=domain, port=port)

    def shutdown(self) -> None:
        for port in sorted(self._own):
            self._evtchn.xenevtchn_unbind(self._h, port)
            self._owned(port, False)
        if self._h is not None:
            self._evtchn.xenevtchn_close(self._h)
            self._h = None
            self._loop = None
        if self._xc is not None:
            self._ctrl_lib.xc_interface_close(self._xc)
            self._xc = None

    # --- the protocol -------------------------------------------------------------
    def info(self) -> dict:
        info: dict[str, Any] = {"backend": "xen", "self_domain": self.domid,
                                "libraries": {"xenevtchn": libs.loaded_path("xenevtchn")}}
        try:
            self._ctrl()
            info["libraries"]["xenctrl"] = libs.loaded_path("xenctrl")
            limits = hostinfo.xl_limits()
            info["domains"] = []
            for d, flags in self._domain_flags():
                entry: dict[str, Any] = {"domain": d, "dying": bool(flags & XEN_DOMINF_dying)}
                if d in limits:
                    entry["max_ports"], entry["limit_from"] = limits[d]
                info["domains"].append(entry)
        except BackendUnavailable as e:
            info["xenctrl"] = str(e)
        info["abi"] = hostinfo.kernel_abi()
        version = hostinfo.xen_version()
        if version is not None:
            info["xen_version"] = version
        return info

    def abi(self, domain: int) -> str | None:
        """This kernel's ABI, as its memory shows it (where the words are read: root), else as it logged it at
        boot (the log may have moved on); another domain's words are not read here."""
        if not self._mine(domain):
            return None
        mem = self._own_words(domain)
        found = abi_of(mem) if mem is not None else hostinfo.kernel_abi()
        return found if found in ("FIFO", "2-level") else None

    def domains(self) -> list[int]:
        """Every domain the hypervisor lists; a domU, which it lists none (getdomaininfolist is the control
        domain's), sees itself."""
        try:
            listed = [d for d, _ in self._domain_flags()]
        except BackendUnavailable:
            if self.domid is None:
                raise
            listed = []
        if not listed and self.domid is not None:
            return [self.domid]
        return listed

    def _domain_flags(self) -> list[tuple[int, int]]:
        return hostinfo.domain_flags(*self._ctrl())

    def shared_info_frame(self, domain: int) -> tuple[int, int | None]:
        """(the frame of ``domain``'s shared_info, its vCPU count): what a privcmd mapping of its 2-level
        bitmaps needs."""
        return hostinfo.shared_info_frame(*self._ctrl(), domain)

    def bind_unbound(self, domain: int, remote_domain: int) -> int:
        call = f"allocate an unbound port (for domain {remote_domain}) in"  # ESRCH may be about either domain
        if self._mine(domain):
            port = check(self._evtchn.xenevtchn_bind_unbound_port(self._h, remote_domain), call, domain)
            self._owned(port)
            return port
        ctrl, xc = self._ctrl()
        return check(ctrl.xc_evtchn_alloc_unbound(xc, domain, remote_domain), call, domain)

    def bind_interdomain(self, domain: int, remote_domain: int, remote_port: int) -> int:
        self._only_self("bind interdomain for", domain)
        port = check(self._evtchn.xenevtchn_bind_interdomain(self._h, remote_domain, remote_port), "bind to",
                     remote_domain, remote_port)
        self._owned(port)
        self._peer[port] = (remote_domain, remote_port)
        return port

    def bind_virq(self, domain: int, virq: int, vcpu: int = 0) -> int:
        self._only_self("bind VIRQ for", domain)
        if vcpu != 0:
            raise channel_error("bind VIRQ for", errno.EINVAL, "libxenevtchn binds VIRQs on vCPU 0 only",
                                domain=domain, vcpu=vcpu)
        port = check(self._evtchn.xenevtchn_bind_virq(self._h, virq), "bind VIRQ for", domain)
        self._owned(port)
        return port

    def bind_ipi(self, domain: int, vcpu: int = 0) -> int:
        raise BackendUnavailable("libxenevtchn cannot bind IPIs: only the guest kernel does (use --backend sim)")

    def _only_self(self, call: str, domain: int) -> None:
        if not self._mine(domain):
            raise channel_error(call, errno.EPERM, "on Xen a domain binds its own ports only (this is domain "
                                f"{self.domid if self.domid is not None else '0?'})", domain=domain)

    def notify(self, domain: int, port: int) -> NotifyResult:
        """EVTCHNOP_send through the evtchn fd.  Where the event went is what this process knows of the port
        (its bind, or one EVTCHNOP_status until a peer is connected), not a second hypercall per send: a
        peer that closes later turns the port unbound and Xen drops the send, which no answer here shows."""
        sent = self._sent.get(port)
        if sent is not None and sent.domain == domain and (loop := self._loop) is not None:  # checked when it was
            if loop.c_notify(loop.ev, port) < 0:  # made; the port is still ours, the loop exists (its first send)
                raise loop.error(domain)
            return sent
        if port not in self._own or not self._mine(domain):
            raise channel_error("notify", errno.EPERM, "on Xen a process sends only on ports it bound; to raise an "
                                f"event on a port waiting for this domain use `xenevt notify --to {domain}:{port}`",
                                domain=domain, port=port)
        self._events(domain).notify(domain, port)
        peer = self._peer.get(port)
        if peer is not None:  # where it went, as this process bound it (or learned once): no second hypercall
            self._sent[port] = NotifyResult(domain, port, peer[0], peer[1], "sent")
            return self._sent[port]
        try:  # an unbound or VIRQ port of ours: ask once what it is now (the plain hypercall, no memory read)
            st: PortStatus | None = self._status(domain, port)
        except ChannelError:
            st = None
        if st is not None and st.state == "interdomain" and st.remote_domain is not None and st.remote_port is not None:
            self._peer[port] = (st.remote_domain, st.remote_port)  # a peer connected; it stays until a close
            self._sent[port] = NotifyResult(domain, port, st.remote_domain, st.remote_port, "sent")
            return self._sent[port]
        return NotifyResult(domain, port, domain if st is not None and st.state == "ipi" else None,
                            port if st is not None and st.state == "ipi" else None,
                            "sent" if st is None or st.state != "unbound" else "dropped: port is unbound")

    def notify_remote(self, domain: int, remote_domain: int, remote_port: int) -> NotifyResult:
        """Bind interdomain to the remote unbound port, send once, unbind (what a one-shot tool can do)."""
        port = self.bind_interdomain(domain, remote_domain, remote_port)
        try:
            check(self._evtchn.xenevtchn_notify(self._h, port), "notify", domain, port)
        finally:
            self.close(domain, port)
        return NotifyResult(domain, port, remote_domain, remote_port, "sent")

    def mask(self, domain: int, port: int) -> None:
        raise BackendUnavailable("libxenevtchn has no mask call: the kernel masks a port itself while its event "
                                 "waits to be read (use --backend sim to mask by hand)")

    def unmask(self, domain: int, port: int) -> None:
        self._own_port("unmask", domain, port)
        check(self._evtchn.xenevtchn_unmask(self._h, port), "unmask", domain, port)

    def close(self, domain: int, port: int) -> None:
        self._own_port("close", domain, port)
        check(self._evtchn.xenevtchn_unbind(self._h, port), "close", domain, port)
        self._owned(port, False)

    def reset(self, domain: int) -> None:
        ctrl, xc = self._ctrl()
        check(ctrl.xc_evtchn_reset(xc, domain), "reset", domain)

    def _evtchn_op(self, op: int, payload: bytes, call: str, domain: int, port: int) -> None:
        self._only_self(call, domain)
        if self._call is None:
            xcl = libs.load("xencall")
            h = xcl.xencall_open(self._logger, 0)
            if h == libs.ffi.NULL:
                raise BackendUnavailable(f"cannot open /dev/xen/privcmd (libxencall): {reason(libs.ffi.errno)}")
            self._call = (xcl, h)
        xcl, h = self._call
        buf = check(xcl.xencall_alloc_buffer(h, len(payload)), call, domain, port)
        try:
            libs.ffi.memmove(buf, payload, len(payload))
            check(xcl.xencall2(h, abi.HYPERVISOR_event_channel_op, op, int(libs.ffi.cast("uintptr_t", buf))), call,
                  domain, port)
        finally:
            xcl.xencall_free_buffer(h, buf)

    def set_priority(self, domain: int, port: int, priority: int) -> None:
        self._evtchn_op(abi.EVTCHNOP_set_priority, struct.pack("<II", port, priority), "set the priority of", domain,
                        port)

    def bind_vcpu(self, domain: int, port: int, vcpu: int) -> None:
        self._evtchn_op(abi.EVTCHNOP_bind_vcpu, struct.pack("<II", port, vcpu), "move", domain, port)

    def status(self, domain: int, port: int) -> PortStatus:
        return self._annotate(domain, [self._status(domain, port)])[0]

    def _status(self, domain: int, port: int, call: str = "get the status of", named: int | None = -1) -> PortStatus:
        """EVTCHNOP_status; a failure names ``call`` and port ``named`` (default: ``port``)."""
        ctrl, xc = self._ctrl()
        s = libs.ffi.new("struct evtchn_status *")
        s.dom, s.port = abi.DOMID_SELF if self._mine(domain) else domain, port
        check(ctrl.xc_evtchn_status(xc, s), call, domain, port if named == -1 else named)
        state = abi.STATES[s.status] if s.status < len(abi.STATES) else f"state {s.status}"
        st = PortStatus(domain=domain, port=port, state=state, vcpu=s.vcpu)
        if state == "unbound":
            st.remote_domain = s.u.unbound.dom
        elif state == "interdomain":
            st.remote_domain, st.remote_port = s.u.interdomain.dom, s.u.interdomain.port
        elif state == "virq":
            st.virq = s.u.virq
        elif state == "pirq":
            st.pirq = s.u.pirq
        return st

    def _own_words(self, domain: int):
        """This kernel's event memory, where it is readable (root): None otherwise."""
        if not self._mine(domain):
            return None
        try:
            return read_self()[0]
        except (XenevtError, OSError):
            return None

    def _annotate(self, domain: int, statuses: list[PortStatus]) -> list[PortStatus]:
        mem = self._own_words(domain)
        two = mem is not None and abi_of(mem) == "2-level"
        for st in statuses if mem is not None else []:
            word = mem.l2_word(st.port) if two else mem.word(st.port)  # (2-level: its bits, as 'e' reads them)
            if word is not None:
                st.word, st.flags = word, word_flag_dict(word)
        return statuses

    def list_ports(self, domain: int) -> list[PortStatus]:
        """EVTCHNOP_status over every port (FIFO flags added where this kernel's array is readable)."""
        return self._annotate(domain, self._list_ports(domain))

    def _list_ports(self, domain: int) -> list[PortStatus]:
        """EVTCHNOP_status from port 1 up to the first invalid port, as lsevtchn walks them."""
        out = []
        port = 1
        while port < (1 << 17):
            try:
                st = self._status(domain, port, "list the ports of", None if port == 1 else port)
            except ChannelError as e:
                if e.errno == errno.EINVAL:  # past the last valid port: the walk is over
                    break
                if e.errno == errno.EACCES:  # a port Xen itself consumes: not ours to see
                    port += 1
                    continue
                raise
            if st.state != "closed":
                out.append(st)
            port += 1
        return out

    def channels(self, domain: int) -> dict[int, PortStatus]:
        return {st.port: st for st in self._list_ports(domain)}

    def consume(self, domain: int, vcpu: int, max_events: int, timeout: float | None) -> list[int]:
        """Events on the ports this process bound: read from the evtchn fd, then unmask each (one C call)."""
        loop = self._loop
        if loop is not None and timeout == loop.timeout and max_events <= BATCH and self._own:
            # a loop's usual call: C at once, no Python frame between (under QEMU's TCG a frame is ~10 us a call)
            n = loop.c_consume(loop.ev, loop.out, max_events, loop.ms)
            return loop.unpack(loop.out, n) if n >= 0 else loop.finish(domain, loop.out, max_events, n)
        if not self._own:
            raise BackendUnavailable("on Xen events reach a process only on ports it bound: "
                                     "use `xenevt bind … --count N` to bind and wait")
        return (self._loop or self._events(domain)).consume(domain, max_events, timeout)

    def notify_wait(self, domain: int, port: int, wait_domain: int, vcpu: int, max_events: int,
                    timeout: float | None) -> list[int]:
        """A send on ``port``, then this process's events (its handle's: ``wait_domain`` is this domain), in one C
        call once the port has been sent on (what the send answers is then known): one call per round trip."""
        loop = self._loop
        sent = self._sent.get(port)
        if sent is not None and sent.domain == domain and loop is not None and self._own:
            return loop.notify_consume(domain, port, max_events, timeout)
        self.notify(domain, port)  # (its first send: its checks and what it answers, learned once)
        return self.consume(wait_domain, vcpu, max_events, timeout)

    def map_frames(self, domain: int, gfns: list[int]) -> list[bytes]:
        """Copy frames of ``domain`` through privcmd, read-only (Xen refuses a domain naming itself as the foreign
        owner: its own frames go by DOMID_SELF)."""
        return mapping.map_frames(self._logger, abi.DOMID_SELF if self._mine(domain) else domain, domain, gfns)

    def translate_address(self, domain: int, vcpu: int, virt: int) -> int | None:
        """The frame behind ``domain``'s virtual address ``virt`` as vCPU ``vcpu``'s page tables map it; None
        where no page is mapped there."""
        return mapping.translate_address(*self._ctrl(), domain, vcpu, virt)

    def vcpu_states(self, domain: int) -> list[str] | None:
        """Not read here (XEN_DOMCTL_getvcpuinfo would say which vCPUs are up): unknown, so no view claims one."""
        return None

    def fifo_memory(self, domain: int) -> DomainMemory:
        """This kernel's own event memory, FIFO or 2-level (kcore); another domain's frames are known only to
        that domain (its shared_info: `xenevt dump --shared-info auto`)."""
        if self._mine(domain):
            return read_self()[0]
        raise BackendUnavailable(f"reading domain {domain}'s event array needs its frames: use `xenevt dump "
                                 "--gfn …` (no hypercall reveals them)")

    def activity(self, domain: int) -> list[Row]:
        """This kernel's Xen interrupts (/proc/interrupts: per IRQ and CPU) and its xenbus devices' counters
        (events, spurious events, EOI delay); other domains' are not visible."""
        from ...activity import parse_interrupts, read_xenbus

        if not self._mine(domain):
            raise BackendUnavailable(f"only domain {domain} itself can count its interrupts: run watch there")
        try:
            with open("/proc/interrupts") as f:
                return parse_interrupts(f.read()) + read_xenbus()
        except OSError as e:
            raise BackendUnavailable(f"cannot read /proc/interrupts: {(e.strerror or str(e)).lower()}") from None

    def xenstore(self) -> tuple[dict[str, str], str]:
        """The xenstore nodes that name ports (bounded walk): libxenstore, else `xenstore-ls -f`."""
        from .xenstore import read_nodes

        return read_nodes(libs)

    def debug_dump(self, keys: str = "e", settle: float = 0.3, limit: float = 5.0) -> str:
        """Press a debug key and return what the hypervisor printed for it (console ring, read incrementally)."""
        return hostinfo.debug_dump(*self._ctrl(), self.domid or 0, keys, settle, limit)

    def debug_rows(self) -> list[tuple[int, list[tuple]]]:
        """Xen prints the 'e' dump as console text only: its facts are read from debug_dump's text."""
        raise BackendUnavailable("Xen prints debug key 'e' as console text: read it with debug_dump")
