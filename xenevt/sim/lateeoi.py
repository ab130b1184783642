"""The simulated Linux's lateeoi (drivers/xen/events/events_base.c since XSA-332 and XSA-391) for PV devices.

A device's channel is bound with the lateeoi chip at both ends (netback/blkback, and since XSA-391 netfront/
blkfront).  Linux's order for each event, followed here:

* ``handle_irq_for_port``: an event on a port still active (its EOI outstanding) is ignored; else it counts in its
  xenbus device's ``events``; past 256 events in one upcall that ran longer than ``event_loop_timeout`` (2
  jiffies) every further EOI is deferred by ``event_eoi_delay`` (10 jiffies);
* ``lateeoi_ack_dynirq``: the port masked with the EOI-pending reason, then its PENDING cleared (here the
  consume's ``Consume.MASK | Consume.ACK``, in that order: an event the peer sends meanwhile waits behind the
  mask, pending and never LINKED);
* the driver's handler looks at its ring and calls ``xen_irq_lateeoi``, spurious when it found no work;
* ``xen_irq_lateeoi_locked``: a spurious EOI counts in ``spurious_events`` and, past the device's
  ``spurious_threshold`` (1) in a row, is delayed ``1 << (count - 1 - threshold)`` jiffies (at most HZ), the delay
  added to ``jiffies_eoi_delayed``; a delayed EOI waits on its CPU's list for the delayed work
  (``xen_irq_lateeoi_worker``, which EOIs non-spurious, so resets the count); an EOI unmasks only when no other
  mask reason is left.

What Linux keeps in its irq_info lives in a file beside the state file (``lateeoi.xes``, made on first use and
tied to the host's identity as the counters are): the guest kernels' memory, never Xen's, so no journal entry
covers it.  Each record has one writer, the process serving the port's vCPU (the peer writes only its ring's
producer count), and its order makes a kill at any instant safe: a mask reason is stored before the word is
masked, and an unmask clears the word's mask before the reason, so a record left with the EOI-pending reason
names every port a killed server left masked; the next server of that vCPU EOIs them (``recover``), so an EOI is
never lost (at worst an event is delivered once more).  One window stays on 2-level: Linux's scan acks each port
as it takes it, so the upcall masks every port taken and unmasks a plain (non-device) one after; a server killed
between leaves that plain port masked, which nothing can tell from a port its kernel masked on purpose.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import time
from dataclasses import dataclass

from .. import abi
from ..abi import ECS_INTERDOMAIN, ECS_IPI, ECS_VIRQ
from ..engine import faults
from ..engine.layout import ABI_FIFO
from ..errors import XenevtError, channel_error
from .statefile import HEADER, host_id
from .store import HostFile

LATEEOI_NAME = "lateeoi.xes"
MAGIC = b"XEVTLEOI"
VERSION = 1
FILE_HEADER = struct.Struct("<8sIQQQ")  # magic, version, and the host file's size, creation time and identity
HZ = 250                   # Debian's CONFIG_HZ: jiffies per second
EVENT_LOOP_TIMEOUT = 2     # events_base.c's event_loop_timeout (jiffies)
EVENT_EOI_DELAY = 10       # event_eoi_delay (jiffies)
SPURIOUS_THRESHOLD = 1     # a xenbus device's spurious_threshold when none is set
EVT_MASK_REASON_EXPLICIT = 0x01
EVT_MASK_REASON_TEMPORARY = 0x02
EVT_MASK_REASON_EOI_PENDING = 0x04

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


def jiffies() -> int:
    return time.monotonic_ns() * HZ // 1_000_000_000


@dataclass
class Counters:
    """A xenbus device's lateeoi counters (Linux 5.12+ ``/sys/bus/xen*/devices/*/xenbus/``), summed over its ports."""

    events: int = 0
    spurious_events: int = 0
    jiffies_eoi_delayed: int = 0


class LateEoi:
    """The lateeoi part of every simulated Linux kernel of the open host ``file``; ``host``: the SimHost whose
    consume, unmask and send it uses (the kernel's own acts and the peer's notify)."""

    def __init__(self, file: HostFile, host):
        self.file = file
        self.host = host
        self._view: tuple[mmap.mmap, dict[int, tuple[int, int]]] | None = None

    # --- the file ------------------------------------------------------------------------------------------------
    def view(self) -> tuple[mmap.mmap, dict[int, tuple[int, int]]] | None:
        """The records file: per domain its vCPUs' epochs, then one record per channel; made on first use (a host
        read only and never served has none: no port is lateeoi).  Another host's, or one of another size (a
        domain made since), is started again empty."""
        file = self.file
        if self._view is not None:
            if len(self._view[1]) == len(file.domains):
                return self._view
            self.close()  # the host grew (a domain made since): mapped again at its new size
        ident = FILE_HEADER.pack(MAGIC, VERSION, *HEADER.unpack_from(file.mm, 0)[3:5], host_id(file.mm))
        layout, off = {}, FILE_HEADER.size
        for domid in sorted(file.domains):
            mem = file.domains[domid].mem
            layout[domid] = (off, off + EPOCH.size * mem.nr_vcpus)
            off += EPOCH.size * mem.nr_vcpus + RECORD.size * mem.nr_chans
        fd = file.dir.open(LATEEOI_NAME, write=not file.read_only, create=not file.read_only)
        if fd is None:
            return None
        try:
            if os.pread(fd, FILE_HEADER.size, 0) != ident or os.fstat(fd).st_size != off:
                if file.read_only:
                    return None
                os.close(fd)
                fd = -1
                fd = self._fresh(ident, off)
            mm = mmap.mmap(fd, off, access=mmap.ACCESS_READ if file.read_only else mmap.ACCESS_WRITE)
        finally:
            if fd >= 0:
                os.close(fd)
        self._view = (mm, layout)
        return self._view

    def _fresh(self, ident: bytes, size: int) -> int:
        """An empty file made aside and renamed into place (as the counters file is: no mapping shrinks)."""
        dir = self.file.dir
        fd, tmp = dir.create_temp(".lateeoi-")
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, ident, 0)
            dir.replace(tmp, LATEEOI_NAME)
        except BaseException:
            os.close(fd)
            dir.unlink(tmp)
            raise
        return fd

    def _slot(self, domid: int, port: int) -> tuple[mmap.mmap, int] | None:
        """The mapping and offset of the port's record (None: no file, or no such port)."""
        view = self.view()
        if view is None or not 0 < port < self.file.domains[domid].mem.nr_chans:
            return None
        return view[0], view[1][domid][1] + RECORD.size * port

    def record(self, domid: int, port: int) -> list[int] | None:
        """The port's record while it is a lateeoi device channel to the same peer (a port closed and bound again
        is a plain one), else None."""
        slot = self._slot(domid, port)
        if slot is None:
            return None
        rec = list(RECORD.unpack_from(*slot))
        if not rec[R_FLAGS] & F_LATEEOI:
            return None
        ch = self.file.domains[domid].mem.chan(port)
        if ch.state != ECS_INTERDOMAIN or ch.remote_dom != rec[R_PEER_DOM] or ch.remote_port != rec[R_PEER_PORT]:
            return None
        return rec

    def _store(self, domid: int, port: int, rec: list[int]) -> None:
        """The record written whole but for the peer's producer count (its own, written by the peer alone)."""
        slot = self._slot(domid, port)
        assert slot is not None
        mm, at = slot
        image = RECORD.pack(*rec)
        mm[at:at + PRODUCED_AT] = image[:PRODUCED_AT]
        mm[at + PRODUCED_AT + 8:at + RECORD.size] = image[PRODUCED_AT + 8:]

    def _epoch(self, domid: int, vcpu: int) -> int:
        view = self.view()
        assert view is not None
        return EPOCH.unpack_from(view[0], view[1][domid][0] + EPOCH.size * vcpu)[0]

    # --- binding -------------------------------------------------------------------------------------------------
    def bind(self, domid: int, port: int) -> None:
        """bind_interdomain_evtchn_to_irq_lateeoi(): the driver's port, a fresh irq_info (its device's counters
        from 0), masked until the driver is ready as every new irq is, then enabled (unmasked)."""
        slot = None if self.file.read_only else self._slot(domid, port)
        if slot is None:
            return
        ch = self.file.domains[domid].mem.chan(port)
        rec = [0] * N_FIELDS
        rec[R_FLAGS], rec[R_PEER_DOM], rec[R_PEER_PORT] = F_LATEEOI, ch.remote_dom, ch.remote_port
        mm, at = slot
        mm[at:at + RECORD.size] = RECORD.pack(*rec)

    # --- the peer: requests on the ring, then the notify --------------------------------------------------------
    def push(self, caller: int, domid: int, port: int, requests: int = 1) -> None:
        """The peer driver's RING_PUSH_REQUESTS_AND_CHECK_NOTIFY then notify_remote_via_irq: ``requests`` more on
        the ring of ``port``'s channel (0: a notify with no work, a rogue or buggy peer), then EVTCHNOP_send."""
        if requests < 0:
            raise channel_error("push requests on", errno.EINVAL, f"{requests} requests", domain=domid, port=port)
        self.host.access.own(caller, domid, "notify", port)
        if requests and 0 < port < self.file.domains[domid].mem.nr_chans:
            ch = self.file.domains[domid].mem.chan(port)
            rd, rp = ch.remote_dom, ch.remote_port
            if ch.state == ECS_INTERDOMAIN and rd in self.file.domains and self.record(rd, rp) is not None:
                slot = self._slot(rd, rp)
                assert slot is not None
                mm, at = slot
                produced = struct.unpack_from("<Q", mm, at + PRODUCED_AT)[0]
                struct.pack_into("<Q", mm, at + PRODUCED_AT, produced + requests)
        self.host.send(caller, domid, port)

    # --- the kernel: the upcall, the handler's EOI, the delayed work ---------------------------------------------
    def serve(self, domid: int, vcpu: int, timeout: float = 0.0, max_events: int = 4096,
              delayed: bool = True) -> list[int]:
        """Run ``domid``'s kernel on ``vcpu`` for ``timeout`` s (0: one pass): its upcalls with every device
        driver's handler and EOI, and the CPU's delayed EOIs when due (``delayed=False``: not them; that work
        runs on its own timer, which a replay orders itself with ``flush``).  The caller claims the vCPU first
        (``claim_vcpu``), as for consume.  Returns the ports handled (a device's and every other)."""
        self.file.writable()
        self.recover(domid, vcpu)
        deadline = time.monotonic() + timeout
        handled: list[int] = []
        while True:
            if delayed:
                self.run_delayed(domid, vcpu)
            handled += self._upcall(domid, vcpu, max_events - len(handled), 0.0)
            left = deadline - time.monotonic()
            if left <= 0 or len(handled) >= max_events:
                return handled
            due = self._next_due(domid, vcpu) if delayed else None
            wait = left if due is None else min(left, max((due - jiffies()) / HZ, 0.0))
            if wait > 0:  # asleep until an event or the next delayed EOI
                handled += self._upcall(domid, vcpu, max_events - len(handled), min(wait, 0.05))

    def _upcall(self, domid: int, vcpu: int, max_events: int, wait: float) -> list[int]:
        """One upcall: batches taken while there are any (Linux's do/while on evtchn_upcall_pending; the first
        waits up to ``wait`` s), then the CPU's irq_epoch bumped (an EOI deferred in this upcall waits for the
        delayed work).  The vCPU's in-upcall mark says, to whoever serves it next, that a server killed meanwhile
        may have left ports taken but not acked or masked (``recover``)."""
        loop = _Loop(time.monotonic())
        handled: list[int] = []
        fifo = self.file.domains[domid].mem.event_abi == ABI_FIFO
        # FIFO: taken unacked, as Linux's consume_one_event leaves them (LINKED cleared), each acked by its chip
        # below; 2-level: Linux's scan needs each port acked as it is taken, so every port is masked then acked
        # there (lateeoi_ack_dynirq's order) and a plain one unmasked again
        from ..engine.codes import Consume  # (here: a host opened to list ports loads no engine codes)

        flags = 0 if fifo else Consume.MASK | Consume.ACK
        self._mark(domid, vcpu, 1)
        while len(handled) < max_events:
            got = self.host.consume(domid, vcpu, min(256, max_events - len(handled)), wait, flags=flags)
            wait = 0.0
            if not got:
                break
            self._handle(domid, vcpu, got, loop, fifo)
            handled += got
        self._mark(domid, vcpu, 0, bump=True)
        return handled

    def _handle(self, domid: int, vcpu: int, ports: list[int], loop: _Loop, fifo: bool) -> None:
        """Each port taken: a device's goes through handle_irq_for_port, lateeoi_ack_dynirq, its driver and
        xen_irq_lateeoi; any other is a plain edge irq (ack_dynirq: PENDING cleared, never masked)."""
        dom = self.file.domains[domid]
        for port in ports:
            rec = self.record(domid, port)
            if rec is None:
                if fifo:
                    dom.engine.guest_clear_pending(port)
                else:
                    self.file.crash_point()
                    self._unmask_word(domid, port)
                continue
            loop.count += 1
            if loop.count % 256 == 0 and not loop.defer:
                if loop.timeout is None:
                    loop.timeout = loop.start + EVENT_LOOP_TIMEOUT / HZ
                elif time.monotonic() > loop.timeout:
                    loop.defer = True
            if rec[R_ACTIVE]:  # is_active: an event while its EOI is outstanding is not handled (nor acked)
                rec[R_IGNORED] += 1
                self._store(domid, port, rec)
                continue
            rec[R_ACTIVE] = 1
            rec[R_EVENTS] += 1
            if loop.defer:
                rec[R_EOI_CPU], rec[R_EPOCH] = vcpu, self._epoch(domid, vcpu)
                rec[R_EOI_TIME] = jiffies() + EVENT_EOI_DELAY
            rec[R_REASON] |= EVT_MASK_REASON_EOI_PENDING  # do_mask(): the reason stored before the word is masked
            self._store(domid, port, rec)
            self.file.crash_point()
            if fifo:  # lateeoi_ack_dynirq: masked, then PENDING cleared (on 2-level the consume did both)
                self.host.mask(domid, domid, port)
                self.file.crash_point()
                dom.engine.guest_clear_pending(port)
                self.file.crash_point()
            # the driver's handler: its ring's new requests are its work; none makes the event spurious
            produced = self._produced(domid, port)
            spurious = produced == rec[R_CONSUMED]
            rec[R_CONSUMED] = produced
            self._store(domid, port, rec)
            self.file.crash_point()
            self.lateeoi(domid, vcpu, port, spurious)

    def _produced(self, domid: int, port: int) -> int:
        slot = self._slot(domid, port)
        assert slot is not None
        return struct.unpack_from("<Q", slot[0], slot[1] + PRODUCED_AT)[0]

    def _mark(self, domid: int, vcpu: int, on: int, bump: bool = False) -> None:
        """The vCPU's in-upcall mark (and, leaving, its irq_epoch bumped)."""
        view = self.view()
        assert view is not None
        at = view[1][domid][0] + EPOCH.size * vcpu
        epoch = EPOCH.unpack_from(view[0], at)[0]
        EPOCH.pack_into(view[0], at, (epoch + 1) & 0xFFFFFFFF if bump else epoch, on)

    def lateeoi(self, domid: int, vcpu: int, port: int, spurious: bool) -> None:
        """xen_irq_lateeoi_locked(): count a spurious EOI and delay it past the threshold, or unmask."""
        rec = self.record(domid, port)
        if rec is None or rec[R_FLAGS] & F_ON_LIST:
            return
        delay = 0
        if spurious:
            if (1 << rec[R_SPURIOUS_CNT]) < (HZ << 2) and rec[R_SPURIOUS_CNT] != 0xFF:
                rec[R_SPURIOUS_CNT] += 1
            if rec[R_SPURIOUS_CNT] > SPURIOUS_THRESHOLD:
                delay = min(1 << (rec[R_SPURIOUS_CNT] - 1 - SPURIOUS_THRESHOLD), HZ)
                if not rec[R_EOI_TIME]:
                    rec[R_EOI_CPU] = vcpu
                rec[R_EOI_TIME] = jiffies() + delay
                rec[R_DELAYED] += delay
            rec[R_SPURIOUS] += 1
        else:
            rec[R_SPURIOUS_CNT] = 0
        if rec[R_EOI_TIME] and (rec[R_EPOCH] == self._epoch(domid, rec[R_EOI_CPU]) or delay):
            rec[R_FLAGS] |= F_ON_LIST  # lateeoi_list_add(): the delayed work EOIs it at eoi_time
            self._store(domid, port, rec)
            return
        rec[R_EOI_TIME] = 0
        rec[R_ACTIVE] = 0
        self._unmask(domid, port, rec, EVT_MASK_REASON_EOI_PENDING)

    def disable(self, domid: int, port: int) -> None:
        """disable_dynirq() of a device port (disable_irq, the irq core's irq_mask): do_mask(EXPLICIT)."""
        rec = self.record(domid, port)
        if rec is None:
            raise channel_error("disable the irq of", errno.EINVAL, "not a lateeoi device port", domain=domid,
                                port=port)
        rec[R_REASON] |= EVT_MASK_REASON_EXPLICIT  # (stored before the word is masked)
        self._store(domid, port, rec)
        self.host.mask(domid, domid, port)

    def enable(self, domid: int, port: int) -> None:
        """enable_dynirq() of a device port (enable_irq, the irq core's irq_unmask): do_unmask(EXPLICIT), which
        leaves it masked while its EOI is pending."""
        rec = self.record(domid, port)
        if rec is None:
            raise channel_error("enable the irq of", errno.EINVAL, "not a lateeoi device port", domain=domid,
                                port=port)
        self._unmask(domid, port, rec, EVT_MASK_REASON_EXPLICIT)

    def _unmask(self, domid: int, port: int, rec: list[int], reason: int) -> None:
        """do_unmask(): the reason dropped; the word unmasked (before the record says so) when none is left."""
        rec[R_REASON] &= ~reason
        if faults.on(faults.LINUX_UNMASK_DESPITE_EOI):
            rec[R_REASON] = 0  # the replay of the code before 25da4618af24: one mask, whoever set it
        if not rec[R_REASON]:
            self._unmask_word(domid, port)
            self.file.crash_point()
        self._store(domid, port, rec)

    def _unmask_word(self, domid: int, port: int) -> None:
        try:
            self.host.unmask(domid, domid, port)  # (EVTCHNOP_unmask when an event came meanwhile: Xen relinks it)
        except XenevtError:
            pass  # closed meanwhile: nothing left to unmask

    def run_delayed(self, domid: int, vcpu: int, now: int | None = None) -> int:
        """xen_irq_lateeoi_worker() of CPU ``vcpu``: every EOI on its list due by ``now`` (jiffies; None: the
        present), earliest first, done as a non-spurious EOI.  Returns how many."""
        now = jiffies() if now is None else now
        due = sorted((rec[R_EOI_TIME], port) for port, rec in self._listed(domid, vcpu) if rec[R_EOI_TIME] <= now)
        if not due:
            return 0
        self._mark(domid, vcpu, 1)  # (a kill from here on leaves an EOI taken off the list undone: recover)
        for _, port in due:
            rec = self.record(domid, port)
            if rec is None:
                continue
            rec[R_FLAGS] &= ~F_ON_LIST
            rec[R_EOI_TIME] = 0
            self._store(domid, port, rec)
            self.file.crash_point()
            self.lateeoi(domid, vcpu, port, False)
        self._mark(domid, vcpu, 0)
        return len(due)

    def _listed(self, domid: int, vcpu: int) -> list[tuple[int, list[int]]]:
        out = []
        for port, rec in self._records(domid):
            if rec[R_FLAGS] & F_ON_LIST and rec[R_EOI_CPU] == vcpu:
                out.append((port, rec))
        return out

    def _next_due(self, domid: int, vcpu: int) -> int | None:
        return min((rec[R_EOI_TIME] for _, rec in self._listed(domid, vcpu)), default=None)

    def _records(self, domid: int) -> list[tuple[int, list[int]]]:
        """The domain's lateeoi device ports and their records."""
        view = self.view()
        if view is None:
            return []
        mm, layout = view
        base, nr = layout[domid][1], self.file.domains[domid].mem.nr_chans
        out = []
        for port, flags in enumerate(mm[base:base + RECORD.size * nr:RECORD.size]):
            if flags & F_LATEEOI:
                rec = self.record(domid, port)
                if rec is not None:
                    out.append((port, rec))
        return out

    def recover(self, domid: int, vcpu: int) -> list[str]:
        """What a server of ``vcpu`` killed mid-upcall left (its in-upcall mark still set), mended before the next
        one starts: each device port with its EOI pending and not on the delayed list is EOIed (non-spurious: a
        handler or an unmask cut short), each of the vCPU's device ports masked with no reason recorded has it
        unmasked (taken, masked, the reason not yet stored), and on FIFO each of the vCPU's ports left pending,
        unmasked and not LINKED (taken, not yet acked) is raised again.  An EOI is never lost; at worst an event
        is delivered once more.  Returns what was done."""
        view = self.view()
        if view is None or self.file.read_only:
            return []
        at = view[1][domid][0] + EPOCH.size * vcpu
        epoch, marked = EPOCH.unpack_from(view[0], at)
        if not marked:
            return []
        dom, done = self.file.domains[domid], []
        fifo = dom.mem.event_abi == ABI_FIFO
        for port, rec in self._records(domid):
            if dom.mem.chan(port).notify_vcpu != vcpu and rec[R_EOI_CPU] != vcpu or rec[R_FLAGS] & F_ON_LIST:
                continue
            masked = bool(self._word_masked(dom, port))
            if rec[R_REASON] & EVT_MASK_REASON_EOI_PENDING or rec[R_ACTIVE] or (masked and not rec[R_REASON]):
                rec[R_ACTIVE], rec[R_EOI_TIME] = 0, 0
                rec[R_REASON] |= EVT_MASK_REASON_EOI_PENDING
                self._unmask(domid, port, rec, EVT_MASK_REASON_EOI_PENDING)
                done.append(f"domain {domid} port {port}: EOI of a server that is gone")
        if fifo:
            with self.file.locked():
                for port in range(1, min(dom.mem.nr_ports, dom.mem.nr_chans)):
                    w = dom.mem.word(port)
                    ch = dom.mem.chan(port)
                    if (w is not None and w & abi.WORD_PENDING and not w & (abi.WORD_MASKED | abi.WORD_LINKED)
                            and ch.notify_vcpu == vcpu and ch.state in (ECS_INTERDOMAIN, ECS_VIRQ, ECS_IPI)):
                        self.host.effects.raise_event(dom, port)
                        done.append(f"domain {domid} port {port}: raised again (taken by a server that is gone)")
        EPOCH.pack_into(view[0], at, epoch, 0)
        self.file.recovered += done
        return done

    @staticmethod
    def _word_masked(dom, port: int) -> int:
        if dom.mem.event_abi == ABI_FIFO:
            w = dom.mem.word(port)
            return 0 if w is None else w & abi.WORD_MASKED
        return dom.l2.is_masked(port) > 0

    def flush(self, domid: int) -> int:
        """Every delayed EOI of the domain done now, as time passing would (a history's settle)."""
        return sum(self.run_delayed(domid, v, now=1 << 62) for v in range(self.file.domains[domid].mem.nr_vcpus))

    # --- what sysfs shows -------------------------------------------------------------------------------------------
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
        if self._view is not None:
            self._view[0].close()
            self._view = None


def _frontends(nodes: dict[str, str]) -> list[tuple[str, str, str, list[int]]]:
    """Each frontend directory /local/domain/D/device/KIND/ID with its event-channel ports (one, or per queue)."""
    found: dict[str, list[int]] = {}
    for path, value in nodes.items():
        parts = path.split("/")
        if (len(parts) >= 8 and parts[1:3] == ["local", "domain"] and parts[4] == "device"
                and parts[-1].startswith("event-channel") and value.isdigit()):
            found.setdefault("/".join(parts[:7]), []).append(int(value))
    return [(front, front.split("/")[5], front.split("/")[6], sorted(ports)) for front, ports in sorted(found.items())]


class _Loop:
    """evtchn_loop_ctrl: one upcall's event count and the time it must end by before EOIs are deferred."""

    def __init__(self, start: float):
        self.start = start
        self.count = 0
        self.timeout: float | None = None
        self.defer = False
