"""The simulator's state file: its format, and every check of what is read from it.

Page 0 holds the host header (``HEADER``, then the journal page's offset
``JOURNAL_AT`` at byte 32, the Xen version at byte 40, the host identity
``HOST_ID`` at byte 48: 64 random bits that the counters file and the consumer
locks are tied to, so a host made in the same second as the one it replaced
inherits neither; 0 in files made before it, which read as before; bytes 44
and 56..63 are 0) and, at ``DOM_TABLE``, one ``DOM_ENTRY`` per
domain, running on into the next pages when there are more than 168
(:func:`table_end`); each domain's image (the engine's DomainMemory layout,
engine/layout.py) follows the table at a page-aligned offset; the file's last page is
the journal page (the host lock's slot and the intent record, below).  The file is
shared by processes, and any of them (or a disk) may have written nonsense,
so nothing in it is trusted:

* on open, :func:`check_file` checks the header, the domain table (entries
  against each other and against the file's size), each image's header and
  control-block offsets (DomainMemory does that), and every channel record
  (against its domain's vCPUs and the other domains);
* on each use, what another process may legitimately have changed since is
  checked again where it is read: the array size and control-block offsets
  by DomainMemory, a channel record by :func:`check_chan`, the file's size by
  SimHost.

A bad field is one line: ``state file PATH: offset 0x…: field F: why``.

A domain table entry's ``flags``: ``DOM_PRIVILEGED`` (dom0), ``DOM_BARE`` (no
simulated guest kernel: only hypercalls change its memory), ``DOM_PAUSED``
(``xl pause``), ``DOM_KERNEL_2L`` (its simulated Linux kernel chose the 2-level
ABI at boot, as ``xen.fifo_events=0`` makes Linux do: it never registers a
control block, and after EVTCHNOP_reset it masks every port again instead of
setting FIFO up; without it a kernel chooses FIFO).  A bare domain has no
kernel, so ``DOM_BARE | DOM_KERNEL_2L`` is refused.  Files made before the bit
existed read as FIFO kernels, as they were.  ``DOM_DYING`` (``sim destroy
--dying``: Xen's evtchn_destroy() has closed every port, the domain is still
listed with XEN_DOMINF_dying, no port can be allocated in it) and
``DOM_GONE`` (destroyed: no hypercall finds it any more, ESRCH; its image stays
in the file unused, so no other domain's offset moves, and its domid is not
reused) are what a destroyed domain leaves; both together are refused.
``DOM_PERCPU`` (``sim init --percpu``): its simulated Linux binds, per online
vCPU, the ports Linux binds per CPU (domain.percpu_ports), at boot and when a
vCPU comes up, and closes them when it goes down; a bare domain has no kernel
to bind them, so ``DOM_BARE | DOM_PERCPU`` is refused too.  ``DOM_GUEST_32``
(``sim init --guest-32``): the domain's guest is 32-bit (an x86 compat guest:
its xen_ulong_t is 32 bits), so the 2-level ABI gives it 32 words of 32 bits,
ports 1..1023 (Xen's max_evtchns(d), SimDomain.max_evtchns): that limit is what
the flag changes.  The simulator keeps such a guest's 2-level state in the 64-bit
layout (the pending and mask bits of ports below 1024 are the same bytes either
way on little-endian x86; its selector bits stay one per 64 ports, not 32, and
its vcpu_info and shared_info fields where a 64-bit guest has them).  Files made before
the bit existed read as 64-bit guests, as they were; an older xenevt refuses a
file that has it (unknown flag) rather than give its guest 4096 ports.

The journal page (at the offset the header's u64 at byte 32 gives: the
file's last page), a fixed layout that C code may
write as well as Python (issue 15), all fields little-endian:

====== ==== ===================================================================
offset size field
====== ==== ===================================================================
0x000  64   the host lock (csrc/xenevt_host_api.h): a robust, process-shared
            pthread mutex, then u32 magic "XLCK" at 0x30 once formatted and the
            holder's pid at 0x34; a zero slot (a file made before) is formatted
            once, on open, under flock
0x040  4    intent.state: 0 none, ``INTENT_COMMITTED`` ("XINT") a whole record
0x044  4    intent.seq: bumped by each record (for reports)
0x048  4    intent.op: ``OPS`` code of the hypercall
0x04c  4    intent.caller: calling domain
0x050  4    intent.pid: process that wrote it
0x054  4    intent.count: entries in use (1..``MAX_INTENT_ENTRIES``)
0x058  4    intent.crc: zlib CRC-32 of bytes 0x048..0x058 then of the entries
0x05c  4    reserved (0)
0x060  4    raise.domain: 0 none, else domain + 1 of an event being raised
0x064  4    raise.port: its port (written before raise.domain, cleared after)
0x080  32*N intent.entries: u32 kind, u32 domain, u32 index, u32 0, 16-byte value
====== ==== ===================================================================

A multi-record update (an intent) writes its entries, count and crc, then
stores ``INTENT_COMMITTED`` in one aligned word, applies the entries in
order, and stores 0.  Every entry is idempotent (at-least-once for a raise),
so whoever next takes the host lock finds a committed record and applies it
again whole, whatever instant its writer died (a writer killed holding the
lock is seen by the next taker: the mutex is robust); a record whose state is 0 was
never committed and nothing of it was applied.  A single raise (send,
unmask) only stores ``raise`` around the engine call: the next lock holder
re-checks that port's queues and raises it again.  Entry kinds (``K_*``):

* ``K_CHAN`` index=port, value=``xe_chan`` image: write every field but
  ``last_priority``/``last_vcpu`` (the engine's own: where the word is linked);
* ``K_FREES`` value=u32: the domain's count of freed channels, set absolutely;
* ``K_CLOSE_WORD`` index=port: the guest masks the word, Xen clears PENDING;
* ``K_RAISE`` index=port: evtchn_set_pending (and the vCPU kick);
* ``K_ENABLE`` index=port: the guest unmasks it (EVTCHNOP_unmask if pending);
* ``K_PAGE`` index=page: the array has page ``index`` (fill it MASKED and
  raise nr_pages if it has not yet), re-raise its deferred events;
* ``K_RESET`` : close every open port of the domain (EVTCHNOP_reset) and put
  it back on 2-level (a simulated Linux guest then sets up again the ABI its
  kernel chose: ``DOM_KERNEL_2L`` above); index ``RESET_CLOSE`` does only the
  closing, ``RESET_SWITCH`` only the rest (the two halves Xen before XSA-343
  ran with the event lock let go between them: a replay's fault), 0 both;
* ``K_CONTROL`` index=vCPU, value=u32 offset: EVTCHNOP_init_control (the
  first control block switches the domain to FIFO: 2-level pending bits kept
  as deferred events, every port's priority the default);
* ``K_VCPU`` index=vCPU, value=u32 state (engine/layout.py ``VCPU_*``):
  VCPUOP_down or VCPUOP_up (the control block and queues are kept either
  way: a down vCPU's queues still take events); the header's version is made
  4 first (``VERSIONS``);
* ``K_DESTROY`` index=1 to leave the domain dying, 0 gone: Xen's
  evtchn_destroy() (every port closed, Xen's own included, so each
  interdomain peer goes back to unbound waiting for this domid; the FIFO
  control blocks and array let go), then the domain table flag stored last.
"""

from __future__ import annotations

import os
import struct
from itertools import compress

from .. import abi, xenver
from ..abi import ECS_INTERDOMAIN, ECS_IPI, ECS_RESERVED, ECS_VIRQ
from ..engine import Chan, DomainMemory, LayoutError
from ..engine.layout import CHAN, CHAN_DEFERRED, CHAN_FIELDS, CHAN_XEN, VCPU_STATES, Record
from ..errors import StateError
from ..ports import chan_problem

FILE_NAME = "host.xes"
MAGIC = b"XENEVTSM"
VERSION = 4  # 2: the journal page; 3: domain images of layout version 2 (2-level section), the Xen version;
# 4: per-vCPU online state (engine/layout.py VCPU_STATE_OFFSET)
# what this xenevt reads: a version 3 file's vCPU state bytes are 0, every vCPU online, as it was; the first vCPU
# state stored in one (K_VCPU) makes it version 4 first, so an older xenevt then refuses it instead of misreading it
VERSIONS = (3, 4)
HEADER = struct.Struct("<8sIIQQ")  # magic, version, nr_domains, file_size, created
DOM_ENTRY = struct.Struct("<IIQQ")  # domid, flags, offset, size
DOM_TABLE = 64
MAX_DOMAINS = abi.DOMID_FIRST_RESERVED  # domids 0..n-1: as many as Xen can name (one page of entries holds 168)
DOM_PRIVILEGED = 1
DOM_BARE = 2  # no simulated guest kernel: its memory changes only by hypercalls (a test guest's raw view)
DOM_PAUSED = 4  # paused by the toolstack (``xl pause``): EVTCHNOP_reset may name it
DOM_KERNEL_2L = 8  # its simulated Linux kernel chose the 2-level ABI (xen.fifo_events=0), not FIFO
DOM_DYING = 16  # destroyed but still listed (XEN_DOMINF_dying): every port closed, none can be allocated
DOM_GONE = 32  # destroyed: not listed, ESRCH for every hypercall naming it; its image is kept, unused
DOM_PERCPU = 64  # its simulated Linux binds what Linux binds per CPU (VIRQ_TIMER, the IPIs; domain.percpu_ports)
DOM_GUEST_32 = 128  # its guest is 32-bit (x86 compat): 1024 ports on the 2-level ABI
DOM_FLAGS = DOM_PRIVILEGED | DOM_BARE | DOM_PAUSED | DOM_KERNEL_2L | DOM_DYING | DOM_GONE | DOM_PERCPU | DOM_GUEST_32
XEN_VERSION_FIELD = 40  # u32 of the host header: the Xen version simulated, major << 8 | minor
# u64 of the host header: the host's identity, random and never 0 (0: a file made before it), so what lives beside
# the state file (the counters, the consumer locks) belongs to this host and not to one it replaced
HOST_ID_FIELD = 48
HOST_ID = struct.Struct("<Q")
XEN_VERSIONS = {v: xenver.code(v) for v in xenver.SIMULATED}  # the versions whose differences the simulator follows
DEFAULT_XEN = "4.20"
JOURNAL_AT = struct.Struct("<Q")  # at byte 32 of the header: the journal page's offset (the file's last page)
JOURNAL_FIELD = 32
LOCK_SLOT = 0x000
INTENT = 0x040
INTENT_HEADER = struct.Struct("<IIIIIIII")  # state, seq, op, caller, pid, count, crc, reserved
RAISE = 0x060
RAISE_MARK = struct.Struct("<II")  # domain + 1, port
ENTRIES = 0x080
ENTRY = struct.Struct("<IIII16s")  # kind, domain, index, reserved, value
MAX_INTENT_ENTRIES = (abi.PAGE_SIZE - ENTRIES) // ENTRY.size
INTENT_COMMITTED = 0x544E4958  # "XINT"
K_CHAN, K_FREES, K_CLOSE_WORD, K_RAISE, K_ENABLE, K_PAGE, K_RESET, K_CONTROL, K_DESTROY, K_VCPU = range(1, 11)
RESET_CLOSE, RESET_SWITCH = 1, 2  # K_RESET's halves (index; 0: the whole reset)
KINDS = {K_CHAN: "channel", K_FREES: "frees", K_CLOSE_WORD: "close-word", K_RAISE: "raise", K_ENABLE: "enable",
         K_PAGE: "page", K_RESET: "reset", K_CONTROL: "control-block", K_DESTROY: "destroy", K_VCPU: "vcpu-state"}
# the hypercall an intent record belongs to (reports only)
OPS = {1: "alloc_unbound", 2: "bind_interdomain", 3: "bind_virq", 4: "bind_ipi", 5: "close", 6: "reset",
       7: "expand_array", 8: "init_control", 9: "destroy", 10: "vcpu_down", 11: "vcpu_up"}
OP_CODES = {name: code for code, name in OPS.items()}


def new_host_id() -> int:
    """A fresh host identity: 64 random bits, never 0."""
    return int.from_bytes(os.urandom(8), "little") or 1


def host_id(mm) -> int:
    """The host identity in a mapped header (0: made before identities)."""
    return HOST_ID.unpack_from(mm, HOST_ID_FIELD)[0]


def corrupt(path: str, offset: int, field: str, why: str) -> StateError:
    """The one-line error for a bad field at ``offset`` of the state file."""
    return StateError(f"state file {path}: offset {offset:#x}: field {field}: {why}")


def _over(limit: int) -> bytes:
    """A translate() table mapping bytes 0..limit to 0 and every larger byte to 1."""
    return bytes(0 if b <= limit else 1 for b in range(256))


_STATE_BAD = _over(ECS_IPI)
_PRIO_BAD = _over(abi.EVTCHN_FIFO_PRIORITY_MIN)
_FLAGS_BAD = _over(CHAN_DEFERRED | CHAN_XEN)
_STATE_INTERDOMAIN = bytes(1 if b == ECS_INTERDOMAIN else 0 for b in range(256))
_STATE_VIRQ = bytes(1 if b == ECS_VIRQ else 0 for b in range(256))


def table_end(nr_domains: int) -> int:
    """The first byte after a table of ``nr_domains`` entries, rounded up to a page: where images may start."""
    return -(-(DOM_TABLE + nr_domains * DOM_ENTRY.size) // abi.PAGE_SIZE) * abi.PAGE_SIZE


def check_file(mm, size: int, path: str, records: bool = True) -> list[tuple[int, int, DomainMemory]]:
    """Check the whole file; returns ``(domid, flags, memory)`` per domain, in table order.

    ``records=False`` leaves the channel records to the caller (check_chans), who first redoes an intent record
    a kill cut short: that may have left a record half written, which redoing it writes whole.

    On error every view taken of ``mm`` is released before raising, so the caller can unmap.
    """
    if size < abi.PAGE_SIZE:
        raise StateError(f"state file {path} is truncated ({size} bytes): not a xenevt state file")
    magic, version, nr_domains, file_size, _ = HEADER.unpack_from(mm, 0)
    if magic != MAGIC:
        raise StateError(f"state file {path}: not a xenevt state file (bad magic)")
    if version not in VERSIONS:
        older = ": made by an older xenevt, re-create it with `xenevt sim init --force`" if version < VERSIONS[0] \
            else ""
        raise corrupt(path, 8, "version", f"unsupported state file version {version} (this xenevt reads "
                      f"{' and '.join(map(str, VERSIONS))}){older}")
    if file_size != size:
        raise corrupt(path, 16, "file_size", f"header says {file_size} bytes, the file has {size}")
    if not 1 <= nr_domains <= MAX_DOMAINS:
        raise corrupt(path, 12, "nr_domains", f"domain count {nr_domains} out of range 1..{MAX_DOMAINS}")
    journal = JOURNAL_AT.unpack_from(mm, JOURNAL_FIELD)[0]
    if journal != size - abi.PAGE_SIZE or journal < 2 * abi.PAGE_SIZE:
        raise corrupt(path, JOURNAL_FIELD, "journal_offset",
                      f"the journal page is at {journal:#x}, not the file's last page ({size - abi.PAGE_SIZE:#x})")
    xen = struct.unpack_from("<I", mm, XEN_VERSION_FIELD)[0]
    if xen not in XEN_VERSIONS.values():
        raise corrupt(path, XEN_VERSION_FIELD, "xen_version",
                      f"Xen {xen >> 8}.{xen & 0xff} is not one the simulator follows ({', '.join(XEN_VERSIONS)})")
    images_from = table_end(nr_domains)
    if images_from > journal:
        raise corrupt(path, 12, "nr_domains", f"a table of {nr_domains} domains ends at {images_from:#x}, past the "
                      f"journal page at {journal:#x}")
    entries = []
    for i in range(nr_domains):
        at = DOM_TABLE + i * DOM_ENTRY.size
        domid, flags, offset, dsize = DOM_ENTRY.unpack_from(mm, at)
        field = f"domain_table[{i}]"
        if domid >= abi.DOMID_FIRST_RESERVED:
            raise corrupt(path, at, f"{field}.domid", f"domain {domid} is not below {abi.DOMID_FIRST_RESERVED:#x}")
        if flags & ~DOM_FLAGS:
            raise corrupt(path, at + 4, f"{field}.flags", f"unknown flags {flags:#x}")
        if flags & DOM_BARE and flags & (DOM_KERNEL_2L | DOM_PERCPU):
            raise corrupt(path, at + 4, f"{field}.flags", f"flags {flags:#x}: domain {domid} is bare (no kernel), "
                          "yet names the ABI its kernel chose")
        if flags & DOM_DYING and flags & DOM_GONE:
            raise corrupt(path, at + 4, f"{field}.flags", f"flags {flags:#x}: domain {domid} is both dying and gone")
        if flags & DOM_GONE and flags & DOM_PRIVILEGED:
            raise corrupt(path, at + 4, f"{field}.flags", f"flags {flags:#x}: domain {domid} is privileged, which "
                          "the simulator never destroys")
        if offset % abi.PAGE_SIZE or not images_from <= offset < size:
            raise corrupt(path, at + 8, f"{field}.offset", f"domain {domid}'s image offset {offset:#x} is not a page "
                          f"boundary inside the file after the domain table (from {images_from:#x})")
        if dsize > size - offset:
            raise corrupt(path, at + 16, f"{field}.size",
                          f"domain {domid}'s image of {dsize} bytes at {offset:#x} runs past the file's end")
        if dsize > journal - offset:
            raise corrupt(path, at + 16, f"{field}.size",
                          f"domain {domid}'s image of {dsize} bytes at {offset:#x} overlaps the journal page at "
                          f"{journal:#x}")
        entries.append((i, domid, flags, offset, dsize))
    seen: dict[int, int] = {}
    for i, domid, *_ in entries:
        if domid in seen:
            raise corrupt(path, DOM_TABLE + i * DOM_ENTRY.size, f"domain_table[{i}].domid",
                          f"domain {domid} is listed twice (entries {seen[domid]} and {i})")
        seen[domid] = i
    by_offset = sorted(entries, key=lambda e: e[3])
    for (i, d1, _, o1, s1), (_, d2, _, o2, _) in zip(by_offset, by_offset[1:], strict=False):
        if o1 + s1 > o2:
            raise corrupt(path, DOM_TABLE + i * DOM_ENTRY.size + 16, f"domain_table[{i}].size",
                          f"domain {d1}'s image ({s1} bytes at {o1:#x}) overlaps domain {d2}'s at {o2:#x}")
    mems: list[tuple[int, int, DomainMemory]] = []
    try:
        for i, domid, flags, offset, dsize in entries:
            try:
                mem = DomainMemory(mm, offset, origin=f"state file {path}")
            except LayoutError as e:
                raise StateError(str(e)) from None
            mems.append((domid, flags, mem))
            if mem.geometry.size != dsize:
                raise corrupt(path, DOM_TABLE + i * DOM_ENTRY.size + 16, f"domain_table[{i}].size",
                              f"{dsize} bytes, but domain {domid}'s image header describes {mem.geometry.size}")
        nr_chans = {domid: mem.nr_chans for domid, _, mem in mems}
        for _, _, mem in mems:
            check_tails(mem, path)
            if records:
                check_chans(mem, nr_chans, path)
        check_journal(mm, journal, path, {domid: mem for domid, _, mem in mems})
    except BaseException:
        for _, _, mem in mems:
            mem.release()
        raise
    return mems


def check_tails(mem: DomainMemory, path: str) -> None:
    """Xen's queue tails: 0 or a port with an event word (the array never shrinks, so this stays true)."""
    with mem.tails() as view:
        tails = view.tolist()
    nr_ports = mem.nr_ports
    if max(tails) >= max(nr_ports, 1):  # (0 is always a tail: an empty queue, or a domain back on 2-level)
        i = next(i for i, t in enumerate(tails) if t and t >= nr_ports)
        at = mem.offset + mem.geometry.tails_offset + 4 * i
        raise corrupt(path, at, f"tails[{i // abi.EVTCHN_FIFO_MAX_QUEUES}][{i % abi.EVTCHN_FIFO_MAX_QUEUES}]",
                      f"tail port {tails[i]} has no event word (the array has {mem.nr_ports} ports)")


def check_chans(mem: DomainMemory, nr_chans: dict[int, int], path: str) -> None:
    """Every channel record of one domain (done in C where it can be: byte searches over strided copies)."""
    base = mem.geometry.chans_offset
    # views are released on the way out, error or not, so the mapping under them can be closed
    with mem.buffer[base: base + mem.nr_chans * CHAN.size] as table:
        check_table(table, mem, nr_chans, path)


def check_table(table, mem: DomainMemory, nr_chans: dict[int, int], path: str) -> None:
    """Every record of ``table``, a copy or a view of ``mem``'s channel table: the first bad field is one
    StateError (check_chan's).  Byte searches over strided copies find a bad state, priority or flag; the
    fields that point elsewhere (an interdomain peer, a VIRQ) are checked over lists of the column, not one
    record at a time (a host's 40,000 channels in milliseconds)."""
    n = len(table) // CHAN.size

    def bad(port: int):  # the record's own check names the field (and raises)
        check_chan(mem, port, Chan(*CHAN.unpack_from(table, port * CHAN.size)), nr_chans, path)
        raise AssertionError(f"channel {port} was found bad, then passed")  # pragma: no cover

    with memoryview(table) as view, view.cast("B") as raw, raw.cast("H") as halves, raw.cast("I") as words:
        for name, limits in (("state", _STATE_BAD), ("priority", _PRIO_BAD), ("last_priority", _PRIO_BAD),
                             ("flags", _FLAGS_BAD)):
            i = raw[CHAN_FIELDS[name]::CHAN.size].tobytes().translate(limits).find(1)
            if i >= 0:
                bad(i)
        for name in ("notify_vcpu", "last_vcpu"):
            column = halves[CHAN_FIELDS[name] // 2::CHAN.size // 2]
            if n and max(column) >= mem.nr_vcpus:
                bad(next(i for i, v in enumerate(column.tolist()) if v >= mem.nr_vcpus))
        states = raw[0::CHAN.size].tobytes()
        if not n or states[0] != ECS_RESERVED:
            raise corrupt(path, mem.offset + mem.geometry.chans_offset, "channel[0].state",
                          f"port 0 is in state {states[0] if n else None}, not reserved")
        remote_dom = halves[CHAN_FIELDS["remote_dom"] // 2::CHAN.size // 2].tolist()
        remote_port = words[CHAN_FIELDS["remote_port"] // 4::CHAN.size // 4].tolist()
        aux = halves[CHAN_FIELDS["aux"] // 2::CHAN.size // 2].tolist()
    limit = nr_chans if max(nr_chans, default=0) < abi.DOMID_FIRST_RESERVED else \
        {d: c for d, c in nr_chans.items() if d < abi.DOMID_FIRST_RESERVED}  # (a host's every domain, usually)
    # an interdomain peer on this host, its port inside that domain's table: first over whole columns (the
    # peers' domains, the ports' range against the smallest of their tables), record by record only if that fails
    marks = states.translate(_STATE_INTERDOMAIN)
    doms = set(compress(remote_dom, marks))
    if doms:
        ports = list(compress(remote_port, marks))
        if not (doms <= limit.keys() and min(ports) > 0 and max(ports) < min(limit[d] for d in doms)):
            for port in compress(range(n), marks):
                if not 0 < remote_port[port] < limit.get(remote_dom[port], 0):
                    bad(port)
    marks = states.translate(_STATE_VIRQ)
    if max(compress(aux, marks), default=0) >= abi.NR_VIRQS:
        bad(next(p for p in compress(range(n), marks) if aux[p] >= abi.NR_VIRQS))


def check_chan(mem: DomainMemory, port: int, ch: Chan, nr_chans: dict[int, int], path: str) -> Chan:
    """One channel record against its domain and the host (``nr_chans``: channels per domain); returns it."""
    bad = chan_problem(ch, mem.nr_vcpus, nr_chans)
    if bad is not None:
        field, why = bad
        at = mem.offset + mem.geometry.chans_offset + port * CHAN.size + CHAN_FIELDS[field]
        raise corrupt(path, at, f"channel[{port}].{field}", why)
    return ch


class Intent(Record):
    """A committed intent record (see the module's docstring)."""

    _FIELDS = ("seq", "op", "caller", "pid", "entries")

    def __init__(self, seq: int, op: int, caller: int, pid: int, entries: list[tuple[int, int, int, bytes]]):
        self.seq, self.op, self.caller, self.pid = seq, op, caller, pid
        self.entries = entries  # kind, domain, index, value

    @property
    def op_name(self) -> str:
        return OPS.get(self.op, f"op {self.op}")


def intent_crc(op: int, caller: int, pid: int, count: int, entries: bytes) -> int:
    import zlib  # (here: an open that finds no intent to check needs no CRC)

    return zlib.crc32(entries, zlib.crc32(struct.pack("<IIII", op, caller, pid, count)))


def read_intent(mm, journal: int) -> Intent | None:
    """The committed intent record of the journal page at ``journal``, unchecked (check_journal checks it)."""
    state, seq, op, caller, pid, count, _, _ = INTENT_HEADER.unpack_from(mm, journal + INTENT)
    if state != INTENT_COMMITTED:
        return None
    count = min(count, MAX_INTENT_ENTRIES)
    entries = [ENTRY.unpack_from(mm, journal + ENTRIES + i * ENTRY.size) for i in range(count)]
    return Intent(seq, op, caller, pid, [(k, d, i, v) for k, d, i, _, v in entries])


def read_raise(mm, journal: int) -> tuple[int, int] | None:
    """(domain, port) of a raise that was under way, or None."""
    dom1, port = RAISE_MARK.unpack_from(mm, journal + RAISE)
    return None if dom1 == 0 else (dom1 - 1, port)


def check_journal(mm, journal: int, path: str, mems: dict[int, DomainMemory]) -> Intent | None:
    """The journal page: an intent record must be whole (CRC) and name only what exists; so must a raise mark."""
    base = journal + INTENT
    state, _, op, caller, pid, count, crc, _ = INTENT_HEADER.unpack_from(mm, base)
    intent = None
    if state not in (0, INTENT_COMMITTED):
        raise corrupt(path, base, "intent.state", f"{state:#x} is neither 0 nor a committed record")
    if state == INTENT_COMMITTED:
        if not 1 <= count <= MAX_INTENT_ENTRIES:
            raise corrupt(path, base + 20, "intent.count", f"{count} entries, not 1..{MAX_INTENT_ENTRIES}")
        raw = bytes(mm[journal + ENTRIES: journal + ENTRIES + count * ENTRY.size])
        if intent_crc(op, caller, pid, count, raw) != crc:
            raise corrupt(path, base + 24, "intent.crc", "the committed intent record does not match its CRC")
        if op not in OPS:
            raise corrupt(path, base + 8, "intent.op", f"unknown operation {op}")
        intent = read_intent(mm, journal)
        assert intent is not None
        nr_chans = {d: m.nr_chans for d, m in mems.items()}
        for i, (kind, domid, index, value) in enumerate(intent.entries):
            at = journal + ENTRIES + i * ENTRY.size
            field = f"intent.entries[{i}]"
            if kind not in KINDS:
                raise corrupt(path, at, f"{field}.kind", f"unknown kind {kind}")
            mem = mems.get(domid)
            if mem is None:
                raise corrupt(path, at + 4, f"{field}.domain", f"domain {domid} is not on this host")
            if kind == K_CONTROL:
                offset = struct.unpack_from("<I", value)[0]
                if index >= mem.nr_vcpus or offset % 8 or offset > abi.PAGE_SIZE - abi.CONTROL_BLOCK_SIZE:
                    raise corrupt(path, at + 8, f"{field}.index", f"no control block of vCPU {index} at offset "
                                  f"{offset:#x} in domain {domid}")
            if kind == K_VCPU:
                state = struct.unpack_from("<I", value)[0]
                if index >= mem.nr_vcpus or state not in VCPU_STATES:
                    raise corrupt(path, at + 8, f"{field}.index", f"no vCPU {index} in domain {domid} to put in "
                                  f"state {state}")
            if kind == K_RESET and index not in (0, RESET_CLOSE, RESET_SWITCH):
                raise corrupt(path, at + 8, f"{field}.index", f"{index} is no part of a reset")
            if kind == K_PAGE:
                if index >= mem.max_pages:
                    raise corrupt(path, at + 8, f"{field}.index",
                                  f"page {index} out of range 0..{mem.max_pages - 1} of domain {domid}")
            elif kind in (K_CHAN, K_CLOSE_WORD, K_RAISE, K_ENABLE) and not 0 < index < mem.nr_chans:
                raise corrupt(path, at + 8, f"{field}.index",
                              f"port {index} out of range 1..{mem.nr_chans - 1} of domain {domid}")
            if kind == K_CHAN:
                bad = chan_problem(Chan(*CHAN.unpack(value)), mem.nr_vcpus, nr_chans)
                if bad is not None:
                    raise corrupt(path, at + 16 + CHAN_FIELDS[bad[0]], f"{field}.value.{bad[0]}", bad[1])
    mark = read_raise(mm, journal)
    if mark is not None:
        domid, port = mark
        if domid not in mems:
            raise corrupt(path, journal + RAISE, "raise.domain", f"domain {domid} is not on this host")
        if not 0 < port < mems[domid].nr_chans:
            raise corrupt(path, journal + RAISE + 4, "raise.port",
                          f"port {port} out of range 1..{mems[domid].nr_chans - 1} of domain {domid}")
    return intent
