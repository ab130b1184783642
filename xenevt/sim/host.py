"""The embedded simulated Xen host: Xen's event-channel rules over a state file.

One memory-mapped file holds every domain's FIFO memory (the engine's
DomainMemory layout), so several processes share one host: hypervisor-side
operations take an exclusive file lock (Xen's event lock), guests consume
lock-free with atomics on the shared words, and a consumer sleeps on its
vCPU's upcall word (futex) until an event is raised.

The hypercalls follow xen/common/event_channel.c; the guest kernel's part
(expanding the array before using a port, unmasking it, masking on close)
follows Linux drivers/xen/events/.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import random
import struct
import tempfile
import threading
import time
from contextlib import contextmanager

from .. import abi
from ..abi import (
    ECS_FREE,
    ECS_INTERDOMAIN,
    ECS_IPI,
    ECS_PIRQ,
    ECS_RESERVED,
    ECS_TO_EVTCHNSTAT,
    ECS_UNBOUND,
    ECS_VIRQ,
    NR_VIRQS,
    PER_VCPU_VIRQS,
    STATES,
)
from ..engine import SP, Chan, Consume, DomainMemory, Geometry, LayoutError, engine_for
from ..engine.layout import CHAN, FREES_WORD, HEADER_FIELDS
from ..errors import ChannelError, StateError, channel_error
from ..ports import NotifyResult, PortStatus, chan_is_open, chan_status
from . import futex
from .statefile import (  # noqa: F401  (FILE_NAME is imported from here by others)
    CHAN_FIELDS,
    DOM_ENTRY,
    DOM_PRIVILEGED,
    DOM_TABLE,
    ENTRIES,
    ENTRY,
    FILE_NAME,
    HEADER,
    INTENT,
    INTENT_COMMITTED,
    JOURNAL_AT,
    JOURNAL_FIELD,
    K_CHAN,
    K_CLOSE_WORD,
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
    check_chan,
    check_chans,
    check_file,
    check_journal,
    intent_crc,
    read_raise,
)

LOCK_NAME = "consumers.lock"
_INTENT_TAIL = struct.Struct("<7I")  # INTENT_HEADER after its state word
_FLOCK = struct.Struct("hhqqi4x")  # struct flock (Linux, 64-bit): type, whence, start, len, pid
ECS_FREE_BYTE = bytes([ECS_FREE])
FREE_SCAN_CHUNK = 1024  # channel states searched per step of the free-port scan
_OPEN_STATES = bytes(0 if b in (ECS_FREE, ECS_RESERVED) else 1 for b in range(256))
CONSUME_BATCH = 256
STATS_NAME = "stats.xes"
STATS_MAGIC = b"XEVTSTAT"
STATS_HEADER = struct.Struct("<8sIQQ")  # magic, version, and the host file's size and creation time
# frame numbers of the simulated guests' shared pages, for foreign mappings (privcmd)
EVENT_ARRAY_GFN = 0x100000
CONTROL_BLOCK_GFN = 0x200000


def default_state_dir() -> str:
    """``$XENEVT_STATE``, else ``$XDG_RUNTIME_DIR/xenevt``, else ``~/.local/state/xenevt``."""
    if os.environ.get("XENEVT_STATE"):
        return os.environ["XENEVT_STATE"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "xenevt")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "xenevt")


def _errtext(e: OSError) -> str:
    return e.strerror.lower() if e.strerror else str(e)


def create_host(state_dir: str | None, nr_domains: int = 2, nr_vcpus: int = 2, max_ports_dom0: int = 4096,
                max_ports_domu: int = 1024, force: bool = False) -> str:
    """Create a fresh host (dom0 + domUs) and return its state file's path.

    Each guest boots as Linux does: a control block per vCPU, then the first
    event-array page.  The file is built aside and renamed into place, so an
    existing host is never left half-written.
    """
    state_dir = state_dir or default_state_dir()
    if not 1 <= nr_domains <= MAX_DOMAINS:
        raise StateError(f"domain count {nr_domains} out of range 1..{MAX_DOMAINS}")
    geos = []
    for domid in range(nr_domains):
        ports = max_ports_dom0 if domid == 0 else max_ports_domu
        if not 2 <= ports <= abi.EVTCHN_FIFO_NR_CHANNELS:
            raise StateError(f"port count {ports} out of range 2..{abi.EVTCHN_FIFO_NR_CHANNELS}")
        geo = Geometry(nr_vcpus, -(-ports // abi.EVENT_WORDS_PER_PAGE), ports)
        try:
            geo.validate()
        except LayoutError as e:
            raise StateError(str(e)) from None
        geos.append(geo)
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as e:
        raise StateError(f"cannot create state directory {state_dir}: {_errtext(e)}") from None
    path = os.path.join(state_dir, FILE_NAME)
    if os.path.exists(path) and not force:
        raise StateError(f"a simulated host already exists at {path} (use --force to replace it)")
    size = abi.PAGE_SIZE + sum(g.size for g in geos) + abi.PAGE_SIZE  # header page, images, journal page
    try:
        fd, tmp = tempfile.mkstemp(prefix=".host-", dir=state_dir)
    except OSError as e:
        raise StateError(f"cannot write in state directory {state_dir}: {_errtext(e)}") from None
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as mm:
            HEADER.pack_into(mm, 0, MAGIC, VERSION, nr_domains, size, int(time.time()))
            JOURNAL_AT.pack_into(mm, JOURNAL_FIELD, size - abi.PAGE_SIZE)
            offset = abi.PAGE_SIZE
            for domid, geo in enumerate(geos):
                DOM_ENTRY.pack_into(mm, DOM_TABLE + domid * DOM_ENTRY.size, domid,
                                    DOM_PRIVILEGED if domid == 0 else 0, offset, geo.size)
                mem = DomainMemory.create(geo.nr_vcpus, geo.max_pages, geo.nr_chans, buf=mm, offset=offset)
                mem.update_chan(0, state=ECS_RESERVED)  # port 0 is never used
                for v in range(geo.nr_vcpus):
                    mem.register_control_block(v)
                mem.add_page()
                del mem
                offset += geo.size
            mm.flush()
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd) if _fd_open(fd) else None
        os.unlink(tmp)
        raise
    return path


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


_LOCK_FDS: dict[tuple[int, str], int] = {}  # (pid, consumer lock path) -> its one descriptor in this process
_LOCK_FDS_GUARD = threading.Lock()


class SimDomain:
    """One domain of the host: its memory, engine and Xen-side facts."""

    def __init__(self, domid: int, flags: int, mem: DomainMemory):
        self.domid = domid
        self.privileged = bool(flags & DOM_PRIVILEGED)
        self.mem = mem
        self.engine = engine_for(mem)
        self.free_hint = 1  # every port below it is in use, while mem.frees == frees_seen
        self.frees_seen = -1


class SimHost:
    """An open simulated host.  Methods take the calling domain first, as hypercalls do."""

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
        if not os.path.isdir(self.state_dir):
            raise StateError(f"no simulated host at {self.state_dir}: run `xenevt sim init` first", errno=errno.ENOENT)
        if not os.path.exists(self.path):
            raise StateError(f"no simulated host in {self.state_dir}: run `xenevt sim init` first", errno=errno.ENOENT)
        try:
            self._fd = os.open(self.path, os.O_RDONLY if read_only else os.O_RDWR)
        except OSError as e:
            raise StateError(f"cannot open state file {self.path}: {_errtext(e)}", errno=e.errno) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if recover and not read_only else fcntl.LOCK_SH)
            self._map()
        except BaseException:
            os.close(self._fd)  # (drops the lock too)
            raise
        self._closed = False
        self._consumer_fd: int | None = None
        self._claimed: set[tuple[int, int]] = set()
        self._stats = None
        self._tlock = threading.RLock()  # flock excludes processes; threads of one process need this too
        self._depth = 0
        self._pins: dict[tuple[int, int], tuple[int, object]] = {}
        self.recovered: list[str] = []  # what recovery finished, one line each (sim check, the kill campaign)
        self._recover_on_lock = recover
        # XENEVT_SIM_CRASH_SLEEP=S: sleep up to S s at each step of an update, so that a kill campaign's
        # SIGKILLs land inside updates (tests only)
        self._crash_sleep = float(os.environ.get("XENEVT_SIM_CRASH_SLEEP") or 0)
        try:
            if recover and (self._jw[INTENT // 4] or self._jw[RAISE // 4]):
                self._recover()  # read-only: into the private copy, so inspection sees the update whole
            if check_records:
                self.check_records()
            if recover and not read_only:
                self._recover_consumers()
        except BaseException:
            self.close()
            raise
        finally:
            if not self._closed:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def check_records(self) -> None:
        """statefile.check_chans over every domain (one line for the first bad field)."""
        for dom in self.domains.values():
            check_chans(dom.mem, self._nr_chans, self.path)

    def _map(self) -> None:
        """Map the file and check all of it (statefile.check_file) before any engine sees a byte."""
        self._size = os.fstat(self._fd).st_size
        if self._size < abi.PAGE_SIZE:
            raise StateError(f"state file {self.path} is truncated ({self._size} bytes): not a xenevt state file")
        self._mm = mmap.mmap(self._fd, self._size,
                             access=mmap.ACCESS_COPY if self.read_only else mmap.ACCESS_WRITE)
        self.domains: dict[int, SimDomain] = {}
        try:
            checked = check_file(self._mm, self._size, self.path, records=False)
            try:
                for domid, flags, mem in checked:
                    self.domains[domid] = SimDomain(domid, flags, mem)
            except BaseException:
                for dom in self.domains.values():
                    dom.engine.close()
                for _, _, mem in checked:
                    mem.release()
                raise
        except BaseException:
            self.domains = {}
            self._unmap()
            raise
        self._nr_chans = {domid: d.mem.nr_chans for domid, d in self.domains.items()}
        self._journal = self._size - abi.PAGE_SIZE  # check_file: the header says so
        self._jw = memoryview(self._mm)[self._journal:].cast("I")  # the journal page's words

    def _unmap(self) -> None:
        jw = getattr(self, "_jw", None)
        if jw is not None:
            jw.release()
            self._jw = None
        for dom in self.domains.values():
            dom.engine = None
            dom.mem = None
        self.domains = {}
        try:
            self._mm.close()
        except BufferError:  # a caller still holds a view; the OS unmaps at exit
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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
                fcntl.lockf(self._consumer_fd, fcntl.LOCK_UN, 1, domid * 1024 + vcpu)
            self._consumer_fd = None
        self._claimed = set()
        self._pins.clear()
        self._unmap()
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- locking and lookup -----------------------------------------------
    @contextmanager
    def locked(self, check_only: bool = False):
        """The hypervisor's event lock: one process (and one thread in it) changes channel tables at a time.

        Whoever takes it first finishes an update whose process died holding it (two word reads when there
        is none).  ``check_only``: take it on a read-only host too, and finish nothing (``sim check``).
        """
        if not check_only:
            self._writable()
        with self._tlock:
            self._depth += 1
            try:
                if self._depth == 1:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                    self._check_size()  # the journal is the last page: a shrunk file would fault (SIGBUS) there
                    if not check_only and self._recover_on_lock and (self._jw[INTENT // 4] or self._jw[RAISE // 4]):
                        self._recover()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _check_size(self) -> None:
        """Cheap, on each use: a file another process shrank would fault (SIGBUS) past its new end."""
        size = os.fstat(self._fd).st_size
        if size != self._size:
            raise StateError(f"state file {self.path}: offset {min(size, self._size):#x}: field file_size: the file "
                             f"changed size under us ({self._size} -> {size} bytes)")

    def _rec(self, dom: SimDomain, port: int) -> Chan:
        """Channel record ``port`` of ``dom``, checked: another process may have written it since the open."""
        return check_chan(dom.mem, port, dom.mem.chan(port), self._nr_chans, self.path)

    def _writable(self) -> None:
        if self.read_only:
            raise StateError(f"state file {self.path} is open read-only here: this command only inspects")

    def domain(self, domid: int, call: str, port: int | None = None) -> SimDomain:
        if not self._depth:  # (taking the lock checked it)
            self._check_size()
        dom = self.domains.get(domid)
        if dom is None:
            raise channel_error(call, errno.ESRCH, "no such domain", domain=domid, port=port)
        return dom

    def _caller(self, caller: int, domid: int, call: str, port: int | None = None) -> SimDomain:
        me = self.domains.get(caller)
        if me is None:
            raise channel_error(call, errno.ESRCH, f"the calling domain {caller} does not exist", domain=domid,
                                port=port)
        return me

    def _access(self, caller: int, domid: int, call: str, port: int | None = None) -> SimDomain:
        """An operation that names a domain (alloc_unbound, status, reset; privcmd's foreign mappings): the
        caller must be that domain or privileged (XSM_TARGET: xsm_evtchn_unbound/_status/_reset)."""
        dom = self.domain(domid, call, port)
        me = self._caller(caller, domid, call, port)
        if caller != domid and not me.privileged:
            raise channel_error(call, errno.EPERM, f"domain {caller} may not operate on another domain's ports",
                                domain=domid, port=port)
        return dom

    def check_access(self, caller: int, domid: int, call: str) -> None:
        """Raise what ``call`` naming domain ``domid`` by ``caller`` would be refused with (EPERM, ESRCH)."""
        self._access(caller, domid, call)

    def _own(self, caller: int, domid: int, call: str, port: int | None = None, vcpu: int | None = None) -> SimDomain:
        """An operation on the caller's own domain only, privileged or not: Xen's send, close, unmask,
        bind_vcpu, set_priority and bind_* take no domain (current->domain), and only the guest's own kernel
        masks its words or consumes its queues."""
        dom = self.domain(domid, call, port)
        self._caller(caller, domid, call, port)
        if caller != domid:
            raise channel_error(call, errno.EPERM, f"domain {caller} may not operate on another domain's ports",
                                domain=domid, port=port, vcpu=vcpu)
        return dom

    def _chan(self, dom: SimDomain, port: int, call: str, bound: bool = True) -> Chan:
        if not 0 < port < dom.mem.nr_chans:
            raise channel_error(call, errno.EINVAL, f"port out of range (domain has ports 1..{dom.mem.nr_chans - 1})",
                                domain=dom.domid, port=port)
        ch = self._rec(dom, port)
        if bound and ch.state in (ECS_FREE, ECS_RESERVED):
            raise channel_error(call, errno.EINVAL, "port is not bound", domain=dom.domid, port=port)
        return ch

    def _vcpu(self, dom: SimDomain, vcpu: int, call: str, port: int | None = None) -> None:
        if not 0 <= vcpu < dom.mem.nr_vcpus:
            raise channel_error(call, errno.ENOENT, f"no vCPU {vcpu} (domain has {dom.mem.nr_vcpus})",
                                domain=dom.domid, port=port, vcpu=vcpu)

    # --- raising events -----------------------------------------------------
    def _raise(self, dom: SimDomain, port: int, unmask: bool = False) -> int:
        """Xen's evtchn_port_set_pending (or the unmask hypercall) plus the vCPU kick.

        The engine links the port in several stores; the journal's raise mark (three word stores, the only
        cost the hot path pays) tells the next lock holder which queue a process killed in between left.
        """
        jw = self._jw
        jw[RAISE // 4 + 1] = port
        jw[RAISE // 4] = dom.domid + 1
        try:
            if self._crash_sleep:
                self._crash_point()
            rc = dom.engine.unmask(port) if unmask else dom.engine.set_pending(port)
        finally:
            jw[RAISE // 4] = 0
        if rc < 0:
            raise channel_error("raise", errno.EIO, f"engine refused: code {rc} (corrupt state?)",
                                domain=dom.domid, port=port)
        if not unmask:
            self._count(dom.domid, port, 0)
        if rc & SP.UPCALL:
            self._kick(dom, self._rec(dom, port).notify_vcpu)
        return rc

    def _crash_point(self) -> None:
        if self._crash_sleep:
            time.sleep(random.random() * self._crash_sleep)

    def _kick(self, dom: SimDomain, vcpu: int) -> None:
        """vcpu_mark_events_pending(): bump the upcall word and wake its sleepers."""
        dom.mem.bump_upcall(vcpu)
        futex.wake(self._upcall_addr(dom, vcpu))

    def _upcall_addr(self, dom: SimDomain, vcpu: int) -> int:
        key = (dom.domid, vcpu)
        if key not in self._pins:
            self._pins[key] = futex.address_of(self._mm, dom.mem.offset + dom.mem.upcall_byte_offset(vcpu))
        return self._pins[key][0]

    # --- the intent record: updates of more than one record, whole or not at all --------
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
            dom = self.domains[domid]
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
                if chan_is_open(mem.chan(index)) and mem.word(index) is not None \
                        and dom.engine.guest_unmask(index) == 0:
                    self._raise(dom, index, unmask=True)
            elif kind == K_PAGE:
                self._page(dom, index)
            elif kind == K_RESET:
                self._reset_all(dom)

    def _close_word(self, dom: SimDomain, port: int) -> None:
        """Linux masks the port before closing it; Xen's evtchn_close() clears PENDING (and DEFERRED)."""
        if dom.mem.word(port) is not None:
            dom.engine.guest_mask(port)
        dom.engine.clear_pending(port)

    def _page(self, dom: SimDomain, index: int) -> None:
        """EVTCHNOP_expand_array, redone: the page filled MASKED and counted, engines told, deferred events raised."""
        mem = dom.mem
        if mem.nr_pages == index:
            mem.add_page()
        elif mem.nr_pages > index:  # added before a kill: make every engine re-read the layout anyway
            at = HEADER_FIELDS["generation"]
            struct.pack_into("<I", mem.buffer, at, (struct.unpack_from("<I", mem.buffer, at)[0] + 1) & 0xFFFFFFFF)
        else:
            return
        if dom.engine.page_added(index) > 0:
            for v in range(mem.nr_vcpus):
                self._kick(dom, v)

    @staticmethod
    def _image(chan: Chan) -> bytes:
        return CHAN.pack(chan.state, chan.priority, chan.last_priority, chan.flags, chan.notify_vcpu, chan.last_vcpu,
                         chan.remote_dom, chan.aux, chan.remote_port)

    def _frees_entry(self, dom: SimDomain) -> tuple[int, int, int, bytes]:
        """The freed-channels count one higher: any process's lowest-free-port hint above a freed port is stale."""
        return (K_FREES, dom.domid, 0, struct.pack("<I12x", (dom.mem.frees + 1) & 0xFFFFFFFF))

    def _close_entries(self, dom: SimDomain, port: int, ch: Chan) -> list[tuple[int, int, int, bytes]]:
        """evtchn_close(): the other end of an interdomain channel goes back to unbound (waiting for this
        domain) if it still points here; the word is masked and cleared; the record freed, lastq kept."""
        out = []
        if ch.state == ECS_INTERDOMAIN:
            rdom = self.domains.get(ch.remote_dom)
            if rdom is not None and 0 < ch.remote_port < rdom.mem.nr_chans:  # (a redone reset may meet a torn one)
                rch = rdom.mem.chan(ch.remote_port)
                if rch.state == ECS_INTERDOMAIN and (rch.remote_dom, rch.remote_port) == (dom.domid, port):
                    out.append((K_CHAN, rdom.domid, ch.remote_port,
                                self._image(Chan(state=ECS_UNBOUND, priority=rch.priority, flags=rch.flags,
                                                 notify_vcpu=rch.notify_vcpu, remote_dom=dom.domid))))
        out.append((K_CLOSE_WORD, dom.domid, port, b""))
        out.append((K_CHAN, dom.domid, port, self._image(Chan())))
        out.append(self._frees_entry(dom))
        return out

    def _reset_all(self, dom: SimDomain) -> None:
        """EVTCHNOP_reset, restartable: close what is still open, then make every free record and word clean
        (a close cut short by a kill may have left a record half written)."""
        mem = dom.mem
        for port in self._open_ports(dom):
            self._crash_point()
            ch = mem.chan(port)  # unchecked: a close cut short may have left it half written
            for kind, domid, index, value in self._close_entries(dom, port, ch):
                if kind != K_FREES:
                    self._apply([(kind, domid, index, value)])
        clean = Chan()
        for port in range(1, mem.nr_chans):
            ch = mem.chan(port)
            if ch.state == ECS_FREE:
                if (ch.priority, ch.flags, ch.notify_vcpu, ch.remote_dom, ch.aux, ch.remote_port) != \
                        (clean.priority, 0, 0, 0, 0, 0):
                    mem.set_chan(port, Chan(last_priority=ch.last_priority, last_vcpu=ch.last_vcpu))
                word = mem.word(port)
                if word is not None and word & abi.WORD_PENDING:
                    dom.engine.clear_pending(port)
        self._apply([self._frees_entry(dom)])

    # --- recovery: what a process killed holding the lock (or mid-batch as a consumer) left -------
    def _recover(self) -> None:
        """Finish a raise and an intent record that their process left under way (statefile's docstring)."""
        intent = check_journal(self._mm, self._journal, self.path, {d: dom.mem for d, dom in self.domains.items()})
        mark = read_raise(self._mm, self._journal)
        if mark is not None:
            domid, port = mark
            dom = self.domains[domid]
            ch = dom.mem.chan(port)
            for v in sorted({ch.notify_vcpu, ch.last_vcpu}):
                self._repair_vcpu(dom, v)
            self._jw[RAISE // 4] = 0
            if chan_is_open(ch) and dom.mem.word(port) is not None:
                self._raise(dom, port)  # at least once: the event may not have been linked
            self.recovered.append(f"finished a raise of port {port} of domain {domid}")
        if intent is not None:
            self._apply(intent.entries)
            self._jw[INTENT // 4] = 0
            self.recovered.append(f"redid {intent.op_name} by domain {intent.caller} (pid {intent.pid}): "
                                  f"{len(intent.entries)} step(s)")

    def _repair_vcpu(self, dom: SimDomain, vcpu: int, claimed: bool = False) -> list[str]:
        """Mend the queues of a vCPU that no consumer is running on (``claimed``: the caller holds its consumer
        lock and is not consuming yet); with a live consumer the chains move under us, so nothing is touched."""
        if not claimed and self._consumer_live(dom.domid, vcpu):
            return []
        from .check import repair_vcpu_queues

        return repair_vcpu_queues(self, dom, vcpu)

    def _recover_consumers(self) -> None:
        """A consumer killed mid-batch leaves its pid, and maybe local READY bits and heads that no longer
        match the queues: mend the vCPU's queues and clear the pid."""
        for dom in self.domains.values():
            for v in range(dom.mem.nr_vcpus):
                pid = dom.mem.consumer(v)
                if pid and not self._consumer_live(dom.domid, v):
                    self._repair_vcpu(dom, v)
                    dom.mem.set_consumer(v, 0)
                    self.recovered.append(f"cleared vCPU {v} of domain {dom.domid}: its consumer (pid {pid}) is gone")

    def _consumer_lock_fd(self, create: bool) -> int | None:
        """The consumer lock file's descriptor, one per process and state directory, never closed: POSIX locks
        belong to the process, and closing any descriptor of the file would drop every vCPU it claimed."""
        lock = os.path.realpath(os.path.join(self.state_dir, LOCK_NAME))
        with _LOCK_FDS_GUARD:
            fd = _LOCK_FDS.get((os.getpid(), lock))
            if fd is None:
                try:
                    fd = os.open(lock, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC, 0o600)
                except FileNotFoundError:
                    if create:
                        raise StateError(f"cannot open the consumer lock {lock}: no such directory",
                                         errno=errno.ENOENT) from None
                    return None
                except OSError as e:
                    if create:
                        raise StateError(f"cannot open the consumer lock {lock}: {_errtext(e)}",
                                         errno=e.errno) from None
                    return None
                _LOCK_FDS[(os.getpid(), lock)] = fd
        self._consumer_fd = fd
        return fd

    def _consumer_live(self, domid: int, vcpu: int) -> bool:
        """Whether some process holds vCPU ``vcpu``'s consumer lock (F_GETLK: a killed holder holds nothing).
        F_GETLK does not see this process's own locks: a vCPU whose pid is ours is ours, so live."""
        if (domid, vcpu) in self._claimed or self.domains[domid].mem.consumer(vcpu) == os.getpid():
            return True
        fd = self._consumer_lock_fd(create=False)
        if fd is None:
            return False
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, domid * 1024 + vcpu, 1, 0)
        return _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))[0] != fcntl.F_UNLCK

    def consumer_live(self, domid: int, vcpu: int) -> bool:
        return self._consumer_live(domid, vcpu)

    # --- the guest kernel's part (Linux events_fifo.c / events_base.c) --------
    def _guest_setup(self, dom: SimDomain, port: int, caller: int) -> None:
        """evtchn_fifo_setup(): grow the array, one MASKED page at a time (EVTCHNOP_expand_array), to cover
        ``port``."""
        mem = dom.mem
        while port >= mem.nr_ports:
            if mem.nr_pages >= mem.max_pages:
                raise channel_error("bind", errno.ENOSPC, "event array is at its maximum size",
                                    domain=dom.domid, port=port)
            self._transact("expand_array", caller, [(K_PAGE, dom.domid, mem.nr_pages, b"")])

    def _get_free_port(self, dom: SimDomain, call: str) -> int:
        """Xen's get_free_port(): the lowest free port that is not still LINKED (busy).

        Every port below ``dom.free_hint`` is in use; that stays true until some
        process frees a channel, which bumps the domain's ``frees`` word, so the
        hint is trusted only while that word is what it was.  The scan itself is
        a search of the channel states' bytes, not a Python loop over ports.
        """
        mem = dom.mem
        nr = mem.nr_chans
        frees = mem.frees
        start = dom.free_hint if dom.frees_seen == frees and 1 <= dom.free_hint <= nr else 1
        dom.frees_seen, dom.free_hint = frees, nr
        for base in range(start, nr, FREE_SCAN_CHUNK):
            states = mem.chan_states(base, min(base + FREE_SCAN_CHUNK, nr))
            i = states.find(ECS_FREE_BYTE)
            if i >= 0 and dom.free_hint == nr:
                dom.free_hint = base + i
            while i >= 0:
                word = mem.word(base + i)
                if word is None or not word & abi.WORD_LINKED:
                    return base + i
                i = states.find(ECS_FREE_BYTE, i + 1)  # freed but its event is still queued: Xen skips it too
        raise channel_error(call, errno.ENOSPC, f"no free port (all {nr - 1} in use)", domain=dom.domid)

    def _bind_new(self, op: str, caller: int, dom: SimDomain, call: str, chan: Chan, masked: bool,
                  remote: tuple[int, int, Chan] | None = None) -> int:
        """Allocate the lowest free port and bind it, as one intent: the record (evtchn_fifo_init: default
        priority), the remote end's record for an interdomain bind with the new port left pending (Xen: an
        event sent before the bind is not lost), and the guest enabling it."""
        port = self._get_free_port(dom, call)
        self._guest_setup(dom, port, caller)
        entries = [(K_CHAN, dom.domid, port, self._image(chan))]
        if remote is not None:
            rdomid, rport, rchan = remote
            rchan.remote_port = port
            entries += [(K_CHAN, rdomid, rport, self._image(rchan)), (K_RAISE, dom.domid, port, b"")]
        if not masked:
            entries.append((K_ENABLE, dom.domid, port, b""))
        self._transact(op, caller, entries)
        return port

    # --- hypercalls -------------------------------------------------------------
    def alloc_unbound(self, caller: int, domid: int, remote: int, masked: bool = False) -> int:
        call = "allocate an unbound port in"
        with self.locked():
            dom = self._access(caller, domid, call)
            self.domain(remote, call)
            return self._bind_new("alloc_unbound", caller, dom, call, Chan(state=ECS_UNBOUND, remote_dom=remote),
                                  masked)

    def bind_interdomain(self, caller: int, domid: int, remote: int, remote_port: int, masked: bool = False) -> int:
        call = "bind interdomain for"
        with self.locked():
            dom = self._own(caller, domid, call)
            rdom = self.domain(remote, call)
            rch = self._chan(rdom, remote_port, "bind to", bound=False)
            if rch.state != ECS_UNBOUND or rch.remote_dom != domid:
                why = "is not unbound" if rch.state != ECS_UNBOUND else f"accepts domain {rch.remote_dom} only"
                raise channel_error("bind to", errno.EINVAL, f"remote port {why}", domain=remote, port=remote_port)
            rnew = Chan(state=ECS_INTERDOMAIN, priority=rch.priority, flags=rch.flags, notify_vcpu=rch.notify_vcpu,
                        remote_dom=domid)
            return self._bind_new("bind_interdomain", caller, dom, call,
                                  Chan(state=ECS_INTERDOMAIN, remote_dom=remote, remote_port=remote_port), masked,
                                  remote=(remote, remote_port, rnew))

    def bind_virq(self, caller: int, domid: int, virq: int, vcpu: int = 0, masked: bool = False) -> int:
        call = "bind VIRQ for"
        with self.locked():
            dom = self._own(caller, domid, call)
            if not 0 <= virq < NR_VIRQS:
                raise channel_error(call, errno.EINVAL, f"no VIRQ {virq}", domain=domid)
            self._vcpu(dom, vcpu, call)
            if virq not in PER_VCPU_VIRQS and vcpu != 0:
                raise channel_error(call, errno.EINVAL, f"VIRQ {virq} is global: bind it on vCPU 0", domain=domid)
            for p in self._open_ports(dom):
                ch = self._rec(dom, p)
                if ch.state == ECS_VIRQ and ch.aux == virq and ch.notify_vcpu == vcpu:
                    raise channel_error(call, errno.EEXIST, f"VIRQ {virq} already bound on vCPU {vcpu} (port {p})",
                                        domain=domid, port=p)
            return self._bind_new("bind_virq", caller, dom, call, Chan(state=ECS_VIRQ, aux=virq, notify_vcpu=vcpu),
                                  masked)

    def bind_ipi(self, caller: int, domid: int, vcpu: int = 0, masked: bool = False) -> int:
        call = "bind IPI for"
        with self.locked():
            dom = self._own(caller, domid, call)
            self._vcpu(dom, vcpu, call)
            return self._bind_new("bind_ipi", caller, dom, call, Chan(state=ECS_IPI, notify_vcpu=vcpu), masked)

    def send(self, caller: int, domid: int, port: int, tell_unbound: bool = True) -> NotifyResult:
        """EVTCHNOP_send.  Xen drops a send on an unbound port and returns 0; a person using the CLI is
        told instead (``tell_unbound``), a program using the library gets Xen's silence."""
        call = "notify"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            ch = self._chan(dom, port, call)
            if ch.state == ECS_INTERDOMAIN:
                target, tport = self.domain(ch.remote_dom, call, port), ch.remote_port
            elif ch.state == ECS_IPI:
                target, tport = dom, port
            elif ch.state == ECS_UNBOUND:
                if not tell_unbound:
                    return NotifyResult(domid, port, None, None, "dropped: port is unbound")
                raise channel_error(call, errno.ENOTCONN,
                                    "port is unbound, nothing is connected (Xen drops the notification)",
                                    domain=domid, port=port)
            else:
                state = STATES[ECS_TO_EVTCHNSTAT[ch.state]]
                raise channel_error(call, errno.EINVAL, f"cannot send on a {state} port", domain=domid, port=port)
            rc = SP(self._raise(target, tport))
        return NotifyResult(domid, port, target.domid, tport, _outcome(rc))

    def raise_virq(self, domid: int, virq: int, vcpu: int = 0) -> NotifyResult:
        """send_guest_vcpu_virq(): Xen raises a VIRQ on the port bound to it."""
        with self.locked():
            dom = self.domain(domid, "raise VIRQ in")
            for p in self._open_ports(dom):
                ch = self._rec(dom, p)
                if ch.state == ECS_VIRQ and ch.aux == virq and ch.notify_vcpu == vcpu:
                    return NotifyResult(domid, p, domid, p, _outcome(SP(self._raise(dom, p))))
            raise channel_error("raise VIRQ in", errno.ENOENT, f"VIRQ {virq} is not bound on vCPU {vcpu}",
                                domain=domid)

    def close_port(self, caller: int, domid: int, port: int) -> None:
        call = "close"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            ch = self._chan(dom, port, call)
            self._transact("close", caller, self._close_entries(dom, port, ch))

    def reset(self, caller: int, domid: int) -> None:
        """EVTCHNOP_reset: close every port of the domain, as one intent (redone whole after a kill)."""
        with self.locked():
            self._access(caller, domid, "reset")
            self._transact("reset", caller, [(K_RESET, domid, 0, b"")])

    def unmask(self, caller: int, domid: int, port: int) -> None:
        """The guest's unmask: locally if not pending, else EVTCHNOP_unmask (Xen relinks)."""
        call = "unmask"
        self._writable()
        dom = self._own(caller, domid, call, port)
        self._chan(dom, port, call)
        self._word_or_fail(dom, port, call)
        rc = dom.engine.guest_unmask(port)
        if rc < 0:
            raise channel_error(call, errno.EBUSY, "event word stayed BUSY", domain=domid, port=port)
        if rc == 0:
            with self.locked():
                self._raise(dom, port, unmask=True)

    def mask(self, caller: int, domid: int, port: int) -> None:
        call = "mask"
        self._writable()
        dom = self._own(caller, domid, call, port)
        self._chan(dom, port, call)
        self._word_or_fail(dom, port, call)
        dom.engine.guest_mask(port)

    def _word_or_fail(self, dom: SimDomain, port: int, call: str) -> int:
        word = dom.mem.word(port)
        if word is None:
            raise channel_error(call, errno.EINVAL, "port has no event word yet", domain=dom.domid, port=port)
        return word

    def _store_field(self, dom: SimDomain, port: int, field: str, value: int) -> None:
        """One field of a channel record in one aligned store: a kill never leaves it half written."""
        at = dom.mem.geometry.chans_offset + port * CHAN.size + CHAN_FIELDS[field]
        if field == "priority":
            dom.mem.buffer[at] = value
        else:
            with dom.mem.buffer[at: at + 2] as view, view.cast("H") as half:
                half[0] = value

    def set_priority(self, caller: int, domid: int, port: int, priority: int) -> None:
        call = "set the priority of"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            self._chan(dom, port, call)
            if not 0 <= priority <= abi.EVTCHN_FIFO_PRIORITY_MIN:
                raise channel_error(call, errno.EINVAL, f"priority {priority} out of range 0..15", domain=domid,
                                    port=port)
            # only future events use it: a linked event stays on its old queue
            self._store_field(dom, port, "priority", priority)

    def bind_vcpu(self, caller: int, domid: int, port: int, vcpu: int) -> None:
        call = "move"
        with self.locked():
            dom = self._own(caller, domid, call, port)
            ch = self._chan(dom, port, call)
            self._vcpu(dom, vcpu, call, port)
            if ch.state == ECS_IPI or (ch.state == ECS_VIRQ and ch.aux in PER_VCPU_VIRQS):
                raise channel_error(call, errno.EINVAL, "IPI and per-vCPU VIRQ ports cannot move", domain=domid,
                                    port=port)
            self._store_field(dom, port, "notify_vcpu", vcpu)

    # --- inspection ------------------------------------------------------------
    def status(self, caller: int, domid: int, port: int) -> PortStatus:
        dom = self._access(caller, domid, "get the status of", port)
        self._chan(dom, port, "get the status of", bound=False)
        return self._status(dom, port)

    def _status(self, dom: SimDomain, port: int) -> PortStatus:
        return chan_status(dom.domid, port, self._rec(dom, port), dom.mem.word(port))

    def list_ports(self, caller: int, domid: int) -> list[PortStatus]:
        dom = self._access(caller, domid, "list the ports of")
        return [self._status(dom, p) for p in self._open_ports(dom)]

    def _open_ports(self, dom: SimDomain) -> list[int]:
        """Ports whose channel is neither free nor reserved, found by a search of the state bytes."""
        states = dom.mem.chan_states(0, dom.mem.nr_chans).translate(_OPEN_STATES)
        out, port = [], states.find(1, 1)
        while port >= 0:
            out.append(port)
            port = states.find(1, port + 1)
        return out

    def info(self) -> dict:
        doms = []
        for d in self.domains.values():
            used = len(self._open_ports(d))
            doms.append({"domain": d.domid, "privileged": d.privileged, "vcpus": d.mem.nr_vcpus,
                         "max_ports": d.mem.nr_chans, "event_array_pages": d.mem.nr_pages, "ports_in_use": used,
                         "control_blocks": [v for v in range(d.mem.nr_vcpus) if d.mem.cb_offset(v) is not None],
                         "gfns": self.gfns(d.domid)})
        return {"backend": "sim", "state_file": self.path, "abi": "FIFO", "engine": self._engine_name(),
                "domains": doms}

    # --- activity counters (what /proc/interrupts counts on a real guest) -------------
    def _stats_view(self):
        """The counters file: per domain and port, u64 raised and u64 delivered; made on first use."""
        if self._stats is not None:
            return self._stats
        path = os.path.join(self.state_dir, STATS_NAME)
        ident = STATS_HEADER.pack(STATS_MAGIC, 1, *HEADER.unpack_from(self._mm, 0)[3:5])
        size = STATS_HEADER.size + sum(16 * d.mem.nr_chans for d in self.domains.values())
        try:
            fd = os.open(path, os.O_RDONLY if self.read_only else os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None  # read-only and never made: every counter reads 0
        try:
            if not self.read_only:
                fcntl.flock(fd, fcntl.LOCK_EX)
                head = os.pread(fd, STATS_HEADER.size, 0)
                if head != ident or os.fstat(fd).st_size != size:  # a new host: start from zero
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, size)
                    os.pwrite(fd, ident, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            elif os.pread(fd, STATS_HEADER.size, 0) != ident or os.fstat(fd).st_size != size:
                return None
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ if self.read_only else mmap.ACCESS_WRITE)
        finally:
            os.close(fd)
        offsets, off = {}, STATS_HEADER.size
        for domid in sorted(self.domains):
            offsets[domid] = off
            off += 16 * self.domains[domid].mem.nr_chans
        self._stats = (mm, offsets)
        return self._stats

    def _count(self, domid: int, port: int, which: int) -> None:
        view = self._stats_view()
        if view is None or self.read_only:
            return
        mm, offsets = view
        if not 0 <= port < self._nr_chans[domid]:
            return  # a word past the channel table (a corrupt LINK can deliver one): nothing to count
        at = offsets[domid] + 16 * port + 8 * which
        struct.pack_into("<Q", mm, at, struct.unpack_from("<Q", mm, at)[0] + 1)

    def counters(self, domid: int) -> list[tuple[int, int]]:
        """(raised, delivered) per port of the domain, since the host was made."""
        dom = self.domain(domid, "count events of")
        view = self._stats_view()
        if view is None:
            return [(0, 0)] * dom.mem.nr_chans
        mm, offsets = view
        return list(struct.iter_unpack("<QQ", mm[offsets[domid]: offsets[domid] + 16 * dom.mem.nr_chans]))

    # --- the 'e' debug key -----------------------------------------------------------
    def debug_key_e(self) -> list[str]:
        """What Xen 4.17 prints for debug key 'e' (domain_dump_evtchn_info + the FIFO print_state)."""
        lines = ["'e' pressed -> dumping event-channel info"]
        for domid in sorted(self.domains):
            dom = self.domains[domid]
            mem = dom.mem
            lines += [f"Event channel information for domain {domid}:", "Polling vCPUs: {}", "    port [p/m/s]"]
            states = mem.chan_states(0, mem.nr_chans)
            for port in range(1, mem.nr_chans):
                if states[port] == ECS_FREE:
                    continue
                ch = self._rec(dom, port)
                word = mem.word(port)
                pending = int(word is not None and bool(word & abi.WORD_PENDING))
                masked = int(word is None or bool(word & abi.WORD_MASKED))  # no word reads as masked
                if word is None:
                    state = "?     "
                else:
                    busy = "B" if word & abi.WORD_BUSY else " "
                    state = f"{busy} {word & abi.EVTCHN_FIFO_LINK_MASK:<4d}" if word & abi.WORD_LINKED else \
                        f"{busy} -   "
                line = f"    {port:4d} [{pending}/{masked}/{state}]: s={ch.state} n={ch.notify_vcpu} x=0"
                if ch.state == ECS_UNBOUND:
                    line += f" d={ch.remote_dom}"
                elif ch.state == ECS_INTERDOMAIN:
                    line += f" d={ch.remote_dom} p={ch.remote_port}"
                elif ch.state == ECS_PIRQ:
                    line += f" p={ch.aux} i=-1"
                elif ch.state == ECS_VIRQ:
                    line += f" v={ch.aux}"
                lines.append(line)
        return lines

    # --- frames, as privcmd would map them -----------------------------------------
    def gfns(self, domid: int) -> dict:
        """The frame numbers a foreign mapping uses for the domain's event array and control blocks."""
        mem = self.domain(domid, "list the frames of").mem
        return {"event_array": [EVENT_ARRAY_GFN + i for i in range(mem.nr_pages)],
                "control_blocks": {v: [CONTROL_BLOCK_GFN + v, mem.cb_offset(v)] for v in range(mem.nr_vcpus)
                                   if mem.cb_offset(v) is not None}}

    def frame_offsets(self, caller: int, domid: int, gfns: list[int]) -> list[int]:
        """Per frame: where it lies in the state file (page aligned), or -errno; privcmd's rules for who may map."""
        self._access(caller, domid, "map frames of")
        out = []
        for gfn in gfns:
            try:
                out.append(self.frame_offset(domid, gfn))
            except ChannelError as e:
                out.append(-(e.errno or errno.EINVAL))
        return out

    def read_frames(self, caller: int, domid: int, gfns: list[int]) -> list[bytes]:
        """A copy of each frame, as a privcmd mapping would show it; the first bad frame is an error."""
        self._access(caller, domid, "map frames of")
        return [bytes(self._mm[off:off + abi.PAGE_SIZE]) for off in (self.frame_offset(domid, g) for g in gfns)]

    def frame_offset(self, domid: int, gfn: int) -> int:
        """Where frame ``gfn`` of the domain lies in the state file (page aligned); EINVAL if it has none."""
        dom = self.domain(domid, "map frames of")
        mem, geo = dom.mem, dom.mem.geometry
        if EVENT_ARRAY_GFN <= gfn < EVENT_ARRAY_GFN + mem.nr_pages:
            return mem.offset + geo.pages_offset + (gfn - EVENT_ARRAY_GFN) * abi.PAGE_SIZE
        if CONTROL_BLOCK_GFN <= gfn < CONTROL_BLOCK_GFN + mem.nr_vcpus and mem.cb_offset(gfn - CONTROL_BLOCK_GFN) \
                is not None:
            return mem.offset + geo.cb_pages_offset + (gfn - CONTROL_BLOCK_GFN) * abi.PAGE_SIZE
        raise channel_error("map frames of", errno.EINVAL, f"frame {gfn:#x} is not an event-array or control-block "
                            "page", domain=domid)

    def fileno(self) -> int:
        return self._fd

    def _engine_name(self) -> str:
        return next(iter(self.domains.values())).engine.name if self.domains else "none"

    # --- the guest consuming ---------------------------------------------------
    def claim_vcpu(self, domid: int, vcpu: int, caller: int | None = None) -> None:
        """One consumer per vCPU, as one upcall handler runs per CPU: a byte-range lock says who.

        Only the domain's own kernel consumes its events (``caller``, when given, must be ``domid``).  A
        consumer that finds the pid of one killed mid-batch mends the vCPU's queues before it starts.
        """
        call = "consume events of"
        self._writable()
        dom = self._own(caller, domid, call, vcpu=vcpu) if caller is not None else self.domain(domid, call)
        self._vcpu(dom, vcpu, call)
        fd = self._consumer_lock_fd(create=True)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, domid * 1024 + vcpu)
        except OSError:
            raise channel_error(call, errno.EBUSY, f"vCPU {vcpu} already has a consumer (pid {dom.mem.consumer(vcpu)})",
                                domain=domid, vcpu=vcpu) from None
        prev = dom.mem.consumer(vcpu)
        if prev and prev != os.getpid():
            with self.locked():
                self._repair_vcpu(dom, vcpu, claimed=True)
            self.recovered.append(f"took over vCPU {vcpu} of domain {domid} from a consumer that is gone (pid {prev})")
        dom.mem.set_consumer(vcpu, os.getpid())
        self._claimed.add((domid, vcpu))

    def consume(self, domid: int, vcpu: int, max_events: int = CONSUME_BATCH, timeout: float | None = 0,
                caller: int | None = None) -> list[int]:
        """Run the guest's upcall handler for ``vcpu``; sleep up to ``timeout`` s until something arrives."""
        call = "consume events of"
        dom = self._own(caller, domid, call, vcpu=vcpu) if caller is not None else self.domain(domid, call)
        deadline = None if timeout is None else time.monotonic() + timeout
        addr = self._upcall_addr(dom, vcpu)
        while True:
            seq = dom.mem.upcall_seq(vcpu)
            ports, err = dom.engine.consume(vcpu, Consume.ACK, max_events)
            if err[0] != 0:
                from ..engine.codes import ERR_TEXT, Err

                raise ChannelError(
                    f"cannot consume events of vCPU {vcpu} of domain {domid}: {ERR_TEXT[Err(err[0])]}"
                    f" (port {err[1]}, priority {err[3]})", domain=domid, port=err[1], vcpu=vcpu, call="consume")
            if ports:
                for port in ports:
                    self._count(domid, port, 1)
                return ports
            if dom.mem.guest(vcpu)[0]:
                continue  # local READY bits left: more to consume without sleeping
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            futex.wait(addr, seq, remaining, lambda: dom.mem.upcall_seq(vcpu))


def _outcome(rc: SP) -> str:
    if SP.DEFERRED in rc:
        return "deferred"
    if SP.NO_CONTROL in rc:
        return "dropped: no control block"
    if SP.MASKED in rc:
        return "pending, masked"
    if SP.ALREADY_LINKED in rc or SP.WAS_PENDING in rc:
        return "coalesced"
    if SP.LINK_GAVE_UP in rc:
        return "lost: tail stayed busy"
    return "queued" if SP.LINKED in rc else "raised"


def host_info(state_dir: str | None) -> dict:
    with SimHost(state_dir) as host:
        return host.info()


def reset_host(state_dir: str | None) -> None:
    with SimHost(state_dir) as host:
        for domid in list(host.domains):
            host.reset(0, domid)
