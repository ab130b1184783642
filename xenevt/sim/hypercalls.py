"""Xen's side of the simulated host: the event-channel hypercalls on ports that exist, and the toolstack's calls.

Each follows xen/common/event_channel.c (who may make it: access.py, XSM's default policy); raising an event is
evtchn_port_set_pending and the vCPU kick (effects.py); closing, resetting and destroying are journal intents
(journal.py) so that a kill leaves them whole or undone.  The calls that make a port are binds.py's.
"""

from __future__ import annotations

import errno
import os

from .. import abi
from ..abi import (
    ECS_FREE,
    ECS_INTERDOMAIN,
    ECS_IPI,
    ECS_RESERVED,
    ECS_TO_EVTCHNSTAT,
    ECS_UNBOUND,
    ECS_VIRQ,
    PER_VCPU_VIRQS,
    STATES,
)
from ..engine import Chan, faults
from ..engine.codes import SP
from ..engine.layout import ABI_FIFO, CHAN, CHAN_FIELDS, CHAN_XEN
from ..errors import channel_error
from ..ports import NotifyResult
from . import hot
from .access import Access, resolve_self
from .binds import virq_port
from .domain import SimDomain
from .effects import SIM_BREAK, Effects
from .hotpath import HotPath
from .journal import Journal
from .statefile import K_DESTROY, K_RESET, RESET_CLOSE, RESET_SWITCH
from .store import HostFile

_hot_send = hot.send


class Hypercalls:
    """EVTCHNOP_* and the toolstack's calls over the open ``file``; methods take the calling domain first, as
    hypercalls do."""

    def __init__(self, file: HostFile, access: Access, effects: Effects, journal: Journal, hot: HotPath):
        self.file = file
        self.access = access
        self.effects = effects
        self.journal = journal
        self.hot = hot
        self._sent: dict[tuple[int, int, int], NotifyResult] = {}  # the hot send's answers, each made once

    def send(self, caller: int, domid: int, port: int, tell_unbound: bool = True) -> NotifyResult:
        """EVTCHNOP_send.  Xen drops a send on an unbound port and returns 0; a person using the CLI is
        told instead (``tell_unbound``), a program using the library gets Xen's silence.

        One C call (hot.send: the lock, Xen's checks, the raise, the counter, the kick) does the common case;
        whatever it leaves (an error, an unbound port, Xen's own ports, a record to look at closely, an update
        to finish) is decided by the Python hypercall below, the reference the C is held to."""
        hh = self.hot.h  # (this thread holding the lock already: EDEADLK, so the Python way, which nests)
        if hh is not None:
            code = _hot_send(hh, caller, domid, port)
            if code >= 0:
                r = self._sent.get((code, domid, port))
                return r if r is not None else self._sent_result(code, domid, port)
        elif self.hot.unmade and self.hot.get() is not None:
            return self.send(caller, domid, port, tell_unbound)
        return self._send(caller, domid, port, tell_unbound)

    def _sent_result(self, code: int, domid: int, port: int) -> NotifyResult:
        """What a send the C hot path made answers (``code``: SP bits | port << 12 | domain << 32), made once."""
        if len(self._sent) > 4096:
            self._sent.clear()
        bits = code & hot.SP_BITS
        outcome = _OUTCOMES.get(bits)
        if outcome is None:  # (the few outcomes' words made once each, not per port: a first send on each of 20,000)
            outcome = _OUTCOMES[bits] = _outcome(SP(bits))
        r = self._sent[(code, domid, port)] = NotifyResult(domid, port, code >> hot.SP_DOM_SHIFT,
                                                           code >> hot.SP_PORT_SHIFT & hot.PORT_BITS, outcome)
        return r

    def _send(self, caller: int, domid: int, port: int, tell_unbound: bool = True) -> NotifyResult:
        """EVTCHNOP_send in Python: the reference, and every case the C hot path leaves."""
        call = "notify"
        with self.file.locked():
            dom = self.access.own(caller, domid, call, port)
            ch = self.access.chan(dom, port, call)
            self._not_xens(ch, call, domid, port, "a guest cannot send on it")
            if ch.state == ECS_INTERDOMAIN:
                target, tport = self.access.domain(ch.remote_dom, call, port), ch.remote_port
                if self.file.rec(target, tport).flags & CHAN_XEN:  # Xen's notification function takes it
                    return NotifyResult(domid, port, target.domid, tport, "taken by Xen")
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
            rc = SP(self.effects.raise_event(target, tport))
        return NotifyResult(domid, port, target.domid, tport, _outcome(rc))

    def raise_virq(self, domid: int, virq: int, vcpu: int = 0) -> NotifyResult:
        """send_guest_vcpu_virq(): Xen raises a VIRQ on the port bound to it."""
        with self.file.locked():
            dom = self.access.domain(domid, "raise VIRQ in")
            p = virq_port(self.file, dom, virq, vcpu)
            if p is not None:
                return NotifyResult(domid, p, domid, p, _outcome(SP(self.effects.raise_event(dom, p))))
            raise channel_error("raise VIRQ in", errno.ENOENT, f"VIRQ {virq} is not bound on vCPU {vcpu}",
                                domain=domid)

    @staticmethod
    def _not_xens(ch: Chan, call: str, domid: int, port: int, why: str) -> None:
        """A guest's send, close or bind_vcpu on a port Xen itself consumes: EINVAL (event_channel.c's
        consumer_is_xen checks)."""
        if ch.flags & CHAN_XEN:
            raise channel_error(call, errno.EINVAL, f"Xen itself consumes this port: {why}", domain=domid,
                                port=port)

    def close_port(self, caller: int, domid: int, port: int) -> None:
        call = "close"
        with self.file.locked():
            dom = self.access.own(caller, domid, call, port)
            ch = self.access.chan(dom, port, call)
            self._not_xens(ch, call, domid, port, "only Xen closes it")
            self.journal.transact("close", caller, self.effects.close_entries(dom, port, ch))

    def reset(self, caller: int, domid: int) -> None:
        """EVTCHNOP_reset: close every port of the domain and put it back on the 2-level ABI, as one intent
        (redone whole after a kill).  Xen resets only the caller itself or a domain its toolstack paused."""
        domid = resolve_self(caller, domid)
        with self.file.locked():
            dom = self.access.named(caller, domid, "reset")
            if caller != domid and not dom.paused:
                raise channel_error("reset", errno.EINVAL, f"domain {domid} is running: Xen resets a domain only "
                                    f"when it asks itself or is paused (xl pause {domid})", domain=domid)
            if faults.on(faults.RESET_UNLOCKED):
                # before XSA-343: the ports closed with the event lock let go, a racing open let in, and the ABI
                # switched whatever that open made: two intents, each whole after a kill.  The point is between
                # them, no intent in flight and the host lock nesting, so the replay's racer may make its own
                # hypercall there (the one point where a hook may)
                self.journal.transact("reset", caller, [(K_RESET, domid, RESET_CLOSE, b"")])
                faults.point(faults.POINT_RESET_CLOSED, 0)
                self.journal.transact("reset", caller, [(K_RESET, domid, RESET_SWITCH, b"")])
                return
            self.journal.transact("reset", caller, [(K_RESET, domid, 0, b"")])

    def destroy_domain(self, caller: int, domid: int, dying: bool = False) -> None:
        """XEN_DOMCTL_destroydomain as the toolstack makes it (``xl destroy``): a privileged caller (EPERM),
        never itself or a privileged domain (EINVAL).  domain_kill() runs evtchn_destroy() as one intent;
        ``dying`` leaves the domain listed as dying (something still holds a reference to it), else it is
        gone.  Destroying a dying domain again finishes it."""
        call = "destroy"
        with self.file.locked():
            dom = self.access.permit(caller, domid, call)
            if domid == caller or dom.privileged:
                raise channel_error(call, errno.EINVAL, "the simulator destroys no privileged domain and no "
                                    "domain destroys itself", domain=domid)
            self.journal.transact("destroy", caller, [(K_DESTROY, domid, int(dying), b"")])

    def pause(self, domid: int, paused: bool = True, caller: int = 0) -> None:
        """The toolstack's pause and unpause (``xl pause``, a privileged ``caller``): all that the event channels
        care about is that EVTCHNOP_reset may then name the domain."""
        with self.file.locked():
            self.access.permit(caller, domid, "pause" if paused else "unpause").set_paused(paused)

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
        with self.file.locked():
            dom = self.access.own(caller, domid, call, port)
            ch = self.access.chan(dom, port, call, bound=False)
            if dom.mem.event_abi != ABI_FIFO:  # the 2-level port ops have no set_priority
                raise channel_error(call, errno.ENOSYS, "the domain is on the 2-level ABI: ports have no priority",
                                    domain=domid, port=port)
            if ch.state in (ECS_FREE, ECS_RESERVED) or ch.flags & CHAN_XEN:  # evtchn_usable(), before the range
                raise channel_error(call, errno.EACCES, "Xen itself consumes this port" if ch.flags & CHAN_XEN
                                    else "port is not bound", domain=domid, port=port)
            if not 0 <= priority <= abi.EVTCHN_FIFO_PRIORITY_MIN:
                raise channel_error(call, errno.EINVAL, f"priority {priority} out of range 0..15", domain=domid,
                                    port=port)
            # only future events use it: a linked event stays on its old queue
            self._store_field(dom, port, "priority", priority)

    def bind_vcpu(self, caller: int, domid: int, port: int, vcpu: int) -> None:
        call = "move"
        with self.file.locked():
            dom = self.access.own(caller, domid, call, port)
            self.access.vcpu(dom, vcpu, call, port)  # Xen: domain_vcpu() first, ENOENT before the port is looked at
            ch = self.access.chan(dom, port, call)
            self._not_xens(ch, call, domid, port, "a guest cannot move it")
            if ch.state == ECS_IPI or (ch.state == ECS_VIRQ and ch.aux in PER_VCPU_VIRQS):
                raise channel_error(call, errno.EINVAL, "IPI and per-vCPU VIRQ ports cannot move", domain=domid,
                                    port=port)
            self._store_field(dom, port, "notify_vcpu", vcpu)

    def evtchn_unmask(self, caller: int, domid: int, port: int) -> None:
        """EVTCHNOP_unmask itself (the guest's unmask is GuestKernel.unmask): any valid port; one no guest can
        use (free, reserved) is left alone, without an error."""
        call = "unmask"
        with self.file.locked():
            dom = self.access.own(caller, domid, call, port)
            ch = self.access.chan(dom, port, call, bound=False)
            if ch.state in (ECS_FREE, ECS_RESERVED) or ch.flags & CHAN_XEN:  # not usable by a guest: left alone
                return
            if os.environ.get(SIM_BREAK) == "unmask-no-raise":  # the mask cleared, a pending event left unseen
                if dom.mem.event_abi == ABI_FIFO:
                    word = dom.mem.word(port)
                    if word is not None:
                        dom.mem.set_word(port, word & ~abi.WORD_MASKED)
                elif port < abi.EVTCHN_2L_NR_CHANNELS:
                    with dom.mem.l2_mask() as mask:
                        mask[port // 64] &= ~(1 << port % 64)
                return
            self.effects.raise_event(dom, port, unmask=True)


_OUTCOMES: dict[int, str] = {}  # SP bits -> _outcome's words


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
