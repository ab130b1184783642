"""The simulated Linux's lateeoi records (lateeoi.py): what each kernel keeps in its irq_info for a PV device's
port, and each vCPU's irq_epoch, in a file beside the state file.

``lateeoi-dN.xes``, one per domain: a header naming the host and the domain (as the counters file names the host),
its vCPUs' epochs and in-upcall marks, then one record per channel; made on first use, started again empty for
another host or another domain given the same id (a host that gains a domain keeps the others' files).  The
guests' memory, never Xen's: no journal entry covers it (lateeoi.py says why a kill at any instant is safe).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

from ..abi import ECS_INTERDOMAIN
from ..engine import faults
from .statefile import HEADER, host_id
from .store import HostFile

LATEEOI_PREFIX = "lateeoi-d"  # lateeoi-d0.xes, ...: one file per domain, its kernel's
MAGIC = b"XEVTLEOI"
VERSION = 1
# magic, version, the host's creation time and identity, the domain's id and its entry in the host's domain table
# (a domain destroyed and another given its id is told apart), its vCPUs and channels
FILE_HEADER = struct.Struct("<8sIQQIIII")
F_LATEEOI = 1   # bound with the lateeoi chip (a device's channel)
F_ON_LIST = 2   # its EOI waits on its CPU's delayed list until eoi_time

# irq_info's lateeoi part, one per port: flags, mask_reason, is_active, spurious_cnt, eoi_cpu, the peer's domain,
# the peer's port (the record holds while the channel is still interdomain to them), irq_epoch, eoi_time; then the
# xenbus device's counters this port adds to (events, spurious_events, jiffies_eoi_delayed), the ring's requests
# produced by the peer and consumed by the driver, and events ignored while the port was active
RECORD = struct.Struct("<BBBBHHIIQQQQQQQ")
R_FLAGS, R_REASON, R_ACTIVE, R_SPURIOUS_CNT, R_EOI_CPU, R_PEER_DOM, R_PEER_PORT, R_EPOCH, R_EOI_TIME = range(9)
R_EVENTS, R_SPURIOUS, R_DELAYED, R_PRODUCED, R_CONSUMED, R_IGNORED = range(9, 15)
N_FIELDS = 15
PRODUCED_AT = struct.calcsize(RECORD.format[:13])  # byte offset of the peer's producer count (its only writer)
EPOCH = struct.Struct("<II")  # per vCPU: irq_epoch, and 1 while a server is inside an upcall on it


def lateeoi_name(domid: int) -> str:
    """The file of domain ``domid``'s records, beside the state file."""
    return f"{LATEEOI_PREFIX}{domid}.xes"


@dataclass
class Counters:
    """A xenbus device's lateeoi counters (Linux 5.12+ ``/sys/bus/xen*/devices/*/xenbus/``), summed over its ports."""

    events: int = 0
    spurious_events: int = 0
    jiffies_eoi_delayed: int = 0


class Records:
    """The records files of the open host ``file``, each domain's mapped on first use."""

    def __init__(self, file: HostFile):
        self.file = file
        self._maps: dict[int, mmap.mmap | None] = {}

    def _map(self, domid: int) -> mmap.mmap | None:
        """Domain ``domid``'s records file: its header, its vCPUs' epochs, then one record per channel; made on
        first use (read only: None where never made, as then no port of it is lateeoi).  One of another host, or of
        another domain that had this domid before, is started again empty."""
        if domid in self._maps:
            return self._maps[domid]
        file = self.file
        dom = file.domains[domid]
        mem = dom.mem
        ident = FILE_HEADER.pack(MAGIC, VERSION, HEADER.unpack_from(file.mm, 0)[4], host_id(file.mm), domid,
                                 dom.table_index, mem.nr_vcpus, mem.nr_chans)
        size = FILE_HEADER.size + EPOCH.size * mem.nr_vcpus + RECORD.size * mem.nr_chans
        mm = file.dir.map_own(lateeoi_name(domid), ident, size, file.read_only, ".lateeoi-")
        self._maps[domid] = mm
        return mm

    def _base(self, domid: int) -> int:
        """Where the domain's records start in its file (after its vCPUs' epochs)."""
        return FILE_HEADER.size + EPOCH.size * self.file.domains[domid].mem.nr_vcpus

    def slot(self, domid: int, port: int) -> tuple[mmap.mmap, int] | None:
        """The mapping and offset of the port's record (None: no file, or no such port)."""
        if not 0 < port < self.file.domains[domid].mem.nr_chans:
            return None
        mm = self._map(domid)
        return None if mm is None else (mm, self._base(domid) + RECORD.size * port)

    def record(self, domid: int, port: int) -> list[int] | None:
        """The port's record while it is a lateeoi device channel to the same peer (a port closed and bound again
        is a plain one), else None."""
        slot = self.slot(domid, port)
        if slot is None:
            return None
        rec = list(RECORD.unpack_from(*slot))
        if not rec[R_FLAGS] & F_LATEEOI:
            return None
        ch = self.file.domains[domid].mem.chan(port)
        if ch.state != ECS_INTERDOMAIN or ch.remote_dom != rec[R_PEER_DOM] or ch.remote_port != rec[R_PEER_PORT]:
            return None
        return rec

    def store(self, domid: int, port: int, rec: list[int]) -> None:
        """The record written whole but for the peer's producer count (its own, written by the peer alone)."""
        slot = self.slot(domid, port)
        assert slot is not None
        mm, at = slot
        image = RECORD.pack(*rec)
        mm[at:at + PRODUCED_AT] = image[:PRODUCED_AT]
        mm[at + PRODUCED_AT + 8:at + RECORD.size] = image[PRODUCED_AT + 8:]

    def epoch(self, domid: int, vcpu: int, marked: bool = False) -> int:
        """The vCPU's irq_epoch (``marked``: its in-upcall mark instead)."""
        mm = self._map(domid)
        assert mm is not None
        return EPOCH.unpack_from(mm, FILE_HEADER.size + EPOCH.size * vcpu)[1 if marked else 0]

    def mark(self, domid: int, vcpu: int, on: int, bump: bool = False) -> None:
        """The vCPU's in-upcall mark (and, leaving, its irq_epoch bumped)."""
        mm = self._map(domid)
        assert mm is not None
        at = FILE_HEADER.size + EPOCH.size * vcpu
        epoch = EPOCH.unpack_from(mm, at)[0]
        EPOCH.pack_into(mm, at, (epoch + 1) & 0xFFFFFFFF if bump else epoch, on)

    def produced(self, domid: int, port: int) -> int:
        slot = self.slot(domid, port)
        assert slot is not None
        return struct.unpack_from("<Q", slot[0], slot[1] + PRODUCED_AT)[0]

    def bind(self, domid: int, port: int) -> None:
        """bind_interdomain_evtchn_to_irq_lateeoi(): the driver's port, a fresh irq_info (its device's counters
        from 0), masked until the driver is ready as every new irq is, then enabled (unmasked)."""
        slot = None if self.file.read_only else self.slot(domid, port)
        if slot is None:
            return
        ch = self.file.domains[domid].mem.chan(port)
        rec = [0] * N_FIELDS
        rec[R_PEER_DOM], rec[R_PEER_PORT] = ch.remote_dom, ch.remote_port
        # the replay of a kernel before lateeoi (XSA-332/391): the plain edge chip, so no record (a plain port,
        # acked and unmasked at once) and no xenbus counters
        rec[R_FLAGS] = 0 if faults.on(faults.LINUX_NO_LATEEOI) else F_LATEEOI
        mm, at = slot
        mm[at:at + RECORD.size] = RECORD.pack(*rec)

    def records(self, domid: int) -> list[tuple[int, list[int]]]:
        """The domain's lateeoi device ports and their records."""
        mm = self._map(domid)
        if mm is None:
            return []
        base, nr = self._base(domid), self.file.domains[domid].mem.nr_chans
        out = []
        for port, flags in enumerate(mm[base:base + RECORD.size * nr:RECORD.size]):
            if flags & F_LATEEOI:
                rec = self.record(domid, port)
                if rec is not None:
                    out.append((port, rec))
        return out

    def counters(self, domid: int, ports: list[int]) -> Counters | None:
        """A xenbus device's counters over its ``ports`` of ``domid``; None when none of them is lateeoi."""
        recs = [r for r in (self.record(domid, p) for p in ports) if r is not None]
        if not recs:
            return None
        return Counters(sum(r[R_EVENTS] for r in recs), sum(r[R_SPURIOUS] for r in recs),
                        sum(r[R_DELAYED] for r in recs))

    def xenbus(self, domid: int, nodes: dict[str, str]) -> list[tuple[str, str, Counters]]:
        """``domid``'s xenbus devices with lateeoi channels, as its sysfs names them: (nodename, device name,
        counters), a frontend's ``device/vif/0`` (``vif-0``), a backend's ``backend/vif/1/0`` (``vif-1-0``).  The
        frontend's ports are its xenstore nodes' values; the backend's, the other ends of those channels."""
        out = []
        for front, kind, dev, ports in _frontends(nodes):
            fdom = int(front.split("/")[3])
            back = nodes.get(f"{front}/backend-id", "")
            if fdom == domid:
                c = self.counters(domid, ports)
                if c is not None:
                    out.append((f"device/{kind}/{dev}", f"{kind}-{dev}", c))
            elif back.isdigit() and int(back) == domid and fdom in self.file.domains:
                fmem = self.file.domains[fdom].mem
                peers = [ch.remote_port for ch in (fmem.chan(p) for p in ports if 0 < p < fmem.nr_chans)
                         if ch.state == ECS_INTERDOMAIN and ch.remote_dom == domid]
                c = self.counters(domid, peers)
                if c is not None:
                    out.append((f"backend/{kind}/{fdom}/{dev}", f"{kind}-{fdom}-{dev}", c))
        return out

    def close(self) -> None:
        for mm in self._maps.values():
            if mm is not None:
                mm.close()
        self._maps = {}


def _frontends(nodes: dict[str, str]) -> list[tuple[str, str, str, list[int]]]:
    """Each frontend directory /local/domain/D/device/KIND/ID with its event-channel ports (one, or per queue)."""
    found: dict[str, list[int]] = {}
    for path, value in nodes.items():
        parts = path.split("/")
        if (len(parts) >= 8 and parts[1:3] == ["local", "domain"] and parts[4] == "device"
                and parts[-1].startswith("event-channel") and value.isdigit()):
            found.setdefault("/".join(parts[:7]), []).append(int(value))
    return [(front, front.split("/")[5], front.split("/")[6], sorted(ports)) for front, ports in sorted(found.items())]
