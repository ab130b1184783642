"""The open state file: creating it, mapping and checking it, the host lock, and the journal.

Every update of more than one record goes through ``_transact`` (an intent
record on the journal page, statefile.py's docstring) and ``_apply``, which is
also what ``_recover`` replays after a kill; what each entry does is Xen's rule,
in hypercalls.py.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import signal
import struct
import threading
import time
from contextlib import contextmanager

from .. import abi
from ..abi import (
    ECS_RESERVED,
    EVENT_WORDS_PER_PAGE,
    EVTCHN_FIFO_NR_CHANNELS,
    MAX_EVENT_ARRAY_PAGES,
    PAGE_SIZE,
)
from ..engine import Chan, DomainMemory, Geometry, LayoutError, engine_for, twolevel_for
from ..engine.layout import ABI_2L, ABI_FIFO, CHAN, FREES_WORD, L2_WORDS
from ..errors import StateError
from ..ports import chan_is_open
from .hot import (
    CRASH_SLEEP_ENV,
    OWNER_DIED,
    HostLock,
    HotHost,
    buffer_of,
    format_lock,
    map_faulted,
    map_unwatch,
    map_watch,
    release,
    seconds_from_env,
    upcall_word,
)
from .statedir import StateDir
from .statefile import (
    DEFAULT_XEN,
    DOM_BARE,
    DOM_DYING,
    DOM_ENTRY,
    DOM_GONE,
    DOM_KERNEL_2L,
    DOM_PAUSED,
    DOM_PRIVILEGED,
    DOM_TABLE,
    ENTRIES,
    ENTRY,
    FILE_NAME,
    HEADER,
    HOST_ID,
    HOST_ID_FIELD,
    INTENT,
    INTENT_COMMITTED,
    JOURNAL_AT,
    JOURNAL_FIELD,
    K_CHAN,
    K_CLOSE_WORD,
    K_CONTROL,
    K_DESTROY,
    K_ENABLE,
    K_FREES,
    K_PAGE,
    K_RAISE,
    K_RESET,
    MAGIC,
    MAX_DOMAINS,
    MAX_INTENT_ENTRIES,
    OP_CODES,
    RAISE,
    VERSION,
    XEN_VERSION_FIELD,
    XEN_VERSIONS,
    check_chan,
    check_chans,
    check_file,
    check_journal,
    host_id,
    intent_crc,
    new_host_id,
    read_raise,
    table_end,
)

_INTENT_TAIL = struct.Struct("<7I")  # INTENT_HEADER after its state word
HOT_ENV = "XENEVT_SIM_HOT"  # "python": the hypercalls' Python path only (the reference the C hot path is held to)


def default_state_dir() -> str:
    """``$XENEVT_STATE``, else ``$XDG_RUNTIME_DIR/xenevt``, else ``~/.local/state/xenevt``."""
    if os.environ.get("XENEVT_STATE"):
        return os.environ["XENEVT_STATE"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "xenevt")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "xenevt")


def errtext(e: OSError) -> str:
    return e.strerror.lower() if e.strerror else str(e)


KERNEL_ABIS = {"fifo": ABI_FIFO, "2l": ABI_2L}  # what a simulated Linux kernel may choose at boot (sim init --abi)


def kernel_boot(mem: DomainMemory, two_level: bool) -> None:
    """What a simulated Linux kernel does to its event channels at boot (and after EVTCHNOP_reset, as the kernel
    that follows one does): FIFO, a zeroed control block per vCPU (EVTCHNOP_init_control) then one MASKED array
    page; 2-level, no hypercall: it masks every port (xen_evtchn_mask_all(), all 4096) and its upcall scan
    starts at word 0, bit 0.  Idempotent: a reset redone after a kill runs it again."""
    if two_level:
        with mem.l2_mask() as mask:
            for i in range(L2_WORDS):
                mask[i] = (1 << 64) - 1
        for v in range(mem.nr_vcpus):
            with mem.l2_scan(v) as scan:
                scan[0] = scan[1] = 0
        return
    for v in range(mem.nr_vcpus):
        mem.register_control_block(v)
        with mem.control_block(v) as cb:
            for i in range(len(cb)):
                cb[i] = 0
    mem.set_event_abi(ABI_FIFO)
    mem.add_page()


def create_host(state_dir: str | None, nr_domains: int = 2, nr_vcpus: int = 2, max_ports_dom0: int = 4096,
                max_ports_domu: int = 1024, force: bool = False, xen: str = DEFAULT_XEN,
                bare: tuple[int, ...] = (), abi: str = "fifo", abis: dict[int, str] | None = None) -> str:
    """Create a fresh host (dom0 + domUs) and return its state file's path.

    Each guest boots as Linux does (``kernel_boot``), on the ABI its kernel
    chooses: ``abi`` for every domain, ``abis`` per domain (``"fifo"`` or
    ``"2l"``, as ``xen.fifo_events=0`` makes Linux choose).  A ``bare`` domain
    has no guest kernel: it starts as Xen creates every domain (2-level ABI,
    nothing masked) and changes only by the hypercalls made for it.  ``xen``
    is the Xen version whose rules are followed where versions differ.  The
    file is built aside and renamed into place, so an existing host is never
    left half-written.
    """
    state_dir = state_dir or default_state_dir()
    if xen not in XEN_VERSIONS:
        raise StateError(f"Xen {xen} is not a version the simulator follows (choose from {', '.join(XEN_VERSIONS)})")
    if not 1 <= nr_domains <= MAX_DOMAINS:
        raise StateError(f"domain count {nr_domains} out of range 1..{MAX_DOMAINS}")
    abis = dict(abis or {})
    kernels = {}
    for domid, name in [(d, abi) for d in range(nr_domains)] + sorted(abis.items()):
        if name not in KERNEL_ABIS:
            raise StateError(f"event-channel ABI {name!r} of domain {domid} is not one a guest kernel chooses "
                             f"({' or '.join(KERNEL_ABIS)})")
        kernels[domid] = KERNEL_ABIS[name]
    for domid, name in sorted(abis.items()):
        if not 0 <= domid < nr_domains:
            raise StateError(f"no domain {domid} to give the {name} ABI (the host has domains 0..{nr_domains - 1})")
        if domid in bare:
            raise StateError(f"domain {domid} is bare: it has no kernel to choose the {name} ABI")
    geos = []
    for domid in range(nr_domains):
        ports = max_ports_dom0 if domid == 0 else max_ports_domu
        if not 2 <= ports <= EVTCHN_FIFO_NR_CHANNELS:
            raise StateError(f"port count {ports} out of range 2..{EVTCHN_FIFO_NR_CHANNELS}")
        # a bare domain's array may grow as far as Xen lets any guest's (128 pages), whatever its port limit
        pages = MAX_EVENT_ARRAY_PAGES if domid in bare else -(-ports // EVENT_WORDS_PER_PAGE)
        geo = Geometry(nr_vcpus, pages, ports)
        try:
            geo.validate()
        except LayoutError as e:
            raise StateError(str(e)) from None
        geos.append(geo)
    size = table_end(nr_domains) + sum(g.size for g in geos) + PAGE_SIZE  # header and table, images, journal
    with StateDir(state_dir, create=True) as sd:
        if sd.lstat(FILE_NAME) is not None and not force:
            raise StateError(f"a simulated host already exists at {sd.where(FILE_NAME)} (use --force to replace it)")
        # Ctrl-C or SIGTERM held back from the temporary's making to the `try` that removes it on every failure
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            fd, tmp = sd.create_temp(".host-")
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        try:
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)  # (a signal held back is delivered here)
                _reserve(fd, size, state_dir)
                _build(fd, size, nr_domains, geos, kernels, bare, xen)
                os.fsync(fd)
            finally:
                os.close(fd)
            sd.replace(tmp, FILE_NAME)
        except BaseException:
            sd.unlink(tmp)
            raise
    return os.path.join(state_dir, FILE_NAME)


def _reserve(fd: int, size: int, state_dir: str) -> None:
    """The file's blocks, all of them, before any is written through the mapping: a sparse file on a full disk
    kills the writer with SIGBUS instead."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            st = os.fstatvfs(fd)
            raise StateError(f"cannot create a host of {_size(size)} in {state_dir}: {errtext(e)} "
                             f"({_size(st.f_bavail * st.f_frsize)} free there)", errno=e.errno) from None
        raise StateError(f"cannot create a host of {_size(size)} in {state_dir}: {errtext(e)}", errno=e.errno) from None


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _build(fd: int, size: int, nr_domains: int, geos: list[Geometry], kernels: dict[int, int], bare, xen: str) -> None:
    """Write a new host into the reserved file: the header (a fresh host id), the domain table, each domain as
    its kernel boots it, the journal page's lock."""
    with mmap.mmap(fd, size) as mm:
        HEADER.pack_into(mm, 0, MAGIC, VERSION, nr_domains, size, int(time.time()))
        JOURNAL_AT.pack_into(mm, JOURNAL_FIELD, size - PAGE_SIZE)
        struct.pack_into("<I", mm, XEN_VERSION_FIELD, XEN_VERSIONS[xen])
        HOST_ID.pack_into(mm, HOST_ID_FIELD, new_host_id())
        offset = table_end(nr_domains)
        for domid, geo in enumerate(geos):
            two_level = domid not in bare and kernels[domid] == ABI_2L
            flags = (DOM_PRIVILEGED if domid == 0 else 0) | (DOM_BARE if domid in bare else 0) | \
                (DOM_KERNEL_2L if two_level else 0)
            DOM_ENTRY.pack_into(mm, DOM_TABLE + domid * DOM_ENTRY.size, domid, flags, offset, geo.size)
            mem = DomainMemory.create(geo.nr_vcpus, geo.max_pages, geo.nr_chans, buf=mm, offset=offset)
            mem.update_chan(0, state=ECS_RESERVED)  # port 0 is never used
            if domid not in bare:
                kernel_boot(mem, two_level)
            mem.release()
            del mem
            offset += geo.size
        format_lock(mm, size - PAGE_SIZE)
        mm.flush()


class SimDomain:
    """One domain of the host: its memory, engine and Xen-side facts."""

    def __init__(self, domid: int, flags: int, mem: DomainMemory, entry: memoryview | None = None):
        self.domid = domid
        self.privileged = bool(flags & DOM_PRIVILEGED)
        self.bare = bool(flags & DOM_BARE)
        self.kernel_2l = bool(flags & DOM_KERNEL_2L)  # its kernel chose 2-level: after a reset it stays there
        self._entry = entry  # the domain table entry's words (domid, flags, ...): flags change (pause)
        self.mem = mem
        self._engine = self._l2 = None  # made on first use: `list` and `status` of 168 domains run neither
        self.free_hint = 1  # every port below it is in use, while mem.frees == frees_seen
        self.frees_seen = -1
        self.table_index = 0  # its entry in the file's domain table

    @property
    def engine(self):
        """The FIFO engine over the domain's memory (engine_for)."""
        if self._engine is None:
            self._engine = engine_for(self.mem)
        return self._engine

    @property
    def l2(self):
        """The 2-level engine over the domain's memory (twolevel_for)."""
        if self._l2 is None:
            self._l2 = twolevel_for(self.mem)
        return self._l2

    def close_engines(self) -> None:
        """Let go of the engines made (their views of the mapping) and forget them."""
        for e in (self._engine, self._l2):
            if e is not None:
                e.close()
        self._engine = self._l2 = None

    @property
    def paused(self) -> bool:
        return self._entry is not None and bool(self._entry[1] & DOM_PAUSED)

    @property
    def dying(self) -> bool:
        """Destroyed but still listed (``sim destroy --dying``): every port closed, none can be allocated."""
        return self._entry is not None and bool(self._entry[1] & DOM_DYING)

    @property
    def gone(self) -> bool:
        return self._entry is not None and bool(self._entry[1] & DOM_GONE)

    def set_paused(self, paused: bool) -> None:
        """One aligned store of the entry's flags word (callers hold the host lock)."""
        self._set_flag(DOM_PAUSED, paused)

    def set_destroyed(self, dying: bool) -> None:
        """Dying, or gone: one aligned store of the flags word, so a kill leaves the one or the other."""
        if self._entry is not None:
            self._entry[1] = (self._entry[1] & ~(DOM_DYING | DOM_GONE)) | (DOM_DYING if dying else DOM_GONE)

    def _set_flag(self, flag: int, on: bool) -> None:
        if self._entry is not None:
            self._entry[1] = (self._entry[1] & ~flag) | (flag if on else 0)


class HostFile:
    """SimHost's state-file half: open, map, lock, journal (the hypercalls and the guest build on it)."""

    def __init__(self, state_dir: str | None = None, read_only: bool = False, recover: bool = True,
                 check_records: bool = True):
        """``read_only`` maps a private copy: inspection can never change the shared state.

        The open holds the host lock (shared when read-only), so it never reads a record another process is
        writing.  ``recover`` finishes what a process killed mid-update left (the intent record, a raise under
        way, a consumer gone mid-batch) before the channel records are checked (an intent cut short may have
        left one half written; redoing it writes it whole); read-only, into the private copy only.  ``sim
        check`` opens with ``recover=False, check_records=False`` to see and judge the file as it is.
        """
        self.state_dir = state_dir or default_state_dir()
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
        self._fd = fd
        self._hostlock: HostLock | None = None
        # the C hot path (hot.HotHost), made on first use; False: none for this host (read-only, or the reference)
        self._hot = False if read_only or os.environ.get(HOT_ENV) == "python" else None
        self._hot_h = None  # its xe_host pointer, once made
        self._cbase = None
        self._mm = None
        self._watch = 0  # the mapping's guard (hot.map_watch): a shrink under it is a flag, not SIGBUS
        self._sent: dict[tuple[int, int, int], object] = {}  # the hot send's answers, each made once (NotifyResult)
        self.recovered: list[str] = []  # what recovery finished, one line each (sim check, the kill campaign)
        self._closed = False
        self._consumer_fd: int | None = None
        self._claimed: set[tuple[int, int]] = set()
        self._stats = None
        self._tlock = threading.RLock()  # the host lock excludes threads too; this one keeps a thread's nesting
        self._depth = 0
        self._words: dict[tuple[int, int], object] = {}  # (domain, vCPU) -> its upcall word (a C pointer)
        self._recover_on_lock = recover
        self.domains: dict[int, SimDomain] = {}
        self.gone: dict[int, SimDomain] = {}  # destroyed domains (DOM_GONE): no hypercall finds them
        try:
            # XENEVT_SIM_CRASH_SLEEP=S: sleep up to S s at each step of an update, so that a kill campaign's
            # SIGKILLs land inside updates (tests only); read before the lock is taken, as everything that can fail
            self._crash_sleep = seconds_from_env(CRASH_SLEEP_ENV, 0.0)
            self._hostlock = HostLock(self.path, self._fd, os.fstat(self._fd).st_size, self.dir.reopen_writable)
            with self._hostlock.held() as rc:
                if rc & OWNER_DIED:
                    self.recovered.append("took the host lock from a holder that died holding it")
                self._map()
                if recover and (self._jw[INTENT // 4] or self._jw[RAISE // 4]):
                    self._recover()  # read-only: into the private copy, so inspection sees the update whole
                if check_records:
                    self.check_records()
                if recover and not read_only:
                    self._recover_consumers()
            self._check_mapping()
        except BaseException:
            self.close()
            raise

    def check_records(self) -> None:
        """statefile.check_chans over every domain (one line for the first bad field)."""
        for dom in self.domains.values():
            check_chans(dom.mem, self._nr_chans, self.path)

    def _map(self) -> None:
        """Map the file and check all of it (statefile.check_file) before any engine sees a byte."""
        self._size = os.fstat(self._fd).st_size
        if self._size < abi.PAGE_SIZE:
            raise StateError(f"state file {self.path} is truncated ({self._size} bytes): not a xenevt state file")
        try:
            self._mm = mmap.mmap(self._fd, self._size,
                                 access=mmap.ACCESS_COPY if self.read_only else mmap.ACCESS_WRITE)
        except ValueError:  # (shorter than fstat said a moment ago)
            raise self._resized(os.fstat(self._fd).st_size) from None
        self._cbase = buffer_of("uint8_t[]", self._mm)  # (released in _unmap) C pointers into the mapping
        self._watch = max(map_watch(self._cbase, self._size), 0)  # before any byte is read
        self.domains = {}
        self.gone = {}
        try:
            checked = check_file(self._mm, self._size, self.path, records=False)
            try:
                for i, (domid, flags, mem) in enumerate(checked):
                    at = DOM_TABLE + i * DOM_ENTRY.size
                    table = self.gone if flags & DOM_GONE else self.domains
                    table[domid] = SimDomain(domid, flags, mem, memoryview(self._mm)[at: at + 8].cast("I"))
            except BaseException:
                for dom in (self.domains | self.gone).values():
                    dom.close_engines()
                for _, _, mem in checked:
                    mem.release()
                raise
        except BaseException:
            self.domains = {}
            self._unmap()
            raise
        for i, (domid, _, _) in enumerate(checked):
            (self.domains.get(domid) or self.gone[domid]).table_index = i
        self._nr_chans = {domid: d.mem.nr_chans for domid, d in self.domains.items()}
        self._host_id = host_id(self._mm)
        self._journal = self._size - abi.PAGE_SIZE  # check_file: the header says so
        self._jw = memoryview(self._mm)[self._journal:].cast("I")  # the journal page's words

    @property
    def xen_version(self) -> str:
        """The Xen version the host follows where versions differ (``sim init --xen``)."""
        code = struct.unpack_from("<I", self._mm, XEN_VERSION_FIELD)[0]
        return next(name for name, c in XEN_VERSIONS.items() if c == code)  # (check_file checked it)

    def _unmap(self) -> None:
        if getattr(self, "_hot", None):
            self._hot.close()
        self._hot = False
        self._hot_h = None
        self._words = {}
        if getattr(self, "_cbase", None) is not None:
            release(self._cbase)
            self._cbase = None
        jw = getattr(self, "_jw", None)
        if jw is not None:
            jw.release()
            self._jw = None
        for dom in (self.domains | getattr(self, "gone", {})).values():
            if dom._entry is not None:
                dom._entry.release()
                dom._entry = None
            dom._engine = dom._l2 = None
            dom.mem = None
        self.domains = {}
        self.gone = {}
        if self._mm is None:
            return
        try:
            self._mm.close()
        except BufferError:  # a caller still holds a view; the OS unmaps at exit (watched until then)
            return
        self._mm = None
        map_unwatch(self._watch)
        self._watch = 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._hot:
            self._hot_h = None
            self._hot.close()  # (its views of the counters file first)
        if self._stats is not None:
            self._stats[0].close()
            self._stats = None
        # a consumer that leaves says so: its vCPU shows no consumer pid any more
        for domid, vcpu in self._claimed:
            dom = self.domains.get(domid)
            if dom is not None and dom.mem is not None and dom.mem.consumer(vcpu) == os.getpid():
                dom.mem.set_consumer(vcpu, 0)
        if self._consumer_fd is not None:
            for domid, vcpu in self._claimed:
                fcntl.lockf(self._consumer_fd, fcntl.LOCK_UN, 1, self.consumer_byte(domid, vcpu))
            self._consumer_fd = None
        self._claimed = set()
        faulted = map_faulted(self._watch)
        self._unmap()
        if self._hostlock is not None:
            self._hostlock.close()  # (given back first, if this thread holds it)
        size = os.fstat(self._fd).st_size if faulted else 0
        os.close(self._fd)
        self.dir.close()
        if faulted:  # what was read or written since the shrink was zero pages: the one line says so
            raise self._resized(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def locked(self, check_only: bool = False):
        """The hypervisor's event lock: one process (and one thread in it) changes channel tables at a time.

        It is the host lock in the file (hot.HostLock, taken and given by its ``held()`` alone), the one the C
        hot path takes too.  Whoever takes it first finishes an update whose process died holding it (two word
        reads when there is none).  ``check_only``: take it on a read-only host too, and finish nothing (``sim
        check``).  A file that changed size meanwhile ends it in one StateError, the lock given back.
        """
        if not check_only:
            self._writable()
        with self._tlock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._check_size()  # the lock and journal are the last page: a shrunk file would fault there first
            try:
                with self._hostlock.held() as rc:
                    self._depth = 1
                    try:
                        if rc & OWNER_DIED:
                            self.recovered.append("took the host lock from a holder that died holding it")
                        if not check_only and self._recover_on_lock and (self._jw[INTENT // 4]
                                                                         or self._jw[RAISE // 4]):
                            self._recover()
                        yield
                    finally:
                        self._depth = 0
            finally:
                self._check_mapping()

    def _hot_host(self):
        """The C hot path over this host (hot.HotHost), made on first use; None when there is none (read-only)."""
        if self._hot is None:
            self._hot = False
            if not self.read_only and self._hostlock.usable:
                self._hot = HotHost(self, self._stats_view())
                self._hot_h = self._hot.h
        return self._hot or None

    def _upcall_word(self, dom: SimDomain, vcpu: int):
        """vCPU ``vcpu``'s upcall word, a C pointer into the mapping (kicks and sleeps go through C)."""
        key = (dom.domid, vcpu)
        word = self._words.get(key)
        if word is None:
            word = self._words[key] = upcall_word(self._cbase, dom.mem.offset, vcpu)
        return word

    def _check_size(self) -> None:
        """Cheap, on each use: a file another process shrank would fault past its new end (zero pages: the guard)."""
        size = os.fstat(self._fd).st_size
        if size != self._size or map_faulted(self._watch):
            raise self._resized(size)

    def _check_mapping(self) -> None:
        """After an operation: what it read or wrote was zero pages if the file shrank under it (no system call)."""
        if map_faulted(self._watch):
            raise self._resized(os.fstat(self._fd).st_size)

    def _resized(self, size: int) -> StateError:
        was = f"{self._size} -> {size} bytes" if size != self._size else f"{size} bytes, shorter in between"
        return StateError(f"state file {self.path}: offset {min(size, self._size):#x}: field file_size: the file "
                          f"changed size under us ({was})")

    def _rec(self, dom: SimDomain, port: int) -> Chan:
        """Channel record ``port`` of ``dom``, checked: another process may have written it since the open."""
        return check_chan(dom.mem, port, dom.mem.chan(port), self._nr_chans, self.path)

    def check_current(self) -> None:
        """The file this process mapped is still the host at its path: ``sim init --force`` renames a new host
        over it (and removing it unlinks it), which leaves the old file without a name."""
        if os.fstat(self._fd).st_nlink == 0:
            raise StateError(f"the simulated host at {self.path} was replaced or removed while in use "
                             "(`sim init --force`?): run the command again on the new host", errno=errno.ESTALE)

    def consumer_byte(self, domid: int, vcpu: int) -> int:
        """vCPU ``vcpu``'s byte in the consumer lock file, in a range of this host's own (its identity, 36 bits of
        it): a consumer still on a host this one replaced holds its byte there, not ours."""
        return ((self._host_id & ((1 << 36) - 1)) << 25) + domid * 1024 + vcpu

    def _writable(self) -> None:
        if self.read_only:
            raise StateError(f"state file {self.path} is open read-only here: this command only inspects")

    def fileno(self) -> int:
        return self._fd

    def _crash_point(self) -> None:
        if self._crash_sleep:
            import random  # the kill campaign's sleep only

            time.sleep(random.random() * self._crash_sleep)

    def _transact(self, op: str, caller: int, entries: list[tuple[int, int, int, bytes]]) -> None:
        """Write the intent record, commit it with one aligned store, apply it, clear it (statefile's docstring)."""
        if len(entries) > MAX_INTENT_ENTRIES:
            raise StateError(f"an update of {len(entries)} steps does not fit the intent record "
                             f"({MAX_INTENT_ENTRIES})")
        mm, jw, code = self._mm, self._jw, OP_CODES[op]
        raw = b"".join(ENTRY.pack(kind, domid, index, 0, value) for kind, domid, index, value in entries)
        mm[self._journal + ENTRIES: self._journal + ENTRIES + len(raw)] = raw
        pid = os.getpid()
        seq = (jw[(INTENT + 4) // 4] + 1) & 0xFFFFFFFF
        _INTENT_TAIL.pack_into(mm, self._journal + INTENT + 4, seq, code, caller, pid, len(entries),
                               intent_crc(code, caller, pid, len(entries), raw), 0)  # every field but state
        jw[INTENT // 4] = INTENT_COMMITTED  # the commit point: from here the next lock holder redoes it all
        self._apply(entries)
        jw[INTENT // 4] = 0

    def _apply(self, entries) -> None:
        """Apply intent entries in order; the normal path and the replay are this one function, and every
        entry may run again after a partial run (at-least-once for a raise: Xen guests take spurious events)."""
        for kind, domid, index, value in entries:
            self._crash_point()
            dom = self.domains.get(domid) or self.gone[domid]  # (a destroy redone after its last step)
            mem = dom.mem
            if kind == K_CHAN:
                new = Chan(*CHAN.unpack(value))
                old = mem.chan(index)  # the engine's own fields: where the word is linked now
                new.last_priority, new.last_vcpu = old.last_priority, old.last_vcpu
                mem.set_chan(index, new)
            elif kind == K_FREES:
                struct.pack_into("<I", mem.buffer, 4 * FREES_WORD, struct.unpack("<I", value[:4])[0])
            elif kind == K_CLOSE_WORD:
                self._close_word(dom, index)
            elif kind == K_RAISE:
                if chan_is_open(mem.chan(index)):
                    self._raise(dom, index)
            elif kind == K_ENABLE:
                if chan_is_open(mem.chan(index)):
                    self._guest_enable(dom, index)
            elif kind == K_PAGE:
                self._page(dom, index)
            elif kind == K_RESET:
                self._reset_all(dom)
            elif kind == K_CONTROL:
                self._control_block(dom, index, struct.unpack_from("<I", value)[0])
            elif kind == K_DESTROY:
                self._destroy_all(dom, dying=bool(index))

    @staticmethod
    def _image(chan: Chan) -> bytes:
        return CHAN.pack(chan.state, chan.priority, chan.last_priority, chan.flags, chan.notify_vcpu, chan.last_vcpu,
                         chan.remote_dom, chan.aux, chan.remote_port)

    def _recover(self) -> None:
        """Finish a raise and an intent record that their process left under way (statefile's docstring)."""
        intent = check_journal(self._mm, self._journal, self.path,
                               {d: dom.mem for d, dom in (self.domains | self.gone).items()})
        mark = read_raise(self._mm, self._journal)
        if mark is not None:
            domid, port = mark
            dom = self.domains.get(domid) or self.gone[domid]
            ch = dom.mem.chan(port)
            for v in sorted({ch.notify_vcpu, ch.last_vcpu}):
                self._repair_vcpu(dom, v)
            self._jw[RAISE // 4] = 0
            if dom.mem.event_abi != ABI_FIFO:
                if chan_is_open(ch) and port < abi.EVTCHN_2L_NR_CHANNELS:
                    self._raise(dom, port)  # at least once: the pending bit may not have been set
                    self._l2_announce(dom, port)  # ...or it was, and the selector bit or the upcall were not
            elif chan_is_open(ch) and dom.mem.word(port) is not None:
                self._raise(dom, port)  # at least once: the event may not have been linked
            self.recovered.append(f"finished a raise of port {port} of domain {domid}")
        if intent is not None:
            self._apply(intent.entries)
            self._jw[INTENT // 4] = 0
            self.recovered.append(f"redid {intent.op_name} by domain {intent.caller} (pid {intent.pid}): "
                                  f"{len(intent.entries)} step(s)")
