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
import math
import mmap
import os
import signal
import struct
import sys
import threading
import time
from typing import Any

from .. import abi
from .._native import ffi, lib
from ..engine.layout import UPCALL_OFFSET
from ..errors import StateError
from .statefile import DOM_ENTRY, DOM_TABLE, HEADER, JOURNAL_AT, JOURNAL_FIELD, LOCK_SLOT, MAGIC, VERSIONS

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


# The host lock's waits: taken in slices of SLICE_NS, so Ctrl-C stops a waiter; after PATIENCE_ENV seconds (default
# 5) a waiter says once, in one line, who holds it and whether that process is alive
SLICE_NS = 100_000_000
PATIENCE_ENV = "XENEVT_SIM_LOCK_PATIENCE"
CRASH_SLEEP_ENV = "XENEVT_SIM_CRASH_SLEEP"  # (HostFile's kill-campaign sleeps; read, like this one, before a take)
# signals whose Python handlers (KeyboardInterrupt, a SIGTERM handler's exception) wait while a take is recorded
DEFERRED_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
_kept: list = []  # lock pages held by another thread of this process when their host was closed (see close)


def seconds_from_env(name: str, default: float) -> float:
    """A finite, non-negative number of seconds from the environment (one line naming the variable otherwise)."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise StateError(f"{name}={text!r} is not a number of seconds (finite, 0 or more)")
    return value


def alive(pid: int) -> bool:
    """Whether a process or thread id names a live one (a zombie counts: it has not been reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return os.path.exists(f"/proc/{pid}")  # (a thread of a live process: kill names processes only)
    except PermissionError:
        pass
    return True


class HostLock:
    """The host lock of one open state file: its own shared mapping of the journal page.

    One mapping per open host, used for every take and give: glibc keeps a robust mutex on its holder's list by
    the address it was taken at, and the kernel walks that list at the holder's exit, so the page must stay
    mapped while it is held (``close`` gives it back first).  Taken only through ``held()``: the take and its
    give in one construct.  Without write access to the file (a read-only open by another user) there is no
    lock to take: ``usable`` is False and the caller reads without it.
    """

    def __init__(self, path: str, fd: int, size: int, writable=None):
        """``writable(fd)``: a writable descriptor of the same file, or None (statedir.StateDir.reopen_writable)."""
        self.usable = False
        self._mm = None
        self._view = None
        self._watch = 0
        self.patience = seconds_from_env(PATIENCE_ENV, 5.0)
        if size < _MIN_SIZE or size % abi.PAGE_SIZE:
            return
        head = os.pread(fd, HEADER.size, 0)
        journal = JOURNAL_AT.unpack(os.pread(fd, JOURNAL_AT.size, JOURNAL_FIELD))[0]
        if len(head) < HEADER.size or HEADER.unpack(head)[0] != MAGIC or HEADER.unpack(head)[1] not in VERSIONS \
                or journal != size - abi.PAGE_SIZE:
            return
        wfd = writable(fd) if writable is not None else None
        if wfd is None:
            return  # read-only to this user (or another user's host, whose lock it never takes): no lock to write
        try:
            self._mm = mmap.mmap(wfd, abi.PAGE_SIZE, offset=journal)
        except ValueError:  # (shorter than fstat said a moment ago)
            raise StateError(f"state file {path}: the file changed size under us ({size} -> "
                             f"{os.fstat(fd).st_size} bytes)") from None
        finally:
            os.close(wfd)
        self._view = ffi.from_buffer("uint8_t[]", self._mm, require_writable=True)
        self._watch = max(lib.xe_map_watch(self._view, abi.PAGE_SIZE), 0)  # (a shrink: zero pages, not SIGBUS)
        self.slot = self._view + LOCK_SLOT
        self._fd, self._path, self._size = fd, path, size
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

    def held(self) -> Held:
        """``with lock.held() as rc:`` the lock for the block; rc is 0 or RECOVER (| OWNER_DIED): the caller
        finishes what the journal holds.  A failure or a signal at any point of the take gives it back."""
        return Held(self)

    def _take(self, mask) -> int:
        """Called by Held with DEFERRED_SIGNALS blocked (``mask``: as they were); the first attempt is made
        blocked, a wait's slices with them let through (Ctrl-C stops a waiter), and they are blocked again once
        taken.  The mutex itself is the one record of who holds it: Held's error path asks it."""
        if not self.usable:
            return 0
        rc = lib.xe_lock_take_for(self.slot, 0)
        start = said = None
        while rc == -errno.ETIMEDOUT or rc == -errno.EINVAL:
            if rc == -errno.EINVAL:
                if lib.xe_lock_ready(self.slot):
                    break
                self._format()  # zeroed under us (the page rewritten)
                rc = lib.xe_lock_take_for(self.slot, 0)
                continue
            _restore(mask)
            now = time.monotonic()
            start = now if start is None else start
            owner = lib.xe_lock_owner(self.slot)
            rc = self._take_over(owner) if owner and not alive(owner) else None
            if rc is None:
                if said is None and now - start >= self.patience:
                    said = True
                    self._say_waiting(now - start)
                rc = lib.xe_lock_take_for(self.slot, SLICE_NS)
            _defer()
        if lib.xe_map_faulted(self._watch):  # (its page, the file's last, went under us: Held gives it back)
            raise StateError(f"state file {self._path}: the file changed size under us ({self._size} -> "
                             f"{os.fstat(self._fd).st_size} bytes)")
        if rc < 0:
            raise StateError(f"cannot take the host lock of {self._path}: {os.strerror(-rc)}", errno=-rc)
        return rc

    def _take_over(self, owner: int) -> int | None:
        """A lock whose holding thread is gone but which still names it: its robust list could not reach the
        page (unmapped while held, by a xenevt before the lock's give-back).  Formatted again (one taker-over at
        a time, under the flock) and taken as from a holder that died; None when it moved on meanwhile."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if lib.xe_lock_owner(self.slot) != owner or alive(owner):
                return None
            rc = lib.xe_lock_take_over(self.slot, owner)
            if rc == -errno.EAGAIN:
                return None
            if rc < 0:
                raise StateError(f"cannot take over the host lock of {self._path}: {os.strerror(-rc)}", errno=-rc)
            rc = lib.xe_lock_take_for(self.slot, SLICE_NS)
            return rc | RECOVER | OWNER_DIED if rc >= 0 else rc
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _say_waiting(self, waited: float) -> None:
        holder, owner = lib.xe_lock_holder(self.slot), lib.xe_lock_owner(self.slot)
        who = f"pid {holder}" if holder else f"thread {owner}"
        if holder and owner and owner != holder:
            who += f" (thread {owner})"
        state = "alive" if alive(holder or owner) else "gone"
        sys.stderr.write(f"xenevt: waiting for the host lock of {self._path}: held by {who}, {state}, for "
                         f"{waited:.0f} s (Ctrl-C to stop)\n")
        sys.stderr.flush()

    def holder(self) -> int:
        return lib.xe_lock_holder(self.slot) if self.usable else 0

    def close(self) -> None:
        """Given back first if this thread holds it (an unmapped page held is a lock no one can recover); held
        by another thread of this process, its page stays mapped until the process ends (the kernel then gives
        it back through the robust list)."""
        self.usable = False
        if self._view is None:
            return
        if not lib.xe_lock_give_mine(self.slot):
            owner = lib.xe_lock_owner(self.slot)
            if owner and lib.xe_lock_holder(self.slot) == os.getpid() and os.path.exists(f"/proc/self/task/{owner}"):
                _kept.append((self._mm, self._view))
                self._mm = self._view = None
                return
        lib.xe_map_unwatch(self._watch)
        self._watch = 0
        ffi.release(self._view)
        self._view = None
        if self._mm is not None:
            self._mm.close()
        self._mm = None

    def __del__(self):
        if getattr(self, "_view", None) is not None:
            self.close()


class Held:
    """The host lock for one ``with`` block (HostLock.held): on the main thread, DEFERRED_SIGNALS stay blocked
    from the take to the give, so Python's handlers run before the take or after the give, never between."""

    __slots__ = ("_lock", "_mask")

    def __init__(self, lock: HostLock):
        self._lock = lock
        self._mask = None

    def __enter__(self) -> int:
        lock = self._lock
        self._mask = _defer()
        try:
            return lock._take(self._mask)
        except BaseException:
            if lock.usable:
                lib.xe_lock_give_mine(lock.slot)  # one C call: the check and the give with no Python between
            _restore(self._mask)
            raise

    def __exit__(self, *exc) -> None:
        lock = self._lock
        if lock.usable:
            lib.xe_lock_give(lock.slot)
        _restore(self._mask)  # (a signal that came meanwhile is raised here, the lock given)


def _defer():
    """DEFERRED_SIGNALS blocked in this thread, when it is the one Python runs signal handlers in."""
    if threading.current_thread() is threading.main_thread():
        return signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
    return None


def _restore(mask) -> None:
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class HotHost:
    """An open host's C view: ``xe_host`` over the file's mapping (and the counters file's), one ``xe_host_dom``
    per domain table entry."""

    def __init__(self, host, stats):
        """``host``: the open file (store.HostFile); ``stats``: its counters' view (stats.Stats.view)."""
        self._base = self._stats_buf = None
        self._stats_watch = 0
        self.h = ffi.new("xe_host *")
        try:
            self._build(host, stats)
        except BaseException:  # (the views let go: the host's mappings can then be closed)
            self.close()
            raise

    def _build(self, host, stats) -> None:
        h = self.h
        self._base = ffi.from_buffer("uint8_t[]", host.mm, require_writable=True)
        entries = sorted((d.table_index, d) for d in (host.domains | host.gone).values())
        self._doms = ffi.new("xe_host_dom[]", max(len(entries), 1))
        h.base = self._base
        h.size = host.size
        h.journal_offset = host.journal
        h.fd = host.fd
        h.nr_doms = len(entries)
        h.doms = self._doms
        h.crash_sleep_us = min(int(host.crash_sleep * 1e6), 0xFFFFFFFF)
        h.slot = host.hostlock.slot
        h.map_id = host.watch
        if stats is not None:
            smm, offsets = stats
            self._stats_buf = ffi.from_buffer("uint8_t[]", smm, require_writable=True)
            self._stats_watch = max(lib.xe_map_watch(self._stats_buf, len(smm)), 0)  # (a shrunk counters file)
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
        self.bufs: dict[tuple[int, int], tuple[Any, Any]] = {}  # (domain, vCPU) -> its consume buffers
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
            lib.xe_map_unwatch(self._stats_watch)  # (its mapping is Stats's, closed after this)
            self._stats_watch = 0


def upcall_word(cbase, image_offset: int, vcpu: int):
    """vCPU ``vcpu``'s upcall word in a mapping held by ``cbase`` (an ffi buffer)."""
    return ffi.cast("uint32_t *", cbase + image_offset + UPCALL_OFFSET) + vcpu


send = lib.xe_host_send
status = lib.xe_host_status
free_port = lib.xe_host_free_port
consume = lib.xe_host_consume
guest_unmask = lib.xe_host_guest_unmask
map_watch = lib.xe_map_watch  # (an id >= 1, or -errno: unwatched, 0)
map_unwatch = lib.xe_map_unwatch
map_faulted = lib.xe_map_faulted  # (0 for id 0)
kick_word = lib.xe_upcall_bump
sleep_word = lib.xe_upcall_sleep
buffer_of = ffi.from_buffer
release = ffi.release
unpack = ffi.unpack
