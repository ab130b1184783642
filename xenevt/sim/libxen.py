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

import errno
import os
import select
import struct
import threading

from .. import abi
from ..engine import Consume
from ..engine.layout import ABI_FIFO
from ..errors import ChannelError, XenevtError, channel_error
from .foreign import SHARED_INFO_GFN
from .host import SimHost

XC_DOMINFO_SIZE = 112          # sizeof(xc_dominfo_t), Xen 4.17 x86_64
XC_DOMINFO_NR_ONLINE_VCPUS = 72
XC_DOMINFO_MAX_VCPU_ID = 76
XC_DOMAININFO_SIZE = 112       # sizeof(xc_domaininfo_t) = struct xen_domctl_getdomaininfo, Xen 4.17 x86_64
XC_DOMAININFO_SHARED_INFO_FRAME = 48  # its uint64 shared_info_frame (4.15 to 4.20)
XC_DOMAININFO_NR_ONLINE_VCPUS = 64  # then max_vcpu_id at 68


SLOT_BITS = 12  # a handle id is (generation << SLOT_BITS) | slot, as csrc/xenevtchn_sim.h says
SLOTS = 1 << SLOT_BITS
XENEVTCHN_NO_CLOEXEC = 1  # xenevtchn.h: the only flag xenevtchn_open takes
UNRESTRICTED = None


class _Handle:
    """One open /dev/xen/evtchn: its ports and the pipe its events arrive on.  The pipe is the open file: a
    fork() shares it, an exec closes it (unless XENEVTCHN_NO_CLOEXEC), and no write end left anywhere means
    no process holds the handle any more (then, as the driver's release, its ports are closed)."""

    def __init__(self, hid: int, flags: int):
        cloexec = 0 if flags & XENEVTCHN_NO_CLOEXEC else os.O_CLOEXEC
        self.hid = hid
        self.rfd, self.wfd = os.pipe2(cloexec)
        os.set_blocking(self.wfd, False)
        self.ports: set[int] = set()
        self.restrict: int | None = UNRESTRICTED


class SimLibraries:
    def __init__(self, state_dir: str | None = None, domid: int | None = None, c_half=None,
                 parent: SimLibraries | None = None):
        """``c_half``: the library's C half (csrc/xenevtchn_sim.h), told of each handle, port and vCPU so that
        notify, pending, unmask and the upcall handler run in C; None: all of it here, in Python.
        ``parent``: this process is a fork() of ``parent``'s: the handles open then are shared with it."""
        if domid is None:
            domid = int(os.environ.get("XENEVT_SIM_DOMAIN", "0"), 0)
        self.host = SimHost(state_dir)
        self.domid = domid
        self.pid = os.getpid()
        self.host.domain(domid, "act as")
        self.handles: dict[int, _Handle] = dict(parent.handles) if parent else {}
        self.owner: dict[int, _Handle] = dict(parent.owner) if parent else {}
        self._gen: int = parent._gen if parent else 0
        self._lock = threading.RLock()
        self._kernel: list[threading.Thread | None] = []  # None: the C upcall threads
        self._stop = threading.Event()
        self.dropped = 0  # events for ports no handle owns (the kernel had no handler for them)
        self.enabled: set[int] = set()  # ports with no EOI outstanding (the driver's user_evtchn.enabled)
        self.not_enabled = 0  # events delivered while their port's EOI was outstanding (the driver's WARN)
        self._c = None
        hot = self.host.hot.get() if c_half is not None else None
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
            return
        for v in range(nr):
            t = threading.Thread(target=self._upcall_loop, args=(v,), name=f"xenevt-sim-vcpu{v}", daemon=True)
            t.start()
            self._kernel.append(t)

    def _upcall_loop(self, vcpu: int) -> None:
        """The evtchn driver's lateeoi order (drivers/xen/evtchn.c since XSA-332; the C half's route()): each port
        masked (the EOI-pending reason) before its PENDING is cleared, marked not enabled and written to its
        handle's pipe; the EOI is xenevtchn_unmask.  A port no handle owns is dropped and unmasked again."""
        host, domid = self.host, self.domid
        while not self._stop.is_set():
            try:
                ports = host.consume(domid, vcpu, 256, 0.2, flags=Consume.MASK | Consume.ACK)
            except XenevtError:
                return
            for port in ports:
                with self._lock:
                    h = self.owner.get(port)
                    if h is None:
                        self.dropped += 1
                        try:
                            host.unmask(domid, domid, port)
                        except XenevtError:
                            pass  # (closed since it was taken: nothing to give back)
                        continue
                    if port not in self.enabled:
                        self.not_enabled += 1  # evtchn_interrupt's WARN: "... but apparently not enabled"
                    self.enabled.discard(port)
                    try:
                        os.write(h.wfd, struct.pack("<I", port))
                    except BlockingIOError:
                        self.dropped += 1

    # --- libxenevtchn ----------------------------------------------------------------
    # What each call does when misused, as Linux's /dev/xen/evtchn driver (drivers/xen/evtchn.c) and Xen's
    # libxenevtchn (tools/libs/evtchn/core.c, linux.c: one ioctl, read or write each) answer:
    #   call                 case                                      result  why
    #   xenevtchn_open       a flag other than XENEVTCHN_NO_CLOEXEC    EINVAL  core.c refuses unknown flags
    #   xenevtchn_open       4,095 handles open in this process        EMFILE  (Linux: the fd limit, sooner)
    #   any call             a handle closed before                    EBADF   libxenevtchn frees it (undefined);
    #                                                                          here ids are never reused, so it
    #                                                                          is the closed fd's EBADF
    #   xenevtchn_close      NULL                                      0       core.c
    #   xenevtchn_notify     a port this handle did not bind (another  ENOTCONN  IOCTL_EVTCHN_NOTIFY: find_evtchn
    #                        handle's, out of range, closed)                    fails
    #   xenevtchn_unbind     port >= the kernel's channel count        EINVAL  xen_evtchn_nr_channels()
    #                        (2-level 4,096; FIFO: its array's ports)
    #   xenevtchn_unbind     a port this handle did not bind           ENOTCONN
    #   xenevtchn_unmask     a port this handle did not bind, out of   0       evtchn_write skips it silently
    #                        range, or not masked
    #   xenevtchn_pending    nothing pending, fd set non-blocking      EAGAIN  evtchn_read on O_NONBLOCK
    #   bind_unbound_port    a domid >= 65536 (0xFFFFFFFF)             a port  the ioctl's unsigned remote
    #                                                                          domain goes into a domid_t (16
    #                                                                          bits); Xen stores an unbound
    #                                                                          port's remote without looking it up
    #   bind_interdomain     remote port not unbound for us / bad      EINVAL  Xen's EVTCHNOP_bind_interdomain
    #                        remote domain missing                     ESRCH
    #   bind_virq            no such VIRQ / already bound              EINVAL / EEXIST  Xen's EVTCHNOP_bind_virq
    #   bind_* (restricted)  unbound, virq: always; interdomain: a     EACCES  the driver's restrict_domid check
    #                        domain other than the restricted one
    #   xenevtchn_restrict   a handle already restricted               EACCES  (even to the same domain)
    #   xenevtchn_restrict   domain 0 or >= DOMID_FIRST_RESERVED       EINVAL
    #   fork()               the child shares every open handle (its ports, its pipe: either may read an event),
    #                        as it shares the driver's file; a handle's ports close when its last holder
    #                        closes it or exits (an exec drops the child's hold unless XENEVTCHN_NO_CLOEXEC).
    #                        The child receives once it asks (its own upcall threads: fork copies none); while
    #                        its parent receives for the domain that is EBUSY, as for any second receiver.
    #   exit()               every handle this process holds last is closed with its ports, its vCPUs'
    #                        consumer locks given back (the driver's release, run by the C half's atexit).
    #   SIGKILL, _exit()     nothing runs: the next opener of the host takes the vCPUs over (guest.py) and the
    #                        ports stay bound (Linux's release would close them) until `xenevt close`.
    # One divergence is kept: a handle shared by a fork has one port set per holder here (the ports bound before
    # the fork plus its own), not one for all, so the last holder closes only the ports it knows of.
    def evtchn_open(self, flags: int = 0) -> int:
        if flags & ~XENEVTCHN_NO_CLOEXEC:
            raise ChannelError(f"xenevtchn_open: unknown flags {flags:#x}", errno=errno.EINVAL)
        with self._lock:
            used = {hid & (SLOTS - 1) for hid in self.handles}
            slot = next((s for s in range(1, SLOTS) if s not in used), None)
            if slot is None:
                raise ChannelError(f"{SLOTS - 1} xenevtchn handles are open in this process", errno=errno.EMFILE)
            self._gen += 1
            h = _Handle((self._gen << SLOT_BITS) | slot, flags)
            self.handles[h.hid] = h
            if self._c is not None:
                self._c.xenevt_sim_handle(h.hid, h.rfd, h.wfd)
            return h.hid

    def _h(self, hid: int) -> _Handle:
        h = self.handles.get(hid)
        if h is None:
            raise ChannelError("bad xenevtchn handle (closed, or never opened)", errno=errno.EBADF)
        return h

    def evtchn_close(self, hid: int) -> None:
        """Close this process's hold on the handle; the last holder's close closes its ports (the release)."""
        with self._lock:
            h = self._h(hid)
            del self.handles[hid]
            if self._c is not None:  # the C kernel writes to its pipe no more
                self._c.xenevt_sim_handle(hid, -1, -1)
            with self.host.locked():  # (two holders closing at once: one of them is the last)
                os.close(h.wfd)
                last = select.poll()
                last.register(h.rfd, 0)
                others = not any(ev & select.POLLHUP for _, ev in last.poll(0))  # a write end open elsewhere
                for port in sorted(h.ports):
                    self._unbind(h, port, close=not others)
            os.close(h.rfd)

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
                self._c.xenevt_sim_release(h.hid if port is not None else 0, port or 0)
        h.ports.add(port)
        self.owner[port] = h
        self.enabled.add(port)  # evtchn_bind_to_user: a port starts enabled
        return port

    def _restricted(self, h: _Handle, remote: int | None, call: str) -> None:
        """IOCTL_EVTCHN_RESTRICT_DOMID's rule: a restricted handle binds interdomain to its domain only
        (``remote``, as the caller passed it), and nothing else (None)."""
        if h.restrict is not None and remote != h.restrict:
            raise channel_error(call, errno.EACCES, f"handle is restricted to domain {h.restrict}", domain=self.domid)

    def _remote(self, remote: int) -> int:
        remote &= abi.DOMID_MAX  # the driver copies the ioctl's unsigned int into a domid_t
        return self.domid if remote == abi.DOMID_SELF else remote

    def bind_unbound(self, hid: int, remote: int) -> int:
        with self._lock:
            h = self._h(hid)
            self._restricted(h, None, "allocate an unbound port for")
            remote = self._remote(remote)
            return self._bind(h, lambda: self.host.alloc_unbound(self.domid, self.domid, remote))

    def bind_interdomain(self, hid: int, remote: int, remote_port: int) -> int:
        with self._lock:
            h = self._h(hid)
            self._restricted(h, remote, "bind to")
            remote = self._remote(remote)
            return self._bind(h, lambda: self.host.bind_interdomain(self.domid, self.domid, remote, remote_port))

    def bind_virq(self, hid: int, virq: int) -> int:
        with self._lock:
            h = self._h(hid)
            self._restricted(h, None, "bind VIRQ for")
            return self._bind(h, lambda: self.host.bind_virq(self.domid, self.domid, virq, 0))

    def notify(self, hid: int, port: int) -> None:
        h = self._h(hid)
        self._own(h, port, "notify")
        self.host.send(self.domid, self.domid, port, tell_unbound=False)

    def _unbind(self, h: _Handle, port: int, close: bool = True) -> None:
        """Forget ``port`` as ``h``'s; ``close``: also close it in Xen (no other process holds ``h``)."""
        h.ports.discard(port)
        self.owner.pop(port, None)
        if self._c is not None:
            self._c.xenevt_sim_own(h.hid, port, 0)
        if close:
            self.host.close_port(self.domid, self.domid, port)

    def unbind(self, hid: int, port: int) -> None:
        with self._lock:
            h = self._h(hid)
            if port >= self._nr_channels():
                raise channel_error("close", errno.EINVAL, f"past the kernel's {self._nr_channels()} channels",
                                    domain=self.domid, port=port)
            self._own(h, port, "close")
            self._unbind(h, port)

    def _nr_channels(self) -> int:
        """xen_evtchn_nr_channels(): 2-level's fixed count (the kernel's words squared: 1024 for a 32-bit one), or
        the ports the FIFO event array covers now."""
        dom = self.host.domain(self.domid, "act as")
        mem = dom.mem
        return mem.nr_ports if mem.event_abi == ABI_FIFO else abi.l2_nr_channels(32 if dom.guest_32 else 64)

    def pending(self, hid: int) -> int:
        """The next port with an event (blocks like read() on the device unless the fd is non-blocking)."""
        h = self._h(hid)
        self._start_kernel()
        data = os.read(h.rfd, 4)
        if len(data) != 4:
            raise ChannelError("short read from the event pipe", errno=errno.EIO)
        return struct.unpack("<I", data)[0]

    def unmask(self, hid: int, port: int) -> None:
        """The driver's write(): a port this handle did not bind is skipped, not an error; one whose EOI is
        outstanding is enabled again and EOIed (xen_irq_lateeoi(irq, 0): never spurious, so the EOI unmasks at
        once); once this process receives, an enabled one is skipped as the driver skips it.  (With the C half
        attached, its xenevtchn_unmask keeps the enabled flags and calls this only to finish an unmask.)"""
        h = self._h(hid)
        if port not in h.ports:
            return
        if self._c is None and self._kernel:
            with self._lock:
                if port in self.enabled:
                    return
                self.enabled.add(port)
        self.host.unmask(self.domid, self.domid, port)

    def restrict(self, hid: int, domid: int) -> None:
        h = self._h(hid)
        if h.restrict is not None:
            raise channel_error("restrict", errno.EACCES, f"already restricted to domain {h.restrict}", domain=domid)
        if domid == 0 or domid >= abi.DOMID_FIRST_RESERVED:
            raise channel_error("restrict", errno.EINVAL, "not a domain a handle can be restricted to",
                                domain=domid)
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
        fd = self.host.dir.open(self.RING, write=True, create=True, append=True)
        assert fd is not None  # (create: made when missing)
        with os.fdopen(fd, "a") as f:
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
            self.not_enabled += self._c.xenevt_sim_not_enabled()
            self._c.xenevt_sim_attach(0, 0)
            self._c = None

    def shutdown(self) -> None:
        """The process's release: upcall threads stopped, its handles closed (the ports of those it held last),
        the host closed (its vCPUs' consumer locks and pids given back)."""
        self._stop.set()
        self._stop_c_kernel()
        for t in self._kernel:
            if t is not None:
                t.join(timeout=2)
        for hid in list(self.handles):
            self.evtchn_close(hid)
        self.host.close()
