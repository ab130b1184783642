"""The raw dump file: the ABI's own bytes, saved for offline decoding.

Layout (little-endian): a 128-byte header (magic ``XENEVTDP``, version,
domain, nr_vcpus, nr_pages, flags, nr_chans, creation time, source text),
then per vCPU a u32 "has a control block" and the 72-byte control block,
then Linux's local ``ready, head[16]`` per vCPU if flag GUEST, then the
event-array pages (4 KiB each, exactly as mapped), then the 16-byte channel
records if flag CHANNELS, then a CRC-32 of everything before it.  Every
field is checked on load, so a truncated or corrupted file is named, with
the offset, instead of being decoded into nonsense; a file whose checksum is
right but whose fields no Xen could hold (state 200, priority 99, vCPU 9999)
loads with warnings (the memory's ``warnings``, which every dump shows), and
such channel records are ignored rather than shown as real.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass

from .. import abi
from ..engine import Chan, DomainMemory
from ..engine.layout import CHAN, CHAN_FIELDS, GUEST_VCPU, MAX_VCPUS
from ..errors import XenevtError, read_input
from ..ports import chan_is_open, chan_problem, chan_status
from .frames import from_frames

MAGIC = b"XENEVTDP"
VERSION = 1
HEADER = struct.Struct("<8sIIIIIIQ64s")  # magic, version, domain, nr_vcpus, nr_pages, flags, nr_chans, time, source
HEADER_SIZE = 128
CB_RECORD = struct.Struct("<I72s")
FLAG_GUEST = 1      # Linux's local heads are saved
FLAG_CHANNELS = 2   # the hypervisor's channel table is saved (simulator only)
CRC = struct.Struct("<I")


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

    def channels(self) -> dict | None:
        """The saved channel table as PortStatus by port (open ports only), or None if not saved."""
        if not self.has_channels:
            return None
        out = {}
        for port in range(1, self.mem.nr_chans):
            ch = self.mem.chan(port)
            if chan_is_open(ch):
                out[port] = chan_status(self.domain, port, ch, self.mem.word(port))
        return out


def _expected_size(nr_vcpus: int, nr_pages: int, flags: int, nr_chans: int) -> int:
    size = HEADER_SIZE + nr_vcpus * CB_RECORD.size
    if flags & FLAG_GUEST:
        size += nr_vcpus * GUEST_VCPU.size
    size += nr_pages * abi.PAGE_SIZE
    if flags & FLAG_CHANNELS:
        size += nr_chans * CHAN.size
    return size + CRC.size


def encode(mem: DomainMemory, domain: int, source: str, *, guest: bool = True, channels: bool = True) -> bytes:
    """The bytes of a raw dump of ``mem``."""
    flags = (FLAG_GUEST if guest else 0) | (FLAG_CHANNELS if channels else 0)
    nv, npages, nchans = mem.nr_vcpus, mem.nr_pages, mem.nr_chans if channels else 0
    out = bytearray(HEADER_SIZE)
    HEADER.pack_into(out, 0, MAGIC, VERSION, domain, nv, npages, flags, nchans, int(time.time()),
                     source.encode()[:64])
    for v in range(nv):
        cb = mem.control_block(v)
        out += CB_RECORD.pack(cb is not None, bytes(cb) if cb is not None else bytes(72))
    if guest:
        for v in range(nv):
            out += bytes(mem.guest(v))
    for i in range(npages):
        out += bytes(mem.page_words(i))
    if channels:
        for port in range(nchans):
            c = mem.chan(port)
            out += CHAN.pack(c.state, c.priority, c.last_priority, c.flags, c.notify_vcpu, c.last_vcpu,
                             c.remote_dom, c.aux, c.remote_port)
    out += CRC.pack(zlib.crc32(out))
    return bytes(out)


def save_raw(path: str, mem: DomainMemory, domain: int, source: str, **kw) -> int:
    """Write a raw dump atomically (never a half-written file at ``path``); returns its size."""
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
    return decode(read_input(path, "dump file", DumpFileError, stdin=False), path)


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
    if version != VERSION:
        raise bad(f"unsupported version {version} (this xenevt reads {VERSION})")
    if not 1 <= nv <= MAX_VCPUS:
        raise bad(f"vCPU count {nv} out of range 1..{MAX_VCPUS} at offset 16")
    if not 1 <= npages <= abi.MAX_EVENT_ARRAY_PAGES:
        raise bad(f"event-array page count {npages} out of range 1..{abi.MAX_EVENT_ARRAY_PAGES} at offset 20")
    if flags & ~(FLAG_GUEST | FLAG_CHANNELS):
        raise bad(f"unknown flags {flags:#x} at offset 24")
    if flags & FLAG_CHANNELS and not 0 < nchans <= abi.EVTCHN_FIFO_NR_CHANNELS:
        raise bad(f"channel count {nchans} out of range at offset 28")
    want = _expected_size(nv, npages, flags, nchans)
    if len(data) < want:
        raise bad(f"truncated: {len(data)} of {want} bytes (cut at offset {len(data)})")
    if len(data) > want:
        raise bad(f"{len(data) - want} unexpected bytes after offset {want}")
    (crc,) = CRC.unpack_from(data, want - CRC.size)
    if zlib.crc32(data[: want - CRC.size]) != crc:
        raise bad("checksum mismatch: the file is corrupt")
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
    mem = from_frames(pages, cbs, heads, nchans, ready)
    warnings = mem.warnings
    if domain >= abi.DOMID_FIRST_RESERVED:
        warnings.append(f"dump file {path}: offset 0xc: field domain: {domain} is not a domain id (ids stop below "
                        f"{abi.DOMID_FIRST_RESERVED:#x}); shown as read")
    if flags & FLAG_CHANNELS:
        ignored = 0
        for port in range(nchans):
            ch = Chan(*CHAN.unpack_from(data, off))
            bad = chan_problem(ch, nv) if port else None
            if bad is not None:  # not shown as if Xen had said it: the word stays, without a channel
                ignored += 1
                if ignored <= 8:
                    warnings.append(f"dump file {path}: offset {off + CHAN_FIELDS[bad[0]]:#x}: field "
                                    f"channel[{port}].{bad[0]}: {bad[1]}; the record is ignored")
                ch = Chan()
            mem.set_chan(port, ch)
            off += CHAN.size
        if ignored > 8:
            warnings.append(f"dump file {path}: ... and {ignored - 8} more impossible channel records ignored")
    return RawDump(path, domain, source.rstrip(b"\0").decode(errors="replace"), created, mem,
                   bool(flags & FLAG_GUEST), bool(flags & FLAG_CHANNELS))
