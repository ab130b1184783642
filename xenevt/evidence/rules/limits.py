"""Rules on a domain's event-channel limit: no free port left, or nearly none; a port open beyond its ABI's.

Ports in use count what Xen's get_free_port() cannot hand out: every open port, and a closed one whose event
is still LINKED.  The limit is the domain's max_event_channels where the source knows it, the 2-level ABI's
4096 bitmap bits, or Xen's default.
"""

from __future__ import annotations

from ... import abi
from .common import remote
from .registry import Rule, Subject, check


@check(Rule("ports-exhausted", ("error",), "A domain with no free event channel: every new bind fails (ENOSPC)."),
       Rule("ports-near-limit", ("warning",), "A domain using 90% of its event channels or more."))
def limit(s: Subject) -> None:
    dom = s.dom
    used = sum(1 for p in dom.ports.values() if p.state not in ("closed", "reserved", "unknown"))
    # Xen's get_free_port() skips a freed port while its event is still LINKED: it is not free yet
    busy = sum(1 for p in dom.ports.values() if p.state in ("closed", "unknown") and p.linked)
    used += busy
    two = dom.abi == "2-level"
    if dom.max_ports is not None and (not two or dom.max_ports < abi.EVTCHN_2L_NR_CHANNELS):
        limit, said = dom.max_ports - 1, f"limit {dom.max_ports - 1}" + (f" ({dom.limit_from})" if dom.limit_from
                                                                          else "")
    elif two:
        # the bitmaps' size bounds a 64-bit guest on 2-level whatever max_event_channels says
        limit = abi.EVTCHN_2L_NR_CHANNELS - 1
        said = (f"of the 2-level ABI's {abi.EVTCHN_2L_NR_CHANNELS} ports for a 64-bit guest (port 0 is never "
                "used)")
    else:
        limit = abi.EVTCHN_FIFO_MAX_PORT if dom.domain == 0 else abi.LIBXL_DEFAULT_EVENT_CHANNELS
        said = (f"assuming Xen's default limit of {limit} (max_event_channels: the hypervisor reports no domain's "
                "limit, and this source had no toolstack config to read it from)")
    more = (" On the 2-level ABI no setting gives more than 4096 ports: a guest that needs more must use FIFO "
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




@check(Rule("port-beyond-2l-limit", ("error",), "A guest's port open above the 2-level ABI's last port on a domain "
            "now on 2-level: no pending bit exists for it, and an event on it lands past the bitmap."))
def beyond_2l(s: Subject) -> None:
    dom = s.dom
    if dom.abi != "2-level":
        return
    for p in s.ordered:
        if p.port < abi.EVTCHN_2L_NR_CHANNELS or p.state in ("closed", "reserved", "unknown") or \
                p.xen_consumer:
            continue  # (Xen's own ports outlive EVTCHNOP_reset wherever they are: Xen reads them, not bitmaps)
        s.add("error", "port-beyond-2l-limit", [p.port],
              f"port {p.port} is open on domain {dom.domain}, which is on the 2-level ABI (ports 1.."
              f"{abi.EVTCHN_2L_NR_CHANNELS - 1})",
              f"{p.state}{remote(p)}" + (f", notify vCPU {p.vcpu}" if p.vcpu is not None else ""),
              "It was bound while the domain was on FIFO, and the domain went back to 2-level with it open: "
              "EVTCHNOP_reset lets no port stay open (since XSA-343 Xen fails it with EAGAIN when a port was "
              "opened meanwhile), so a bind raced the reset.  The 2-level pending bitmap has no bit for it: "
              "Xen's 2-level set_pending sets the bit past it, in shared_info's mask bitmap (port "
              f"{p.port - abi.EVTCHN_2L_NR_CHANNELS}'s mask).  Close it; a guest that needs this many ports must "
              "stay on FIFO.")
