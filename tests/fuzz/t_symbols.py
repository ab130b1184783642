"""Fuzz target: a guest kernel's symbols, from a System.map ("ADDRESS TYPE NAME" lines) or a vmlinux ELF's
.symtab and .strtab (``--system-map FILE`` of dump and doctor), under a 128 MiB address-space limit above the
worker's own: a section size or a line the file claims must not size an allocation.

Seeds are tests/guestmem_writer.py's guests' System.map and vmlinux, FIFO and 2-level.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import tempfile

from xenevt.memory.foreign import read_system_map

from .harness import target
from .t_kcore import _guest, _guest_2l

_DIR = pathlib.Path(tempfile.mkdtemp(prefix="xenevt-fuzz-symbols-"))
_PARENT = os.getpid()
atexit.register(lambda: os.getpid() == _PARENT and shutil.rmtree(_DIR, ignore_errors=True))


def _seeds() -> list[bytes]:
    from tests import guestmem_writer

    out = []
    for mem, kw in ((_guest(), {"slide": 0x200000}), (_guest_2l(), {"pv": True})):
        g = guestmem_writer.GuestImage(mem, **kw)
        out.append(pathlib.Path(g.system_map(_DIR / "System.map")).read_bytes())
        out.append(pathlib.Path(g.vmlinux(_DIR / "vmlinux")).read_bytes())
    return out


@target("symbols", _seeds(), tokens=[b"\x7fELF", b"linux_banner", b"cpu_queue", b"ffffffff81000000", b" D ", b"\n",
                                     b"\x02\x00\x00\x00", b"\x03\x00\x00\x00", b"\x18\x00\x00\x00\x00\x00\x00\x00"],
        memory_limit=128 << 20)
def run(data: bytes) -> None:
    (_DIR / "map").write_bytes(data)
    read_system_map(str(_DIR / "map"))
