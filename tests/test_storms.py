"""Storms and rogue peers: per-port rates from two samples (the simulator's counters, /proc/interrupts, Linux's
xenbus counters), doctor's storm, spurious-event, delayed-EOI and stuck-port rules, watch's storm flag; and
the version-dependent facts: Xen-owned ports 4.17 does not report, an 'e' dump cut short."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests import edump_writer as ew
from xenevt.activity import Row, Sample, rates, read_xenbus
from xenevt.cli import main
from xenevt.evidence import collect, doctor, edump
from xenevt.evidence.model import CounterFacts, Evidence, PortFacts
from xenevt.sim.host import SimHost, create_host


def rules(rep) -> set[tuple[str, int, tuple, str]]:
    return {(f.rule, f.domain, tuple(f.ports), f.severity) for f in rep.findings}


def two(before: list[CounterFacts], after: list[CounterFacts], age: float = 10.0, ports=None):
    a, b = Evidence("t"), Evidence("t")
    a.domain(0).counters, b.domain(0).counters = before, after
    b.domain(0).ports = dict(ports or {})
    b.taken_at = a.taken_at + age
    return b, Evidence.from_json(a.to_json())


# --- doctor's rate rules on built evidence ------------------------------------------------------------------
def test_storm_over_the_threshold_names_the_sender():
    port = PortFacts(5, "interdomain", vcpu=0, remote_domain=3, remote_port=9)
    now, then = two([CounterFacts("port 5", port=5, raised=100, handled=100)],
                    [CounterFacts("port 5", port=5, raised=200_100, handled=150)], ports={5: port})
    rep = doctor.examine(now, then)
    (f,) = rep.findings
    assert (f.rule, f.severity, f.ports) == ("event-storm", "warning", [5])
    assert f.title == "port 5 receives 20,000 events/s: an event storm"
    assert f.evidence == "200,000 events in 10 s (threshold 10,000/s, --storm-rate); the sender is domain 3 " \
                         "(its port 9)"
    assert doctor.examine(now, then, storm_rate=25_000).findings == []  # under a raised threshold
    assert doctor.examine(now).findings == []                           # one sample: no rate


def test_a_restarted_counter_and_a_snapshot_from_the_future_are_not_rates():
    now, then = two([CounterFacts("irq 24", "xen-dyn event vif5.0-q0-tx", handled=10**9)],
                    [CounterFacts("irq 24", "xen-dyn event vif5.0-q0-tx", handled=5)])
    assert doctor.examine(now, then).findings == []
    now.taken_at = then.taken_at - 5
    rep = doctor.examine(now, then)
    assert rep.findings == [] and "taken 5 s after this evidence" in rep.warnings[0]


def test_irq_rows_and_xenbus_counters():
    key = "xenbus backend/vif/5/0"
    now, then = two([CounterFacts("irq 24", "xen-dyn event vif5.0-q0-tx", handled=0),
                     CounterFacts(key, "xenbus vif-5-0", handled=10, spurious=3, eoi_delayed=0)],
                    [CounterFacts("irq 24", "xen-dyn event vif5.0-q0-tx", handled=150_000),
                     CounterFacts(key, "xenbus vif-5-0", handled=60, spurious=43, eoi_delayed=12)])
    rep = doctor.examine(now, then)
    assert rules(rep) == {("event-storm", 0, (), "warning"), ("spurious-events", 0, (), "warning"),
                          ("eoi-delayed", 0, (), "warning")}
    by = {f.rule: f for f in rep.findings}
    assert by["event-storm"].title == "irq 24 (xen-dyn event vif5.0-q0-tx) receives 15,000 events/s: an event storm"
    assert by["spurious-events"].title == f"{key} (xenbus vif-5-0): 40 spurious events in 10 s"
    assert by["eoi-delayed"].evidence == "xenbus jiffies_eoi_delayed 0 -> 12"
    # a few spurious events (a race Linux counts now and then) are no finding
    now, then = two([CounterFacts(key, handled=10, spurious=3)], [CounterFacts(key, handled=60, spurious=8)])
    assert doctor.examine(now, then).findings == []


def test_pending_across_samples_with_nothing_delivered():
    p = PortFacts(5, "ipi", vcpu=1, pending=True, masked=False, linked=True)
    busy = [CounterFacts("port 5", port=5, raised=1, handled=1)], [CounterFacts("port 5", port=5, raised=9, handled=8)]
    for counters, expect in (((busy[0], busy[0]), {("pending-stuck", 0, (5,), "warning")}), (busy, set())):
        a, b = Evidence("t"), Evidence("t")
        a.domain(0).ports, b.domain(0).ports = {5: p}, {5: p}
        a.domain(0).counters, b.domain(0).counters = counters
        b.taken_at = a.taken_at + 12
        assert rules(doctor.examine(b, a)) == expect
        assert doctor.examine(b, a, stuck_after=60).findings == []
    (f,) = doctor.examine(*_stuck_pair()).findings  # no counters: said so
    assert f.title == "port 5 has been pending for at least 12 s" and "vCPU 1" in f.advice
    assert "not counted by this source" in f.evidence


def _stuck_pair():
    p = PortFacts(5, "ipi", vcpu=1, pending=True, masked=False, linked=True)
    a, b = Evidence("t"), Evidence("t")
    a.domain(0).ports, b.domain(0).ports = {5: p}, {5: p}
    b.taken_at = a.taken_at + 12
    return b, a


def test_snapshot_round_trips_counters():
    ev = Evidence("t")
    ev.domain(2).counters = [CounterFacts("port 5", "interdomain", 5, 7, 6, None, None)]
    assert Evidence.from_json(ev.to_json()).domains[2].counters == ev.domain(2).counters
    bad = ev.to_json().replace('"raised": 7', '"raised": "7"')
    with pytest.raises(Exception, match=r"domains\[0\]\.counters\[0\]\.raised: expected an integer"):
        Evidence.from_json(bad, "s.json")


# --- activity: rates and Linux's xenbus counters -------------------------------------------------------------
def test_rates_flag_a_storm_from_raises():
    a = Sample("t", [Row("port 1", "x", [10], 1, raised=10)], 0.0)
    b = Sample("t", [Row("port 1", "x", [11], 1, raised=30_010)], 1.0)
    (r,) = rates(a, b)
    assert r.storm and r.per_second == 1.0
    (r,) = rates(a, b, storm_rate=50_000)
    assert not r.storm


def test_read_xenbus(tmp_path):
    def device(bus, name, node, **stats):
        d = tmp_path / "bus" / bus / "devices" / name
        (d / "xenbus").mkdir(parents=True)
        (d / "nodename").write_text(node + "\n")
        for k, v in stats.items():
            (d / "xenbus" / k).write_text(f"{v}\n")

    device("xen-backend", "vif-5-0", "backend/vif/5/0", events=120, spurious_events=4, jiffies_eoi_delayed=9)
    device("xen", "vbd-768", "device/vbd/768", events=7, spurious_events=0, jiffies_eoi_delayed=0)
    device("xen", "console-0", "device/console/0")  # a kernel before 5.12: no counters
    rows = read_xenbus(str(tmp_path))
    assert [(r.key, r.name, r.counts, r.spurious, r.eoi_delayed) for r in rows] == [
        ("xenbus backend/vif/5/0", "xenbus vif-5-0", [120], 4, 9),
        ("xenbus device/vbd/768", "xenbus vbd-768", [7], 0, 0)]
    assert read_xenbus(str(tmp_path / "none")) == []


# --- on the simulator --------------------------------------------------------------------------------------
@pytest.fixture
def host(tmp_path, monkeypatch):
    create_host(str(tmp_path / "h"), nr_domains=3)
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "h"))
    return str(tmp_path / "h")


def test_doctor_finds_a_peer_notifying_in_a_loop(host, tmp_path, capsys):
    with SimHost(host) as h:
        rp = h.alloc_unbound(0, 0, 2)
        p2 = h.bind_interdomain(2, 2, 0, rp)
        h.claim_vcpu(0, 0)
        snap = str(tmp_path / "a.json")
        assert main(["doctor", "--save", snap]) == 0
        for _ in range(400):
            h.send(2, 2, p2)
            h.consume(0, 0, timeout=0)
    capsys.readouterr()
    assert main(["--json", "doctor", "--since", snap, "--storm-rate", "20"]) == 3
    (f,) = json.loads(capsys.readouterr().out)["findings"]
    assert (f["rule"], f["domain"], f["ports"]) == ("event-storm", 0, [rp])
    assert f"the sender is domain 2 (its port {p2})" in f["evidence"] and "400 events in" in f["evidence"]
    assert main(["doctor", "--since", snap, "--storm-rate", "1e9"]) == 0


def test_doctor_interval_samples_twice(host, capsys):
    with SimHost(host) as h:
        port = h.bind_ipi(1, 1, 1)
        stop = threading.Event()

        def flood():
            while not stop.is_set():
                h.send(1, 1, port)
                time.sleep(0.001)

        t = threading.Thread(target=flood)
        t.start()
        try:
            assert main(["--json", "doctor", "--interval", "0.3", "--storm-rate", "10", "-d", "1"]) == 3
        finally:
            stop.set()
            t.join()
    rep = json.loads(capsys.readouterr().out)
    assert {(f["rule"], f["domain"], tuple(f["ports"])) for f in rep["findings"]} >= {("event-storm", 1, (port,))}
    assert main(["doctor", "--interval", "0.1", "--since", "x.json"]) == 2


def test_a_vcpu_that_stopped_taking_events(host, tmp_path, capsys):
    with SimHost(host) as h:
        port = h.bind_ipi(1, 1, 1)
        h.send(1, 1, port)
    snap = str(tmp_path / "a.json")
    main(["doctor", "--save", snap])
    capsys.readouterr()
    assert main(["doctor", "--since", snap, "--stuck-after", "0"]) == 3
    out = capsys.readouterr().out
    assert f"d1:{port}: port {port} has been pending for at least 0 s" in out
    assert "no event delivered on it in between" in out


def test_watch_flags_a_storm(host, capsys):
    with SimHost(host) as h:
        port = h.bind_ipi(0, 0)
        h.claim_vcpu(0, 0)
        stop = threading.Event()

        def flood():
            while not stop.is_set():
                h.send(0, 0, port)
                h.consume(0, 0, timeout=0)
                time.sleep(0.001)

        t = threading.Thread(target=flood)
        t.start()
        try:
            assert main(["watch", "--json", "--once", "-i", "0.3", "--storm-rate", "10"]) == 0
            assert main(["watch", "--once", "-i", "0.2", "--storm-rate", "10"]) == 0
        finally:
            stop.set()
            t.join()
    out = capsys.readouterr().out
    first, table = out.split("\n", 1)
    rows = {r["port"]: r for r in json.loads(first)["rows"]}
    assert "storm" in rows[port]["alarms"] and json.loads(first)["storm_rate"] == 10
    assert json.loads(first)["rows"][0]["port"] == port, "the storm is the first row"
    line = next(ln for ln in table.splitlines() if ln.split()[1:2] == [f"d0:{port}"])  # (piped: plain lines)
    assert "storm" in line.split()[6], line


# --- versions and the console ring ------------------------------------------------------------------------------
def test_xen_owned_ports_417_does_not_report():
    ev = Evidence("t")
    ev.xen_version = "4.17"
    ev.domain(1).unreported = [3]
    (f,) = doctor.examine(ev).findings
    assert (f.rule, f.severity) == ("xen-owned-unreported", "info")
    assert f.title == "Xen 4.17 does not report ports Xen itself consumes (port(s) 3)"
    assert doctor.examine(ev).verdict == "healthy"


def test_an_edump_cut_short():
    lines = ew.domain_lines(0, [ew.port_line(1, "ipi"), ew.port_line(2, "ipi")]) + \
        ew.domain_lines(1, [ew.port_line(1, "ipi")])
    whole = ew.console(lines)
    ev = edump.parse(whole)
    collect.edump_cut(whole, ev, {0: {1, 2}, 1: {1}})
    assert ev.unread == []
    # the ring wrapped: the first lines (the key's own line, dom0's header) are gone
    wrapped = "\n".join(whole.splitlines()[3:]) + "\n"
    ev = edump.parse(wrapped)
    collect.edump_cut(wrapped, ev)
    cut = [u for u in ev.unread if u.where == collect.CUT]  # (and dom0's port lines, read outside any section)
    assert len(cut) == 1 and "conring_size=1M" in cut[0].what
    # cut at the end: domain 1's section is short, domain 2's missing
    ev = edump.parse(whole)
    collect.edump_cut(whole, ev, {0: {1, 2}, 1: {1, 4}, 2: {1}})
    assert "domain 1's section ends before 1 open port(s) of its port table (first 4)" in ev.unread[0].what
    assert doctor.examine(ev).verdict == "inconclusive"


def test_doctor_edump_file_cut_short(tmp_path, capsys):
    lines = ew.domain_lines(0, [ew.port_line(1, "ipi")]) + ew.domain_lines(1, [ew.port_line(1, "ipi")])
    f = tmp_path / "e.txt"
    f.write_text("\n".join(ew.console(lines).splitlines()[2:]) + "\n")
    assert main(["doctor", "--edump", str(f)]) == 4
    assert "the dump looks cut short" in capsys.readouterr().out


def test_doctor_on_417_through_the_xen_backend_says_what_417_does_not_report(tmp_path, monkeypatch):
    """The real binding's status walk (EACCES skipped) and 'e' key, over the simulator's libraries."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "xenevt", "sim", "libpath"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(r.stderr.strip())
    state = str(tmp_path / "s")
    create_host(state, xen="4.17")
    with SimHost(state) as h:
        port = h.xen_port(1, 0)
    monkeypatch.setenv("PATH", "/nonexistent")  # no xl: the version is not known here
    env = dict(os.environ, LD_LIBRARY_PATH=r.stdout.strip(), XENEVT_STATE=state, XENEVT_SELF_DOMID="0")
    out = subprocess.run([sys.executable, "-m", "xenevt", "--backend", "xen", "--json", "doctor"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (f,) = json.loads(out.stdout)["findings"]
    assert (f["rule"], f["domain"], f["ports"], f["severity"]) == ("xen-owned-unreported", 1, [port], "info")
    assert f["title"] == f"Xen does not report ports Xen itself consumes (port(s) {port})"


def test_doctor_ties_netbacks_irq_row_to_the_vif_port_it_storms(tmp_path, monkeypatch, capsys):
    """On Xen dom0's counters are /proc/interrupts rows without ports; netback's IRQ name for a vif queue
    (vif1.0-q0-tx) ties its row to the backend port xenstore names, so a frontend flooding it is a storm on
    that port: named by device, with its sender (the simulated backend's rows replaced by such rows)."""
    from xenevt.backend.sim import SimBackend

    d = str(tmp_path / "h")
    create_host(d, nr_domains=2)
    with SimHost(d) as h:
        h.device_add("vif", 1)
        ports = {st.port: st for st in h.list_ports(0, 0)}
    back = next(p for p, st in ports.items() if st.state == "interdomain")
    monkeypatch.setenv("XENEVT_STATE", d)
    counts = iter([0, 250_000, 250_000])

    def activity(self, domain):
        return [Row("irq 40", "xen-dyn-lateeoi vif1.0-q0-tx", [next(counts)])] if domain == 0 else []

    monkeypatch.setattr(SimBackend, "activity", activity)
    code = main(["--json", "doctor", "-d", "0", "--interval", "0.5"])
    rep = json.loads(capsys.readouterr().out)
    assert code == 3, rep
    (f,) = [f for f in rep["findings"] if f["rule"] == "event-storm"]
    assert f["title"].startswith(f"port {back} (irq 40 xen-dyn-lateeoi vif1.0-q0-tx) receives ")
    peer = ports[back]
    assert f"the sender is domain 1 (its port {peer.remote_port})" in f["evidence"]
    assert f["ports"] == [back] and f["names"][0]["device"] == "vif 0" and f["names"][0]["end"] == "backend"


def netback_flood(masked_before: bool, handled_then: int, handled_now: int):
    """doctor over two samples of netback's port 29 (its IRQ row tied to it), pending and masked in the second,
    as in the first only when ``masked_before``."""
    now_port = PortFacts(29, "interdomain", vcpu=0, remote_domain=2, remote_port=15, pending=True, masked=True)
    then_port = PortFacts(29, "interdomain", vcpu=0, remote_domain=2, remote_port=15, pending=masked_before,
                          masked=masked_before)
    now, then = two([CounterFacts("irq 48", "xen-dyn-lateeoi vif2.0-q0-tx", port=29, handled=handled_then)],
                    [CounterFacts("irq 48", "xen-dyn-lateeoi vif2.0-q0-tx", port=29, handled=handled_now)],
                    ports={29: now_port})
    then.domain(0).ports = {29: then_port}
    return doctor.examine(now, then, storm_rate=1e9)


def test_a_port_masked_in_both_samples_that_delivered_in_between_is_not_stuck():
    """netback's port under a flood (real Xen, xen-ci): pending and masked in both samples, because Linux holds
    a lateeoi port masked until its delayed EOI, yet its IRQ counted thousands of events in between: info, not
    the pending-masked error; the same port with nothing delivered stays an error."""
    rep = netback_flood(True, 100, 2_834)
    assert rules(rep) == {("masked-busy", 0, (29,), "info")}
    assert "in both samples, yet 2,734 events were delivered on it since the earlier sample" in rep.findings[0].title
    assert rules(netback_flood(True, 100, 100)) == {("pending-masked", 0, (29,), "error")}


def test_a_port_masked_now_that_delivered_since_the_earlier_sample_is_not_stuck():
    """The same port found masked in the second sample only (a sample between two delayed EOIs, real Xen 4.20 in
    xen-ci): events flowed since the first, so masked-busy, not a pending-masked warning; nothing delivered is
    still the warning."""
    rep = netback_flood(False, 100, 3_739)
    assert rules(rep) == {("masked-busy", 0, (29,), "info")}
    assert "pending and masked now, yet 3,639 events were delivered" in rep.findings[0].title
    assert rules(netback_flood(False, 100, 100)) == {("pending-masked", 0, (29,), "warning")}
