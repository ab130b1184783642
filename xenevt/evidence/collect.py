"""Evidence from live sources and dumps: the backend's port table, FIFO or 2-level memory from any memory
source.

Merging is field by field: a later source fills what an earlier one left
unknown (None), so EVTCHNOP_status's states and the event words' flags end
up on the same PortFacts.
"""

from __future__ import annotations

from .. import abi
from ..dump.model import DomainDump, TwoLevelDump
from ..errors import BackendUnavailable, XenevtError
from ..ports import PortStatus
from .model import DomainFacts, Evidence, PortFacts, QueueFacts, VcpuFacts


def port_from_status(st: PortStatus) -> PortFacts:
    f = PortFacts(st.port, st.state, vcpu=st.vcpu, remote_domain=st.remote_domain, remote_port=st.remote_port,
                  virq=st.virq, pirq=st.pirq, priority=st.priority)
    if st.flags:
        f.pending, f.masked = st.flags["pending"], st.flags["masked"]
        f.linked, f.busy = st.flags["linked"], st.flags["busy"]
        f.link = st.flags["link"] if st.flags["linked"] else None
    return f


def merge_port(dom: DomainFacts, new: PortFacts) -> None:
    old = dom.ports.get(new.port)
    if old is None:
        dom.ports[new.port] = new
        return
    for key, value in vars(new).items():
        if value is not None and (getattr(old, key) is None or old.state == "unknown" and key == "state"):
            setattr(old, key, value)


def add_dump(ev: Evidence, d: DomainDump | TwoLevelDump) -> None:
    """The guest's side: queues, READY bits and every flagged word of one domain (2-level: vcpu_infos and
    every port whose bits matter)."""
    if isinstance(d, TwoLevelDump):
        _add_l2_dump(ev, d)
        return
    dom = ev.domain(d.domain)
    dom.abi = dom.abi or d.abi
    # values no Xen or Linux writes (a raw file's impossible fields, READY bits above 15 …) did not become
    # facts: unread, so doctor cannot call this evidence healthy
    for w in d.warnings:
        ev.skip(f"domain {d.domain}", w, d.domain)
    dom.nr_word_ports = d.nr_ports
    if d.max_ports is not None:
        dom.max_ports = d.max_ports
    for v in d.vcpus:
        vf = VcpuFacts(v.vcpu, v.control_block, v.ready if v.control_block else None,
                       list(v.heads) if v.control_block else None)
        # Linux's local READY and heads, where the source has them: they tell a queue being consumed
        # (READY already taken from the control block) from one nobody will look at again
        if v.guest_heads is not None:
            vf.guest_ready, vf.guest_heads = v.guest_ready or 0, list(v.guest_heads)
        for q in v.queues:
            vf.queues.append(QueueFacts(q.vcpu, q.priority, q.head, list(q.chain), q.status, q.ready, q.bad_port,
                                        q.other_queue, q.head_from))
        dom.vcpus[v.vcpu] = vf
    for w in d.words:
        facts = port_from_status(w.channel) if w.channel is not None else PortFacts(w.port, "unknown")
        facts.pending, facts.masked, facts.linked, facts.busy = w.pending, w.masked, w.linked, w.busy
        facts.link = w.link if w.linked else None
        merge_port(dom, facts)


def _add_l2_dump(ev: Evidence, d: TwoLevelDump) -> None:
    dom = ev.domain(d.domain)
    dom.abi = "2-level"
    for w in d.warnings:
        ev.skip(f"domain {d.domain}", w, d.domain)
    dom.nr_word_ports = d.nr_ports
    if d.max_ports is not None:
        dom.max_ports = d.max_ports
    for v in d.vcpus:
        vf = VcpuFacts(v.vcpu)  # no control block on 2-level: None, not False
        if v.known:
            vf.upcall_pending, vf.upcall_mask = bool(v.upcall_pending), bool(v.upcall_mask)
            vf.selector_words = v.selector_words
        dom.vcpus[v.vcpu] = vf
    for p in d.ports:
        facts = port_from_status(p.channel) if p.channel is not None else PortFacts(p.port, "unknown")
        facts.pending, facts.masked, facts.selector = p.pending, p.masked, p.selector
        facts.linked = facts.busy = facts.link = facts.priority = None  # FIFO's, not 2-level's
        if facts.vcpu is None:
            facts.vcpu = p.vcpu
        merge_port(dom, facts)


def from_memory(source, label: str) -> Evidence:
    """One domain's memory from a source the memory layer picked: its queues, words and channel table."""
    from ..dump import build_dump

    img = source.image()
    ev = Evidence(label)
    add_dump(ev, build_dump(img.mem, img.domain, label, channels=source.channels(), guest_known=img.guest_known,
                            max_ports=img.max_ports, vcpu_known=img.vcpu_known))
    return ev


def from_backend(backend, domains: list[int] | None = None) -> Evidence:
    """Everything the backend can say: port tables for every domain, FIFO pages where it has them."""
    from .. import memory
    from ..dump import build_dump
    from . import edump

    ev = Evidence(f"{backend.name} backend")
    wanted = domains if domains is not None else backend.domains()
    # the event-channel limit only where the backend knows it: an event array's size is not a limit
    limits = {d["domain"]: d["max_ports"] for d in backend.info().get("domains", []) if "max_ports" in d}
    listed = False  # any open port in the tables ('e' prints open ports only: not the words of closed ones)
    for domid in wanted:
        dom = ev.domain(domid)
        statuses = backend.list_ports(domid)
        listed = listed or bool(statuses)
        for st in statuses:
            merge_port(dom, port_from_status(st))
        try:
            img = memory.open_source(memory.Ask(domain=domid), lambda: backend).image()
        except BackendUnavailable:
            continue  # normal: only a domain itself knows where its event array is
        except XenevtError as e:
            ev.skip(f"domain {domid}", f"its event-channel memory could not be read ({e})", domid)
            continue
        # the tables just listed, and the limit only where the backend states one (on Xen an array's size is none)
        limit = limits.get(domid)
        if limit is not None and img.abi == "2-level":
            limit = min(limit, abi.EVTCHN_2L_NR_CHANNELS)  # Xen's 2-level ports: the bitmaps' 4096
        add_dump(ev, build_dump(img.mem, domid, backend.name, channels={st.port: st for st in statuses},
                                guest_known=img.guest_known, max_ports=limit, vcpu_known=img.vcpu_known))
    # the hypervisor's own view of every domain's words, where the backend can press 'e'
    try:
        text = backend.debug_dump("e")
    except (BackendUnavailable, XenevtError) as e:
        ev.warnings.append(f"no 'e' debug-key dump ({e})")
        return ev
    seen = edump.parse(text, f"{backend.name} 'e' dump")
    ev.warnings += seen.warnings
    # an 'e' dump with no port is news only when the port tables have some
    tables_empty = not listed
    ev.unread += [u for u in seen.unread if (u.domain is None or u.domain in wanted)
                  and not (tables_empty and u.where == edump.NO_PORTS)]
    for domid, facts in seen.domains.items():
        if domid in wanted:
            dom = ev.domain(domid)
            dom.abi = dom.abi or facts.abi
            for port in facts.ports.values():
                merge_port(dom, port)
    ev.source += " + 'e' dump"
    return ev
