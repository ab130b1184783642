"""The two targets a scenario runs on, behind one small interface: dom0's hypercalls on its own ports.

- SimTarget: a fresh simulated host (SimHost), dom0 calling.
- XenTarget: real Xen as dom0 sees it.  Every hypercall is issued raw (libxencall's privcmd, as the guest
  kernel would issue it), except alloc_unbound, status and reset, which go through libxenctrl as the tools
  do.  The ports are then dom0's but unknown to dom0's Linux: their event words stay as Linux initialised
  them (MASKED), so an event raised on them is never delivered to the kernel.  The simulator's ports are bound
  the same way (``masked=True``: no guest kernel enables them).  The word's flags come from dom0's own event
  array (kcore, as ``dump --self`` reads it) where that is readable.

A failure is a ChannelError carrying the hypercall's errno.
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile

from xenevt.errors import ChannelError, XenevtError, channel_error

# xen/include/public/event_channel.h: EVTCHNOP_*
EVTCHNOP_bind_interdomain = 0
EVTCHNOP_bind_virq = 1
EVTCHNOP_close = 3
EVTCHNOP_send = 4
EVTCHNOP_bind_vcpu = 8
EVTCHNOP_unmask = 9
EVTCHNOP_set_priority = 13


class SimTarget:
    """A fresh simulated host in a temporary folder; dom0 is the caller of every hypercall."""

    name = "sim"

    def __init__(self, nr_vcpus: int = 2):
        from xenevt.sim.host import SimHost, create_host

        self._dir = tempfile.TemporaryDirectory(prefix="xenevt-scenario-")
        create_host(self._dir.name, nr_domains=2, nr_vcpus=nr_vcpus)
        self.host = SimHost(self._dir.name)

    def close_target(self) -> None:
        self.host.close()
        self._dir.cleanup()

    def alloc_unbound(self, domid: int, remote: int) -> int:
        return self.host.alloc_unbound(0, domid, remote, masked=True)

    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        return self.host.bind_interdomain(0, 0, remote, remote_port, masked=True)

    def bind_virq(self, virq: int, vcpu: int) -> int:
        return self.host.bind_virq(0, 0, virq, vcpu, masked=True)

    def send(self, port: int) -> None:
        self.host.send(0, 0, port, tell_unbound=False)  # Xen's silence on an unbound port, not the CLI's message

    def close(self, port: int) -> None:
        self.host.close_port(0, 0, port)

    def status(self, domid: int, port: int, flags: bool = False):
        st = self.host.status(0, domid, port)
        if not flags:
            st.flags = {}
        return st

    def unmask(self, port: int) -> None:
        self.host.evtchn_unmask(0, 0, port)

    def set_priority(self, port: int, priority: int) -> None:
        self.host.set_priority(0, 0, port, priority)

    def bind_vcpu(self, port: int, vcpu: int) -> None:
        self.host.bind_vcpu(0, 0, port, vcpu)

    def reset(self, domid: int) -> None:
        self.host.reset(0, domid)

    def observe(self) -> None:
        pass  # the host's words are read with each status

    def cleanup(self, ports: list[int]) -> None:
        pass  # the next scenario gets a fresh host


class XenTarget:
    """Real Xen, from dom0: raw hypercalls on dom0's own ports (see the module's docstring)."""

    name = "xen"

    def __init__(self):
        from xenevt.backend.xen import XenBackend, libs

        self._libs = libs
        self.backend = XenBackend()
        self.ctrl, self.xc = self.backend._ctrl()
        xcl = libs.load("xencall")
        self._xcl = xcl
        self._h = xcl.xencall_open(libs.quiet_logger(), 0)
        if self._h == libs.ffi.NULL:
            raise XenevtError(f"cannot open /dev/xen/privcmd (libxencall): errno {libs.ffi.errno}")
        self.nr_vcpus = os.cpu_count() or 1
        self._syms: dict | None = None
        self._mem = None

    def close_target(self) -> None:
        self._xcl.xencall_close(self._h)
        self.backend.shutdown()

    def _op(self, op: int, fmt: str, *args: int, call: str, port: int | None = None) -> tuple:
        """HYPERVISOR_event_channel_op(op, struct) through libxencall; returns the struct as Xen left it."""
        from xenevt import abi

        ffi, xcl = self._libs.ffi, self._xcl
        size = struct.calcsize(fmt)
        buf = xcl.xencall_alloc_buffer(self._h, size)
        if buf == ffi.NULL:
            raise channel_error(call, errno.ENOMEM, "no hypercall buffer", domain=0, port=port)
        try:
            ffi.memmove(buf, struct.pack(fmt, *args), size)
            rc = xcl.xencall2(self._h, abi.HYPERVISOR_event_channel_op, op, int(ffi.cast("uintptr_t", buf)))
            err = ffi.errno
            if rc < 0:
                raise channel_error(call, err or errno.EIO, "refused", domain=0, port=port)
            return struct.unpack(fmt, bytes(ffi.buffer(buf, size)))
        finally:
            xcl.xencall_free_buffer(self._h, buf)

    def alloc_unbound(self, domid: int, remote: int) -> int:
        return self._libs.check(self.ctrl.xc_evtchn_alloc_unbound(self.xc, domid, remote), "allocate", domid)

    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        # struct evtchn_bind_interdomain: domid_t remote_dom; evtchn_port_t remote_port; OUT local_port
        return self._op(EVTCHNOP_bind_interdomain, "<H2xII", remote, remote_port, 0, call="bind to",
                        port=remote_port)[2]

    def bind_virq(self, virq: int, vcpu: int) -> int:
        return self._op(EVTCHNOP_bind_virq, "<III", virq, vcpu, 0, call="bind VIRQ")[2]

    def send(self, port: int) -> None:
        self._op(EVTCHNOP_send, "<I", port, call="notify", port=port)

    def close(self, port: int) -> None:
        self._op(EVTCHNOP_close, "<I", port, call="close", port=port)

    def unmask(self, port: int) -> None:
        self._op(EVTCHNOP_unmask, "<I", port, call="unmask", port=port)

    def set_priority(self, port: int, priority: int) -> None:
        self._op(EVTCHNOP_set_priority, "<II", port, priority, call="set the priority of", port=port)

    def bind_vcpu(self, port: int, vcpu: int) -> None:
        self._op(EVTCHNOP_bind_vcpu, "<II", port, vcpu, call="move", port=port)

    def observe(self) -> None:
        """Read dom0's event words once for the statuses of one step (kcore, as ``dump --self`` does)."""
        from xenevt.dump.frames import from_frames
        from xenevt.memory import kcore, linux

        self._mem = None
        try:
            if self._syms is None:
                self._syms = kcore.read_symbols(kcore.KALLSYMS)
                linux.check_symbols(self._syms, kcore.KALLSYMS)
                self._cpus = kcore.read_cpus(kcore.CPUS_POSSIBLE)
            with kcore.KernelMemory(kcore.KCORE) as km:
                self._mem = from_frames(*linux.read_fifo(km, self._syms, self._cpus))
        except (XenevtError, OSError):
            self._syms = self._syms or {}  # not readable: the records carry no flags, comparisons ignore them

    def status(self, domid: int, port: int, flags: bool = False):
        from xenevt.ports import word_flag_dict

        st = self.backend._status(domid, port)
        word = self._mem.word(port) if flags and domid == 0 and self._mem is not None else None
        if word is not None:
            st.flags = word_flag_dict(word)
        return st

    def reset(self, domid: int) -> None:
        if domid in (0, self.backend.domid):
            # resetting dom0 would close the kernel's own channels (console, xenstore, timers): the runner dies
            raise ChannelError("scenario refused: reset of dom0 on real Xen", errno=errno.EPERM, domain=domid)
        self._libs.check(self.ctrl.xc_evtchn_reset(self.xc, domid), "reset", domid)

    def cleanup(self, ports: list[int]) -> None:
        """Close what the scenario left open: ``ports`` are those it bound and last saw open."""
        for port in ports:
            try:
                self.close(port)
            except ChannelError:
                pass
