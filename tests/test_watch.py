"""watch: activity counters on the simulator, and the Xen rows of /proc/interrupts."""

from __future__ import annotations

import json
import threading
import time

import pytest

from xenevt.activity import Row, Sample, parse_interrupts, rates
from xenevt.cli import main
from xenevt.evidence.model import EvidenceError
from xenevt.sim.host import SimHost, create_host


def interrupts_text(cpus: int, rows: list[tuple[int, list[int], str, str, str]]) -> str:
    """As Linux's show_interrupts() prints: ``%*d: `` then ``%10u `` per CPU, `` %8s`` chip, `` %*s`` (no hwirq:
    Xen's event IRQs have no irq domain), ``-%-8s`` handler, ``  %s`` action."""
    prec = 3
    out = " " * (prec + 2) + "".join(f"CPU{i:<7d}" for i in range(cpus)).rstrip() + "\n"
    for irq, counts, chip, handler, action in rows:
        line = f"{irq:{prec}d}: " + "".join(f"{n:10d} " for n in counts) + f" {chip:>8s}"
        line += " " * (1 + prec) + f"-{handler:<8s}"
        out += line + (f"  {action}" if action else "") + "\n"
    out += "NMI:          0          0   Non-maskable interrupts\n"
    return out


def test_proc_interrupts_xen_rows():
    text = interrupts_text(2, [
        (24, [1234, 5], "xen-dyn", "event", "xenbus"),
        (25, [99, 0], "xen-percpu", "virq", "timer0"),
        (26, [0, 7], "xen-dyn-lateeoi", "event", "evtchn:xenstored"),
        (9, [3, 0], "IO-APIC", "fasteoi", "acpi"),
    ])
    text += " 27:          1          2  xen-percpu-ipi       callfunc1\n"  # a kernel printing no hwirq slot
    rows = parse_interrupts(text)
    assert [(r.key, r.counts, r.name) for r in rows] == [
        ("irq 24", [1234, 5], "xen-dyn event xenbus"),
        ("irq 25", [99, 0], "xen-percpu virq timer0"),
        ("irq 26", [0, 7], "xen-dyn-lateeoi event evtchn:xenstored"),
        ("irq 27", [1, 2], "xen-percpu ipi callfunc1"),
    ]
    with pytest.raises(EvidenceError, match="no CPU header line"):
        parse_interrupts("garbage\n")


def test_rates_flag_a_pending_port_that_stopped():
    a = Sample("t", [Row("port 1", "x", [10], 1, True, True), Row("port 2", "y", [5], 2, False, False)], 0.0)
    b = Sample("t", [Row("port 1", "x", [10], 1, True, True), Row("port 2", "y", [9], 2, False, False)], 2.0)
    r = {x.row.key: x for x in rates(a, b)}
    assert r["port 1"].stalled and not r["port 2"].stalled and r["port 2"].per_second == 2.0


def test_watch_on_the_simulator(tmp_path, monkeypatch, capsys):
    create_host(str(tmp_path))
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path))
    with SimHost(str(tmp_path)) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        p0 = h.bind_interdomain(0, 0, 1, p1)
        ipi = h.bind_ipi(0, 0)
        h.claim_vcpu(0, 0)
        h.consume(0, 0, timeout=0)
        h.mask(0, 0, p0)
        h.send(1, 1, p1)  # stuck: pending and masked

        def traffic():
            for _ in range(20):
                h.send(0, 0, ipi)
                h.consume(0, 0, timeout=0)
                time.sleep(0.01)

        t = threading.Thread(target=traffic)
        t.start()
        assert main(["watch", "--json", "--interval", "0.4", "-n", "1"]) == 0
        t.join()
    (sample,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = {r["port"]: r for r in sample["rows"]}
    assert sample["rows"][0]["port"] == p0, "the stalled port is pinned first"
    assert rows[p0]["alarms"] == ["stalled"] and rows[p0]["flags"]["pending"] and rows[p0]["raised_total"] == 2
    assert rows[p0]["total"] == 1
    assert not rows[ipi]["alarms"] and rows[ipi]["delivered_per_second"] > 0 and rows[ipi]["total"] >= 10
    assert rows[ipi]["raised_per_second"] > 0
    assert main(["watch", "--once", "-i", "0.05"]) == 0  # (piped: plain lines)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["time", "port", "total", "raised/s", "deliv/s", "PM", "alarms", "name"]
    assert out[1].split()[1] == f"d0:{p0}" and out[1].split()[6] == "stalled", out
    assert main(["watch", "-n", "2", "-i", "0.05", "--json"]) == 0
    assert [json.loads(line)["sample"] for line in capsys.readouterr().out.splitlines()] == [1, 2]


def test_rows_in_numeric_order_urgent_first():
    from xenevt.activity import order

    rows = [Row(f"port {p}", "x", [0], p) for p in (1, 10, 11, 2, 3)] + [Row("irq 9", "y", [0]),
                                                                       Row("port 20", "z", [0], 20, True)]
    a = Sample("t", rows, 0.0)
    b = Sample("t", [Row(r.key, r.name, [r.total + (500 if r.port == 3 else 0)], r.port, r.pending, r.masked,
                         raised=None) for r in rows], 1.0)
    got = rates(a, b, storm_rate=100)
    assert [r.row.key for r in order(got)] == ["port 3", "port 20", "port 1", "port 2", "port 10", "port 11",
                                               "irq 9"]
    assert [r.row.key for r in order(got, "activity")][:2] == ["port 3", "port 20"]
    assert order(got)[0].flags == ["storm"] and order(got)[1].flags == ["stalled"]


def test_watch_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path / "none"))
    assert main(["watch", "--once"]) == 1
    assert "no simulated host" in capsys.readouterr().err
    assert main(["watch", "--interval", "0"]) == 2
