"""Run-time binding (cffi ABI mode) to the Xen tool libraries.

The libraries are opened with dlopen when the ``xen`` backend is first used,
never at import: one build of xenevt works with and without Xen installed,
and ``LD_LIBRARY_PATH`` can put the simulator's libxenevtchn in their place.
Declarations are the public C API of Xen 4.17's xenevtchn.h, xenctrl.h,
xencall.h and xenforeignmemory.h (facts of the ABI: names, signatures and
the layout of struct evtchn_status).
"""

from __future__ import annotations

import glob
import os
import re

from cffi import FFI

from ...errors import BackendUnavailable

ffi = FFI()
ffi.cdef("""
typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;
typedef unsigned long xen_pfn_t;
struct xentoollog_logger;

typedef struct xenevtchn_handle xenevtchn_handle;
xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
int xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid);
int xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid, evtchn_port_t remote_port);
int xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
int xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);
int xenevtchn_restrict(xenevtchn_handle *xce, domid_t domid);

typedef struct xc_interface_core xc_interface;
struct evtchn_status {
    domid_t dom;
    evtchn_port_t port;
    uint32_t status;
    uint32_t vcpu;
    union {
        struct { domid_t dom; } unbound;
        struct { domid_t dom; evtchn_port_t port; } interdomain;
        uint32_t pirq;
        uint32_t virq;
    } u;
};
xc_interface *xc_interface_open(struct xentoollog_logger *logger, struct xentoollog_logger *dombuild_logger,
                                unsigned open_flags);
int xc_interface_close(xc_interface *xch);
int xc_evtchn_alloc_unbound(xc_interface *xch, uint32_t dom, uint32_t remote_dom);
int xc_evtchn_reset(xc_interface *xch, uint32_t dom);
int xc_evtchn_status(xc_interface *xch, struct evtchn_status *status);
int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms, void *info);
int xc_readconsolering(xc_interface *xch, char *buffer, unsigned int *pnr_chars, int clear, int incremental,
                       uint32_t *pindex);
int xc_send_debug_keys(xc_interface *xch, const char *keys);

typedef struct xencall_handle xencall_handle;
xencall_handle *xencall_open(struct xentoollog_logger *logger, unsigned open_flags);
int xencall_close(xencall_handle *xcall);
void *xencall_alloc_buffer(xencall_handle *xcall, size_t size);
void xencall_free_buffer(xencall_handle *xcall, void *p);
int xencall2(xencall_handle *xcall, unsigned int op, uint64_t arg1, uint64_t arg2);

typedef struct xentoollog_logger_stdiostream xentoollog_logger_stdiostream;
xentoollog_logger_stdiostream *xtl_createlogger_stdiostream(FILE *f, int min_level, unsigned flags);
FILE *fopen(const char *path, const char *mode);

typedef struct xenforeignmemory_handle xenforeignmemory_handle;
xenforeignmemory_handle *xenforeignmemory_open(struct xentoollog_logger *logger, unsigned open_flags);
int xenforeignmemory_close(xenforeignmemory_handle *fmem);
void *xenforeignmemory_map(xenforeignmemory_handle *fmem, uint32_t dom, int prot, size_t pages,
                           const xen_pfn_t arr[], int err[]);
int xenforeignmemory_unmap(xenforeignmemory_handle *fmem, void *addr, size_t pages);
""")

LIB_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
            "/usr/local/lib64"]

# what each library is called and which Debian package ships it
LIBRARIES = {
    "xenevtchn": ("libxenevtchn.so.1", "libxenevtchn1"),
    "xenctrl": ("libxenctrl.so.4.*", "libxenmisc4.17"),
    "xencall": ("libxencall.so.1", "libxencall1"),
    "xenforeignmemory": ("libxenforeignmemory.so.1", "libxenforeignmemory1"),
    "xentoollog": ("libxentoollog.so.1", "libxentoollog1"),
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
