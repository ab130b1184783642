"""The simulator's hot path in C (csrc/simhost.c, declared in csrc/xenevt_host_api.h): the host lock kept in the
state file, EVTCHNOP_send and _status, the binds' free-port search and the guest's upcall loop over the mapped file.

``HostLock`` is the host lock every process takes (HostFile.locked and the open): a robust, process-shared mutex
in the journal page's first 64 bytes, so a holder killed at any instant is seen by the next taker, which then
runs the journal's recovery.  ``HotHost`` is the C view of an open host (its domains' descriptors built from the
geometry, each pointer checked against the mapping in C); its calls answer the common case and say
``SLOW`` for the rest, which the Python hypercalls then decide, with their own errors.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading

from .. import abi
from .._native import ffi, lib
from ..engine.layout import UPCALL_OFFSET
from ..errors import StateError
from .statefile import DOM_ENTRY, DOM_TABLE, HEADER, JOURNAL_AT, JOURNAL_FIELD, LOCK_SLOT, MAGIC, VERSION

SLOW = lib.XE_HOST_SLOW
INTR = lib.XE_HOST_INTR
RECOVER = lib.XE_LOCK_RECOVER
OWNER_DIED = lib.XE_LOCK_OWNER_DIED
SP_PORT_SHIFT, SP_DOM_SHIFT = 12, 32  # xe_host_send's result: SP bits | port << 12 | domain << 32
SP_BITS, PORT_BITS = (1 << SP_PORT_SHIFT) - 1, (1 << 20) - 1
# xe_port_status (csrc/xenevt_host_api.h): domid, state, notify_vcpu, remote_dom, remote_port, aux, priority, word,
# fifo, has_word
STATUS = struct.Struct("=10I")
# the journal and the lock live in the file's last page: a file this small or odd is no state file (check_file
# says why), and nothing is written into it
_MIN_SIZE = 3 * abi.PAGE_SIZE


def format_lock(buf, journal: int) -> None:
    """Format the lock slot of a journal page in a writable buffer (a new file, before anyone maps it)."""
    view = ffi.from_buffer("uint8_t[]", buf, require_writable=True)
    try:
        rc = lib.xe_lock_init(view + journal + LOCK_SLOT)
    finally:
        ffi.release(view)
    if rc < 0:
        raise StateError(f"cannot make the host lock: {os.strerror(-rc)}", errno=-rc)


class HostLock:
    """The host lock of one open state file: its own shared mapping of the journal page.

    One mapping per open host, used for every take and give: glibc keeps a robust mutex on its holder's list by
    the address it was taken at.  Without write access to the file (a read-only open by another user) there is no
    lock to take: ``usable`` is False and the caller reads without it.
    """

    def __init__(self, path: str, fd: int, size: int, writable=None):
        """``writable(fd)``: a writable descriptor of the same file, or None (statedir.StateDir.reopen_writable)."""
        self.usable = False
        self._mm = None
        self._view = None
        if size < _MIN_SIZE or size % abi.PAGE_SIZE:
            return
        head = os.pread(fd, HEADER.size, 0)
        journal = JOURNAL_AT.unpack(os.pread(fd, JOURNAL_AT.size, JOURNAL_FIELD))[0]
        if len(head) < HEADER.size or HEADER.unpack(head)[:2] != (MAGIC, VERSION) or journal != size - abi.PAGE_SIZE:
            return
        wfd = writable(fd) if writable is not None else None
        if wfd is None:
            return  # read-only to this user (or another user's host, whose lock it never takes): no lock to write
        try:
            self._mm = mmap.mmap(wfd, abi.PAGE_SIZE, offset=journal)
        finally:
            os.close(wfd)
        self._view = ffi.from_buffer("uint8_t[]", self._mm, require_writable=True)
        self.slot = self._view + LOCK_SLOT
        self._fd, self._path = fd, path
        self._format()
        self.usable = True

    def _format(self) -> None:
        """A file made before the lock lived in it (its slot is zero): the lock formatted once, under the flock
        every xenevt took then."""
        if lib.xe_lock_ready(self.slot):
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if not lib.xe_lock_ready(self.slot):
                rc = lib.xe_lock_init(self.slot)
                if rc < 0:
                    raise StateError(f"cannot make the host lock in {self._path}: {os.strerror(-rc)}", errno=-rc)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def take(self) -> int:
        """0, or RECOVER (| OWNER_DIED): the caller finishes what the journal holds."""
        if not self.usable:
            return 0
        rc = lib.xe_lock_take(self.slot)
        if rc == -errno.EINVAL and not lib.xe_lock_ready(self.slot):  # zeroed under us (the page rewritten)
            self._format()
            rc = lib.xe_lock_take(self.slot)
        if rc < 0:
            raise StateError(f"cannot take the host lock: {os.strerror(-rc)}", errno=-rc)
        return rc

    def give(self) -> None:
        if self.usable:
            lib.xe_lock_give(self.slot)

    def holder(self) -> int:
        return lib.xe_lock_holder(self.slot) if self.usable else 0

    def close(self) -> None:
        self.usable = False
        if self._view is not None:
            ffi.release(self._view)
            self._view = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None


class HotHost:
    """An open host's C view: ``xe_host`` over the file's mapping (and the counters file's), one ``xe_host_dom``
    per domain table entry."""

    def __init__(self, host, stats):
        self._host = host
        self._base = ffi.from_buffer("uint8_t[]", host._mm, require_writable=True)
        self._stats_buf = None
        h = self.h = ffi.new("xe_host *")
        entries = sorted((d.table_index, d) for d in (host.domains | host.gone).values())
        self._doms = ffi.new("xe_host_dom[]", max(len(entries), 1))
        h.base = self._base
        h.size = host._size
        h.journal_offset = host._journal
        h.fd = host._fd
        h.nr_doms = len(entries)
        h.doms = self._doms
        h.crash_sleep_us = int(host._crash_sleep * 1e6)
        h.slot = host._hostlock.slot
        if stats is not None:
            smm, offsets = stats
            self._stats_buf = ffi.from_buffer("uint8_t[]", smm, require_writable=True)
            h.stats_base = self._stats_buf
            h.stats_size = len(smm)
        self.index = {}
        for i, (ti, dom) in enumerate(entries):
            mem, geo, d = dom.mem, dom.mem.geometry, self._doms[i]
            self.index[dom.domid] = i
            d.domid = dom.domid
            d.version = geo.version
            d.entry_offset = DOM_TABLE + ti * DOM_ENTRY.size
            d.image_offset = mem.offset
            d.image_size = geo.size
            d.stats_offset = stats[1].get(dom.domid, 1 << 62) if stats is not None else 1 << 62  # (none: no counters)
            d.nr_vcpus, d.max_pages, d.nr_chans = geo.nr_vcpus, geo.max_pages, geo.nr_chans
            d.pages_offset, d.cb_pages_offset, d.tails_offset = geo.pages_offset, geo.cb_pages_offset, geo.tails_offset
            d.guest_offset, d.chans_offset = geo.guest_offset, geo.chans_offset
            if geo.version >= 2:
                d.l2_offset, d.l2_extra_offset, d.l2_scan_offset = (geo.l2_offset, geo.l2_vcpu_extra_offset,
                                                                    geo.l2_scan_offset)
        bad = ffi.new("uint32_t *")
        if lib.xe_host_setup(h, bad) < 0:  # the Python checks passed the same numbers: refuse rather than follow
            self.close()
            raise StateError(f"state file {host.path}: the C hot path refused domain table entry {bad[0]}",
                             errno=errno.EINVAL)
        self.bufs: dict[tuple[int, int], tuple[object, object]] = {}  # (domain, vCPU) -> its consume buffers
        self.status_bufs: dict[int, tuple[bytearray, object]] = {}  # thread -> its status_buffer
        self.first_free = ffi.new("uint32_t *")  # xe_host_free_port's next hint (binds run under the host lock)
        self.address = int(ffi.cast("uintptr_t", h))  # for C code elsewhere in this process (the sim library)

    def buffers(self, domid: int, vcpu: int):
        """The ports and error buffers of one vCPU's consumer (each consumer its own: threads consume at once)."""
        bufs = self.bufs[(domid, vcpu)] = (ffi.new("uint32_t[]", 4096), ffi.new("xe_error *"))
        return bufs

    def status_buffer(self) -> tuple[bytearray, object]:
        """This thread's buffer for xe_host_status's answer (STATUS.unpack reads it) and its C pointer: cffi lets the
        GIL go during the call, so threads each have their own."""
        if len(self.status_bufs) > 64:  # (threads come and go: their idents are reused, their buffers dropped)
            self.status_bufs.clear()
        raw = bytearray(STATUS.size)
        mine = self.status_bufs[threading.get_ident()] = (raw, ffi.from_buffer("xe_port_status *", raw))
        return mine

    def upcall_word(self, domid: int, vcpu: int):
        return ffi.cast("uint32_t *", self._base + self._doms[self.index[domid]].image_offset + UPCALL_OFFSET) + vcpu

    def close(self) -> None:
        if self._base is not None:
            self.h.nr_doms = 0
            ffi.release(self._base)
            self._base = None
        if self._stats_buf is not None:
            ffi.release(self._stats_buf)
            self._stats_buf = None


def upcall_word(cbase, image_offset: int, vcpu: int):
    """vCPU ``vcpu``'s upcall word in a mapping held by ``cbase`` (an ffi buffer)."""
    return ffi.cast("uint32_t *", cbase + image_offset + UPCALL_OFFSET) + vcpu


send = lib.xe_host_send
status = lib.xe_host_status
free_port = lib.xe_host_free_port
consume = lib.xe_host_consume
guest_unmask = lib.xe_host_guest_unmask
kick_word = lib.xe_upcall_bump
sleep_word = lib.xe_upcall_sleep
buffer_of = ffi.from_buffer
release = ffi.release
unpack = ffi.unpack
