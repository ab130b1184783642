"""Run-time binding (cffi ABI mode) to the Xen tool libraries.

The libraries are opened with dlopen when the ``xen`` backend is first used,
never at import: one build of xenevt works with and without Xen installed,
and ``LD_LIBRARY_PATH`` can put the simulator's libxenevtchn in their place.
Declarations come from csrc/xen_api.h (Xen 4.17's xenevtchn.h, xenctrl.h,
xencall.h, xenforeignmemory.h, struct evtchn_status), the header the
simulator's library is built from too.  ``check`` is the one place a
library's return becomes our error (pygit2's check_error).
"""

from __future__ import annotations

import errno
import glob
import os
import re

from cffi import FFI

from ... import capi
from ...errors import BackendUnavailable, channel_error

ffi = FFI()
try:
    ffi.cdef(capi.declarations())
except capi.CSourcesMissing as e:
    raise BackendUnavailable(f"the xen backend cannot declare the Xen libraries' API: {e}") from None
ffi.cdef("FILE *fopen(const char *path, const char *mode);")  # libc: where the quiet logger writes
ffi.cdef("void free(void *ptr);")  # libc: what libxenstore's results are released with

LIB_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
            "/usr/local/lib64"]

# what each library is called and which Debian package ships it
LIBRARIES = {
    "xenevtchn": ("libxenevtchn.so.1", "libxenevtchn1"),
    "xenctrl": ("libxenctrl.so.4.*", "libxenmisc4.X (libxenmisc4.17 on Debian 12, libxenmisc4.20 on 13)"),
    "xencall": ("libxencall.so.1", "libxencall1"),
    "xenforeignmemory": ("libxenforeignmemory.so.1", "libxenforeignmemory1"),
    "xentoollog": ("libxentoollog.so.1", "libxentoollog1"),
    "xenstore": ("libxenstore.so.4", "libxenstore4"),
}
XTL_CRITICAL = 9


def _version_key(path: str):
    return [int(x) for x in re.findall(r"\d+", os.path.basename(path))]


def candidates(pattern: str) -> list[str]:
    """Library paths matching ``pattern``: LD_LIBRARY_PATH first (as the dynamic loader does), newest first."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + LIB_DIRS
    found: list[str] = []
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, pattern)), key=_version_key, reverse=True):
            if path not in found:
                found.append(path)
    return found


_loaded: dict[str, tuple[object, str]] = {}


def load(name: str):
    """The library ``name`` (a key of LIBRARIES), dlopened once; BackendUnavailable if absent."""
    if name in _loaded:
        return _loaded[name][0]
    pattern, package = LIBRARIES[name]
    tried = candidates(pattern)
    if "*" not in pattern:
        tried.append(pattern)  # let the loader search its own cache too
    errors = []
    for path in tried:
        try:
            lib = ffi.dlopen(path)
        except OSError as e:
            errors.append(str(e))
            continue
        _loaded[name] = (lib, path)
        return lib
    raise BackendUnavailable(
        f"the Xen library {pattern} is not installed (Debian package {package}): "
        f"the xen backend needs it{'; ' + errors[-1] if errors else ''}")


def loaded_path(name: str) -> str | None:
    """The file that was actually mapped for ``name`` (resolving symlinks through /proc/self/maps)."""
    if name not in _loaded:
        return None
    want = os.path.realpath(_loaded[name][1]) if os.path.exists(_loaded[name][1]) else None
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if want and path == want:
                    return path
                if not want and f"lib{name}" in os.path.basename(path):
                    return path
    except OSError:
        pass
    return want or _loaded[name][1]


_logger = None


def quiet_logger():
    """A logger that drops the libraries' own messages (they would print to stderr; we
    report errors ourselves, one line, with errno).  NULL if libxentoollog is missing."""
    global _logger
    if _logger is None:
        try:
            xtl = load("xentoollog")
            libc = ffi.dlopen(None)
            sink = libc.fopen(b"/dev/null", b"w")
            lg = xtl.xtl_createlogger_stdiostream(sink, XTL_CRITICAL + 1, 0) if sink != ffi.NULL else ffi.NULL
            _logger = ffi.cast("struct xentoollog_logger *", lg)
        except (BackendUnavailable, AttributeError, OSError):
            _logger = ffi.NULL
    return _logger


def reason(err: int) -> str:
    """What an errno from the Xen libraries usually means, in words."""
    return {
        errno.EPERM: "not permitted (run as root, in dom0 or with the needed XSM rights)",
        errno.EACCES: "permission denied (run as root)",
        errno.ESRCH: "no such domain",
        errno.EINVAL: "invalid port or argument",
        errno.ENOENT: "not running on Xen (no /dev/xen device)",
        errno.ENOSPC: "no free port",
        errno.EEXIST: "already bound",
        errno.EBUSY: "busy",
        errno.ENOSYS: "the hypervisor does not implement this operation",
    }.get(err, os.strerror(err).lower() if err else "failed")


def check(rc, call: str, domain: int, port: int | None = None):
    """A library call's return: ``rc`` itself when it succeeded (a port, a count, 0, a pointer), else the
    ChannelError its errno means, naming the call, the domain and the port.  Call it right after the call,
    before another C call can change errno."""
    failed = rc == ffi.NULL if isinstance(rc, ffi.CData) else rc < 0
    if failed:
        err = ffi.errno or errno.EIO
        raise channel_error(call, err, reason(err), domain=domain, port=port)
    return rc
