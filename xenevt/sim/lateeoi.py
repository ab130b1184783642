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

What Linux keeps in its irq_info lives in a file beside the state file (lateeoi_records.py): the guest kernels'
memory, never Xen's, so no journal entry covers it.  Each record has one writer, the process serving the port's
vCPU (the peer writes only its ring's producer count), and its order makes a kill at any instant safe: a mask
reason is stored before the word is masked, an unmask clears the word's mask before the reason, and a vCPU's
in-upcall mark, set around each upcall and each run of the delayed work, tells the next server of that vCPU to EOI
what a killed one left (``recover``), so an EOI is never lost (at worst an event is delivered once more).  One
window stays on 2-level: Linux's scan acks each port as it takes it, so the upcall masks every port taken and
unmasks a plain (non-device) one after; a server killed between leaves that plain port masked, which nothing can
tell from a port its kernel masked on purpose.
"""

from __future__ import annotations

import errno
import struct
import time

from .. import abi
from ..abi import ECS_INTERDOMAIN, ECS_IPI, ECS_VIRQ
from ..engine import faults
from ..engine.layout import ABI_FIFO
from ..errors import XenevtError, channel_error
from .lateeoi_records import (  # noqa: F401  (the record's fields, re-exported for the tests and replays)
    EPOCH,
    F_LATEEOI,
    F_ON_LIST,
    LATEEOI_PREFIX,
    PRODUCED_AT,
    R_ACTIVE,
    R_CONSUMED,
    R_DELAYED,
    R_EOI_CPU,
    R_EOI_TIME,
    R_EPOCH,
    R_EVENTS,
    R_FLAGS,
    R_IGNORED,
    R_REASON,
    R_SPURIOUS,
    R_SPURIOUS_CNT,
    Counters,
    Records,
    lateeoi_name,
)
from .store import HostFile

HZ = 250                   # Debian's CONFIG_HZ: jiffies per second
EVENT_LOOP_TIMEOUT = 2     # events_base.c's event_loop_timeout (jiffies)
EVENT_EOI_DELAY = 10       # event_eoi_delay (jiffies)
SPURIOUS_THRESHOLD = 1     # a xenbus device's spurious_threshold when none is set
EVT_MASK_REASON_EXPLICIT = 0x01
EVT_MASK_REASON_TEMPORARY = 0x02
EVT_MASK_REASON_EOI_PENDING = 0x04


def jiffies() -> int:
    return time.monotonic_ns() * HZ // 1_000_000_000


class LateEoi:
    """The lateeoi part of every simulated Linux kernel of the open host ``file``; ``host``: the SimHost whose
    consume, unmask and send it uses (the kernel's own acts and the peer's notify)."""

    def __init__(self, file: HostFile, host):
        self.file = file
        self.host = host
        self.records = records = Records(file)
        # what readers and binders use, the records' own
        self.record, self.bind, self.counters, self.xenbus, self.close = (
            records.record, records.bind, records.counters, records.xenbus, records.close)

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
            if ch.state == ECS_INTERDOMAIN and rd in self.file.domains and self.records.record(rd, rp) is not None:
                slot = self.records.slot(rd, rp)
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
        self.records.mark(domid, vcpu, 1)
        while len(handled) < max_events:
            got = self.host.consume(domid, vcpu, min(256, max_events - len(handled)), wait, flags=flags)
            wait = 0.0
            if not got:
                break
            self._handle(domid, vcpu, got, loop, fifo)
            handled += got
        self.records.mark(domid, vcpu, 0, bump=True)
        return handled

    def _handle(self, domid: int, vcpu: int, ports: list[int], loop: _Loop, fifo: bool) -> None:
        """Each port taken: a device's goes through handle_irq_for_port, lateeoi_ack_dynirq, its driver and
        xen_irq_lateeoi; any other is a plain edge irq (ack_dynirq: PENDING cleared, never masked)."""
        dom = self.file.domains[domid]
        for port in ports:
            rec = self.records.record(domid, port)
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
                self.records.store(domid, port, rec)
                continue
            rec[R_ACTIVE] = 1
            rec[R_EVENTS] += 1
            if loop.defer:
                rec[R_EOI_CPU], rec[R_EPOCH] = vcpu, self.records.epoch(domid, vcpu)
                rec[R_EOI_TIME] = jiffies() + EVENT_EOI_DELAY
            rec[R_REASON] |= EVT_MASK_REASON_EOI_PENDING  # do_mask(): the reason stored before the word is masked
            self.records.store(domid, port, rec)
            self.file.crash_point()
            if fifo:  # lateeoi_ack_dynirq: masked, then PENDING cleared (on 2-level the consume did both)
                self.host.mask(domid, domid, port)
                self.file.crash_point()
                dom.engine.guest_clear_pending(port)
                self.file.crash_point()
            # the driver's handler: its ring's new requests are its work; none makes the event spurious
            produced = self.records.produced(domid, port)
            spurious = produced == rec[R_CONSUMED]
            rec[R_CONSUMED] = produced
            self.records.store(domid, port, rec)
            self.file.crash_point()
            self.lateeoi(domid, vcpu, port, spurious)


    def lateeoi(self, domid: int, vcpu: int, port: int, spurious: bool) -> None:
        """xen_irq_lateeoi_locked(): count a spurious EOI and delay it past the threshold, or unmask."""
        rec = self.records.record(domid, port)
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
        if rec[R_EOI_TIME] and (rec[R_EPOCH] == self.records.epoch(domid, rec[R_EOI_CPU]) or delay):
            rec[R_FLAGS] |= F_ON_LIST  # lateeoi_list_add(): the delayed work EOIs it at eoi_time
            self.records.store(domid, port, rec)
            return
        rec[R_EOI_TIME] = 0
        rec[R_ACTIVE] = 0
        self._unmask(domid, port, rec, EVT_MASK_REASON_EOI_PENDING)

    def disable(self, domid: int, port: int) -> None:
        """disable_dynirq() of a device port (disable_irq, the irq core's irq_mask): do_mask(EXPLICIT)."""
        rec = self.records.record(domid, port)
        if rec is None:
            raise channel_error("disable the irq of", errno.EINVAL, "not a lateeoi device port", domain=domid,
                                port=port)
        rec[R_REASON] |= EVT_MASK_REASON_EXPLICIT  # (stored before the word is masked)
        self.records.store(domid, port, rec)
        self.host.mask(domid, domid, port)

    def enable(self, domid: int, port: int) -> None:
        """enable_dynirq() of a device port (enable_irq, the irq core's irq_unmask): do_unmask(EXPLICIT), which
        leaves it masked while its EOI is pending."""
        rec = self.records.record(domid, port)
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
        self.records.store(domid, port, rec)

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
        self.records.mark(domid, vcpu, 1)  # (a kill from here on leaves an EOI taken off the list undone: recover)
        for _, port in due:
            rec = self.records.record(domid, port)
            if rec is None:
                continue
            rec[R_FLAGS] &= ~F_ON_LIST
            rec[R_EOI_TIME] = 0
            self.records.store(domid, port, rec)
            self.file.crash_point()
            self.lateeoi(domid, vcpu, port, False)
        self.records.mark(domid, vcpu, 0)
        return len(due)

    def _listed(self, domid: int, vcpu: int) -> list[tuple[int, list[int]]]:
        out = []
        for port, rec in self.records.records(domid):
            if rec[R_FLAGS] & F_ON_LIST and rec[R_EOI_CPU] == vcpu:
                out.append((port, rec))
        return out

    def _next_due(self, domid: int, vcpu: int) -> int | None:
        return min((rec[R_EOI_TIME] for _, rec in self._listed(domid, vcpu)), default=None)


    def recover(self, domid: int, vcpu: int) -> list[str]:
        """What a server of ``vcpu`` killed mid-upcall left (its in-upcall mark still set), mended before the next
        one starts: each device port with its EOI pending and not on the delayed list is EOIed (non-spurious: a
        handler or an unmask cut short), each of the vCPU's device ports masked with no reason recorded has it
        unmasked (taken, masked, the reason not yet stored), and on FIFO each of the vCPU's ports left pending,
        unmasked and not LINKED (taken, not yet acked) is raised again.  An EOI is never lost; at worst an event
        is delivered once more.  Returns what was done."""
        if self.file.read_only or not self.records.epoch(domid, vcpu, marked=True):
            return []
        dom, done = self.file.domains[domid], []
        fifo = dom.mem.event_abi == ABI_FIFO
        for port, rec in self.records.records(domid):
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
        self.records.mark(domid, vcpu, 0)
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


class _Loop:
    """evtchn_loop_ctrl: one upcall's event count and the time it must end by before EOIs are deferred."""

    def __init__(self, start: float):
        self.start = start
        self.count = 0
        self.timeout: float | None = None
        self.defer = False
