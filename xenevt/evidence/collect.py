"""Evidence from live sources and dumps: the backend's port table, FIFO or 2-level memory from any memory
source.

Merging is field by field: a later source fills what an earlier one left
unknown (None), so EVTCHNOP_status's states and the event words' flags end
up on the same PortFacts.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from operator import attrgetter

from .. import abi
from ..dump.model import DomainDump, TwoLevelDump
from ..errors import BackendUnavailable, ChannelError, StateError, XenevtError
from ..ports import PortStatus
from .model import NO_PORTS, CounterFacts, DomainFacts, Evidence, PortFacts, QueueFacts, VcpuFacts

_STATUS_ORDER = ("port", "state", "vcpu", "remote_domain", "remote_port", "virq", "pirq", "priority", "pending",
                 "masked", "linked", "busy", "link")
assert tuple(PortFacts.__dataclass_fields__)[:len(_STATUS_ORDER)] == _STATUS_ORDER  # (port_from_status's order)


def port_from_status(st: PortStatus) -> PortFacts:
    # (positional, in PortFacts' order: a host's 40,000 ports)
    fl = st.flags
    if not fl:
        return PortFacts(st.port, st.state, st.vcpu, st.remote_domain, st.remote_port, st.virq, st.pirq, st.priority)
    linked = fl["linked"]
    return PortFacts(st.port, st.state, st.vcpu, st.remote_domain, st.remote_port, st.virq, st.pirq, st.priority,
                     fl["pending"], fl["masked"], linked, fl["busy"], fl["link"] if linked else None)


def merge_port(dom: DomainFacts, new: PortFacts) -> None:
    old = dom.ports.get(new.port)
    if old is None:
        dom.ports[new.port] = new
        return
    # (on the instances' dicts: three sources of a host's 20,000 ports are merged field by field)
    have = old.__dict__
    fresh = new.__dict__
    if have == fresh:  # (the same facts from a second source: most ports of a healthy host)
        return
    x = fresh["xen_consumer"]
    if x is not None and have["xen_consumer"] is None:  # the 'e' dump's x=, which no status has: often its only news
        have["xen_consumer"] = x
        if have == fresh:
            return
    unknown = have["state"] == "unknown"
    for key, value in new.__dict__.items():
        if value is not None and (have[key] is None or unknown and key == "state"):
            have[key] = value


def add_dump(ev: Evidence, d: DomainDump | TwoLevelDump, known: dict[int, PortStatus] | None = None) -> None:
    """The guest's side: queues, READY bits and every flagged word of one domain (2-level: vcpu_infos and
    every port whose bits matter).  ``known``: the statuses the domain's ports were just made from
    (port_from_status): a word whose channel is that very status, with the word it was read with, adds
    nothing and is not merged again."""
    if isinstance(d, TwoLevelDump):
        _add_l2_dump(ev, d)
        return
    dom = ev.domain(d.domain)
    dom.abi = dom.abi or d.abi
    # values no Xen or Linux writes (a raw file's impossible fields, READY bits above 15 …) did not become
    # facts: unread, so doctor cannot call this evidence healthy
    for warning in d.warnings:
        ev.skip(f"domain {d.domain}", warning, d.domain)
    dom.nr_word_ports = d.nr_ports
    if d.max_ports is not None:
        dom.max_ports = d.max_ports
    for v in d.vcpus:
        vf = VcpuFacts(v.vcpu, v.control_block, v.ready if v.control_block else None,
                       list(v.heads) if v.control_block else None)
        vf.state = v.state
        # Linux's local READY and heads, where the source has them: they tell a queue being consumed
        # (READY already taken from the control block) from one nobody will look at again
        if v.guest_heads is not None:
            vf.guest_ready, vf.guest_heads = v.guest_ready or 0, list(v.guest_heads)
        for q in v.queues:
            vf.queues.append(QueueFacts(q.vcpu, q.priority, q.head, list(q.chain), q.status, q.ready, q.bad_port,
                                        q.other_queue, q.head_from))
        dom.vcpus[v.vcpu] = vf
    known = known or {}
    for w in d.words:
        st = known.get(w.port)
        if st is not None and w.channel is st and st.word == w.word:
            continue
        facts = port_from_status(w.channel) if w.channel is not None else PortFacts(w.port, "unknown")
        facts.pending, facts.masked, facts.linked, facts.busy = w.pending, w.masked, w.linked, w.busy
        facts.link = w.link if w.linked else None
        merge_port(dom, facts)


def _add_l2_dump(ev: Evidence, d: TwoLevelDump) -> None:
    dom = ev.domain(d.domain)
    dom.abi = "2-level"
    for warning in d.warnings:
        ev.skip(f"domain {d.domain}", warning, d.domain)
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
                            max_ports=img.max_ports, vcpu_known=img.vcpu_known,
                                vcpu_states=img.vcpu_states))
    return ev


def from_backend(backend, domains: list[int] | None = None) -> Evidence:
    """Everything the backend can say: port tables for every domain, FIFO pages where it has them."""
    from .. import memory
    from ..dump import build_dump

    ev = Evidence(f"{backend.name} backend")
    info = backend.info()
    ev.xen_version = info.get("xen_version")
    known = info.get("domains")
    # every domain the hypervisor lists (dying ones too), so a peer that is not among them is gone
    ev.listed = sorted(d["domain"] for d in known) if isinstance(known, list) else None
    wanted = domains if domains is not None else backend.domains()
    # the event-channel limit only where the backend knows it: an event array's size is not a limit
    limits = {d["domain"]: d["max_ports"] for d in known or [] if "max_ports" in d}
    facts = {d["domain"]: d for d in known or []}
    listed = False  # any open port in the tables ('e' prints open ports only: not the words of closed ones)
    tables: dict[int, AbstractSet[int]] = {}
    for domid in wanted:
        dom = ev.domain(domid)
        dom.dying = facts.get(domid, {}).get("dying")
        dom.limit_from = facts.get(domid, {}).get("limit_from")
        dom.guest_bits = facts.get(domid, {}).get("guest_bits")
        try:
            statuses = backend.list_ports(domid)
        except ChannelError as e:
            if e.errno not in (errno.EPERM, errno.EACCES) or info.get("self_domain") != domid:
                raise  # (another domain's table refused: the caller's answer is that refusal)
            # its own table refused (a domU whose privcmd is restricted: no EVTCHNOP_status): its memory may
            # still be read, and the table it did not give is unread, never healthy
            ev.skip(f"domain {domid}", f"its port table could not be read ({e})", domid)
            statuses = []
        listed = listed or bool(statuses)
        # the ports whose facts are exactly their status's (not merged into facts already there); one dict of the
        # statuses by port is the table, the statuses the dump annotates words with, and those facts (C loops)
        by_port = made = dict(zip(map(_PORT, statuses), statuses, strict=True))
        tables[domid] = by_port.keys()
        if not dom.ports and len(made) == len(statuses):  # (the first source: nothing to merge with, each port once)
            dom.ports.update(zip(made, map(port_from_status, statuses), strict=True))
        else:
            made = {}
            for st in statuses:
                if st.port not in dom.ports:
                    made[st.port] = st
                merge_port(dom, port_from_status(st))
        dom.counters = _counters(backend, domid)
        try:
            img = memory.open_source(memory.Ask(domain=domid), backend).image()
        except BackendUnavailable:
            continue  # normal: only a domain itself knows where its event array is
        except StateError:
            raise  # the simulator's file itself (changed under us, corrupt): the whole command's one line
        except XenevtError as e:
            ev.skip(f"domain {domid}", f"its event-channel memory could not be read ({e})", domid)
            continue
        # the tables just listed, and the limit only where the backend states one (on Xen an array's size is none)
        limit = limits.get(domid)
        if limit is not None and img.abi == "2-level":
            limit = min(limit, abi.EVTCHN_2L_NR_CHANNELS)  # Xen's 2-level ports: the bitmaps' 4096
        add_dump(ev, build_dump(img.mem, domid, backend.name, channels=by_port,
                                guest_known=img.guest_known, max_ports=limit, vcpu_known=img.vcpu_known, omit=made,
                                vcpu_states=img.vcpu_states),
                 made)
    # the hypervisor's own view of every domain's words, where the backend can press 'e': its lines' facts where
    # the backend has them at hand (the simulator), else the text it prints (real Xen), parsed
    label = f"{backend.name} 'e' dump"
    try:
        rows = None
        try:
            rows = backend.debug_rows()
        except BackendUnavailable:
            from . import edump  # (the text's reader, its patterns compiled on import: real Xen's path only)

            text = backend.debug_dump("e")
            seen = edump.parse(text, label, wanted)
            edump_cut(text, seen, tables)
        else:
            seen = merge_rows(ev, rows, label, wanted, tables)
    except (BackendUnavailable, ChannelError) as e:  # not here, or refused: the rest still stands
        ev.warnings.append(f"no 'e' debug-key dump ({e})")
        return ev
    ev.warnings += seen.warnings
    # an 'e' dump with no port is news only when the port tables have some
    tables_empty = not listed
    ev.unread += [u for u in seen.unread if (u.domain is None or u.domain in wanted)
                  and not (tables_empty and u.where == NO_PORTS)]
    for domid, seen_dom in seen.domains.items():
        if domid in wanted and rows is None:  # (rows: merged already, by merge_rows)
            dom = ev.domain(domid)
            dom.abi = dom.abi or seen_dom.abi
            for port in seen_dom.ports.values():
                merge_port(dom, port)
            # ports the status walk was refused (Xen's own on 4.15-4.18) but the 'e' dump shows
            missed = sorted(p for p, f in seen_dom.ports.items() if f.xen_consumer and p not in tables[domid])
            if missed:
                dom.unreported = missed
    ev.source += " + 'e' dump"
    return ev


# a row's fields that a port's facts must already hold for the row to add nothing but what they leave unknown
_SAME_HEAD, _SAME_FLAGS = slice(0, 7), slice(8, 13)  # port .. pirq; pending .. link (not priority, x=, selector)
_PORT = attrgetter("port")
_FACTS = attrgetter(*PortFacts.__dataclass_fields__)  # (a row's fields are PortFacts', in order: from_rows)


def merge_rows(ev: Evidence, rows, label: str, wanted: list[int], tables: Mapping[int, AbstractSet[int]]) -> Evidence:
    """The 'e' dump's rows of facts (a backend's ``debug_rows``) merged into ``ev``'s ``wanted`` domains, as
    ``edump.from_rows`` then ``merge_port`` of each of its ports would, without making the rows' 40,000 PortFacts:
    a row saying what the port's facts already say (the status it was listed with, from the same copy) only fills
    what they leave unknown (its x=).  Returns what ``from_rows`` and ``_cut`` say of the dump itself: its unread
    and its domains, with no ports (merged here, and ``missed`` set as the caller sets it)."""
    seen = Evidence(label)
    only = set(wanted)
    lines_of = {}
    for domid, lines in rows:
        seen.domain(domid).polling = []
        lines_of[domid] = lines
        if domid not in only:
            continue
        dom = ev.domain(domid)
        ports, table = dom.ports, tables.get(domid, set())
        missed = []
        for row in lines:
            port = row[0]
            have = ports.get(port)
            if have is None:
                ports[port] = PortFacts(*row)
            else:
                known = _FACTS(have)
                if known[_SAME_HEAD] == row[_SAME_HEAD] and known[_SAME_FLAGS] == row[_SAME_FLAGS]:
                    if known[7] is None and row[7] is not None:
                        have.priority = row[7]
                    if known[13] is None and row[13] is not None:
                        have.xen_consumer = row[13]
                    if known[14] is None and row[14] is not None:
                        have.selector = row[14]
                else:
                    merge_port(dom, PortFacts(*row))
            if row[13] and port not in table:
                missed.append(port)
        # the ABI the lines print (edump.from_rows): a selector bit on each (2-level) or on none (FIFO)
        kinds = {row[14] is None for row in lines}
        if len(kinds) == 1 and not dom.abi:
            dom.abi = "FIFO" if kinds.pop() else "2-level"
        # ports the status walk was refused (Xen's own on 4.15-4.18) but the 'e' dump shows
        if missed:
            dom.unreported = sorted(set(missed))
    if not any(lines_of.values()):
        seen.skip(NO_PORTS, "no port lines in any domain's section: nothing about ports was read")
    _cut(seen, tables, pressed=True,
         ports_of=lambda d: {row[0] for row in lines_of.get(d, ())} if d in only else set())
    return seen


def _counters(backend, domid: int) -> list[CounterFacts]:
    """The domain's activity counters, where the backend can count them (the simulator: every domain's ports;
    on Xen: this domain's own interrupts and xenbus devices)."""
    try:
        rows = backend.activity(domid)
    except (BackendUnavailable, XenevtError):
        return []
    # (Row.total's sum, inline: a host's 40,000 rows)
    return [CounterFacts(r.key, r.name, r.port, r.raised, sum(r.counts), r.spurious, r.eoi_delayed) for r in rows]


CUT = "the 'e' dump's end"  # where a dump that looks cut short is recorded as unread
CONRING_DEFAULT = 16384   # Xen's smallest console ring (drivers/char/console.c: _CONRING_SIZE; conring_size=)


def edump_cut(text: str | bytes, ev: Evidence, tables: Mapping[int, AbstractSet[int]] | None = None) -> None:
    """Mark an 'e' dump that looks cut short (the console ring overwrote its start, or the read stopped before
    its end) as unread, so doctor does not call what is missing healthy.  Xen prints no end marker: what
    tells is a dump without its "'e' pressed" line (the ring wrapped), or a last domain section with fewer
    ports than the port tables hold (later domains missing); a line cut in the middle is unread already.

    A dump read whole names every domain Xen has (it prints a section for each, dying ones too), so it then
    sets ``ev.listed``: a peer with no section is gone."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    _cut(ev, tables, text.rfind("'e' pressed") >= 0, text.find("Event channel information for") >= 0)


def _cut(ev: Evidence, tables: Mapping[int, AbstractSet[int]] | None, pressed: bool, sections: bool = True,
         ports_of: Callable[[int], AbstractSet[int]] | None = None) -> None:
    """edump_cut's judgement, from whether the dump has its "'e' pressed" line and any domain's section
    (``ports_of``: the ports of a domain's section, where ``ev`` does not hold them: merge_rows)."""
    why = []
    if not pressed and sections:
        why.append(f"it has no \"'e' pressed\" line: the console ring (by default {CONRING_DEFAULT // 1024} KiB) "
                   "had already overwritten its start; boot Xen with conring_size=1M, or read the ring right after "
                   "pressing the key")
    # Xen prints the domains in domid order: cut at the end, the last section is short and later ones missing
    last = max(ev.domains, default=None)
    for domid, ports in sorted((tables or {}).items()):
        got = ev.domains.get(domid)
        if last is None or domid < last or not ports:
            continue
        lost = sorted(ports - (set(got.ports) if ports_of is None else ports_of(domid))) if got is not None \
            else sorted(ports)
        if lost:
            where = f"domain {domid}'s section ends" if got is not None else f"domain {domid} has no section"
            why.append(f"{where} before {len(lost)} open port(s) of its port table (first {lost[0]})")
            break
    if why:
        ev.skip(CUT, "the dump looks cut short: " + "; ".join(why))
    elif pressed and not ev.unread:
        ev.listed = sorted(ev.domains)
