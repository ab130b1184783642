"""Readers of outside text ('e' dump, lsevtchn, snapshots): every line Xen can print is read, everything else is
named (line and field) and makes doctor's verdict inconclusive, never healthy; no input costs more than linear time."""

from __future__ import annotations

import json
import time

import pytest

from tests import edump_writer as ew
from xenevt.cli import main
from xenevt.evidence import edump, lsevtchn
from xenevt.evidence.model import Evidence, EvidenceError, PortFacts

WIDEST = [(1, 0), (9999, 9999), (10000, 10000), (99999, 99999), (100000, 100000), (131071, 131071), (4095, 131071)]


def one_port(line: str, domid: int = 32751, **kw) -> Evidence:
    return edump.parse(ew.console(ew.domain_lines(domid, [line], polling="0-3,5,8191"), **kw), "t")


# --- the 'e' dump: every line Xen prints, at its widest ----------------------------------------------------------
@pytest.mark.parametrize("port,link", WIDEST)
@pytest.mark.parametrize("xsm", [None, "system_u:system_r:domU_t"])
@pytest.mark.parametrize("kw", [{}, {"stamps": True}, {"prefix": ""}])
def test_every_line_xen_prints_is_read(port, link, xsm, kw):
    for line in ew.every_port_line(port, link, xsm):
        ev = one_port(line, **kw)
        assert ev.unread == [] and ev.warnings == [], line
        d = ev.domains[32751]
        assert d.polling == [0, 1, 2, 3, 5, 8191]
        f = d.ports[port]
        assert f.vcpu == 8191 and f.xen_consumer == 7, line
        if f.linked:
            assert f.link == link, line
        if f.state == "interdomain":
            assert (f.remote_domain, f.remote_port) == (32751, 131071)
        elif f.state == "unbound":
            assert f.remote_domain == 65535
        elif f.state == "pirq":
            assert f.pirq == 2147483647
        elif f.state == "virq":
            assert f.virq == 23


def test_a_link_of_five_digits_keeps_its_port():
    """Xen prints LINK with %-4u: from 10000 on the field is wider than four, and the port must not be lost."""
    ev = one_port(ew.port_line(12345, "interdomain", p=1, word={"linked": True, "link": 10000}, d=1, rp=3))
    f = ev.domains[32751].ports[12345]
    assert ev.unread == [] and (f.pending, f.linked, f.link, f.busy) == (True, True, 10000, False)


def test_new_header_and_abi_line():
    text = ew.console(ew.domain_lines(3, [ew.port_line(7, "ipi", two_level_sel=1)], new_header=True,
                                      abi_line="2-level"))
    ev = edump.parse(text)
    assert ev.unread == [] and ev.domains[3].abi == "2-level" and ev.domains[3].ports[7].selector is True


def test_the_last_dump_is_read():
    first = ew.console(ew.domain_lines(0, [ew.port_line(1, "ipi", word={"linked": False})]))
    second = ew.console(ew.domain_lines(0, [ew.port_line(2, "ipi", word={"linked": False})]))
    ev = edump.parse(first + "(XEN) some later message\n" + second)
    assert set(ev.domains[0].ports) == {2} and ev.unread == []
    assert "another 'e' dump starts; only the last one is read" in ev.warnings[0]


def unread_of(line: str) -> list[str]:
    return [str(u) for u in one_port(line, domid=4).unread]


@pytest.mark.parametrize("line,field", [
    ("    999999999 [0/0/  -   ]: s=6 n=0 x=0", "port 999999999 is out of range (Xen's ports are 1..131071)"),
    ("    131072 [0/0/  -   ]: s=6 n=0 x=0", "port 131072 is out of range"),
    ("    0 [0/0/  -   ]: s=6 n=0 x=0", "port 0 is out of range"),
    ("       5 [0/0/  -   ]: s=42 n=0 x=0", "s=42 is not a channel state Xen prints"),
    ("       5 [0/0/  -   ]: s=0 n=0 x=0", "s=0 is not a channel state Xen prints"),
    ("       5 [0/0/  -   ]: s=\u00b9 n=0 x=0", "not an event-channel line Xen prints"),
    ("       5 [0/0/  -   ]: s=6 n=9999 x=0", "port 5: n= 9999 is out of range (Xen has at most 8192 vCPUs)"),
    ("       5 [0/0/  -   ]: s=6 n=0 x=8", "port 5: x= 8 is out of range (0..7)"),
    ("       5 [0/0/  -   ]: s=5 n=0 x=0 v=24", "port 5: v= 24 is out of range (Xen has 24 VIRQs)"),
    ("       5 [0/0/  -   ]: s=3 n=0 x=0 d=32752 p=1", "port 5: d= 32752 is out of range"),
    ("       5 [0/0/  -   ]: s=3 n=0 x=0 d=1 p=131072", "port 5: p= 131072 is out of range"),
    ("       5 [0/0/  -   ]: s=2 n=0 x=0 d=65536", "port 5: d= 65536 is out of range"),
    ("       5 [0/0/  -   ]: s=3 n=0 x=0 d=1", "the fields after x= ('d=1') are not what Xen prints for s=3"),
    ("       5 [0/0/  -   ]: s=6 n=0 x=0 v=1", "the fields after x= ('v=1') are not what Xen prints for s=6"),
    ("       5 [0/0/  131072]: s=6 n=0 x=0", "port 5: LINK 131072 is out of range"),
    ("       5 [0/0/  12 ]: s=6 n=0 x=0", "port 5: state field [  12 ] is not what Xen prints"),
    ("       5 [0/0/X -   ]: s=6 n=0 x=0", "port 5: state field [X -   ] is not what Xen prints"),
    ("    5000 [0/0/1]: s=6 n=0 x=0", "port 5000 is beyond the 2-level ABI's 4096 ports"),
    ("       5 [0/0/  -   ]: s=6 n=" + "9" * 5000 + " x=0", "port 5: n= '999999999999... (5000 characters)' is not"),
    ("       5 [0/0/  -   ]: s=6 n=0\u00b2 x=0", "not an event-channel line Xen prints"),
])
def test_values_xen_cannot_print_are_unread_naming_line_and_field(line, field):
    (u,) = unread_of(line)
    assert u.startswith("line 5: ") and field in u, u


def test_bad_headers_and_polling_lists():
    text = ew.console(ew.domain_lines(70000, [ew.port_line(1, "ipi")]) + ew.domain_lines(32752, []))
    ev = edump.parse(text)
    assert ev.domains == {}
    assert [str(u)[:58] for u in ev.unread] == [
        "line 2: header: domain 70000 is out of range (ids from 0x7",
        "line 5: port line of a domain whose header could not be re",
        "line 6: header: domain 32752 is out of range (ids from 0x7"]
    for polling, why in [("0-99999999", "vCPU 99999999 is out of range (Xen has at most 8192 vCPUs)"),
                         ("3,1", "'1' is not in ascending order"), ("0-3,2-5", "'2-5' is not in ascending order"),
                         ("5-2", "'5-2' is not in ascending order"), ("1,,2", "vCPU '' is not a number"),
                         ("9" * 5000, "is not a number Xen prints")]:
        t0 = time.perf_counter()
        ev = edump.parse(ew.console(ew.domain_lines(1, [ew.port_line(1, "ipi")], polling=polling)))
        assert time.perf_counter() - t0 < 0.5
        (u,) = ev.unread
        assert str(u).startswith("line 3: Polling vCPUs: ") and why in u.what and ev.domains[1].polling is None


def test_noise_is_ignored_but_damaged_port_lines_are_unread():
    lines = ew.domain_lines(0, [ew.port_line(p, "ipi", word={"linked": False}) for p in range(1, 5)])
    lines[4:4] = ["d0v1 unrelated message", "    3 [0/0/  -", "]: s=6 n=0 x=0"]  # one line split by another CPU
    ev = edump.parse(ew.console(lines))
    assert set(ev.domains[0].ports) == {1, 2, 3, 4}
    assert ev.warnings == ["1 other console line(s) in the dump ignored (the first at line 6)"]
    assert [str(u)[:7] for u in ev.unread] == ["line 7:", "line 8:"]
    cut = [ew.port_line(3, "ipi", word={"linked": False})] + lines[:4]  # the ring lost the dump's start
    before = edump.parse("\n".join(f"(XEN) {line}" for line in cut))
    assert "line 1: dump line before any 'Event channel information' header" in str(before.unread[0])


def test_bytes_and_invalid_utf8_are_read():
    text = ew.console(ew.domain_lines(0, [ew.port_line(1, "ipi", word={"linked": False})])).encode()
    ev = edump.parse(text + b"(XEN) \xff\xfe garbage\n")
    assert set(ev.domains[0].ports) == {1} and ev.unread == []
    ev = edump.parse(text.replace(b"s=6", b"s=\xff"))
    assert "not an event-channel line Xen prints" in ev.unread[0].what


# --- lsevtchn --------------------------------------------------------------------------------------------------------
def test_lsevtchn_widest_lines():
    lines = [ew.lsevtchn_line(131071, 8191, "interdomain", d=32751, rp=131071),
             ew.lsevtchn_line(131070, 0, "unbound", d=65535), ew.lsevtchn_line(99999, 1, "pirq", pirq=2147483647),
             ew.lsevtchn_line(10000, 1, "virq", virq=23), ew.lsevtchn_line(1, 1, "ipi"),
             ew.lsevtchn_line(2, 1, "unknown")]
    ev = lsevtchn.parse("\n".join(lines) + "\n", 3)
    p = ev.domains[3].ports
    assert ev.unread == [] and set(p) == {131071, 131070, 99999, 10000, 1, 2}
    assert (p[131071].remote_domain, p[131071].remote_port, p[131071].vcpu) == (32751, 131071, 8191)
    assert (p[99999].pirq, p[10000].virq, p[131070].remote_domain) == (2147483647, 23, 65535)


@pytest.mark.parametrize("line,field", [
    (ew.lsevtchn_line(131072, 0, "ipi"), "line 1: port 131072 is out of range"),
    (ew.lsevtchn_line(5, 8192, "ipi"), "line 1: port 5: VCPU 8192 is out of range (Xen has at most 8192 vCPUs)"),
    (ew.lsevtchn_line(5, 0, "virq", virq=24), "line 1: port 5: Virtual IRQ 24 is out of range"),
    (ew.lsevtchn_line(5, 0, "interdomain", d=32752, rp=1), "line 1: port 5: Remote Domain 32752 is out of range"),
    (ew.lsevtchn_line(5, 0, "interdomain", d=1, rp=999999999), "line 1: port 5: Port 999999999 is out of range"),
    ("   5: VCPU \u00b9: IPI", "line 1: not an lsevtchn line"),
    ("   5: VCPU " + "9" * 5000 + ": IPI", "line 1: port 5: VCPU '999999999999... (5000 characters)' is not"),
])
def test_lsevtchn_values_xen_cannot_hold_are_unread(line, field):
    ev = lsevtchn.parse(line + "\n" + ew.lsevtchn_line(9, 0, "ipi") + "\n", 0)
    assert [str(u)[:len(field)] for u in ev.unread] == [field]


def test_lsevtchn_empty_is_unread_and_garbage_an_error():
    for text in ("", b"", "\n \n"):
        (u,) = lsevtchn.parse(text, 0, "l.txt").unread
        assert str(u) == "l.txt: the text is empty: no port was read"
    with pytest.raises(EvidenceError, match="no lsevtchn lines found"):
        lsevtchn.parse(b"\xff\xfe\n", 0)


# --- linear time ------------------------------------------------------------------------------------------------------
def _pathological(size: int) -> dict[str, list[bytes]]:
    port = ew.port_line(5, "interdomain", word={"linked": True, "link": 7}, d=1, rp=2).encode()
    head = ew.console(ew.domain_lines(0, [])).encode()
    return {
        "edump": [head + b" " * size, head + b"    5 [" + b" " * size, head + b"(XEN) " * (size // 6),
                  head + port + b" Z=" + b"x " * (size // 2), head + b"    5 [0/0/" + b"]: s=6" * (size // 6),
                  head + b"Polling vCPUs: {" + b"1," * (size // 2) + b"}", head + b"9" * size,
                  head + (port + b"\n") * (size // len(port)), b"(XEN) [" * (size // 7)],
        "lsevtchn": [b" " * size, b"   1: VCPU 0: " + b" " * size + b"x", b"   1: VCPU 0: IPI" + b" " * size + b"x",
                     b"1" * size, (b"   1: VCPU 0: IPI\n") * (size // 18), b"   1: VCPU 0: " * (size // 14)],
    }


def _slowest(reader: str, size: int, tries: int = 1) -> float:
    """The slowest pathological input's CPU seconds (the best of ``tries`` each: a loaded machine's other work
    is not the reader's cost)."""
    worst = 0.0
    for data in _pathological(size)[reader]:
        best = float("inf")
        for _ in range(tries):
            t0 = time.process_time()
            try:
                edump.parse(data) if reader == "edump" else lsevtchn.parse(data, 0)
            except EvidenceError:
                pass
            best = min(best, time.process_time() - t0)
        worst = max(worst, best)
    return worst


@pytest.mark.parametrize("reader", ["edump", "lsevtchn"])
def test_a_long_line_costs_linear_time(reader):
    """A line of 100,000 spaces took the old lsevtchn pattern 21 s; every pathological 1 MB input is now fast."""
    assert _slowest(reader, 1 << 20) < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["edump", "lsevtchn"])
def test_ten_times_the_input_costs_about_ten_times_the_time(reader):
    small, big = _slowest(reader, 1 << 20, tries=3), _slowest(reader, 10 << 20, tries=2)
    assert big < 25 * max(small, 0.01), (small, big)


# --- snapshots ---------------------------------------------------------------------------------------------------
def snap(**change) -> bytes:
    ev = Evidence("s")
    ev.domain(0).ports[5] = PortFacts(5, "ipi", vcpu=0, pending=True, masked=True)
    ev.skip("line 3", "something", 0)
    raw = json.loads(ev.to_json())
    for key, value in change.items():
        raw[key] = value
    return json.dumps(raw).encode()


def test_snapshot_round_trip_keeps_what_went_unread():
    ev = Evidence.from_json(snap(), "a.json")
    assert ev.domains[0].ports[5].masked is True and [str(u) for u in ev.unread] == ["line 3: something"]


@pytest.mark.parametrize("data,message", [
    (b"\x80abc", "snapshot a.json: not UTF-8 text (byte offset 0)"),
    (b"[" * 100000, "snapshot a.json: not JSON (nested too deeply)"),
    (b"{", "snapshot a.json: not JSON (Expecting property name"),
    (b"[]", "not a xenevt evidence snapshot"),
    (snap(version=True), "unsupported version True"),
    (snap(taken_at="x"), "a.json: taken_at: expected a time in seconds, got 'x'"),
    (snap(taken_at=float("inf")), "taken_at: expected a time in seconds, got inf"),
    (snap(domains={}), "a.json: domains: expected a list, got {}"),
    (snap(domains=[[]]), "a.json: domains[0]: expected an object, got []"),
    (snap(domains=[{"domain": 0, "ports": []}]), "domains[0].ports: expected an object, got []"),
    (snap(domains=[{"domain": 0, "ports": {"5": {"port": 5, "state": "ipi", "vcpu": "0"}}}]),
     "domains[0].ports['5'].vcpu: expected an integer below 4294967296, got '0'"),
    (snap(domains=[{"domain": 0, "ports": {"5": {"port": 5, "state": "ipi", "pending": 1}}}]),
     "domains[0].ports['5'].pending: expected true or false, got 1"),
    (snap(domains=[{"domain": 0, "ports": {"5": {"state": "ipi"}}}]), "domains[0].ports['5']: field 'port' is missing"),
    (snap(domains=[{"domain": 0, "ports": {"5": {"port": 5, "state": "ipi", "evil": 1}}}]),
     "domains[0].ports['5']: unknown field 'evil'"),
    (snap(domains=[{"domain": 0, "vcpus": {"0": {"vcpu": 0, "queues": [{"vcpu": 0}]}}}]),
     "domains[0].vcpus['0'].queues[0]: field 'priority' is missing"),
    (snap(domains=[{"domain": 0, "vcpus": {"0": {"vcpu": 0, "heads": [1, "x"]}}}]),
     "domains[0].vcpus['0'].heads: expected a list of integers, got [1, 'x']"),
    (snap(domains=[{"domain": 2 ** 40}]), "domains[0].domain: expected an integer below"),
    (snap(warnings="x"), "warnings: expected a list, got 'x'"),
    (snap(unread=[{"where": 1, "what": "x"}]), "unread[0].where: expected a string, got 1"),
])
def test_bad_snapshots_are_one_line_naming_file_and_field(data, message):
    with pytest.raises(EvidenceError) as e:
        Evidence.from_json(data, "a.json")
    assert message in str(e.value) and "\n" not in str(e.value)


# --- doctor's verdict ----------------------------------------------------------------------------------------------
def test_doctor_on_an_empty_or_garbage_source_is_inconclusive(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert main(["doctor", "--lsevtchn", str(empty), "--domain", "0"]) == 4
    out = capsys.readouterr().out
    assert "doctor: inconclusive: no findings in 1 domain(s), 0 port(s) checked, 1 item(s) unread" in out
    assert "healthy" not in out
    e = tmp_path / "e.txt"
    e.write_text(ew.console(ew.domain_lines(0, [])))
    assert main(["--json", "doctor", "--edump", str(e)]) == 4
    out = json.loads(capsys.readouterr().out)
    assert (out["verdict"], out["healthy"], out["unread_total"]) == ("inconclusive", False, 1)
    assert out["unread"] == ["the dump: no port lines in any domain's section: nothing about ports was read"]
    e.write_text(ew.console(ew.domain_lines(0, [ew.port_line(1, "ipi", word={"linked": False})])))
    assert main(["doctor", "--edump", str(e)]) == 0
    assert main(["doctor", "--edump", str(e), "-d", "3"]) == 4
    assert "--domain: domain 3 is not in the evidence" in capsys.readouterr().out


def test_doctor_summarises_many_unread_lines_and_keeps_its_findings(tmp_path, capsys):
    ports = [ew.port_line(1, "unbound", p=1, m=1, d=0, word={"linked": False})]
    ports += [f"    {p} [0/0/  -   ]: s=42 n=0 x=0" for p in range(2, 1002)]
    e = tmp_path / "e.txt"
    e.write_text(ew.console(ew.domain_lines(0, ports)))
    assert main(["doctor", "--edump", str(e)]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("WARNING d0:1: port 1 is pending but masked")
    assert out[3] == "UNREAD  1000 item(s) of the evidence could not be read, so this is no clean bill of health:"
    assert out[4].startswith("         line 6: s=42 is not a channel state Xen prints (ECS_* 1..6); line skipped")
    assert out[9] == "         ... and 995 more (--json lists the first 20)"
    assert out[10].startswith("doctor: problems found: 1 warning in 1 domain(s), 1 port(s) checked, 1000 item(s) "
                              "unread")
    assert len(out) == 11
    assert main(["--json", "doctor", "--edump", str(e)]) == 3
    rep = json.loads(capsys.readouterr().out)
    assert (rep["verdict"], len(rep["unread"]), rep["unread_total"]) == ("problems", 20, 1000)


def test_doctor_reads_bytes_of_a_snapshot(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff{}")
    e = tmp_path / "e.txt"
    e.write_text(ew.console(ew.domain_lines(0, [ew.port_line(1, "ipi", word={"linked": False})])))
    assert main(["doctor", "--edump", str(e), "--since", str(bad)]) == 1
    assert capsys.readouterr().err == f"xenevt: snapshot {bad}: not UTF-8 text (byte offset 0)\n"


def big_dump(nr: int) -> str:
    """dom0 with ``nr`` interdomain ports, every one pending and LINKED on one queue (LINKs of 5 digits)."""
    ports = [ew.port_line(p, "interdomain", p=1, word={"linked": True, "link": p + 1 if p < nr else 0}, d=1, rp=p)
             for p in range(1, nr + 1)]
    peers = [ew.port_line(p, "interdomain", word={"linked": False}, d=0, rp=p) for p in range(1, nr + 1)]
    return ew.console(ew.domain_lines(0, ports) + ew.domain_lines(1, peers), stamps=True)


def test_doctor_reads_every_line_of_a_20000_port_dump(tmp_path, capsys):
    e = tmp_path / "e.txt"
    e.write_text(big_dump(20000))
    assert main(["--json", "doctor", "--edump", str(e)]) == 3  # 20,000 ports in dom1: near Xen's default limit
    rep = json.loads(capsys.readouterr().out)
    assert rep["unread_total"] == 0 and rep["checked"] == {"0": 20000, "1": 20000}
    assert {f["rule"] for f in rep["findings"]} == {"ports-exhausted"}
    ev = edump.read(str(e))
    assert sum(1 for f in ev.domains[0].ports.values() if f.pending and f.linked and f.link >= 10000) == 10001


@pytest.mark.slow
def test_doctor_on_a_20000_channel_simulated_dom0_with_every_channel_pending(tmp_path, capsys):
    """The issue's host: 20,000 interdomain channels, each new port left pending by the bind (as Xen does)."""
    import subprocess
    import sys

    from xenevt.sim.host import SimHost, create_host

    create_host(str(tmp_path), nr_domains=2, nr_vcpus=1, max_ports_dom0=32768, max_ports_domu=32768)
    with SimHost(str(tmp_path)) as h:
        for _ in range(20000):
            h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        text = "\n".join("(XEN) " + line for line in h.debug_key_e())
    r = subprocess.run([sys.executable, "-m", "xenevt", "--state", str(tmp_path), "--json", "doctor"],
                       capture_output=True, text=True, timeout=300)
    rep = json.loads(r.stdout)
    assert (r.returncode, rep["verdict"], rep["unread_total"], rep["warnings"]) == (0, "healthy", 0, []), r.stderr
    assert rep["checked"] == {"0": 20000, "1": 20000} and rep["source"] == "sim backend + 'e' dump"
    e = tmp_path / "e.txt"
    e.write_text(text)
    ev = edump.read(str(e))
    assert sum(1 for f in ev.domains[0].ports.values() if f.pending and f.linked and f.link >= 10000) >= 9999
    # from the dump alone the domU's limit is unknown, so Xen's default (1023) applies: that is all it finds
    assert main(["--json", "doctor", "--edump", str(e)]) == 3
    rep = json.loads(capsys.readouterr().out)
    assert (rep["unread_total"], rep["checked"]) == (0, {"0": 20000, "1": 20000})
    assert [(f["rule"], f["domain"]) for f in rep["findings"]] == [("ports-exhausted", 1)]


def test_stdin_is_read_as_bytes(monkeypatch):
    import io

    text = ew.console(ew.domain_lines(0, [ew.port_line(1, "ipi", word={"linked": False})])).encode() + b"\xff\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text), encoding="utf-8"))
    ev = edump.read("-")
    assert ev.source == "'e' dump <stdin>" and set(ev.domains[0].ports) == {1} and ev.unread == []
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff\n" + ew.lsevtchn_line(1, 0, "ipi").encode())))
    assert [str(u)[:28] for u in lsevtchn.read("-", 0).unread] == ["line 1: not an lsevtchn line"]
