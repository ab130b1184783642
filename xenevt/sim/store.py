"""The open state file: its mapping checked whole, the host lock, the size guard, the records read checked.

A HostFile is the part every other part of a simulated host holds (host.py): it knows nothing of Xen's rules.
What a lock holder finishes of an update cut short is the journal's (journal.py), told to the file as
``on_take``; creating a file is create.py's; the layout is statefile.py's.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .. import abi
from ..engine import Chan, DomainMemory
from ..engine.layout import GUEST_UPCALL_ONE
from ..engine.settle import settle
from ..errors import StateError
from .domain import SimDomain
from .hot import (
    CRASH_SLEEP_ENV,
    OWNER_DIED,
    HostLock,
    buffer_of,
    map_faulted,
    map_unwatch,
    map_watch,
    release,
    seconds_from_env,
    upcall_word,
)
from .statedir import StateDir
from .statefile import (
    DOM_ENTRY,
    DOM_GONE,
    DOM_TABLE,
    FILE_NAME,
    INTENT,
    RAISE,
    XEN_VERSION_FIELD,
    XEN_VERSIONS,
    check_chan,
    check_chans,
    check_file,
    host_id,
)

# mappings a closed host could not let go (a view of them was still held), each with its guard's id
_LINGERING: list[tuple[mmap.mmap, int]] = []


def _close_watched(mm: mmap.mmap, watch: int) -> bool:
    """Unmap ``mm`` and then drop its guard; False (both kept) while a view of it is held."""
    try:
        mm.close()
    except BufferError:
        return False
    map_unwatch(watch)
    return True


def _close_lingering() -> None:
    _LINGERING[:] = [(mm, watch) for mm, watch in _LINGERING if not _close_watched(mm, watch)]


def _upcall_counts(fd: int, mem: DomainMemory) -> list[int]:
    """Each vCPU's upcall count in the file itself (DomainMemory.upcall_counts, read past a private mapping)."""
    return [int.from_bytes(os.pread(fd, 4, mem.guest_at(v)), "little") // GUEST_UPCALL_ONE
            for v in range(mem.nr_vcpus)]


def _own_every_page(mm: mmap.mmap, size: int) -> None:
    """Make a private mapping a copy of this instant (called under the host lock): until a page of a private
    mapping is written, Linux shows the file's page itself, so a reader would see the next writer's updates half
    made, after the lock was let go.  Writing one byte of each page back gives the reader its own page."""
    for at in range(0, size, abi.PAGE_SIZE):
        mm[at] = mm[at]


class HostFile:
    """One open state file: mapped, checked, and locked on demand (``locked``)."""

    def __init__(self, state_dir: str, read_only: bool = False):
        """``read_only`` maps a private copy: inspection can never change the shared state.  Nothing is mapped
        until ``open``: the parts that finish an update cut short are made between the two."""
        self.state_dir = state_dir
        self.read_only = read_only
        self.path = os.path.join(self.state_dir, FILE_NAME)
        self.dir = StateDir(self.state_dir, read_only=read_only)  # (the directory's policy: statedir.py)
        try:
            fd = self.dir.open(FILE_NAME, write=not read_only)
        except BaseException:
            self.dir.close()
            raise
        if fd is None:
            self.dir.close()
            raise StateError(f"no simulated host in {self.state_dir}: run `xenevt sim init` first", errno=errno.ENOENT)
        self.fd = fd
        self.cbase = None  # C pointer to the mapping (hot.buffer_of)
        self._mm: mmap.mmap | None = None
        self.size = 0
        self.watch = 0  # the mapping's guard (hot.map_watch): a shrink under it is a flag, not SIGBUS
        self.resize_told = False  # an operation's error has said the file changed size (close need not again)
        self._jw: memoryview | None = None  # the journal page's words
        self.journal = 0  # the journal page's offset
        self.host_id = 0
        self.recovered: list[str] = []  # what recovery finished, one line each (sim check, the kill campaign)
        self.closed = False
        self.tlock = threading.RLock()  # the host lock excludes threads too; this one keeps a thread's nesting
        self.depth = 0  # how deep this thread is in ``locked`` (0: not holding the lock)
        self.words: dict[tuple[int, int], object] = {}  # (domain, vCPU) -> its upcall word (a C pointer)
        self.domains: dict[int, SimDomain] = {}
        self.gone: dict[int, SimDomain] = {}  # destroyed domains (DOM_GONE): no hypercall finds them
        self.nr_chans: dict[int, int] = {}
        self.on_take: Callable[[], None] | None = None  # run by each take of the lock (journal.Journal.finish)
        # XENEVT_SIM_CRASH_SLEEP=S: sleep up to S s at each step of an update, so that a kill campaign's
        # SIGKILLs land inside updates (tests only); read before the lock is taken, as everything that can fail
        try:
            self.crash_sleep = seconds_from_env(CRASH_SLEEP_ENV, 0.0)
            self.hostlock = HostLock(self.path, self.fd, os.fstat(self.fd).st_size, self.dir.reopen_writable)
        except BaseException:
            self.closed = True
            os.close(self.fd)
            self.dir.close()
            raise

    @property
    def mm(self) -> mmap.mmap:
        """The mapping (a private copy when read-only)."""
        if self._mm is None:
            raise StateError(f"state file {self.path} is not mapped (the host is closed)")
        return self._mm

    @property
    def jw(self) -> memoryview:
        """The journal page's words."""
        if self._jw is None:
            raise StateError(f"state file {self.path} is not mapped (the host is closed)")
        return self._jw

    def open(self, at_open: Callable[[], None]) -> None:
        """Map and check the file under the host lock (shared when read-only), so it never reads a record another
        process is writing; then ``at_open`` (still under the lock: what recovery finishes, the records' check).
        On any failure the file is closed."""
        try:
            with self.hostlock.held() as rc:
                if rc & OWNER_DIED:
                    self.recovered.append("took the host lock from a holder that died holding it")
                self._map()
                at_open()
            self.check_mapping()
        except BaseException:
            self.close()
            raise

    def journal_marked(self) -> bool:
        """Whether the journal holds an intent or a raise left under way (two word reads: journal.py finishes it)."""
        jw = self._jw
        return jw is not None and bool(jw[INTENT // 4] or jw[RAISE // 4])

    def check_records(self) -> None:
        """statefile.check_chans over every domain (one line for the first bad field)."""
        for dom in self.domains.values():
            check_chans(dom.mem, self.nr_chans, self.path)

    def _map(self) -> None:
        """Map the file and check all of it (statefile.check_file) before any engine sees a byte."""
        self.size = os.fstat(self.fd).st_size
        if self.size < abi.PAGE_SIZE:
            raise StateError(f"state file {self.path} is truncated ({self.size} bytes): not a xenevt state file")
        try:
            self._mm = mm = mmap.mmap(self.fd, self.size,
                                      access=mmap.ACCESS_COPY if self.read_only else mmap.ACCESS_WRITE)
        except ValueError:  # (shorter than fstat said a moment ago)
            raise self.resized(os.fstat(self.fd).st_size) from None
        self.cbase = buffer_of("uint8_t[]", mm)  # (released in unmap) C pointers into the mapping
        self.watch = max(map_watch(self.cbase, self.size), 0)  # before any byte is read
        if self.read_only:
            _own_every_page(mm, self.size)
        self.domains = {}
        self.gone = {}
        try:
            checked = check_file(mm, self.size, self.path, records=False)
            try:
                for i, (domid, flags, mem) in enumerate(checked):
                    at = DOM_TABLE + i * DOM_ENTRY.size
                    table = self.gone if flags & DOM_GONE else self.domains
                    table[domid] = SimDomain(domid, flags, mem, memoryview(mm)[at: at + 8].cast("I"))
            except BaseException:
                for dom in (self.domains | self.gone).values():
                    dom.close_engines()
                for _, _, mem in checked:
                    mem.release()
                raise
        except BaseException:
            self.domains = {}
            self.unmap()
            raise
        for i, (domid, _, _) in enumerate(checked):
            (self.domains.get(domid) or self.gone[domid]).table_index = i
        if self.read_only:
            self._settle(mm)
        self.nr_chans = {domid: d.mem.nr_chans for domid, d in self.domains.items()}
        self.host_id = host_id(mm)
        self.journal = self.size - abi.PAGE_SIZE  # check_file: the header says so
        self._jw = memoryview(mm)[self.journal:].cast("I")  # the journal page's words

    def _settle(self, mm: mmap.mmap) -> None:
        """A private copy's guest queues made of one moment (under the host lock, which no guest's consumer takes):
        each domain's image (with a guest kernel) read again from the file while an upcall ran or started
        meanwhile (settle.py), as DomainMemory.settled_snapshot does for a live one; what stays unsettled is
        marked so."""
        for dom in self.domains.values():
            mem = dom.mem
            mem.settled = True
            if dom.bare:
                continue
            start, size = mem.offset, len(mem.buffer)

            def counts(mem: DomainMemory = mem) -> list[int]:
                return _upcall_counts(self.fd, mem)

            def recopy(start: int = start, size: int = size) -> None:
                data = os.pread(self.fd, size, start)
                if len(data) != size:
                    raise self.resized(os.fstat(self.fd).st_size)
                mm[start: start + size] = data

            _, mem.settled = settle(counts, recopy)

    @property
    def xen_version(self) -> str:
        """The Xen version the host follows where versions differ (``sim init --xen``)."""
        code = struct.unpack_from("<I", self.mm, XEN_VERSION_FIELD)[0]
        return next(name for name, c in XEN_VERSIONS.items() if c == code)  # (check_file checked it)

    def unmap(self) -> None:
        """Let the mapping go (whoever made C views of it, hot.HotHost, let theirs go first)."""
        self.words = {}
        if self.cbase is not None:
            release(self.cbase)
            self.cbase = None
        if self._jw is not None:
            self._jw.release()
            self._jw = None
        for dom in (self.domains | self.gone).values():
            if dom._entry is not None:
                dom._entry.release()
                dom._entry = None
            dom._engine = dom._l2 = None
            dom.mem = None  # type: ignore[assignment]  # (let go: a use after close fails at once)
        self.domains = {}
        self.gone = {}
        _close_lingering()
        if self._mm is None:
            return
        mm, watch = self._mm, self.watch
        self._mm, self.watch = None, 0
        if not _close_watched(mm, watch):
            # a caller still holds a view: the mapping stays, watched, and referenced here, so it is never unmapped
            # behind its guard's back (a guard left over an address the kernel hands out again would turn a later
            # SIGBUS there into zero pages over whatever was mapped next); closed at a later unmap, once free
            _LINGERING.append((mm, watch))

    def close(self) -> None:
        """Unmap and close; the parts holding views of the mapping (the C hot path, the consumers' pids) close
        first (host.SimHost.close)."""
        if self.closed:
            return
        self.closed = True
        faulted = map_faulted(self.watch)
        self.unmap()
        self.hostlock.close()  # (given back first, if this thread holds it)
        size = os.fstat(self.fd).st_size if faulted else 0
        os.close(self.fd)
        self.dir.close()
        if faulted and not self.resize_told:  # what was read or written since the shrink was zero pages: said once
            raise self.resized(size)

    @contextmanager
    def locked(self, check_only: bool = False) -> Iterator[None]:
        """The hypervisor's event lock: one process (and one thread in it) changes channel tables at a time.

        It is the host lock in the file (hot.HostLock, taken and given by its ``held()`` alone), the one the C
        hot path takes too.  Whoever takes it first finishes an update whose process died holding it (two word
        reads when there is none).  ``check_only``: take it on a read-only host too, and finish nothing (``sim
        check``).  A file that changed size meanwhile ends it in one StateError, the lock given back.
        """
        if not check_only:
            self.writable()
        with self.tlock:
            if self.depth:
                self.depth += 1
                try:
                    yield
                finally:
                    self.depth -= 1
                return
            self.check_size()  # the lock and journal are the last page: a shrunk file would fault there first
            try:
                with self.hostlock.held() as rc:
                    self.depth = 1
                    try:
                        if rc & OWNER_DIED:
                            self.recovered.append("took the host lock from a holder that died holding it")
                        if not check_only and self.on_take is not None:
                            self.on_take()
                        yield
                    finally:
                        self.depth = 0
            finally:
                self.check_mapping()

    def upcall_word(self, dom: SimDomain, vcpu: int):
        """vCPU ``vcpu``'s upcall word, a C pointer into the mapping (kicks and sleeps go through C)."""
        key = (dom.domid, vcpu)
        word = self.words.get(key)
        if word is None:
            word = self.words[key] = upcall_word(self.cbase, dom.mem.offset, vcpu)
        return word

    def check_size(self) -> None:
        """Cheap, on each use: a file another process shrank would fault past its new end (zero pages: the guard)."""
        size = os.fstat(self.fd).st_size
        if size != self.size or map_faulted(self.watch):
            raise self.resized(size, told=True)

    def check_mapping(self) -> None:
        """After an operation: what it read or wrote was zero pages if the file shrank under it (no system call)."""
        if map_faulted(self.watch):
            raise self.resized(os.fstat(self.fd).st_size, told=True)

    def resized(self, size: int, told: bool = False) -> StateError:
        """The one line for a file that changed size under us; ``told``: it goes to the caller of an operation,
        so closing the host does not say it a second time."""
        self.resize_told = self.resize_told or told
        was = f"{self.size} -> {size} bytes" if size != self.size else f"{size} bytes, shorter in between"
        return StateError(f"state file {self.path}: offset {min(size, self.size):#x}: field file_size: the file "
                          f"changed size under us ({was})")

    def rec(self, dom: SimDomain, port: int) -> Chan:
        """Channel record ``port`` of ``dom``, checked: another process may have written it since the open."""
        return check_chan(dom.mem, port, dom.mem.chan(port), self.nr_chans, self.path)

    def check_current(self) -> None:
        """The file this process mapped is still the host at its path: ``sim init --force`` renames a new host
        over it (and removing it unlinks it), which leaves the old file without a name."""
        if os.fstat(self.fd).st_nlink == 0:
            raise StateError(f"the simulated host at {self.path} was replaced or removed while in use "
                             "(`sim init --force`?): run the command again on the new host", errno=errno.ESTALE)

    def consumer_byte(self, domid: int, vcpu: int) -> int:
        """vCPU ``vcpu``'s byte in the consumer lock file, in a range of this host's own (its identity, 36 bits of
        it): a consumer still on a host this one replaced holds its byte there, not ours."""
        return ((self.host_id & ((1 << 36) - 1)) << 25) + domid * 1024 + vcpu

    def writable(self) -> None:
        if self.read_only:
            raise StateError(f"state file {self.path} is open read-only here: this command only inspects")

    def fileno(self) -> int:
        return self.fd

    def crash_point(self) -> None:
        if self.crash_sleep:
            import random  # the kill campaign's sleep only

            time.sleep(random.random() * self.crash_sleep)

