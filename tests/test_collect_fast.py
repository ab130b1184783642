"""The collection's bulk paths (issues 25/28) hold to the port-by-port readings they replace: the exporter's
families to a plain walk of the diagnosis (every port, counter and name visited one by one), a dump whose
statuses' words are omitted to the whole dump cut by hand, and the 'e' dump's rows merged straight into the
facts to the same rows made into facts and merged one by one."""

from __future__ import annotations

import json

import pytest

import xenevt
from xenevt import abi
from xenevt.evidence.model import CounterFacts
from xenevt.ports import PortStatus, word_flag_dict
from xenevt.sim.host import SimHost, create_host


def busy_host(d: str) -> None:
    """Named devices of every kind, VIRQs and IPIs, plain channels, a 2-level domain, pending and masked ports."""
    create_host(d, nr_domains=4, nr_vcpus=2, abis={2: "2l"}, force=True)
    with SimHost(d) as h:
        h.device_add("vif", 1, queues=2)
        h.device_add("console", 1)
        h.device_add("vbd", 2)
        h.device_add("console", 3)
        h.bind_virq(0, 0, 0, 0)
        h.bind_ipi(0, 0, 1)
        for dom in (1, 2, 3, 1, 3):
            h.bind_interdomain(0, 0, dom, h.alloc_unbound(dom, dom, 0))
        p = h.alloc_unbound(1, 1, 0)
        q = h.bind_interdomain(0, 0, 1, p)
        h.mask(0, 0, q)
        h.send(1, 1, p)
        h.alloc_unbound(0, 0, 7)


def traffic(d: str, rounds: int) -> None:
    """Events on several ports of each domain, more on some than others (a ranking with ties)."""
    with SimHost(d) as h:
        for dom in (1, 2, 3):
            mine = [st.port for st in h.list_ports(dom, dom) if st.state == "interdomain"]
            for i, port in enumerate(mine):
                for _ in range(rounds * (1 + i % 3)):
                    h.send(dom, dom, port)


def plain_samples(dg, previous, which: str, top: int) -> set:
    """The exporter's per-domain and per-port samples, read port by port and counter by counter."""
    names = dg.names
    old = previous.evidence.domains if previous is not None else {}
    out = set()

    def device(d, port):
        return names.text(d, port) if names is not None and port is not None else ""

    for d, dom in sorted(dg.evidence.domains.items()):
        dl = str(d)
        by_state = dict.fromkeys(("unbound", "interdomain", "virq", "ipi", "pirq"), 0)
        n_pending = n_pm = n_linked = 0
        for pf in dom.ports.values():
            if pf.state in by_state:
                by_state[pf.state] += 1
            n_pending += bool(pf.pending)
            n_pm += bool(pf.pending and pf.masked)
            n_linked += bool(pf.linked)
        for state, n in by_state.items():
            out.add(("xenevt_ports", (("domain", dl), ("state", state)), n))
        out.add(("xenevt_ports_pending", (("domain", dl),), n_pending))
        out.add(("xenevt_ports_pending_masked", (("domain", dl),), n_pm))
        if dom.abi == "FIFO":
            out.add(("xenevt_ports_linked", (("domain", dl),), n_linked))
        plain = [c for c in dom.counters if not c.key.startswith("xenbus ")]
        handled = [c.handled for c in plain if c.handled is not None]
        if handled:
            out.add(("xenevt_domain_events_total", (("domain", dl),), sum(handled)))
        raises = [c.raised for c in dom.counters if c.raised is not None]
        if raises:
            out.add(("xenevt_domain_events_raised_total", (("domain", dl),), sum(raises)))
        before = {c.key: c for c in old[d].counters} if d in old else {}
        if which == "all":
            rows = plain
        else:
            rows = [c for c in plain if which == "named" and device(d, c.port)]
            kept = {c.key for c in rows}

            def moved(c, before=before) -> int:
                b = before.get(c.key)
                now = max(c.handled or 0, c.raised or 0)
                return now - (max(b.handled or 0, b.raised or 0) if b is not None else now)

            busy = sorted((c for c in plain if c.key not in kept), key=moved, reverse=True)
            rows += [c for c in busy[:top] if moved(c) > 0] if top > 0 else []
        for c in rows:
            labels = (("device", device(d, c.port)), ("domain", dl),
                      ("irq", c.key[4:] if c.key.startswith("irq ") else ""),
                      ("port", "" if c.port is None else str(c.port)))
            if c.handled is not None:
                out.add(("xenevt_port_events_total", labels, c.handled))
            if c.raised is not None:
                out.add(("xenevt_port_events_raised_total", labels, c.raised))
        for c in dom.counters:
            if c.key.startswith("xenbus "):
                node = (("device", c.key[len("xenbus "):]), ("domain", dl))
                if c.spurious is not None:
                    out.add(("xenevt_xenbus_spurious_events_total", node, c.spurious))
                if c.eoi_delayed is not None:
                    out.add(("xenevt_xenbus_eoi_delayed_jiffies_total", node, c.eoi_delayed))
    return out


KINDS = {"xenevt_ports", "xenevt_ports_pending", "xenevt_ports_pending_masked", "xenevt_ports_linked",
         "xenevt_domain_events", "xenevt_domain_events_raised", "xenevt_port_events", "xenevt_port_events_raised",
         "xenevt_xenbus_spurious_events", "xenevt_xenbus_eoi_delayed_jiffies"}


def samples(families) -> set:
    return {(s.name, tuple(sorted(s.labels.items())), s.value) for f in families if f.name in KINDS
            for s in f.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("which", ["named", "all", "none"])
def test_the_families_are_the_port_by_port_reading(tmp_path, which):
    pytest.importorskip("prometheus_client")  # (an optional extra: the floor venv runs without it)
    from xenevt.metrics.collect import _families

    d = str(tmp_path / "h")
    busy_host(d)
    with xenevt.open("sim", d) as host:
        first = host.doctor()
        traffic(d, 3)
        host.refresh()
        second = host.doctor(since=first)
    # a kernel's rows the simulator does not count: an IRQ row and xenbus devices, moved between the samples
    for dg, n in ((first, 1), (second, 9)):
        dg.evidence.domains[1].counters += [
            CounterFacts("irq 40", "vif1.0-q0-tx", None, None, 100 * n),
            CounterFacts("xenbus backend/vif/1/0", "vif", None, None, 5 * n, 2 * n, 3 * n),
            CounterFacts("xenbus device/vbd/51712", "vbd", None, None, n, None, None)]
    for top in (0, 1, 2, 10, 1000):
        for dg, prev in ((first, None), (second, first), (second, None)):
            got = samples(_families(dg, prev, which, top, {}))
            assert got == plain_samples(dg, prev, which, top), (top, prev is not None)
    # (what the test compares is there: moved ports ranked, named ones labelled, xenbus counters)
    fast = samples(_families(second, first, which, 2, {}))
    assert any(s[0] == "xenevt_xenbus_eoi_delayed_jiffies_total" for s in fast)
    assert any(s[0] == "xenevt_port_events_total" and s[1][0][1] == "" for s in fast)  # (a busiest unnamed one)


def test_a_dump_with_its_statuses_words_omitted_is_the_whole_dump_cut(tmp_path):
    """build_dump(omit=statuses) leaves out exactly the words read with those very statuses, whatever the words
    (0, MASKED, unusual, LINKED past the array, bits the ABI leaves unused), and warns and counts the same."""
    from xenevt.dump.decode import build_dump
    from xenevt.engine import DomainMemory

    mem = DomainMemory.create(nr_vcpus=1, max_pages=1, nr_chans=1024)
    mem.add_page()
    m, p, lk = abi.WORD_MASKED, abi.WORD_PENDING, abi.WORD_LINKED
    words = {1: 0, 2: m, 3: p, 4: p | m, 5: lk | 7, 6: lk | 5000, 7: 1 << 20, 8: m | 1 << 18, 9: 0, 10: m,
             11: p, 12: lk | 9, 900: m, 901: p}
    for port, w in words.items():
        mem.set_word(port, w)
    channels = {}
    for port in list(words) + [2000, 3000]:  # (two ports past the array: no word)
        w = words.get(port)
        # a status read with the word now there, or with another one (the word changed since it was read)
        seen = w if port % 3 else (w or 0) ^ p
        channels[port] = PortStatus(0, port, "interdomain", 0, 1, port, word=seen,
                                    flags=word_flag_dict(seen) if seen is not None else {})
    whole = build_dump(mem, 0, "test", channels=channels, guest_known=False)
    left = []
    for omit in (channels, {k: v for k, v in channels.items() if k % 2}, {}):
        cut = build_dump(mem, 0, "test", channels=channels, guest_known=False, omit=omit)
        want = [w for w in whole.words if not (omit.get(w.port) is w.channel and w.channel.word == w.word)]
        assert cut.words == want
        assert (cut.plain_masked, cut.warnings) == (whole.plain_masked, whole.warnings)
        left.append(len(cut.words))
    assert len(whole.warnings) == 3 and left[0] < left[1] < left[2] == len(whole.words)  # (some left out, some warn)


def test_the_e_rows_merged_in_bulk_are_the_rows_merged_one_by_one(tmp_path):
    """merge_rows against edump.from_rows + merge_port, on facts that agree with the rows and facts that do not
    (a port the rows alone show, a status from another moment, a port of unknown state)."""
    from xenevt.backend.sim import SimBackend
    from xenevt.evidence import collect, edump
    from xenevt.evidence.model import Evidence, PortFacts

    d = str(tmp_path / "h")
    busy_host(d)
    with SimHost(d) as h:
        h.xen_port(3, 0)
    rows = SimBackend(d, read_only=True).debug_rows()
    (xen,) = [row[0] for domid, lines in rows if domid == 3 for row in lines if row[13]]

    def base() -> tuple[Evidence, dict]:
        ev = collect.from_backend(SimBackend(d, read_only=True))
        for dom in ev.domains.values():  # (back to the statuses' facts: what the rows were merged into)
            for f in dom.ports.values():
                f.xen_consumer = None
            dom.unreported = None
        ev.domains[0].ports.pop(max(ev.domains[0].ports))                 # a port only the rows show
        ev.domains[1].ports[1].pending = not ev.domains[1].ports[1].pending  # a status from another moment
        ev.domains[3].ports[2] = PortFacts(2, "unknown")                   # a port whose state is unknown
        ev.domains[2].abi = None
        tables = {dom: set(f.ports) for dom, f in ev.domains.items()}
        tables[3].discard(xen)  # (Xen's own port, which the status walk was refused: unreported)
        return ev, tables

    for wanted in ([0, 1, 2, 3], [1, 3]):
        fast, tables = base()
        seen = collect.merge_rows(fast, rows, "e", wanted, tables)
        slow, tables = base()
        plain = edump.from_rows(rows, "e", wanted)
        collect._cut(plain, tables, pressed=True)
        for domid, sd in plain.domains.items():
            if domid in wanted:
                dom = slow.domain(domid)
                dom.abi = dom.abi or sd.abi
                for f in sd.ports.values():
                    collect.merge_port(dom, f)
                missed = sorted(p for p, f in sd.ports.items() if f.xen_consumer and p not in tables[domid])
                if missed:
                    dom.unreported = missed
        facts = [json.loads(e.to_json()) for e in (fast, slow)]
        for f in facts:
            f.pop("taken_at")
        assert facts[0] == facts[1]
        assert [str(u) for u in seen.unread] == [str(u) for u in plain.unread]
        assert sorted(seen.domains) == sorted(plain.domains)
    assert fast.domains[3].unreported == [xen]
