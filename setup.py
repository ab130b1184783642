"""Build glue: setuptools runs the cffi builder to compile xenevt._native, and build_py ships the C sources of
the simulator's libxenevtchn inside the package (xenevt/sim/simlib.py builds that library on first use, for the
Python that runs it, so it cannot be compiled here)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

# csrc/ stays at the top of the checkout (one copy in git); an installed xenevt finds these in xenevt/sim/_csrc
# xen_api.h: the binding reads it too (xenevt.capi); the rest: the library's C fast path over the engine's C
SIMLIB_SOURCES = ["xenevtchn_sim.c", "xen_api.h", "xenevtchn_sim.h", "xenevt_fifo.h", "xenevt_fifo_api.h",
                  "fifo_internal.h", "xenevt_host.h", "xenevt_host_api.h", "fifo_hv.c", "fifo_guest.c", "fifo_walk.c",
                  "twolevel.c", "simhost.c", "hostfile.c"]
SIMLIB_PACKAGE_DIR = os.path.join("xenevt", "sim", "_csrc")


class BuildPyWithCsrc(build_py):
    """build_py that also copies csrc/'s simulator-library sources into the built package."""

    def _csrc_mapping(self) -> dict[str, str]:
        return {os.path.join(self.build_lib, SIMLIB_PACKAGE_DIR, name): os.path.join("csrc", name)
                for name in SIMLIB_SOURCES}

    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads csrc/ of the checkout itself
            return
        for dst, src in self._csrc_mapping().items():
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst, preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        if self.editable_mode:  # the base class answers from get_output_mapping()
            return super().get_outputs(include_bytecode)
        return super().get_outputs(include_bytecode) + list(self._csrc_mapping())

    def get_output_mapping(self):
        return {**super().get_output_mapping(), **self._csrc_mapping()}


setup(cffi_modules=["xenevt/_build_native.py:ffibuilder"], cmdclass={"build_py": BuildPyWithCsrc})
