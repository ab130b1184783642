"""Xen's tool-library C API, declared once in csrc/xen_api.h, as text for cffi.

Both the real binding (backend/xen/libs.py, cffi ABI mode) and the
simulator's libxenevtchn (sim/simlib.py, cffi embedding) read that header
(pygit2 keeps its cdefs in header files the same way), so the two cannot
drift.  A checkout reads its csrc/; an installed xenevt reads the copy that
setup.py's build_py puts into xenevt/sim/_csrc.
"""

from __future__ import annotations

import os

from .errors import XenevtError

HEADER = "xen_api.h"
PKG = os.path.dirname(os.path.abspath(__file__))  # .../xenevt
ROOT = os.path.dirname(PKG)  # the checkout, or site-packages when installed
CSRC_DIRS = [os.path.join(ROOT, "csrc"), os.path.join(PKG, "sim", "_csrc")]  # checkout first, then installed
# the header's line after which come the functions the simulator's library writes in C, not in Python
C_ONLY_MARK = "---- implemented in C"


class CSourcesMissing(XenevtError):
    """Neither a checkout's csrc/ nor the installed copy holds the C sources."""


def csrc_dir(names: list[str] | tuple[str, ...] = (HEADER,)) -> str:
    """The folder holding ``names``: a checkout's csrc/ (its edits count), else the installed package's copy."""
    for d in CSRC_DIRS:
        if all(os.path.isfile(os.path.join(d, name)) for name in names):
            return d
    raise CSourcesMissing(f"the C sources {', '.join(names)} are in neither {' nor '.join(CSRC_DIRS)}: "
                          "reinstall xenevt from its sdist or wheel")


def declarations(embedded_only: bool = False) -> str:
    """The header as cffi reads it (preprocessor lines dropped: they are for the C compiler).

    ``embedded_only``: just the types and the functions the simulator's library writes in Python (its
    ``embedding_api``); otherwise everything, the C-written functions too."""
    with open(os.path.join(csrc_dir(), HEADER)) as f:
        text = f.read()
    if embedded_only:
        text = text[: text.index(C_ONLY_MARK)].rsplit("\n", 1)[0]
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#"))
