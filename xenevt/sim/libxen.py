"""The Xen tool libraries' semantics over the simulated host (what libxenevtchn-sim.so runs).

A process using the library acts as one simulated domain ($XENEVT_SIM_DOMAIN,
default dom0), as a program on that domain's kernel would:
- libxenevtchn: each handle is a user of the kernel's evtchn device: the ports
  it binds are its own, their events arrive on its fd (a pipe) masked, as
  Linux's evtchn driver masks a port until userspace writes it back, and
  unbinding or closing the handle closes them;
- the kernel's upcall handler runs as a thread per vCPU in this process once
  program asks for a handle's fd or its pending events: it consumes the
  domain's events on the ABI its kernel chose (FIFO queues or the 2-level
  bitmaps, the engines' C loops) and routes each port to the handle that
  owns it.  One process per simulated domain can receive (the
  vCPU consumer lock says which; another gets EBUSY); a process that only
  binds and sends needs no kernel;
- libxenctrl's event-channel calls and libxencall's EVTCHNOP_set_priority /
  bind_vcpu act as the hypercalls do, with this domain as the caller.
Errors are XenevtErrors carrying errno; the C glue turns them into -1 + errno.
"""

from __future__ import annotations

import atexit
import errno
import os
import struct
import threading

from .. import abi
from ..errors import ChannelError, XenevtError, channel_error
from .foreign import SHARED_INFO_GFN
from .host import SimHost

XC_DOMINFO_SIZE = 112          # sizeof(xc_dominfo_t), Xen 4.17 x86_64
XC_DOMINFO_NR_ONLINE_VCPUS = 72
XC_DOMINFO_MAX_VCPU_ID = 76
XC_DOMAININFO_SIZE = 112       # sizeof(xc_domaininfo_t) = struct xen_domctl_getdomaininfo, Xen 4.17 x86_64
XC_DOMAININFO_SHARED_INFO_FRAME = 48  # its uint64 shared_info_frame (4.15 to 4.20)
XC_DOMAININFO_NR_ONLINE_VCPUS = 64  # then max_vcpu_id at 68


class _Handle:
    """One open /dev/xen/evtchn: its ports and the pipe its events arrive on."""

    def __init__(self):
        self.rfd, self.wfd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.wfd, False)
        self.ports: set[int] = set()
        self.restrict: int | None = None


class SimLibraries:
    def __init__(self, state_dir: str | None = None, domid: int | None = None, c_half=None):
        """``c_half``: the library's C half (csrc/xenevtchn_sim.h), told of each handle, port and vCPU so that
        notify, pending, unmask and the upcall handler run in C; None: all of it here, in Python."""
        if domid is None:
            domid = int(os.environ.get("XENEVT_SIM_DOMAIN", "0"), 0)
        self.host = SimHost(state_dir)
        self.domid = domid
        self.host.domain(domid, "act as")
        self.handles: dict[int, _Handle] = {}
        self.owner: dict[int, _Handle] = {}
        self._next = 1
        self._lock = threading.RLock()
        self._kernel: list[threading.Thread] = []
        self._stop = threading.Event()
        self.dropped = 0  # events for ports no handle owns (the kernel had no handler for them)
        self._c = None
        hot = self.host._hot_host() if c_half is not None else None
        if hot is not None:
            self._c = c_half
            c_half.xenevt_sim_attach(hot.address, domid)

    # --- the guest kernel ----------------------------------------------------------
    def _start_kernel(self) -> None:
        """Claim every vCPU's upcall handler (once); EBUSY if another process receives for this domain."""
        if self._kernel:
            return
        nr = self.host.domain(self.domid, "act as").mem.nr_vcpus
        for v in range(nr):
            self.host.claim_vcpu(self.domid, v)
        if self._c is not None:  # the upcall handler in C: one thread per vCPU, no Python on the way
            if self._c.xenevt_sim_kernel_start(nr) != 0:
                self._c.xenevt_sim_kernel_stop()
                raise ChannelError("cannot start the upcall threads", errno=errno.EAGAIN, domain=self.domid)
            self._kernel.append(None)
            # stopped before this interpreter lets go of the mapping under them (a Python program's exit; a C
            # program's embedded interpreter is never finalized)
            atexit.register(self._stop_c_kernel)
            return
        for v in range(nr):
            t = threading.Thread(target=self._upcall_loop, args=(v,), name=f"xenevt-sim-vcpu{v}", daemon=True)
            t.start()
            self._kernel.append(t)

    def _upcall_loop(self, vcpu: int) -> None:
        while not self._stop.is_set():
            try:
                ports = self.host.consume(self.domid, vcpu, 256, 0.2)
            except XenevtError:
                return
            for port in ports:
                with self._lock:
                    h = self.owner.get(port)
                    if h is None:
                        self.dropped += 1
                        continue
                    dom = self.host.domain(self.domid, "deliver")
                    self.host._guest_mask(dom, port)  # the evtchn driver masks until userspace unmasks
                    try:
                        os.write(h.wfd, struct.pack("<I", port))
                    except BlockingIOError:
                        self.dropped += 1

    # --- libxenevtchn ----------------------------------------------------------------
    def evtchn_open(self) -> int:
        with self._lock:
            hid = self._next
            self._next += 1
            h = self.handles[hid] = _Handle()
            if self._c is not None:
                self._c.xenevt_sim_handle(hid, h.rfd, h.wfd)
            return hid

    def _h(self, hid: int) -> _Handle:
        h = self.handles.get(hid)
        if h is None:
            raise ChannelError("bad xenevtchn handle", errno=errno.EBADF)
        return h

    def evtchn_close(self, hid: int) -> None:
        with self._lock:
            h = self._h(hid)
            for port in sorted(h.ports):
                self._unbind(h, port)
            if self._c is not None:  # the C kernel writes to its pipe no more
                self._c.xenevt_sim_handle(hid, -1, -1)
            os.close(h.rfd)
            os.close(h.wfd)
            del self.handles[hid]

    def evtchn_fd(self, hid: int) -> int:
        """The fd to poll: asking for it means this process receives, so its kernel starts."""
        h = self._h(hid)
        self._start_kernel()
        return h.rfd

    def _own(self, h: _Handle, port: int, call: str) -> None:
        if port not in h.ports:
            # the evtchn driver answers ENOTCONN for a port the file has not bound
            raise channel_error(call, errno.ENOTCONN, "port not bound by this handle", domain=self.domid, port=port)

    def _bind(self, h: _Handle, bind) -> int:
        """The port ``bind()`` makes, owned by ``h`` before any upcall can route its first event (Xen raises a new
        interdomain end at once; the evtchn driver delivers it to the file that bound it)."""
        if self._c is None:  # the Python upcall loop routes under self._lock, which every bind holds
            port = bind()
        else:
            self._c.xenevt_sim_hold()
            port = None
            try:
                port = bind()
            finally:
                self._c.xenevt_sim_release(self._hid(h) if port is not None else 0, port or 0)
        h.ports.add(port)
        self.owner[port] = h
        return port

    def _hid(self, h: _Handle) -> int:
        return next(hid for hid, x in self.handles.items() if x is h)

    def _restricted(self, h: _Handle, remote: int, call: str) -> None:
        if h.restrict is not None and remote != h.restrict:
            raise channel_error(call, errno.EPERM, f"handle is restricted to domain {h.restrict}", domain=remote)

    def bind_unbound(self, hid: int, remote: int) -> int:
        with self._lock:
            h = self._h(hid)
            remote = self.domid if remote == abi.DOMID_SELF else remote
            self._restricted(h, remote, "allocate an unbound port for")
            return self._bind(h, lambda: self.host.alloc_unbound(self.domid, self.domid, remote))

    def bind_interdomain(self, hid: int, remote: int, remote_port: int) -> int:
        with self._lock:
            h = self._h(hid)
            remote = self.domid if remote == abi.DOMID_SELF else remote
            self._restricted(h, remote, "bind to")
            return self._bind(h, lambda: self.host.bind_interdomain(self.domid, self.domid, remote, remote_port))

    def bind_virq(self, hid: int, virq: int) -> int:
        with self._lock:
            h = self._h(hid)
            if h.restrict is not None:
                raise channel_error("bind VIRQ for", errno.EPERM, "a restricted handle cannot bind VIRQs",
                                    domain=self.domid)
            return self._bind(h, lambda: self.host.bind_virq(self.domid, self.domid, virq, 0))

    def notify(self, hid: int, port: int) -> None:
        h = self._h(hid)
        self._own(h, port, "notify")
        self.host.send(self.domid, self.domid, port, tell_unbound=False)

    def _unbind(self, h: _Handle, port: int) -> None:
        h.ports.discard(port)
        self.owner.pop(port, None)
        if self._c is not None:
            self._c.xenevt_sim_own(self._hid(h), port, 0)
        self.host.close_port(self.domid, self.domid, port)

    def unbind(self, hid: int, port: int) -> None:
        with self._lock:
            h = self._h(hid)
            self._own(h, port, "close")
            self._unbind(h, port)

    def pending(self, hid: int) -> int:
        """The next port with an event (blocks like read() on the device unless the fd is non-blocking)."""
        h = self._h(hid)
        self._start_kernel()
        data = os.read(h.rfd, 4)
        if len(data) != 4:
            raise ChannelError("short read from the event pipe", errno=errno.EIO)
        return struct.unpack("<I", data)[0]

    def unmask(self, hid: int, port: int) -> None:
        h = self._h(hid)
        self._own(h, port, "unmask")
        self.host.unmask(self.domid, self.domid, port)

    def restrict(self, hid: int, domid: int) -> None:
        h = self._h(hid)
        if h.restrict is not None and h.restrict != domid:
            raise channel_error("restrict", errno.EINVAL, f"already restricted to domain {h.restrict}", domain=domid)
        h.restrict = domid

    # --- libxenctrl --------------------------------------------------------------------
    def _dom(self, dom: int) -> int:
        return self.domid if dom == abi.DOMID_SELF else dom

    def xc_alloc_unbound(self, dom: int, remote: int) -> int:
        return self.host.alloc_unbound(self.domid, self._dom(dom), self._dom(remote))

    def xc_reset(self, dom: int) -> None:
        self.host.reset(self.domid, self._dom(dom))

    def xc_status(self, dom: int, port: int):
        """EVTCHNOP_status: (the domain asked about, its EVTCHNSTAT_* code, the PortStatus); the glue fills
        struct evtchn_status (declared once, in csrc/xen_api.h)."""
        dom = self._dom(dom)
        st = self.host.status(self.domid, dom, port)
        return dom, abi.STATES.index(st.state), st

    def xc_domain_getinfolist(self, first: int, max_doms: int) -> bytes:
        """xc_domaininfo_t records (xen_domctl_getdomaininfo: domid, vCPU counts) for domains >= first; the
        call every Xen from 4.2 to 4.20 has (xc_domain_getinfo is gone from 4.18's libxenctrl)."""
        out = bytearray(self._dominfo(first, max_doms, XC_DOMAININFO_SIZE, "<H", XC_DOMAININFO_NR_ONLINE_VCPUS))
        for at in range(0, len(out), XC_DOMAININFO_SIZE):  # each domain's shared_info frame, for privcmd maps
            struct.pack_into("<Q", out, at + XC_DOMAININFO_SHARED_INFO_FRAME, SHARED_INFO_GFN)
        return bytes(out)

    def xc_domain_getinfo(self, first: int, max_doms: int) -> bytes:
        """xc_dominfo_t records (domid, vCPU counts) for domains >= first."""
        return self._dominfo(first, max_doms, XC_DOMINFO_SIZE, "<I", XC_DOMINFO_NR_ONLINE_VCPUS)

    def _dominfo(self, first: int, max_doms: int, size: int, domid_fmt: str, vcpus_at: int) -> bytes:
        """Records of ``size`` bytes: the domid first (``domid_fmt``), then online vCPUs and max_vcpu_id."""
        out = bytearray()
        for domid in sorted(self.host.domains):
            if domid < first or len(out) // size >= max_doms:
                continue
            rec = bytearray(size)
            nv = self.host.domains[domid].mem.nr_vcpus
            struct.pack_into(domid_fmt, rec, 0, domid)
            struct.pack_into("<II", rec, vcpus_at, nv, nv - 1)
            out += rec
        return bytes(out)

    # --- the hypervisor console: debug keys and the console ring ---------------------------
    RING = "console.ring"  # beside the state file, opened through its directory's policy (statedir.py)

    def send_debug_keys(self, keys: str) -> None:
        """Run debug-key handlers; 'e' prints the event-channel dump into the console ring, as Xen does."""
        if not self.host.domain(self.domid, "send debug keys as").privileged:
            raise ChannelError("debug keys need a privileged domain", errno=errno.EPERM, domain=self.domid)
        out = []
        for key in keys:
            if key == "e":
                out += self.host.debug_key_e()
            else:
                out.append(f"'{key}' pressed -> (not simulated)")
        with os.fdopen(self.host.dir.open(self.RING, write=True, create=True, append=True), "a") as f:
            f.write("".join(f"(XEN) {line}\n" for line in out))

    def read_console(self, size: int, clear: bool, incremental: bool, index: int) -> tuple[bytes, int]:
        """(text, new index): the ring from ``index`` (incremental) or its end, at most ``size`` bytes."""
        fd = self.host.dir.open(self.RING, write=clear)
        data = b""
        if fd is not None:
            with os.fdopen(fd, "rb") as f:
                data = f.read()
                if clear:
                    os.ftruncate(fd, 0)
        start = min(index, len(data)) if incremental else max(0, len(data) - size)
        chunk = data[start:start + size]
        return chunk, start + len(chunk)

    # --- libxenforeignmemory ------------------------------------------------------------
    def foreign_offsets(self, dom: int, gfns: list[int]) -> list[int]:
        """Per frame: its page-aligned offset in the state file, or -errno."""
        return self.host.frame_offsets(self.domid, self._dom(dom), gfns)

    # --- libxencall: the two event-channel hypercalls a user may need ---------------------
    def hypercall(self, op: int, cmd: int, arg: bytes) -> int:
        if op != abi.HYPERVISOR_event_channel_op or cmd not in (abi.EVTCHNOP_bind_vcpu, abi.EVTCHNOP_set_priority):
            raise ChannelError(f"hypercall {op}/{cmd} is not simulated", errno=errno.ENOSYS)
        port, value = struct.unpack_from("<II", arg)
        if cmd == abi.EVTCHNOP_set_priority:
            self.host.set_priority(self.domid, self.domid, port, value)
        else:
            self.host.bind_vcpu(self.domid, self.domid, port, value)
        return 0

    def _stop_c_kernel(self) -> None:
        if self._c is not None:
            self._c.xenevt_sim_kernel_stop()
            self.dropped += self._c.xenevt_sim_dropped()
            self._c.xenevt_sim_attach(0, 0)
            self._c = None

    def shutdown(self) -> None:
        self._stop.set()
        atexit.unregister(self._stop_c_kernel)
        self._stop_c_kernel()
        for t in self._kernel:
            if t is not None:
                t.join(timeout=2)
        for hid in list(self.handles):
            self.evtchn_close(hid)
