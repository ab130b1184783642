"""Another domain's memory, as dom0 reaches it: frames copied through privcmd (libxenforeignmemory) and a guest
virtual address walked to its frame through the guest's page tables (libxenctrl).

The backend's map_frames and translate_address (__init__.py) call these with its handles; a memory source that
reads a guest kernel (memory/foreign.py) goes through the backend, never here.
"""

from __future__ import annotations

import errno
from typing import Any

from ...errors import BackendUnavailable, channel_error
from . import libs
from .libs import check, reason


def map_frames(logger: Any, owner: int, domain: int, gfns: list[int]) -> list[bytes]:
    """Copy frames ``gfns`` of ``domain`` (mapped as ``owner``: DOMID_SELF for our own) read-only; one error
    names the frame."""
    fm = libs.load("xenforeignmemory")
    h = fm.xenforeignmemory_open(logger, 0)
    if h == libs.ffi.NULL:
        err = libs.ffi.errno
        raise BackendUnavailable(f"cannot open /dev/xen/privcmd (libxenforeignmemory): {reason(err)} "
                                 f"({errno.errorcode.get(err, err)})")
    try:
        arr = libs.ffi.new("xen_pfn_t[]", gfns)
        errs = libs.ffi.new("int[]", len(gfns))
        addr = check(fm.xenforeignmemory_map(h, owner, 1, len(gfns), arr, errs), "map frames of",  # PROT_READ
                     domain)
        try:
            bad = [(g, -errs[i]) for i, g in enumerate(gfns) if errs[i]]
            if bad:
                g, err = bad[0]
                why = "not a frame this domain may map" if err == errno.EINVAL else reason(err)
                raise channel_error(f"map frame {g:#x} of", err, why, domain=domain)
            return [bytes(libs.ffi.buffer(libs.ffi.cast("char *", addr) + i * 4096, 4096))
                    for i in range(len(gfns))]
        finally:
            fm.xenforeignmemory_unmap(h, addr, len(gfns))
    finally:
        fm.xenforeignmemory_close(h)


def translate_address(ctrl: Any, xc: Any, domain: int, vcpu: int, virt: int) -> int | None:
    """The frame behind ``domain``'s virtual address ``virt`` as vCPU ``vcpu``'s page tables map it
    (xc_translate_foreign_address: an MFN on PV, a GFN on HVM, what map_frames takes); None where no page
    is mapped there."""
    try:
        translate = ctrl.xc_translate_foreign_address
    except AttributeError:  # a libxenctrl without it: say so, once
        raise BackendUnavailable(f"this libxenctrl ({libs.loaded_path('xenctrl')}) has no "
                                 "xc_translate_foreign_address: cannot walk a guest's page tables") from None
    libs.ffi.errno = 0
    frame = translate(xc, domain, vcpu, virt)
    if frame:
        return frame
    err = libs.ffi.errno
    if err in (0, errno.EADDRNOTAVAIL):  # a page-table entry not present: nothing mapped at virt
        return None
    if err == errno.EOPNOTSUPP:
        raise BackendUnavailable(f"this libxenctrl ({libs.loaded_path('xenctrl')}) cannot walk a guest's page "
                                 "tables (EOPNOTSUPP: the simulator's library runs no guest kernel)")
    raise channel_error(f"walk vCPU {vcpu}'s page tables (at {virt:#x}) of", err, reason(err), domain=domain)
