"""Rules on what differs between Xen versions: ports a Xen release does not report, which is no failure."""

from __future__ import annotations

from ...xenver import XEN_OWNED_STATUS_HIDDEN, behaves
from .registry import Needs, Rule, Subject, check


@check(Rule("xen-owned-unreported", ("info",), "Ports EVTCHNOP_status refused that the 'e' dump shows Xen "
            "consuming (Xen 4.15 to 4.18): a version's rule, not a failure."),
       needs=Needs.HOST)
def unreported(s: Subject) -> None:
    """Ports EVTCHNOP_status refused but the 'e' dump shows Xen consuming: a version's rule, not a failure."""
    dom, ev = s.dom, s.ev
    if not dom.unreported:
        return
    ports = ", ".join(map(str, dom.unreported))
    if ev.xen_version:
        who = f"Xen {ev.xen_version}"
        note = ("" if behaves(ev.xen_version, XEN_OWNED_STATUS_HIDDEN)
                else f"; unexpected on Xen {ev.xen_version}, which reports them")
    else:
        who, note = "Xen", " (as Xen 4.15 to 4.18 do; this source does not say which Xen it is)"
    s.add("info", "xen-owned-unreported", list(dom.unreported),
          f"{who} does not report ports Xen itself consumes (port(s) {ports})",
          f"EVTCHNOP_status refused port(s) {ports} (EACCES); the 'e' dump shows them with x= (Xen's consumer)"
          + note,
          "Not a failure: Xen 4.15 to 4.18 refuse EVTCHNOP_status on ports an ioreq server or vm_event ring "
          "uses (4.19 reports them again); their state here comes from the 'e' dump alone.")
