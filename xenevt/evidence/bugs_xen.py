"""Historical bugs of Xen's event-channel code outside the FIFO queues (xen/common/event_channel.c: allocation,
close, reset, limits, control blocks), and their signatures (history.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import abi
from .history import bug, signature

if TYPE_CHECKING:
    from .model import DomainFacts
    from .report import Finding

# --- allocation: get_free_port() -------------------------------------------------------------------------------

bug("xen-reuse-busy-port", "Xen", "A port closed while its event was still LINKED handed out again at once",
    "Xen 78e24c269b (\"evtchn: don't reuse ports that are still busy\", 4.7, 2015)",
    "the reused port's first event finds its word still LINKED on the old port's queue: PENDING set, nothing "
    "linked where the new channel points, its vCPU never told; the event waits on (or is taken by) another "
    "vCPU's queue")


@signature("xen-reuse-busy-port")
def _reused_while_linked(f: Finding, dom: DomainFacts) -> bool:
    # an IPI or a per-vCPU VIRQ cannot move, so LINKED on another vCPU's queue it was linked there before the
    # port was bound: a closed port still LINKED, handed out again
    return f.rule == "queued-on-wrong-vcpu"


# --- close: evtchn_close() -------------------------------------------------------------------------------------

bug("xen-close-keeps-pending", "Xen", "A port closed with its event pending kept the pending bit for the next "
    "channel bound to it", "Xen 120785c177 (\"evtchn: Avoid spurious event-channel notifications across "
    "unbind/bind\", 2008: evtchn_close() clears the pending bit)",
    "the next binding of the port number (Linux hands the lowest free one to its next IPI or VIRQ) is delivered "
    "the old channel's event as soon as it is unmasked: a handler runs for an event nobody sent on it, counted "
    "delivered with nothing raised on this binding")


@signature("xen-close-keeps-pending")
def _stray_from_the_last_channel(f: Finding, dom: DomainFacts) -> bool:
    # 2-level (the ABI of the time; FIFO's close clears PENDING and keeps a LINKED port from reuse): a binding
    # that got an event nobody raised on it
    return f.rule == "delivered-never-raised" and dom.abi == "2-level"


# --- reset: evtchn_reset() --------------------------------------------------------------------------------------

bug("xen-reset-racing-open", "Xen", "EVTCHNOP_reset closed the ports without the event lock, then switched FIFO -> "
    "2-level over whatever a racing bind had opened",
    "XSA-338 (Xen e59ce972d1, \"evtchn: relax port_is_valid()\") and XSA-343 (Xen 8d385b247b, \"evtchn: "
    "evtchn_reset() shouldn't succeed with still-open ports\", and e045199c7c), 4.15 and the stable branches, 2020",
    "a port bound during the reset, above the 2-level ABI's last port (the ports below still LINKED, so busy), "
    "stays open after the switch to 2-level: no pending bit for it (an event on it sets a bit past the pending "
    "bitmap, in the mask bitmap), and before XSA-338 port_is_valid() judged it "
    "by the shrunk limit, so no hypercall could name it (its peer's close hit a BUG_ON)")


@signature("xen-reset-racing-open")
def _open_beyond_2l(f: Finding, dom: DomainFacts) -> bool:
    # a guest's port open above 4095 on 2-level, beyond any guest's bitmaps: only a bind that raced
    # EVTCHNOP_reset's switch from FIFO leaves one (a 32-bit guest's in 1024..4095 may be XSA-342's, below)
    return f.rule == "port-beyond-2l-limit" and bool(f.ports) and f.ports[0] >= abi.EVTCHN_2L_NR_CHANNELS


# --- limits: evtchn_allocate_port() -----------------------------------------------------------------------------

bug("xen-compat-2l-limit", "Xen", "A 32-bit guest on 2-level allowed a 64-bit guest's 4096 ports: the limit was "
    "recorded at domain creation, before the guest's bitness was known",
    "XSA-342 (Xen 62bcdc4edb, \"evtchn/x86: enforce correct upper limit for 32-bit guests\"), 4.15 and the stable "
    "branches, 2020",
    "a 32-bit guest (its 2-level bitmaps 32 words of 32 bits: ports 1..1023) with all of them in use binds again "
    "and gets port 1024 or above: it cannot see the port, and Xen's pending and selector bits for it land past "
    "its bitmaps, in the mask bitmap, the shared_info fields after it and vcpu_info's arch fields")


@signature("xen-compat-2l-limit")
def _compat_past_1024(f: Finding, dom: DomainFacts) -> bool:
    # a known 32-bit guest's port in 1024..4095, every port below 1024 open: the state in which Xen's
    # get_free_port() (the lowest free port) hands out 1024 and up, which only the limit recorded as 4096 let
    # through (a port bound on FIFO and left open by a reset race finds the ports below it closed)
    if f.rule != "port-beyond-2l-limit" or dom.guest_bits != 32 or not f.ports:
        return False
    if not abi.EVTCHN_2L_NR_CHANNELS_32 <= f.ports[0] < abi.EVTCHN_2L_NR_CHANNELS:
        return False
    ports = dom.ports
    return all((p := ports.get(port)) is not None and p.state not in _NOT_OPEN
               for port in range(1, abi.EVTCHN_2L_NR_CHANNELS_32))


_NOT_OPEN = ("closed", "reserved", "unknown")
