"""cffi builder for xenevt._native (out-of-line API mode).

Imports nothing from the rest of the package, so setup.py can run it before
xenevt is importable.  The declarations are csrc/'s API headers themselves:
one header per part serves the C compiler and cdef().
"""

from __future__ import annotations

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")
SOURCES = ["fifo_hv.c", "fifo_guest.c", "fifo_walk.c", "twolevel.c", "simhost.c", "hostfile.c", "evtchn_loop.c"]
# the engine, the simulator's hot path (it uses the first), the xen backend's loop over libxenevtchn
HEADERS = ["xenevt_fifo_api.h", "xenevt_host_api.h", "xenevt_evtchn_api.h"]
CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wconversion", "-Wno-sign-conversion"]


def _rel(path: str) -> str:
    # setuptools wants source paths relative to the project root
    return os.path.relpath(path)


ffibuilder = FFI()
for _header in HEADERS:
    with open(os.path.join(CSRC, _header)) as f:
        ffibuilder.cdef(f.read())
# the fault switches' hook into Python (xenevt/engine/faults.py); cffi's own syntax, so not in a C header
ffibuilder.cdef('extern "Python" uint32_t xe_fault_hook_py(uint32_t point, uint32_t port);')
ffibuilder.set_source(
    "xenevt._native",
    '#include "xenevt_host.h"\n#include "xenevt_evtchn.h"',
    sources=[_rel(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[_rel(CSRC)],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
