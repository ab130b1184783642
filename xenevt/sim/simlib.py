"""Building and locating libxenevtchn-sim.so: Xen's C API over the simulator.

The library is a cffi embedding of xenevt.sim.libglue plus csrc/xenevtchn_sim.c,
declared by csrc/xen_api.h (the header the real binding reads too).
It is built on first use into a cache folder keyed by its sources and the
Python it embeds, so a change rebuilds it and two Pythons do not share one.
It cannot be built with the wheel: the embedded interpreter's init code names
the sys.path of the Python that builds it.  So the C sources come from csrc/ of
a checkout (editable install), else from the copy setup.py's build_py puts in
the installed package (xenevt/sim/_csrc).
The folder holds the library under the names programs link against
(libxenevtchn.so.1, libxenctrl.so.4.17, libxencall.so.1, libxenforeignmemory.so.1,
libxentoollog.so.1),
so ``LD_LIBRARY_PATH=$(xenevt sim libpath) ./program`` runs on the simulator.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import sys
import sysconfig
import tempfile

from .. import capi
from ..errors import XenevtError

LIB_FILE = "libxenevtchn-sim.so"
SONAME = "libxenevtchn.so.1"
ALIASES = ["libxenevtchn.so.1", "libxenevtchn.so", "libxenctrl.so.4.17", "libxenctrl.so", "libxencall.so.1",
           "libxencall.so", "libxentoollog.so.1", "libxentoollog.so", "libxenforeignmemory.so.1",
           "libxenforeignmemory.so"]
PKG, ROOT = capi.PKG, capi.ROOT  # .../xenevt, and the checkout or site-packages holding it
# the library's own C (its fast path is csrc/simhost.c over the engine's C files, as xenevt._native has them)
ENGINE_SOURCES = ["fifo_hv.c", "fifo_guest.c", "fifo_walk.c", "twolevel.c", "simhost.c", "hostfile.c"]
C_SOURCES = [capi.HEADER, "xenevtchn_sim.c", "xenevtchn_sim.h", "xenevt_fifo.h", "xenevt_fifo_api.h", "fifo_internal.h",
             "xenevt_host.h", "xenevt_host_api.h"] + ENGINE_SOURCES
SIM_HEADER = "xenevtchn_sim.h"
SIM_C_MARK = "---- written in C"
CSRC_DIRS = capi.CSRC_DIRS  # checkout first, then installed


class SimLibError(XenevtError):
    pass


def csrc_dir() -> str:
    """The folder holding C_SOURCES: a checkout's csrc/ (its edits count), else the installed package's copy."""
    try:
        return capi.csrc_dir(C_SOURCES)
    except capi.CSourcesMissing:
        raise SimLibError(f"the C sources of libxenevtchn-sim.so ({', '.join(C_SOURCES)}) are in neither "
                          f"{' nor '.join(CSRC_DIRS)}: reinstall xenevt from its sdist or wheel") from None


def own_declarations() -> tuple[str, str]:
    """csrc/xenevtchn_sim.h as cffi reads it: (the functions written in Python, those written in C)."""
    with open(os.path.join(csrc_dir(), SIM_HEADER)) as f:
        own = "".join(line for line in f if not line.lstrip().startswith("#"))
    python_half, c_half = own.split(SIM_C_MARK)
    return python_half.rsplit("\n", 1)[0] + "\n", c_half.split("\n", 1)[1]


def _key() -> str:
    # the init code names where the embedded interpreter imports xenevt from (checkout or site-packages)
    h = hashlib.sha256(sys.version.encode() + sys.prefix.encode() + _init_code().encode())
    csrc = csrc_dir()
    for path in [os.path.join(csrc, name) for name in C_SOURCES] + [os.path.join(PKG, "sim", "libglue.py"),
                                                                     os.path.join(PKG, "capi.py"),
                                                                     os.path.abspath(__file__)]:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xenevt", "simlib")


def _init_code() -> str:
    """Run by the embedded interpreter on the first call: make xenevt importable, install the glue."""
    paths = [ROOT] + [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    return (
        "import sys\n"
        f"for _p in reversed({paths!r}):\n"
        "    if _p not in sys.path:\n"
        "        sys.path.insert(0, _p)\n"
        "from xenevt_simlib import ffi, lib\n"
        "from xenevt.sim.libglue import install\n"
        "install(ffi, lib)\n"
    )


def build(dest: str) -> None:
    from cffi import FFI

    csrc = csrc_dir()
    ffi = FFI()
    # the functions libglue writes in Python; xenevtchn_sim.c includes the whole header and writes the rest
    python_half, c_half = own_declarations()
    ffi.embedding_api(capi.declarations(embedded_only=True) + python_half)
    ffi.cdef(c_half)  # what libglue calls in the C half
    with open(os.path.join(csrc, "xenevtchn_sim.c")) as f:
        ffi.set_source("xenevt_simlib", f.read(), include_dirs=[csrc],
                       extra_compile_args=["-Wall", "-O2", "-std=gnu11"],
                       sources=[os.path.join(csrc, name) for name in ENGINE_SOURCES],
                       extra_link_args=[f"-Wl,-soname,{SONAME}", "-pthread"])
    ffi.embedding_init_code(_init_code())
    tmp = tempfile.mkdtemp(prefix="xenevt-simlib-")
    try:
        out = ffi.compile(tmpdir=tmp, target=LIB_FILE, verbose=False)
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(out, os.path.join(dest, LIB_FILE + ".tmp"))
        os.replace(os.path.join(dest, LIB_FILE + ".tmp"), os.path.join(dest, LIB_FILE))
        for alias in ALIASES:
            link = os.path.join(dest, alias)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(LIB_FILE, link)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def libpath(build_if_missing: bool = True) -> str:
    """The folder holding the simulator's Xen libraries, built there if needed."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise SimLibError(f"this Python ({sys.executable}) has no shared libpython to embed: "
                          "libxenevtchn-sim.so cannot be built with it")
    dest = os.path.join(cache_root(), _key())
    if os.path.exists(os.path.join(dest, LIB_FILE)):
        return dest
    if not build_if_missing:
        raise SimLibError(f"libxenevtchn-sim.so is not built yet (expected in {dest})")
    try:
        build(dest)
    except Exception as e:  # compiler missing, no Python headers, ...
        raise SimLibError(f"cannot build libxenevtchn-sim.so: {type(e).__name__}: {e}") from None
    return dest
