"""The fast paths of the read-only views hold to the slow ones they replace: the simulator's bulk port table to
EVTCHNOP_status port by port, a streamed JSON row to json.dumps of the same dict, the table check to the
record-by-record one (which error, which field)."""

from __future__ import annotations

import json

import pytest

from xenevt.cli import main
from xenevt.cli.inspect import _json_rows
from xenevt.errors import StateError
from xenevt.ports import PortStatus
from xenevt.sim.host import SimHost, create_host


def varied_host(d: str, xen: str = "4.20") -> None:
    """Every kind of port: devices (named), VIRQ, IPI, pending, masked, unbound for a missing domain, a port Xen
    consumes, a 2-level domain, a pending port on it."""
    create_host(d, nr_domains=4, nr_vcpus=2, abis={2: "2l"}, xen=xen, force=True)
    with SimHost(d) as h:
        h.device_add("vif", 1, queues=2)
        h.device_add("console", 1)
        h.device_add("vbd", 2)
        h.bind_virq(0, 0, 0, 0)
        h.bind_ipi(0, 0, 1)
        p = h.alloc_unbound(1, 1, 0)
        q = h.bind_interdomain(0, 0, 1, p)
        h.send(1, 1, p)
        h.mask(0, 0, q)
        h.send(1, 1, p)
        h.alloc_unbound(0, 0, 7)
        h.xen_port(3, 0)
        r = h.alloc_unbound(2, 2, 0)
        h.bind_interdomain(0, 0, 2, r)
        h.send(0, 0, h.list_ports(0, 0)[-1].port)
        h.close_port(1, 1, 2)


@pytest.mark.parametrize("xen", ["4.17", "4.20"])
def test_port_table_is_list_ports_in_bulk(tmp_path, xen):
    d = str(tmp_path / "h")
    varied_host(d, xen)
    with SimHost(d, read_only=True) as h:
        for domid in sorted(h.domains):
            assert h.port_table(0, domid) == h.list_ports(0, domid), domid
            assert h.port_table(domid, domid) == h.list_ports(domid, domid), domid
        with pytest.raises(Exception) as slow:
            h.list_ports(1, 0)
        with pytest.raises(type(slow.value)) as fast:
            h.port_table(1, 0)
        assert str(fast.value) == str(slow.value)


def test_port_table_refuses_a_bad_record_as_the_open_does(tmp_path):
    d = str(tmp_path / "h")
    varied_host(d)
    with SimHost(d) as h:
        mem = h.domains[0].mem
        port = h.list_ports(0, 0)[0].port
        mem.update_chan(port, remote_port=60000)  # past dom1's table: what another process could have written
        with pytest.raises(StateError) as e:
            h.port_table(0, 0)
        assert f"channel[{port}].remote_port" in str(e.value)
        with pytest.raises(StateError) as slow:
            h.list_ports(0, 0)
        assert str(e.value) == str(slow.value)


def test_json_row_is_json_dumps_of_the_dict(tmp_path):
    d = str(tmp_path / "h")
    varied_host(d)
    name = {"text": "d1:2 vif 0 ↔ d0:7", "kind": "vif", "queue": 0, "peer": {"domain": 0, "port": 7}}
    odd = [PortStatus(0, 5, "closed"), PortStatus(1, 2, "interdomain", 3, 4, 5, priority=0, word=0,
                                                  flags={"pending": 1, "masked": True}),
           PortStatus(1, 3, "virq", virq=2, xen_owned=True, flags={"pending": True, "masked": 1})]
    with SimHost(d, read_only=True) as h:
        ports = [st for domid in h.domains for st in h.port_table(0, domid)]
    for st in ports + odd:
        for n in (None, name):
            for two_level in (False, True):
                assert st.json_row(n, two_level) == json.dumps(st.as_dict(two_level) | {"name": n}), st


@pytest.mark.parametrize("n", [0, 1, 2, 511, 512, 513, 1500])
def test_streamed_json_array_is_json_dumps_of_the_list(n, capsys):
    class C:
        stdout = __import__("sys").stdout

    rows = [{"port": i, "s": "x" * (i % 3)} for i in range(n)]
    _json_rows(C, "ports", (json.dumps(r) for r in rows))
    assert capsys.readouterr().out == json.dumps({"schema": "xenevt/1", "ports": rows}) + "\n"


def test_list_views_agree_with_the_port_table(tmp_path, monkeypatch, capsys):
    """list --json is the table's ports, each with its name; the text view has a row per port."""
    d = str(tmp_path / "h")
    varied_host(d)
    monkeypatch.setenv("XENEVT_STATE", d)
    with SimHost(d, read_only=True) as h:
        want = [st.as_dict() for st in h.list_ports(0, 0)]
    assert main(["--json", "list"]) == 0
    got = json.loads(capsys.readouterr().out)["ports"]
    assert [{k: v for k, v in r.items() if k != "name"} for r in got] == want
    assert any(r["name"] and r["name"]["kind"] == "vif" for r in got)
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"domain 0: {len(want)} open port(s)" and len(lines) == len(want) + 2


def test_dump_json_chunks_are_json_dumps_of_the_dict(tmp_path):
    """A dump's streamed JSON (json_chunks, WordView.json_row, PortStatus.json_fields) is json.dumps of as_dict."""
    from xenevt.dump import build_dump
    from xenevt.dump.model import DomainDump

    d = str(tmp_path / "h")
    varied_host(d)
    with SimHost(d, read_only=True) as h:
        for domid in sorted(h.domains):
            channels = {st.port: st for st in h.port_table(0, domid)}
            x = build_dump(h.domains[domid].mem, domid, "sim", channels=channels, all_words=True)
            if isinstance(x, DomainDump):
                assert "".join(x.json_chunks(chunk=3)) == json.dumps(x.as_dict()), domid
                for w in x.words:
                    assert w.json_row(domid) == json.dumps(w.as_dict(domid))
            for st in channels.values():
                word = ("domain", "port", "word", "flags", "link")  # (skipping the flags skips their LINK too)
                for skip in ((), word, word + ("priority",)):
                    want = {k: v for k, v in st.as_dict().items() if k not in skip}
                    assert st.json_fields(skip) == json.dumps(want)
                    if skip == word:
                        assert st.json_channel() == json.dumps(want)


# the 'e' text as the simulator printed it port by port before the bulk read (sim/console.py), kept as the reference
from xenevt import abi  # noqa: E402
from xenevt.abi import ECS_FREE, ECS_INTERDOMAIN, ECS_PIRQ, ECS_UNBOUND, ECS_VIRQ  # noqa: E402
from xenevt.engine.layout import ABI_FIFO, CHAN_XEN  # noqa: E402


def old_debug_key_e(self) -> list[str]:
    """What Xen 4.17 prints for debug key 'e' (domain_dump_evtchn_info + the FIFO or 2-level print_state)."""
    lines = ["'e' pressed -> dumping event-channel info"]
    for domid in sorted(self.domains):
        dom = self.domains[domid]
        mem = dom.mem
        lines += [f"Event channel information for domain {domid}:", "Polling vCPUs: {}", "    port [p/m/s]"]
        states = mem.chan_states(0, mem.nr_chans)
        for port in range(1, mem.nr_chans):
            if states[port] == ECS_FREE:
                continue
            ch = self.file.rec(dom, port)
            xen = bool(ch.flags & CHAN_XEN)  # not usable by the guest: never pending, always masked
            if mem.event_abi != ABI_FIFO:  # evtchn_2l_print_state(): the port's selector bit
                pending = int(not xen and mem.l2_bit("pending", port))
                masked = int(xen or mem.l2_bit("mask", port))
                sel = mem.vcpu_info(ch.notify_vcpu)[2] if ch.notify_vcpu < mem.nr_vcpus else 0
                state = str(sel >> (port // 64) & 1)
            else:
                word = mem.word(port)
                pending = int(not xen and word is not None and bool(word & abi.WORD_PENDING))
                masked = int(xen or word is None or bool(word & abi.WORD_MASKED))  # no word reads as masked
                if word is None:
                    state = "?     "
                else:
                    busy = "B" if word & abi.WORD_BUSY else " "
                    state = f"{busy} {word & abi.EVTCHN_FIFO_LINK_MASK:<4d}" if word & abi.WORD_LINKED else \
                        f"{busy} -   "
            line = f"    {port:4d} [{pending}/{masked}/{state}]: s={ch.state} n={ch.notify_vcpu} x={int(xen)}"
            if ch.state == ECS_UNBOUND:
                line += f" d={ch.remote_dom}"
            elif ch.state == ECS_INTERDOMAIN:
                line += f" d={ch.remote_dom} p={ch.remote_port}"
            elif ch.state == ECS_PIRQ:
                line += f" p={ch.aux} i=-1"
            elif ch.state == ECS_VIRQ:
                line += f" v={ch.aux}"
            lines.append(line)
    return lines


@pytest.mark.parametrize("xen", ["4.17", "4.20"])
def test_debug_key_e_in_bulk_is_the_port_by_port_text(tmp_path, xen):
    d = str(tmp_path / "h")
    varied_host(d, xen)
    with SimHost(d, read_only=True) as h:
        assert h.debug_key_e() == old_debug_key_e(h)


EDGE_LINES = [
    "       1 [1/0/  5                    ]: s=3 n=0 x=0 d=1 p=2",
    "       2 [1/0/B 12345 ]: s=3 n=0 x=0 d=1 p=2",
    "       3 [1/0/  123456]: s=3 n=0 x=0 d=123456 p=2",
    "       4 [1/0/  -   ]: s=3 n=0 x=0 d=1",
    "       5 [1/0/  -   ]: s=2 n=0 x=0 d=1 p=2",
    "       6 [1/0/  -   ]: s=5 n=0 x=0 d=1",
    "       7 [1/0/  -   ]: s=6 n=0 x=0 v=1",
    "       8 [1/0/0]: s=5 n=8191 x=7 v=23",
    "    4096 [1/0/0]: s=6 n=0 x=0",
    "       9 [1/0/  -   ]: s=0 n=0 x=0",
    '       1 [1/0/  5   ]: s=3 n=0 x=0 d=1 p=2',
    '       2 [0/1/B -   ]: s=2 n=1 x=0 d=7',
    '       3 [0/0/?     ]: s=5 n=0 x=0 v=0',
    '       4 [0/0/1]: s=6 n=1 x=0',
    '    4097 [1/0/1]: s=3 n=0 x=0 d=1 p=3',
    '       5 [0/0/  123456]: s=3 n=0 x=0 d=1 p=4',
    '       6 [0/0/  1234567]: s=3 n=0 x=0 d=1 p=4',
    '       7 [0/0/  12  ]: s=3 n=0 x=0 d=1 p=4',
    '       8 [0/0/ 5   ]: s=3 n=0 x=0 d=1 p=4',
    '       9 [0/0/  5   ]: s=4 n=0 x=0 p=3 i=-1',
    '      10 [0/0/  -   ]: s=3 n=0 x=0 d=1 p=4 Z=system_u',
    '      11 [0/0/  -   ]: s=3 n=0 x=0 d=32752 p=4',
    '      12 [0/0/  -   ]: s=3 n=0 x=0 d=1 p=0',
    '      13 [0/0/  -   ]: s=5 n=0 x=0 v=24',
    '      14 [0/0/  -   ]: s=5 n=8192 x=0 v=1',
    '      15 [0/0/  -   ]: s=1 n=0 x=8',
    '      16 [0/0/  -   ]: s=7 n=0 x=0',
    '      17 [0/0/  -   ]: s=1 n=0 x=0 d=3',
    '      18 [0/0/  ²   ]: s=1 n=0 x=0',
    '  131072 [0/0/  -   ]: s=1 n=0 x=0',
    '      19 [0/0/  -   ]: s=03 n=0 x=0 d=1 p=1',
    '      20 [0/0/  -   ]: s=2 n=0 x=0 d=65536',
    '      21 [0/0/5   ]: s=2 n=0 x=0 d=1',
    '       1 [0/0/  -   ]: s=2 n=0 x=0 d=2',
    '      22 [0/0/  131072]: s=2 n=0 x=0 d=1',
    '      23 [0/0/-   ]: s=2 n=0 x=0 d=1',
]


def test_edump_plain_lines_read_as_the_careful_reader_reads_them(tmp_path, monkeypatch):
    """The 'e' reader's fast paths (_plain_line, _plain_port) give exactly what its field-by-field path gives,
    on a simulated host's dump and on lines at and past every bound."""
    from xenevt.evidence import edump

    d = str(tmp_path / "h")
    varied_host(d)
    with SimHost(d, read_only=True) as h:
        texts = ["\n".join(f"(XEN) {line}" for line in h.debug_key_e())]
    for i, line in enumerate(EDGE_LINES):
        texts.append(f"(XEN) Event channel information for domain {i % 3}:\n(XEN) {line}\n")
    texts.append("Event channel information for domain 0:\n" + "\n".join(EDGE_LINES))

    def facts(ev):
        return ({d: (f.abi, dict(f.ports)) for d, f in ev.domains.items()}, [str(u) for u in ev.unread],
                ev.warnings)

    fast = [facts(edump.parse(t)) for t in texts]
    monkeypatch.setattr(edump._Reader, "_plain_line", lambda self, line: None)
    assert fast == [facts(edump.parse(t)) for t in texts]  # the pattern's path: as _plain_port reads
    monkeypatch.setattr(edump._Reader, "_plain_port", lambda self, m: None)
    assert fast == [facts(edump.parse(t)) for t in texts]


def test_edump_read_for_some_domains_is_the_whole_read_cut_to_them(tmp_path):
    from xenevt.evidence import edump

    d = str(tmp_path / "h")
    varied_host(d)
    with SimHost(d, read_only=True) as h:
        text = "\n".join(f"(XEN) {line}" for line in h.debug_key_e())
    whole = edump.parse(text)
    for want in ([0], [1, 2], [3], [9]):
        part = edump.parse(text, domains=want)
        assert sorted(part.domains) == sorted(whole.domains)  # every header: which domains Xen has
        for domid in want:
            if domid in whole.domains:
                assert part.domains[domid] == whole.domains[domid]
        assert [u for u in part.unread if u.domain in want] == [u for u in whole.unread if u.domain in want]


def test_port_table_sees_each_change(tmp_path):
    """The second read of an unchanged table is the first's; any change (a word, a record) is read anew."""
    d = str(tmp_path / "h")
    varied_host(d)
    with SimHost(d) as h:
        first = h.port_table(0, 0)
        assert h.port_table(0, 0) == first == h.list_ports(0, 0)
        port = first[0].port
        h.mask(0, 0, port)
        assert h.port_table(0, 0) == h.list_ports(0, 0) != first
        h.set_priority(0, 0, port, 3)
        assert h.port_table(0, 0) == h.list_ports(0, 0)
        h.close_port(0, 0, port)
        assert h.port_table(0, 0) == h.list_ports(0, 0)
        assert h.debug_key_e() == old_debug_key_e(h)


@pytest.mark.parametrize("xen", ["4.17", "4.20"])
def test_the_read_host_answers_as_the_whole_host(tmp_path, xen):
    """SimReadHost (inspection without the hypercalls' module) gives SimHost's answers, refusals included."""
    from xenevt.sim.host import SimReadHost

    d = str(tmp_path / "h")
    varied_host(d, xen)

    def answers(h):
        out = [h.info(), h.debug_key_e(), h.xenstore_nodes()]
        for caller in sorted(h.domains):
            for domid in list(h.domains) + [9]:
                for port in range(0, 14):
                    try:
                        out.append(h.status(caller, domid, port))
                    except Exception as e:  # (the refusal itself is the answer)
                        out.append((type(e).__name__, str(e)))
                for read in (h.list_ports, h.port_table):
                    try:
                        out.append(read(caller, domid))
                    except Exception as e:
                        out.append((type(e).__name__, str(e)))
            out.append(h.counters(caller))
        return out

    with SimHost(d, read_only=True) as whole, SimReadHost(d) as part:
        assert answers(part) == answers(whole)


def test_the_read_host_finishes_an_update_cut_short_in_its_copy(tmp_path):
    """An open that finds an intent left by a killed process redoes it in the private copy, with the guest's
    and the hypercalls' code taken on first use."""
    from tests.test_crash import Killed, cut, digest
    from xenevt.sim.host import SimReadHost

    d = str(tmp_path / "h")
    create_host(d, nr_domains=3, nr_vcpus=2, max_ports_dom0=64, max_ports_domu=64)
    with SimHost(d) as h:
        rp = h.alloc_unbound(1, 1, 0)
        cut(h, 1)
        with pytest.raises(Killed):
            h.bind_interdomain(0, 0, 1, rp)
    before = digest(d)
    with SimReadHost(d) as h, SimHost(d, read_only=True) as whole:
        assert h.status(0, 1, rp).state == "interdomain" and h.recovered == whole.recovered
        assert h.port_table(0, 0) == whole.list_ports(0, 0)
    assert digest(d) == before


def test_unusual_words_are_found_over_the_whole_array():
    from xenevt import abi
    from xenevt.dump.decode import _unusual

    m = abi.WORD_MASKED
    words = [0, m, 1, m | 1, 1 << 16, 1 << 8, abi.WORD_PENDING, abi.WORD_LINKED | 5, m | abi.WORD_BUSY, 0, m] * 37
    assert _unusual(words) == {i for i, w in enumerate(words) if w and w != m}
    assert _unusual([]) == set()


@pytest.mark.parametrize("xen", ["4.17", "4.20"])
def test_the_e_dumps_rows_give_the_evidence_its_text_gives(tmp_path, xen):
    """doctor reads the simulator's 'e' dump as rows of facts (no text printed and parsed): the evidence, every
    domain's and some domains', is what the text read by edump.parse gives."""
    from xenevt.backend.sim import SimBackend
    from xenevt.errors import BackendUnavailable
    from xenevt.evidence import collect

    class TextOnly(SimBackend):
        def debug_rows(self):
            raise BackendUnavailable("as on Xen: text only")

    def facts(ev) -> dict:
        out = json.loads(ev.to_json())
        out.pop("taken_at")
        return out

    d = str(tmp_path / "h")
    varied_host(d, xen)
    with SimHost(d) as h:
        h.bind_virq(1, 1, 1, 1)
        h.xen_port(0, 0)
    for domains in (None, [1], [0, 2]):
        rows = collect.from_backend(SimBackend(d, read_only=True), domains)
        text = collect.from_backend(TextOnly(d, read_only=True), domains)
        assert "+ 'e' dump" in rows.source and rows.listed == [0, 1, 2, 3]
        assert facts(rows) == facts(text)
