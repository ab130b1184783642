"""``xenevt doctor``: rules that explain stuck event channels from whatever evidence there is.

Each rule reads the facts (never the source), stays silent where a fact it
needs is unknown, and says what it found: severity, domain, port(s), the
evidence, and one sentence on what it usually means and what to try.
``--since`` gives a second, earlier sample, so "stuck" can mean "still so".
Evidence that was not all read is never called healthy: what went unread may
be what is wrong, so the verdict is then "inconclusive" (exit 4) unless a
finding already says "problems" (exit 3).

2-level domains have no queues: their rules read each port's pending and
mask bits and each vCPU's vcpu_info (upcall flag, selector words).

With two samples, activity counters give rates: a port (or IRQ, or xenbus
device) raising faster than ``storm_rate`` is a storm, spurious events and
delayed EOIs growing mark a rogue peer (the XSA-332/XSA-391 class), and a
port still pending ``stuck_after`` seconds later with nothing delivered is
stuck.  Peers are judged against the domains the hypervisor lists: a port
connected to or waiting for a domain that is dying or gone is a dead peer.

The rules live in ``evidence/rules/``, one module per family, each registered
where it is defined; this module runs them over every domain (``examine``).
The report model is ``evidence/report.py``.
"""

from __future__ import annotations

from ..activity import STORM_RATE
from .history import resemble
from .model import Evidence
from .report import EXIT_CODES, SEVERITIES, Finding, Report
from .rules import checks, rules
from .rules.rates import STUCK_AFTER
from .rules.registry import Subject

__all__ = ["EXIT_CODES", "SEVERITIES", "STORM_RATE", "STUCK_AFTER", "Finding", "Report", "examine", "rules"]


def examine(ev: Evidence, since: Evidence | None = None, storm_rate: float = STORM_RATE,
            stuck_after: float = STUCK_AFTER) -> Report:
    """Every registered rule over every domain of ``ev`` (with ``since``, an earlier sample: rates, "still so")."""
    rep = Report(warnings=list(ev.warnings),
                 unread=[str(u) for u in ev.unread if u.domain is None or u.domain in ev.domains])
    if not ev.domains:
        rep.unread.append(f"{ev.source}: no domain in the evidence")
    age = ev.taken_at - since.taken_at if since is not None else None
    if age is not None and age <= 0:
        rep.warnings.append(f"the --since snapshot was taken {-age:.0f} s after this evidence: no rates, nothing "
                            "compared over time")
        since, age = None, None
    run = checks()
    for domid in sorted(ev.domains):
        dom = ev.domains[domid]
        prev = since.domains.get(domid) if since is not None else None
        rep.checked[domid] = len(dom.ports)
        s = Subject(rep, ev, dom, prev, age, storm_rate, stuck_after)
        for chk in run:
            if s.runs(chk):
                s.running = chk
                chk.run(s)
    resemble(rep, ev)
    rep.sort()
    return rep
