"""Sleeping on a word of shared memory until another process changes it.

Linux futexes on a MAP_SHARED file mapping work across processes: the
consumer sleeps on its vCPU's upcall counter and the process that raised the
upcall wakes it, as Xen kicks a vCPU.  Where futex(2) is unavailable, a
short sleep loop keeps the same interface.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import time

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "i686": 240, "armv7l": 240}.get(platform.machine())
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
_libc = ctypes.CDLL(None, use_errno=True) if _SYS_FUTEX else None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def address_of(buf, offset: int = 0) -> tuple[int, object]:
    """Address of ``buf[offset]`` and the object that pins it (keep it alive, drop it before closing)."""
    pin = (ctypes.c_char * 1).from_buffer(buf, offset)
    return ctypes.addressof(pin), pin


def wait(addr: int, expected: int, timeout: float | None, read) -> None:
    """Sleep while the u32 at ``addr`` equals ``expected`` (``read()`` returns it), at most ``timeout`` s."""
    if _libc is None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while read() == expected and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.001)
        return
    ts = None
    if timeout is not None:
        ts = _Timespec(int(timeout), int((timeout - int(timeout)) * 1e9))
    rc = _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAIT, ctypes.c_uint32(expected),
                       ctypes.byref(ts) if ts is not None else None, None, 0)
    if rc != 0:
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            raise OSError(err, os.strerror(err))


def wake(addr: int) -> None:
    """Wake every process sleeping on ``addr``."""
    if _libc is not None:
        _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAKE, ctypes.c_int(0x7FFFFFFF), None, None, 0)
