"""The raw dump file: the ABI's own bytes, saved for offline decoding.

All integers little-endian.  A 128-byte header::

    0   8  magic "XENEVTDP"
    8   4  version: 1 (FIFO only) or 2
    12  4  domain
    16  4  nr_vcpus, 1..256
    20  4  nr_pages: event-array pages, 1..128 (FIFO); 0 (2-level)
    24  4  flags: 1 GUEST (Linux's local state saved), 2 CHANNELS (the hypervisor's channel table saved)
    28  4  nr_chans: channel records saved, 0 without CHANNELS; with it 1..131072 (FIFO), 1..4096 (2-level)
    32  8  creation time (seconds since the epoch)
    40  64 source text, NUL padded
    104 4  (version 2) abi: 0 2-level, 1 FIFO; version 1 has 0 here and is FIFO
    108 20 (version 2) reserved, zero

FIFO body (both versions): per vCPU a u32 "has a control block" (0/1) and
the 72-byte control block; then, with GUEST, Linux's local ``ready,
head[16]`` (17 u32) per vCPU; then the event-array pages (4096 bytes each,
exactly as mapped); then, with CHANNELS, the 16-byte channel records
(``xe_chan``: state, priority, last_priority, flags u8; notify_vcpu,
last_vcpu, remote_dom, aux u16; remote_port u32).

2-level body (version 2): Xen's shared_info page, 4096 bytes as read (for a
64-bit guest: ``vcpu_info[32]`` of 64 bytes at 0, ``evtchn_pending[64]`` u64
at 2048, ``evtchn_mask[64]`` u64 at 2560); then per vCPU a 72-byte record:
u32 known (0/1: the vCPU's own vcpu_info was read), u32 reserved (0), and
the 64-byte vcpu_info the vCPU uses (``evtchn_upcall_pending`` u8 at 0,
``evtchn_upcall_mask`` u8 at 1, ``evtchn_pending_sel`` u64 at 8; Linux
registers it outside shared_info, so it overrides the slot there); then,
with GUEST, per vCPU 520 bytes of Linux's events_2l.c state:
``current_word_idx`` u32 and ``current_bit_idx`` u32 (each 0..63) and
``cpu_evtchn_mask[64]`` u64 (the ports Linux delivers on that CPU); then,
with CHANNELS, the channel records as for FIFO.

Both end with a CRC-32 (u32) of everything before it.  Every field is
checked on load, so a truncated or corrupted file is named, with the offset
and field, instead of being decoded into nonsense; a file whose checksum is
right but whose channel records no Xen could hold (state 200, priority 99,
vCPU 9999) loads with warnings (the memory's ``warnings``, which every dump
shows), and such records are ignored rather than shown as real.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from dataclasses import dataclass

from .. import abi
from ..engine import Chan, DomainMemory
from ..engine.layout import CHAN, CHAN_FIELDS, GUEST_VCPU, L2_WORDS, MAX_VCPUS, VCPU_INFO_SIZE
from ..errors import MiB, XenevtError, read_input
from ..ports import chan_is_open, chan_problem, chan_status
from .decode import abi_of
from .frames import CPU_MASK_SIZE, from_frames, from_shared_info

MAGIC = b"XENEVTDP"
VERSION = 2
VERSIONS = (1, 2)
HEADER = struct.Struct("<8sIIIIIIQ64s")  # magic, version, domain, nr_vcpus, nr_pages, flags, nr_chans, time, source
HEADER2 = struct.Struct("<I20s")  # (version 2, at 104) abi, reserved
HEADER2_AT = HEADER.size
HEADER_SIZE = 128
ABI_2L, ABI_FIFO = 0, 1  # the header's abi field (the layout's ABI_WORD values)
CB_RECORD = struct.Struct("<I72s")
VCPU_RECORD = struct.Struct("<II64s")  # known, reserved, vcpu_info
L2_GUEST = struct.Struct("<II512s")    # current_word_idx, current_bit_idx, cpu_evtchn_mask
FLAG_GUEST = 1      # Linux's local heads are saved
FLAG_CHANNELS = 2   # the hypervisor's channel table is saved (simulator only)
CRC = struct.Struct("<I")
# the largest file the format allows is some 2.7 MB (256 vCPUs, 128 event-array pages, 131,072 channel records)
MAX_FILE = 16 * MiB


class DumpFileError(XenevtError):
    """A raw dump file that cannot be decoded: the message names the file and offset."""


@dataclass
class RawDump:
    """A loaded dump: the memory rebuilt as a DomainMemory, ready for build_dump()."""

    path: str
    domain: int
    source: str
    created: int
    mem: DomainMemory
    guest_known: bool
    has_channels: bool
    version: int = VERSION
    vcpu_known: list[bool] | None = None  # 2-level: whose vcpu_info the file holds (None: FIFO)

    def channels(self) -> dict | None:
        """The saved channel table as PortStatus by port (open ports only), or None if not saved."""
        if not self.has_channels:
            return None
        out = {}
        two = self.vcpu_known is not None
        for port in range(1, self.mem.nr_chans):
            ch = self.mem.chan(port)
            if chan_is_open(ch):
                out[port] = chan_status(self.domain, port, ch, self.mem.l2_word(port) if two
                                        else self.mem.word(port))
        return out


def _expected_size(nr_vcpus: int, nr_pages: int, flags: int, nr_chans: int, two_level: bool = False) -> int:
    if two_level:
        size = HEADER_SIZE + abi.PAGE_SIZE + nr_vcpus * VCPU_RECORD.size
        if flags & FLAG_GUEST:
            size += nr_vcpus * L2_GUEST.size
        if flags & FLAG_CHANNELS:
            size += nr_chans * CHAN.size
        return size + CRC.size
    size = HEADER_SIZE + nr_vcpus * CB_RECORD.size
    if flags & FLAG_GUEST:
        size += nr_vcpus * GUEST_VCPU.size
    size += nr_pages * abi.PAGE_SIZE
    if flags & FLAG_CHANNELS:
        size += nr_chans * CHAN.size
    return size + CRC.size


def encode(mem: DomainMemory, domain: int, source: str, *, guest: bool = True, channels: bool = True,
           vcpu_known: list[bool] | None = None) -> bytes:
    """The bytes of a raw dump of ``mem`` (version 2; the ABI the image is on).  ``vcpu_known`` (2-level):
    whose vcpu_info is real (default: all)."""
    flags = (FLAG_GUEST if guest else 0) | (FLAG_CHANNELS if channels else 0)
    two = abi_of(mem) == "2-level"
    nv, npages = mem.nr_vcpus, 0 if two else mem.nr_pages
    nchans = (min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS) if two else mem.nr_chans) if channels else 0
    out = bytearray(HEADER_SIZE)
    HEADER.pack_into(out, 0, MAGIC, VERSION, domain, nv, npages, flags, nchans, int(time.time()),
                     source.encode()[:64])
    HEADER2.pack_into(out, HEADER2_AT, ABI_2L if two else ABI_FIFO, b"")
    if two:
        _encode_l2(out, mem, guest, vcpu_known)
    else:
        _encode_fifo(out, mem, guest)
    if channels:
        for port in range(nchans):
            c = mem.chan(port)
            out += CHAN.pack(c.state, c.priority, c.last_priority, c.flags, c.notify_vcpu, c.last_vcpu,
                             c.remote_dom, c.aux, c.remote_port)
    out += CRC.pack(zlib.crc32(out))
    return bytes(out)


def _encode_l2(out: bytearray, mem: DomainMemory, guest: bool, vcpu_known: list[bool] | None) -> None:
    at = mem.geometry.l2_offset
    out += mem.buffer[at: at + abi.PAGE_SIZE]
    for v in range(mem.nr_vcpus):
        known = vcpu_known is None or v < len(vcpu_known) and vcpu_known[v]
        info = mem.geometry.vcpu_info_offset(v)
        out += VCPU_RECORD.pack(known, 0, bytes(mem.buffer[info: info + VCPU_INFO_SIZE]) if known else b"")
    if guest:
        nr = min(mem.nr_chans, abi.EVTCHN_2L_NR_CHANNELS)
        masks = [0] * mem.nr_vcpus
        for port in range(nr):  # Linux's cpu_evtchn_mask: each port in its vCPU's mask
            v = mem.chan(port).notify_vcpu
            if v < mem.nr_vcpus:
                masks[v] |= 1 << port
        for v in range(mem.nr_vcpus):
            scan = mem.l2_scan(v)
            out += L2_GUEST.pack(scan[0], scan[1], masks[v].to_bytes(CPU_MASK_SIZE, "little"))


def _encode_fifo(out: bytearray, mem: DomainMemory, guest: bool) -> None:
    nv, npages = mem.nr_vcpus, mem.nr_pages
    for v in range(nv):
        cb = mem.control_block(v)
        out += CB_RECORD.pack(cb is not None, bytes(cb) if cb is not None else bytes(72))
    if guest:
        for v in range(nv):
            out += bytes(mem.guest(v))
    for i in range(npages):
        out += bytes(mem.page_words(i))


def save_raw(path: str, mem: DomainMemory, domain: int, source: str, **kw) -> int:
    """Write a raw dump atomically (never a half-written file at ``path``); returns its size."""
    import tempfile  # (here: reading a dump, or a command that imports this module and saves none, needs none)

    data = encode(mem, domain, source, **kw)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".xenevt-dump-", dir=folder)
    except OSError as e:
        raise DumpFileError(f"cannot write dump file {path}: {e.strerror or e}".rstrip()) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise DumpFileError(f"cannot write dump file {path}: {e.strerror or e}") from None
    return len(data)


def load_raw(path: str) -> RawDump:
    return decode(read_input(path, "dump file", DumpFileError, stdin=False, cap=MAX_FILE), path)


def decode(data: bytes, path: str = "<dump>") -> RawDump:
    def bad(why: str) -> DumpFileError:
        return DumpFileError(f"dump file {path}: {why}")

    if len(data) < HEADER_SIZE:
        if data[:8] != MAGIC[: len(data[:8])] or not data:
            raise bad("not a xenevt raw dump (bad magic)" if data else "empty file")
        raise bad(f"truncated header: {len(data)} of {HEADER_SIZE} bytes")
    magic, version, domain, nv, npages, flags, nchans, created, source = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise bad("not a xenevt raw dump (bad magic)")
    if version not in VERSIONS:
        raise bad(f"unsupported version {version} at offset 0x8 (this xenevt reads versions 1 and 2)")
    two = False
    if version >= 2:
        kind, reserved = HEADER2.unpack_from(data, HEADER2_AT)
        if kind not in (ABI_2L, ABI_FIFO):
            raise bad(f"offset {HEADER2_AT:#x}: field abi: {kind} is neither 0 (2-level) nor 1 (FIFO)")
        if any(reserved):
            raise bad(f"offset {HEADER2_AT + 4:#x}: field reserved: not zero")
        two = kind == ABI_2L
    if not 1 <= nv <= MAX_VCPUS:
        raise bad(f"vCPU count {nv} out of range 1..{MAX_VCPUS} at offset 16")
    if two and npages:
        raise bad(f"event-array page count {npages} at offset 20: a 2-level dump has none (0)")
    if not two and not 1 <= npages <= abi.MAX_EVENT_ARRAY_PAGES:
        raise bad(f"event-array page count {npages} out of range 1..{abi.MAX_EVENT_ARRAY_PAGES} at offset 20")
    if flags & ~(FLAG_GUEST | FLAG_CHANNELS):
        raise bad(f"unknown flags {flags:#x} at offset 24")
    top = abi.EVTCHN_2L_NR_CHANNELS if two else abi.EVTCHN_FIFO_NR_CHANNELS
    if flags & FLAG_CHANNELS and not (2 if two else 1) <= nchans <= top:
        raise bad(f"channel count {nchans} out of range {2 if two else 1}..{top} at offset 28")
    if version >= 2 and not flags & FLAG_CHANNELS and nchans:
        raise bad(f"channel count {nchans} at offset 28 without the CHANNELS flag (0 expected)")
    want = _expected_size(nv, npages, flags, nchans, two)
    if len(data) < want:
        raise bad(f"truncated: {len(data)} of {want} bytes (cut at offset {len(data)})")
    if len(data) > want:
        raise bad(f"{len(data) - want} unexpected bytes after offset {want}")
    (crc,) = CRC.unpack_from(data, want - CRC.size)
    if zlib.crc32(data[: want - CRC.size]) != crc:
        raise bad("checksum mismatch: the file is corrupt")
    if two:
        mem, known, off = _decode_l2(data, nv, flags, nchans, bad)
    else:
        mem, off = _decode_fifo(data, nv, npages, flags, nchans, bad)
        known = None
    warnings = mem.warnings
    if domain >= abi.DOMID_FIRST_RESERVED:
        warnings.append(f"dump file {path}: offset 0xc: field domain: {domain} is not a domain id (ids stop below "
                        f"{abi.DOMID_FIRST_RESERVED:#x}); shown as read")
    if flags & FLAG_CHANNELS:
        ignored = 0
        for port in range(nchans):
            ch = Chan(*CHAN.unpack_from(data, off))
            bad_field = chan_problem(ch, nv) if port else None
            if bad_field is not None:  # not shown as if Xen had said it: the word stays, without a channel
                ignored += 1
                if ignored <= 8:
                    warnings.append(f"dump file {path}: offset {off + CHAN_FIELDS[bad_field[0]]:#x}: field "
                                    f"channel[{port}].{bad_field[0]}: {bad_field[1]}; the record is ignored")
                ch = Chan(notify_vcpu=mem.chan(port).notify_vcpu)
            mem.set_chan(port, ch)
            off += CHAN.size
        if ignored > 8:
            warnings.append(f"dump file {path}: ... and {ignored - 8} more impossible channel records ignored")
    return RawDump(path, domain, source.rstrip(b"\0").decode(errors="replace"), created, mem,
                   bool(flags & FLAG_GUEST), bool(flags & FLAG_CHANNELS), version, known)


def _decode_l2(data: bytes, nv: int, flags: int, nchans: int, bad):
    """The 2-level body: shared_info, per-vCPU vcpu_info records, Linux's scan positions and CPU masks."""
    off = HEADER_SIZE
    shared = data[off: off + abi.PAGE_SIZE]
    off += abi.PAGE_SIZE
    infos: list[bytes | None] = []
    for v in range(nv):
        known, reserved, info = VCPU_RECORD.unpack_from(data, off)
        if known > 1:
            raise bad(f"offset {off:#x}: field vcpu[{v}].known: {known} is not 0 or 1")
        if reserved:
            raise bad(f"offset {off + 4:#x}: field vcpu[{v}].reserved: {reserved} is not 0")
        infos.append(info if known else None)
        off += VCPU_RECORD.size
    scan = masks = None
    if flags & FLAG_GUEST:
        scan, masks = [], []
        for v in range(nv):
            word, bit, mask = L2_GUEST.unpack_from(data, off)
            for name, value, at in (("current_word_idx", word, off), ("current_bit_idx", bit, off + 4)):
                if value >= L2_WORDS:
                    raise bad(f"offset {at:#x}: field {name}[{v}]: {value} out of range 0..{L2_WORDS - 1}")
            scan.append((word, bit))
            masks.append(mask)
            off += L2_GUEST.size
    mem = from_shared_info(shared, infos, scan=scan, cpu_masks=masks,
                           nr_chans=nchans if flags & FLAG_CHANNELS else abi.EVTCHN_2L_NR_CHANNELS)
    return mem, [i is not None for i in infos], off


def _decode_fifo(data: bytes, nv: int, npages: int, flags: int, nchans: int, bad):
    off = HEADER_SIZE
    cbs = []
    for v in range(nv):
        present, raw = CB_RECORD.unpack_from(data, off)
        if present > 1:
            raise bad(f"control-block flag {present} of vCPU {v} at offset {off} is not 0 or 1")
        cbs.append(raw if present else None)
        off += CB_RECORD.size
    heads = ready = None
    if flags & FLAG_GUEST:
        heads, ready = [], []
        for _ in range(nv):
            g = GUEST_VCPU.unpack_from(data, off)
            ready.append(g[0])
            heads.append(list(g[1:]))
            off += GUEST_VCPU.size
    pages = [data[off + i * abi.PAGE_SIZE: off + (i + 1) * abi.PAGE_SIZE] for i in range(npages)]
    off += npages * abi.PAGE_SIZE
    return from_frames(pages, cbs, heads, nchans, ready), off
