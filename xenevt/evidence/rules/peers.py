"""Rules on a port's other end: an interdomain peer whose end disagrees, a peer that is dying or gone, and a
domain stuck dying.

Peers are judged against the domains the hypervisor lists (``Evidence.listed``): Xen's evtchn_destroy()
closes every port of a destroyed domain, which sends each interdomain peer back to unbound waiting for the
dead domid, and alloc_unbound stores a remote domid unchecked; either way nothing will ever connect.
"""

from __future__ import annotations

from ... import abi
from ..model import Evidence
from .registry import Needs, Rule, Subject, check


@check(Rule("remote-end-mismatch", ("error",), "An interdomain port whose peer's end is closed, of another kind, "
            "or connected elsewhere: the two ends disagree."),
       needs=Needs.HOST)
def remote_ends(s: Subject) -> None:
    dom, ev = s.dom, s.ev
    for p in s.ordered:
        if p.state != "interdomain" or p.remote_domain is None or p.remote_port is None:
            continue
        rdom = ev.domains.get(p.remote_domain)
        if rdom is None or not rdom.ports and not rdom.vcpus:
            continue  # the other domain is not in the evidence: nothing to compare
        r = rdom.ports.get(p.remote_port)
        if r is None or r.state in ("closed", "unknown"):
            what = "is closed"
        elif r.state != "interdomain":
            what = f"is {r.state}" + (f" (waiting for domain {r.remote_domain})" if r.state == "unbound" else "")
        elif (r.remote_domain, r.remote_port) != (dom.domain, p.port):
            what = f"is connected to d{r.remote_domain}:{r.remote_port} instead"
        else:
            continue
        s.add("error", "remote-end-mismatch", [p.port],
              f"d{dom.domain}:{p.port} is connected to d{p.remote_domain}:{p.remote_port}, which {what}",
              f"local: interdomain -> {p.remote_domain}:{p.remote_port}; remote: {r.state if r else 'closed'}"
              + (f" -> {r.remote_domain}:{r.remote_port}" if r is not None and r.remote_port is not None else ""),
              "Notifications on this port go nowhere useful: the two ends disagree, which Xen itself never lets "
              "happen; the evidence is from different moments, or the peer's table is corrupt. Re-establish the "
              "channel (close and bind again).")


def peer_state(ev: Evidence, domid: int) -> str:
    """"dying", "gone" or "" (alive, or not known): from the hypervisor's domain list and its dying flags."""
    d = ev.domains.get(domid)
    if d is not None and d.dying:
        return "dying"
    if ev.listed is not None and domid not in ev.listed and domid < abi.DOMID_FIRST_RESERVED:
        return "gone"
    return ""


@check(Rule("dead-peer", ("warning", "error"), "A port connected to (error) or waiting for (warning) a domain "
            "that is dying or no longer exists: nothing will ever connect."),
       needs=Needs.HOST | Needs.EARLIER)
def dead_peers(s: Subject) -> None:
    """A port connected to, or waiting for, a domain that is dying or no longer exists.  Xen's evtchn_destroy()
    closes every port of a destroyed domain, which sends each interdomain peer back to unbound waiting for the
    dead domid; alloc_unbound stores the remote domid unchecked.  Either way nothing will ever connect."""
    dom, ev, prev = s.dom, s.ev, s.prev
    states: dict[int, str] = {}  # (each peer's once: ev.listed is a list, and dom0 has 20,000 peers' ports)
    for p in s.ordered:
        if p.state not in ("interdomain", "unbound") or p.remote_domain is None:
            continue
        dead = states.get(p.remote_domain)
        if dead is None:
            dead = states[p.remote_domain] = peer_state(ev, p.remote_domain)
        if not dead:
            continue
        was = prev.ports.get(p.port) if prev is not None else None
        history = ""
        if was is not None and was.state == "interdomain" and was.remote_domain == p.remote_domain:
            history = f"; connected to its port {was.remote_port} in the earlier sample"
        what = "which is dying (XEN_DOMINF_dying)" if dead == "dying" else "which no longer exists"
        if p.state == "interdomain":
            s.add("error", "dead-peer", [p.port],
                  f"port {p.port} is connected to domain {p.remote_domain}, {what}",
                  f"interdomain -> {p.remote_domain}:{p.remote_port}; domain {p.remote_domain} "
                  f"{'is listed as dying' if dead == 'dying' else 'is not in the hypervisor domain list'}",
                  "Xen closes a dying domain's ports as it destroys it, which turns this end unbound: seen still "
                  "connected, the destroy is under way or the samples are from different moments; sample again. "
                  "Events sent on it reach nobody.")
            continue
        s.add("warning", "dead-peer", [p.port],
              f"port {p.port} is waiting for domain {p.remote_domain}, {what}",
              f"unbound, waiting for domain {p.remote_domain}{history}; domain {p.remote_domain} "
              f"{'is listed as dying' if dead == 'dying' else 'is not in the hypervisor domain list'}",
              f"Nothing will ever bind to it: domain {p.remote_domain} was destroyed (Xen sent this end back to "
              "unbound) or never existed. It is usually a backend whose frontend went away without the device being "
              f"removed: check `xenstore-ls /local/domain/{dom.domain}/backend` for a directory of domain "
              f"{p.remote_domain} and remove the device (xl block-detach/network-detach, or restart the driver "
              "domain's backend); the port is freed when its owner closes it.")


@check(Rule("domain-dying", ("info", "warning"), "A domain listed as dying (a warning when already so in the "
            "earlier sample): something still holds its memory."),
       needs=Needs.EARLIER)
def dying(s: Subject) -> None:
    """A domain listed as dying: its ports are closed, but something still holds a reference to it."""
    dom, prev, age = s.dom, s.prev, s.age
    if not dom.dying:
        return
    still = prev is not None and prev.dying and age is not None
    s.add("warning" if still else "info", "domain-dying", [],
          f"domain {dom.domain} is dying" + (f", and was {age:.0f} s earlier" if still else ""),
          "XEN_DOMINF_dying set" + (f" in both samples, {age:.0f} s apart" if still else ""),
          "Xen has closed its event channels; the domain disappears once the last reference to its memory goes. "
          "Stuck dying (a zombie), it is usually a backend or device model still mapping its grants: look for "
          f"its backends in xenstore and its qemu process; `xl destroy {dom.domain}` again retries.")

