"""The C entry points of libxenevtchn-sim.so, in Python (cffi embedding).

Each function converts the C arguments, calls SimLibraries, and reports a
failure the C way: -1 (or NULL) with errno set.  Nothing may escape as a
Python exception: cffi would print it and return 0, which C callers would
take for port 0 or success.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import os
import sys

from ..errors import XenevtError

PAGE = 4096
PROT_NONE, MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0, 0x01, 0x02, 0x10, 0x20
MAP_FAILED = ctypes.c_void_p(-1).value
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

_libs = None
_quiet = False
_clib = None  # the library's C half (xenevtchn_sim.h): the fast path's handles, ports and upcall threads


_forked_from: list = []  # a parent's libraries, kept as they were in this fork()ed child (never shut down here)


def _get():
    """This process's libraries; in a fork()ed child, its own, sharing the handles open at the fork."""
    global _libs
    if _libs is None or _libs.pid != os.getpid():
        from .libxen import SimLibraries

        parent = _libs
        if parent is not None:
            _forked_from.append(parent)  # (its threads and locks are the parent's: dropped, not finalized)
        _libs = SimLibraries(c_half=_clib, parent=parent)
        if _clib is not None:
            _clib.xenevt_sim_arm(1)  # a C program's exit() gives back what it holds (its interpreter never exits)
    return _libs


def _release() -> None:
    """The process's exit: its handles and consumers given back (run once: Python's atexit or C's)."""
    global _libs
    if _clib is not None:
        _clib.xenevt_sim_arm(0)
    if _libs is not None:
        libs = _get()
        _libs = None
        libs.shutdown()


def reset() -> None:
    """Forget the simulated host this process acts on (tests switch state directories)."""
    global _quiet
    _release()
    _quiet = False


def install(ffi, lib=None) -> None:
    """``lib``: the C half the fast path runs in (notify, pending, unmask and the upcall threads); the Python
    functions below are its fallbacks and everything else."""
    global _clib
    _clib = lib
    NULL = ffi.NULL
    atexit.register(_release)  # a Python process's exit (C's atexit then finds nothing armed)

    def guarded(fail, fn, *args):
        try:
            return fn(*args)
        except XenevtError as e:
            ffi.errno = e.errno or errno.EIO
            if not _quiet:
                sys.stderr.write(f"xenevtchn-sim: {e}\n")
        except OSError as e:
            ffi.errno = e.errno or errno.EIO
        except Exception as e:  # a bug: still a C-style failure
            ffi.errno = errno.EIO
            sys.stderr.write(f"xenevtchn-sim: internal error: {type(e).__name__}: {e}\n")
        return fail

    def hid(h) -> int:
        return int(ffi.cast("uintptr_t", h))

    def opened(logger, flags):
        global _quiet
        _quiet = _quiet or logger != NULL
        return ffi.cast("xenevtchn_handle *", _get().evtchn_open(flags))

    @ffi.def_extern()
    def xenevtchn_open(logger, flags):
        return guarded(NULL, opened, logger, flags)

    @ffi.def_extern()
    def xenevt_sim_py_exit():
        guarded(None, _release)

    @ffi.def_extern()
    def xenevtchn_close(h):
        if h == NULL:
            return 0
        return guarded(-1, lambda: _get().evtchn_close(hid(h)) or 0)

    @ffi.def_extern()
    def xenevtchn_fd(h):
        return guarded(-1, lambda: _get().evtchn_fd(hid(h)))

    @ffi.def_extern()
    def xenevt_sim_py_notify(h, port):
        return guarded(-1, lambda: _get().notify(hid(h), port) or 0)

    @ffi.def_extern()
    def xenevtchn_bind_unbound_port(h, domid):
        return guarded(-1, lambda: _get().bind_unbound(hid(h), domid))

    @ffi.def_extern()
    def xenevtchn_bind_interdomain(h, domid, remote_port):
        return guarded(-1, lambda: _get().bind_interdomain(hid(h), domid, remote_port))

    @ffi.def_extern()
    def xenevtchn_bind_virq(h, virq):
        return guarded(-1, lambda: _get().bind_virq(hid(h), virq))

    @ffi.def_extern()
    def xenevtchn_unbind(h, port):
        return guarded(-1, lambda: _get().unbind(hid(h), port) or 0)

    @ffi.def_extern()
    def xenevt_sim_py_pending(h):
        return guarded(-1, lambda: _get().pending(hid(h)))

    @ffi.def_extern()
    def xenevt_sim_py_unmask(h, port):
        return guarded(-1, lambda: _get().unmask(hid(h), port) or 0)

    @ffi.def_extern()
    def xenevtchn_restrict(h, domid):
        return guarded(-1, lambda: _get().restrict(hid(h), domid) or 0)

    # libxenctrl: the interface handle carries nothing, every call acts as this domain
    @ffi.def_extern()
    def xc_interface_open(logger, dombuild_logger, flags):
        def op():
            global _quiet
            _quiet = _quiet or logger != NULL
            _get()
            return ffi.cast("xc_interface *", 1)

        return guarded(NULL, op)

    @ffi.def_extern()
    def xc_interface_close(xch):
        return 0

    @ffi.def_extern()
    def xc_evtchn_alloc_unbound(xch, dom, remote_dom):
        return guarded(-1, lambda: _get().xc_alloc_unbound(dom, remote_dom))

    @ffi.def_extern()
    def xc_evtchn_reset(xch, dom):
        return guarded(-1, lambda: _get().xc_reset(dom) or 0)

    @ffi.def_extern()
    def xc_evtchn_status(xch, status):
        def op():
            port = status.port
            dom, code, st = _get().xc_status(status.dom, port)
            ffi.memmove(status, bytes(ffi.sizeof(status[0])), ffi.sizeof(status[0]))  # OUT fields not set are 0
            status.dom, status.port, status.status, status.vcpu = dom, port, code, st.vcpu
            if st.state == "unbound":
                status.u.unbound.dom = st.remote_domain
            elif st.state == "interdomain":
                status.u.interdomain.dom, status.u.interdomain.port = st.remote_domain, st.remote_port
            elif st.state == "virq":
                status.u.virq = st.virq
            elif st.state == "pirq":
                status.u.pirq = st.pirq
            return 0

        return guarded(-1, op)

    def records(info, out: bytes, size: int) -> int:
        """Copy domain-info records into the caller's array; the count is what libxenctrl returns."""
        ffi.memmove(info, out, len(out))
        return len(out) // size

    @ffi.def_extern()
    def xc_domain_getinfo(xch, first_domid, max_doms, info):
        def op():
            from .libxen import XC_DOMINFO_SIZE

            return records(info, _get().xc_domain_getinfo(first_domid, max_doms), XC_DOMINFO_SIZE)

        return guarded(-1, op)

    @ffi.def_extern()
    def xc_domain_getinfolist(xch, first_domain, max_domains, info):
        def op():
            from .libxen import XC_DOMAININFO_SIZE

            return records(info, _get().xc_domain_getinfolist(first_domain, max_domains), XC_DOMAININFO_SIZE)

        return guarded(-1, op)

    @ffi.def_extern()
    def xc_send_debug_keys(xch, keys):
        return guarded(-1, lambda: _get().send_debug_keys(ffi.string(keys).decode(errors="replace")) or 0)

    @ffi.def_extern()
    def xc_readconsolering(xch, buffer, pnr_chars, clear, incremental, pindex):
        def op():
            index = int(pindex[0]) if incremental and pindex != NULL else 0
            data, new = _get().read_console(int(pnr_chars[0]), bool(clear), bool(incremental), index)
            ffi.memmove(buffer, data, len(data))
            pnr_chars[0] = len(data)
            if pindex != NULL:
                pindex[0] = new
            return 0

        return guarded(-1, op)

    @ffi.def_extern()
    def xenforeignmemory_open(logger, flags):
        return guarded(NULL, lambda: _get() and ffi.cast("xenforeignmemory_handle *", 1))

    @ffi.def_extern()
    def xenforeignmemory_close(fmem):
        return 0

    @ffi.def_extern()
    def xenforeignmemory_map(fmem, dom, prot, pages, arr, err):
        """Map the frames where the simulated guest keeps them: the state file's pages, MAP_SHARED, so
        the mapping is live, as privcmd's is."""

        def op():
            libs = _get()
            offsets = libs.foreign_offsets(dom, [int(arr[i]) for i in range(pages)])
            if err == NULL and any(o < 0 for o in offsets):
                raise OSError(-min(offsets), "frame not mappable")
            base = _libc.mmap(None, pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if base in (None, MAP_FAILED):
                raise OSError(ctypes.get_errno(), "mmap")
            for i, off in enumerate(offsets):
                if off < 0:
                    err[i] = off
                    continue
                got = _libc.mmap(base + i * PAGE, PAGE, prot, MAP_SHARED | MAP_FIXED, libs.host.fileno(), off)
                if got in (None, MAP_FAILED):
                    e = ctypes.get_errno()
                    _libc.munmap(base, pages * PAGE)
                    raise OSError(e, "mmap")
                if err != NULL:
                    err[i] = 0
            return ffi.cast("void *", base)

        return guarded(NULL, op)

    @ffi.def_extern()
    def xenforeignmemory_unmap(fmem, addr, pages):
        def op():
            if _libc.munmap(int(ffi.cast("uintptr_t", addr)), pages * PAGE) != 0:
                raise OSError(ctypes.get_errno(), "munmap")
            return 0

        return guarded(-1, op)

    @ffi.def_extern()
    def xencall_open(logger, flags):
        return guarded(NULL, lambda: _get() and ffi.cast("xencall_handle *", 1))

    @ffi.def_extern()
    def xencall_close(xcall):
        return 0

    @ffi.def_extern()
    def xencall2(xcall, op, arg1, arg2):
        def call():
            arg = bytes(ffi.buffer(ffi.cast("uint8_t *", arg2), 8))
            return _get().hypercall(op, arg1, arg)

        return guarded(-1, call)
