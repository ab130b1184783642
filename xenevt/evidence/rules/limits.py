"""Rules on a domain's event-channel limit: no free port left, or nearly none; a port open beyond its ABI's.

Ports in use count what Xen's get_free_port() cannot hand out: every open port, and a closed one whose event
is still LINKED.  The limit is the domain's max_event_channels where the source knows it, the 2-level ABI's
bitmap bits (4096; 1024 for a guest the source knows is 32-bit), or Xen's default.
"""

from __future__ import annotations

from ... import abi
from .common import remote
from .registry import Rule, Subject, check


def l2_ports(dom) -> int:
    """The ports the 2-level ABI has for the domain: its guest's words squared, 1024 for a 32-bit guest, 4096 for a
    64-bit one or where the evidence does not say (never fewer than the guest may really have)."""
    return abi.l2_nr_channels(dom.guest_bits)


def _guest(dom) -> str:
    return "a 32-bit guest" if dom.guest_bits == 32 else "a 64-bit guest"


@check(Rule("ports-exhausted", ("error",), "A domain with no free event channel: every new bind fails (ENOSPC)."),
       Rule("ports-near-limit", ("warning",), "A domain using 90% of its event channels or more."))
def limit(s: Subject) -> None:
    dom = s.dom
    used = sum(1 for p in dom.ports.values() if p.state not in ("closed", "reserved", "unknown"))
    # Xen's get_free_port() skips a freed port while its event is still LINKED: it is not free yet
    busy = sum(1 for p in dom.ports.values() if p.state in ("closed", "unknown") and p.linked)
    used += busy
    two = dom.abi == "2-level"
    l2 = l2_ports(dom)
    if dom.max_ports is not None and (not two or dom.max_ports < l2):
        limit, said = dom.max_ports - 1, f"limit {dom.max_ports - 1}" + (f" ({dom.limit_from})" if dom.limit_from
                                                                          else "")
    elif two:
        # the bitmaps' size bounds a guest on 2-level whatever max_event_channels says
        limit = l2 - 1
        said = f"of the 2-level ABI's {l2} ports for {_guest(dom)} (port 0 is never used)"
    else:
        limit = abi.EVTCHN_FIFO_MAX_PORT if dom.domain == 0 else abi.LIBXL_DEFAULT_EVENT_CHANNELS
        said = (f"assuming Xen's default limit of {limit} (max_event_channels: the hypervisor reports no domain's "
                "limit, and this source had no toolstack config to read it from)")
    more = (f" On the 2-level ABI no setting gives more than {l2} ports"
            + (" to a 32-bit guest" if dom.guest_bits == 32 else "") + ": a guest that needs more must use FIFO "
            "(Linux does when Xen offers it, unless booted with xen.fifo_events=0).") if two else ""
    if used >= limit:
        s.add("error", "ports-exhausted", [], f"domain {dom.domain} has no free event channel",
              f"{used} ports in use{busy_note(busy)}, {said}",
              "Every new bind in this domain fails (ENOSPC): raise max_event_channels in the domain's config, or "
              "find who leaks ports (the list shows them)." + more)
    elif used >= 0.9 * limit:
        s.add("warning", "ports-near-limit", [], f"domain {dom.domain} is near its event-channel limit",
              f"{used} ports in use{busy_note(busy)}, {said}",
              "New devices or vCPUs will soon fail to bind (ENOSPC): raise max_event_channels or look for a leak."
              + more)


def busy_note(busy: int) -> str:
    return f" ({busy} of them closed but still LINKED: Xen reuses no port until its event is consumed)" if busy else ""


@check(Rule("port-beyond-2l-limit", ("error",), "A guest's port open above the 2-level ABI's last port (4095; 1023 "
            "for a 32-bit guest) on a domain now on 2-level: no pending bit exists for it, and an event on it lands "
            "past the bitmap."))
def beyond_2l(s: Subject) -> None:
    dom = s.dom
    if dom.abi != "2-level":
        return
    l2 = l2_ports(dom)
    for p in s.ordered:
        if p.port < l2 or p.state in ("closed", "reserved", "unknown") or p.xen_consumer:
            continue  # (Xen's own ports outlive EVTCHNOP_reset wherever they are: Xen reads them, not bitmaps)
        s.add("error", "port-beyond-2l-limit", [p.port],
              f"port {p.port} is open on domain {dom.domain}, which is on the 2-level ABI (ports 1..{l2 - 1}"
              + (" for its 32-bit guest)" if l2 < abi.EVTCHN_2L_NR_CHANNELS else ")"),
              f"{p.state}{remote(p)}" + (f", notify vCPU {p.vcpu}" if p.vcpu is not None else ""),
              _compat_why(p.port) if p.port < abi.EVTCHN_2L_NR_CHANNELS else _reset_why(p.port, l2))


def _lands(port: int, l2: int) -> str:
    """Where a port past the 2-level bitmaps has its pending bit: in shared_info the pending words are followed by
    the mask words (as many), then the wallclock and arch fields."""
    past = port - l2
    return f"port {past}'s mask bit" if past < l2 else "in the shared_info fields after the mask bitmap"


def _reset_why(port: int, l2: int) -> str:
    return ("It was bound while the domain was on FIFO, and the domain went back to 2-level with it open: "
            "EVTCHNOP_reset lets no port stay open (since XSA-343 Xen fails it with EAGAIN when a port was "
            "opened meanwhile), so a bind raced the reset.  The 2-level pending bitmap has no bit for it: "
            f"Xen's 2-level set_pending sets the bit past it ({_lands(port, l2)}).  Close it; a guest that needs "
            "this many ports must stay on FIFO.")


def _compat_why(port: int) -> str:
    """A 32-bit guest's port in 1024..4095, which Xen before XSA-342 handed out; its selector word has 32 bits,
    followed by vcpu_info's arch part."""
    return ("The guest is 32-bit: 2-level gives it 32 words of 32 bits.  Xen before XSA-342 (62bcdc4edb) "
            "recorded the limit when it created the domain, before the guest's bitness was known, as a 64-bit "
            "guest's 4096, and handed out ports up to 4095 once 1..1023 were in use (since the fix such a bind "
            "fails with ENOSPC); a bind that raced EVTCHNOP_reset from FIFO leaves one too.  The guest cannot see "
            "it, and Xen's bit operations on it corrupt shared_info: its pending bit is "
            f"{_lands(port, abi.EVTCHN_2L_NR_CHANNELS_32)}, its selector bit ({port // 32}) lies past the 32-bit "
            "evtchn_pending_sel, in vcpu_info's arch fields.  Close it; a 32-bit guest that needs more than 1023 "
            "ports must use FIFO.")
