"""doctor: every rule on writer-built evidence, on Xen's 'e' text, and on a simulator driven into the state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests import edump_writer as ew
from tests import writer
from xenevt import abi
from xenevt.abi import ECS_FREE
from xenevt.cli import main
from xenevt.dump import build_dump
from xenevt.engine.layout import CB_STATE_OFFSET
from xenevt.evidence import collect, doctor, edump, lsevtchn
from xenevt.evidence.model import Evidence, EvidenceError
from xenevt.sim.host import SimHost, create_host


def rules(rep) -> set[tuple[str, int, tuple]]:
    return {(f.rule, f.domain, tuple(f.ports)) for f in rep.findings}


def from_mem(mem, domain=0, **kw) -> Evidence:
    ev = Evidence("test")
    collect.add_dump(ev, build_dump(mem, domain, "test", guest_known=False, **kw))
    return ev


# --- each rule on evidence built by the writer --------------------------------------------------------------
@pytest.mark.parametrize("spec,expected", [
    (dict(ports={5: "PM"}), {("pending-masked", 0, (5,))}),
    (dict(ports={5: "P"}), {("pending-not-queued", 0, (5,))}),
    (dict(ports={5: "PL"}), {("linked-unreachable", 0, (5,))}),
    (dict(ports={5: "PL->5000"}, heads={(0, 7): 5}, ready={0: 1 << 7}), {("chain-range", 0, (5000,))}),
    (dict(ports={5: "PL->6", 6: "P"}, heads={(0, 7): 5}, ready={0: 1 << 7}),
     {("chain-unlinked", 0, (6,)), ("pending-not-queued", 0, (6,))}),
    (dict(ports={5: "PL->6", 6: "PL->5"}, heads={(0, 7): 5}, ready={0: 1 << 7}), {("chain-cycle", 0, (5,))}),
    (dict(nr_vcpus=2, ports={5: "PL->6", 6: "PL", 8: "PL->6"}, heads={(0, 7): 5, (1, 3): 8},
          ready={0: 1 << 7, 1: 1 << 3}), {("chain-shared", 0, (6,))}),
    (dict(ready={0: 1 << 4}), {("ready-without-head", 0, ())}),
    (dict(ports={5: "PL"}, heads={(0, 7): 5}), {("head-without-ready", 0, (5,))}),
    (dict(ports={5: "B"}), {("busy-left-set", 0, (5,))}),
])
def test_rule_on_written_memory(spec, expected):
    mem = writer.domain(**spec)
    assert rules(doctor.examine(from_mem(mem))) == expected


def test_healthy_memory_has_no_findings():
    mem = writer.domain(nr_vcpus=2, ports={5: "PL->9", 9: "PL", 3: "PL", 11: "M"}, unmasked=(12, 13),
                        heads={(0, 7): 5, (1, 2): 3}, ready={0: 1 << 7, 1: 1 << 2})
    rep = doctor.examine(from_mem(mem))
    assert rep.findings == [] and rep.exit_code == 0


def test_moved_port_is_info_only():
    mem = writer.domain(ports={5: "PL"}, heads={(0, 7): 5}, ready={0: 1 << 7}, chans={5: {"state": 6, "priority": 2}})
    ev = Evidence("t")
    from xenevt.sim.host import chan_status

    collect.add_dump(ev, build_dump(mem, 0, "t", channels={5: chan_status(0, 5, mem.chan(5), mem.word(5))},
                                    guest_known=False))
    rep = doctor.examine(ev)
    assert rules(rep) == {("queued-elsewhere", 0, (5,))} and rep.exit_code == 0
    assert "priority 7 -> 2" in rep.findings[0].evidence


def test_limits_use_xens_default_when_unknown():
    ev = Evidence("t")
    dom = ev.domain(3)
    for p in range(1, 950):
        dom.ports[p] = doctor_port(p)
    assert rules(doctor.examine(ev)) == {("ports-near-limit", 3, ())}
    for p in range(950, 1024):
        dom.ports[p] = doctor_port(p)
    rep = doctor.examine(ev)
    assert rules(rep) == {("ports-exhausted", 3, ())} and "default limit of 1023" in rep.findings[0].evidence


def doctor_port(p):
    from xenevt.evidence.model import PortFacts

    return PortFacts(p, "ipi", vcpu=0)


def test_since_turns_a_masked_port_into_a_stuck_one():
    before = from_mem(writer.domain(ports={5: "PM"}))
    now = from_mem(writer.domain(ports={5: "PM"}))
    now.taken_at = before.taken_at + 42
    rep = doctor.examine(now, Evidence.from_json(before.to_json()))
    (f,) = rep.findings
    assert (f.severity, f.rule) == ("error", "pending-masked") and "for at least 42 s" in f.title


def severities(rep) -> dict[tuple[str, tuple], str]:
    return {(f.rule, tuple(f.ports)): f.severity for f in rep.findings}


def test_stale_head_into_a_live_queue_is_not_a_finding():
    """The issue's case: queue 0's head is stale (drained), port 5 is now linked on queue 7 (set-priority).

    The walker takes queue 0 first and claims 5, so queue 7 looks "shared"; doctor re-walks live first."""
    mem = writer.domain(ports={5: "PL->6", 6: "PL"}, heads={(0, 0): 5, (0, 7): 5}, ready={0: 1 << 7})
    for guest in (False, True):
        ev = Evidence("t")
        collect.add_dump(ev, build_dump(mem, 0, "t", guest_known=guest))
        assert ev.domains[0].vcpus[0].queues[1].status == "shared"   # what the walker says, kept in the evidence
        assert doctor.examine(ev).findings == []


def test_mid_upcall_is_exact_with_the_guests_state_and_asks_for_a_second_sample_without():
    """Linux took READY and consumed 5; its local head is 6. From inside: healthy. From outside: info."""
    mem = writer.domain(ports={5: "P", 6: "PL->7", 7: "PL"}, unmasked=(), heads={(0, 7): 5})
    mem.guest(0)[0], mem.guest(0)[1 + 7] = 1 << 7, 6
    mem.set_word(5, 0)  # delivered and acknowledged
    inside = Evidence("t")
    collect.add_dump(inside, build_dump(mem, 0, "t", guest_known=True))
    vf = inside.domains[0].vcpus[0]
    assert (vf.guest_ready, vf.guest_heads[7], vf.queues[0].head_from) == (1 << 7, 6, "guest")
    assert doctor.examine(inside).findings == []
    outside = from_mem(mem)
    rep = doctor.examine(outside)
    assert severities(rep) == {("linked-unreachable", (6,)): "info", ("linked-unreachable", (7,)): "info"}
    assert "--since" in rep.findings[0].evidence and rep.exit_code == 4 and rep.findings[0].confirm
    later = from_mem(mem)  # a second sample: still there, so no guest is consuming it
    later.taken_at = outside.taken_at + 5
    rep = doctor.examine(later, Evidence.from_json(outside.to_json()))
    assert severities(rep) == {("linked-unreachable", (6,)): "error", ("linked-unreachable", (7,)): "error"}
    assert "already so 5 s earlier" in rep.findings[0].evidence and rep.exit_code == 3


def test_head_without_ready_is_an_error_when_the_guest_holds_nothing_for_the_queue():
    mem = writer.domain(ports={5: "PL"}, heads={(0, 7): 5})
    assert severities(doctor.examine(from_mem(mem))) == {("head-without-ready", (5,)): "info"}
    ev = Evidence("t")
    collect.add_dump(ev, build_dump(mem, 0, "t", guest_known=True))  # guest: no local READY, no local head
    assert severities(doctor.examine(ev)) == {("head-without-ready", (5,)): "error"}


def test_pending_not_queued_is_a_warning_until_a_second_sample_confirms_it():
    first = from_mem(writer.domain(ports={5: "P"}))
    assert severities(doctor.examine(first)) == {("pending-not-queued", (5,)): "warning"}
    second = from_mem(writer.domain(ports={5: "P"}))
    second.taken_at = first.taken_at + 3
    assert severities(doctor.examine(second, first)) == {("pending-not-queued", (5,)): "error"}


def test_a_stale_walk_into_a_live_chain_is_a_lost_link_not_a_queue():
    """6 is LINKED but 5's LINK skips it; a drained queue's stale head names 6. Xen keeps chains apart, so
    a walk that joins a live chain found skipped ports: linked-unreachable, not head-without-ready."""
    mem = writer.domain(ports={5: "PL->7", 6: "PL->7", 7: "PL"}, heads={(0, 3): 6, (0, 7): 5}, ready={0: 1 << 7})
    ev = Evidence("t")
    collect.add_dump(ev, build_dump(mem, 0, "t", guest_known=True))
    assert severities(doctor.examine(ev)) == {("linked-unreachable", (6,)): "error"}


def test_of_two_stale_heads_naming_one_lost_queue_the_one_its_channel_names_is_reported():
    from xenevt.sim.host import chan_status

    mem = writer.domain(nr_vcpus=2, ports={1: "PL"}, heads={(0, 7): 1, (1, 3): 1},
                        chans={1: {"state": 6, "notify_vcpu": 1, "priority": 3}})
    ev = Evidence("t")
    collect.add_dump(ev, build_dump(mem, 0, "t", channels={1: chan_status(0, 1, mem.chan(1), mem.word(1))}))
    (f,) = doctor.examine(ev).findings
    assert (f.rule, f.ports, f.vcpu, f.severity) == ("head-without-ready", [1], 1, "error")
    assert f.title.startswith("queue vCPU 1 priority 3 holds 1 event(s)")


def test_closed_ports_still_linked_count_against_the_limit():
    from xenevt.evidence.model import PortFacts

    ev = Evidence("t")
    dom = ev.domain(3)
    for p in range(1, 901):
        dom.ports[p] = doctor_port(p)
    for p in range(901, 961):
        dom.ports[p] = PortFacts(p, "unknown", linked=True, link=0, pending=False, masked=True)
    rep = doctor.examine(ev)
    assert ("ports-near-limit", 3, ()) in rules(rep)
    assert "960 ports in use (60 of them closed but still LINKED" in rep.findings[0].evidence


def test_a_break_in_a_queue_with_ready_clear_from_outside_is_named_and_confirmed_by_a_second_sample():
    """Without the guest's heads a READY-clear queue may be one it is consuming: its cycle is info, then error."""
    mem = writer.domain(ports={5: "PL->6", 6: "PL->5"}, heads={(0, 7): 5})
    first = from_mem(mem)
    assert severities(doctor.examine(first)) == {("chain-cycle", (5,)): "info"}
    second = from_mem(mem)
    second.taken_at = first.taken_at + 2
    assert severities(doctor.examine(second, first)) == {("chain-cycle", (5,)): "error"}
    inside = Evidence("t")
    collect.add_dump(inside, build_dump(mem, 0, "t", guest_known=True))  # the guest holds nothing for it
    assert severities(doctor.examine(inside)) == {("head-without-ready", (5,)): "error"}


def test_snapshot_keeps_the_guests_queue_state():
    mem = writer.domain(ports={6: "PL"}, heads={(0, 7): 5})
    mem.guest(0)[0], mem.guest(0)[1 + 7] = 1 << 7, 6
    ev = Evidence("t")
    collect.add_dump(ev, build_dump(mem, 0, "t", guest_known=True))
    back = Evidence.from_json(ev.to_json())
    assert back.domains[0].vcpus[0] == ev.domains[0].vcpus[0]
    d = json.loads(ev.to_json())
    d["domains"][0]["vcpus"]["0"]["guest_heads"] = [1, 2]
    with pytest.raises(EvidenceError, match=r"vcpus\['0'\]\.guest_heads: expected 16 heads, got 2"):
        Evidence.from_json(json.dumps(d))
    d = json.loads(ev.to_json())
    d["domains"][0]["vcpus"]["0"]["queues"][0]["head_from"] = "xen"
    with pytest.raises(EvidenceError, match=r"queues\[0\]\.head_from: expected one of 'guest', 'control block'"):
        Evidence.from_json(json.dumps(d))


# --- the 'e' dump, in Xen's exact text ------------------------------------------------------------------------
def e_text(**kw):
    dom0 = ew.domain_lines(0, [
        ew.port_line(1, "interdomain", p=1, m=0, word={"linked": True, "link": 0}, d=1, rp=1),
        ew.port_line(2, "virq", n=1, word={"linked": False}, virq=0),
        ew.port_line(3, "interdomain", p=1, m=1, word={"linked": False}, d=1, rp=7),
        ew.port_line(4, "interdomain", p=1, m=0, word={"linked": False}, d=1, rp=2),
        ew.port_line(5, "unbound", word={"linked": False, "busy": True}, d=1),
        ew.port_line(6, "pirq", word=None, pirq=17, irq=40),
    ], polling="0-1")
    dom1 = ew.domain_lines(1, [
        ew.port_line(1, "interdomain", word={"linked": False}, d=0, rp=1),
        ew.port_line(2, "interdomain", word={"linked": False}, d=0, rp=4),
    ])
    return ew.console(dom0 + dom1, **kw)


@pytest.mark.parametrize("kw", [{}, {"stamps": True}, {"prefix": ""}])
def test_e_dump_findings(kw):
    ev = edump.parse(e_text(**kw))
    assert ev.warnings == []
    d0 = ev.domains[0]
    assert d0.abi == "FIFO" and d0.polling == [0, 1]
    assert (d0.ports[6].state, d0.ports[6].pirq, d0.ports[6].linked) == ("pirq", 17, None)
    assert rules(doctor.examine(ev)) == {
        ("pending-masked", 0, (3,)),            # and its remote end (dom1:7) is closed:
        ("remote-end-mismatch", 0, (3,)),
        ("pending-not-queued", 0, (4,)),
        ("busy-left-set", 0, (5,)),
    }


def test_e_dump_tolerates_noise_and_records_truncation_as_unread():
    lines = e_text().splitlines()
    lines.insert(6, "(XEN) [2026-11-24 03:00:01] d1v0 some unrelated hypervisor message")
    lines[7] = lines[7][:20]                 # a port line cut short
    lines.append("(XEN)        9 [1/0/  -   ]: s=3 n=0 x=0 d=0 p")
    ev = edump.parse("\n".join(lines))
    assert ev.warnings == ["1 other console line(s) in the dump ignored (the first at line 7)"]
    assert [str(u).split(":")[0] for u in ev.unread] == ["line 8", "line 17"]
    assert "not an event-channel line Xen prints, skipped" in ev.unread[0].what
    assert "the fields after x= ('d=0 p') are not what Xen prints for s=3" in ev.unread[1].what
    assert doctor.examine(ev).verdict == "problems"  # the findings stand, with what went unread beside them


def test_e_dump_other_formats():
    two_level = ew.console(ew.domain_lines(2, [ew.port_line(1, "interdomain", p=1, m=0, two_level_sel=0, d=0, rp=9),
                                               ew.port_line(2, "ipi", p=1, m=0, two_level_sel=1)]))
    ev = edump.parse(two_level)
    d = ev.domains[2]
    assert d.abi == "2-level" and d.ports[1].selector is False and d.ports[2].selector is True
    assert ("pending-not-queued", 2, (1,)) in rules(doctor.examine(ev))
    old = ew.console(ew.domain_lines(0, [ew.port_line(1, "virq", word={"linked": True, "link": 12}, old=True, virq=1),
                                         ew.port_line(2, "ipi", word=None, old=True)], new_header=True,
                                     abi_line="FIFO") + [ew.port_line(3, "ipi", xsm="system_u:object_r")])
    ev = edump.parse(old)
    assert ev.warnings == [] and ev.domains[0].ports[1].link == 12 and ev.domains[0].ports[3].state == "ipi"


def test_e_dump_garbage_is_an_error_naming_the_source():
    with pytest.raises(EvidenceError, match="no 'Event channel information for domain N:' section"):
        edump.parse("hello\nworld\n", "'e' dump x.txt")


def test_lsevtchn_text():
    text = "".join([ew.c_printf("%4d: VCPU %u: ", 1, 0) + "Interdomain (Connected) - Remote Domain 1, Port 4\n",
                    ew.c_printf("%4d: VCPU %u: ", 2, 1) + "Interdomain (Waiting connection) - Remote Domain 3\n",
                    ew.c_printf("%4d: VCPU %u: ", 3, 0) + "Virtual IRQ 2\n",
                    ew.c_printf("%4d: VCPU %u: ", 4, 0) + "Physical IRQ 9\n",
                    ew.c_printf("%4d: VCPU %u: ", 5, 1) + "IPI\n", "garbage line\n"])
    ev = lsevtchn.parse(text, 0)
    ports = ev.domains[0].ports
    assert (ports[1].remote_domain, ports[1].remote_port, ports[2].state, ports[3].virq, ports[4].pirq) == (
        1, 4, "unbound", 2, 9)
    assert [str(u) for u in ev.unread] == ["line 6: not an lsevtchn line, skipped: 'garbage line'"]
    rep = doctor.examine(ev)
    assert rep.findings == [] and (rep.verdict, rep.exit_code) == ("inconclusive", 4)
    with pytest.raises(EvidenceError, match="no lsevtchn lines"):
        lsevtchn.parse("nothing here\n", 0)


# --- scenarios: the simulator driven into each broken state ---------------------------------------------------
@pytest.fixture
def host(tmp_path, monkeypatch):
    create_host(str(tmp_path), nr_domains=2, nr_vcpus=2)
    monkeypatch.setenv("XENEVT_STATE", str(tmp_path))
    with SimHost(str(tmp_path)) as h:
        yield h


def connect(h):
    p1 = h.alloc_unbound(1, 1, 0)
    p0 = h.bind_interdomain(0, 0, 1, p1)
    h.claim_vcpu(0, 0)
    h.consume(0, 0, timeout=0)  # the bind's event
    return p0, p1


def examine(h):
    from xenevt.backend.sim import SimBackend

    b = SimBackend(h.state_dir)
    try:
        return doctor.examine(collect.from_backend(b))
    finally:
        b.shutdown()


def busy_host(h):
    """Traffic on several channels, everything consumed: the healthy baseline."""
    pairs = [connect(h) for _ in range(6)]
    h.set_priority(0, 0, pairs[1][0], 2)
    for _ in range(30):
        for _, p1 in pairs:
            h.send(1, 1, p1)
        h.consume(0, 0, timeout=0)
    return pairs


def test_scenario_healthy_busy_host(host):
    busy_host(host)
    assert examine(host).findings == []


def test_scenario_guest_forgets_to_unmask(host):
    p0, p1 = busy_host(host)[0]
    host.mask(0, 0, p0)
    host.send(1, 1, p1)
    assert rules(examine(host)) == {("pending-masked", 0, (p0,))}


def test_scenario_corrupted_link(host):
    pairs = busy_host(host)
    (a, b1), (b, b2) = pairs[2], pairs[3]
    host.send(1, 1, b1)
    host.send(1, 1, b2)  # queue 7 of dom0 vCPU 0: a -> b
    mem = host.domain(0, "t").mem
    mem.set_word(a, (mem.word(a) & ~abi.EVTCHN_FIFO_LINK_MASK) | 3000)  # past the one-page array
    assert rules(examine(host)) == {("chain-range", 0, (3000,)), ("linked-unreachable", 0, (b,))}


def test_scenario_lost_link(host):
    p0, _ = busy_host(host)[0]
    mem = host.domain(0, "t").mem
    mem.set_word(p0, abi.WORD_PENDING)  # pending, unmasked, on no queue: Xen's link was lost
    assert rules(examine(host)) == {("pending-not-queued", 0, (p0,))}


def test_scenario_ready_bit_lost(host):
    p0, p1 = busy_host(host)[0]
    host.send(1, 1, p1)
    host.domain(0, "t").mem.control_block(0)[0] = 0
    assert rules(examine(host)) == {("head-without-ready", 0, (p0,))}


def test_scenario_cycle(host):
    pairs = busy_host(host)
    (a, a1), (b, b1) = pairs[2], pairs[3]
    host.send(1, 1, a1)
    host.send(1, 1, b1)
    mem = host.domain(0, "t").mem
    mem.set_word(b, mem.word(b) | a)  # b's LINK back to a
    assert rules(examine(host)) == {("chain-cycle", 0, (a,))}


def test_scenario_busy_left_set(host):
    p0, _ = busy_host(host)[0]
    mem = host.domain(0, "t").mem
    mem.set_word(p0, mem.word(p0) | abi.WORD_BUSY)
    assert rules(examine(host)) == {("busy-left-set", 0, (p0,))}


def test_scenario_priority_changed_while_queued(host):
    p0, p1 = busy_host(host)[0]
    host.send(1, 1, p1)
    host.set_priority(0, 0, p0, 3)
    rep = examine(host)
    assert rules(rep) == {("queued-elsewhere", 0, (p0,))} and rep.exit_code == 0


def test_scenario_remote_end_closed_behind_xens_back(host):
    p0, p1 = busy_host(host)[0]
    host.domain(1, "t").mem.update_chan(p1, state=ECS_FREE)
    assert rules(examine(host)) == {("remote-end-mismatch", 0, (p0,))}


def test_scenario_vcpu_without_control_block(host):
    p0, _ = busy_host(host)[0]
    mem = host.domain(0, "t").mem
    mem._words[CB_STATE_OFFSET // 4 + 1] = 0  # vCPU 1 never registered its control block
    host.bind_vcpu(0, 0, p0, 1)
    assert rules(examine(host)) == {("vcpu-without-control-block", 0, (p0,))}


def test_scenario_only_a_closed_port_still_queued_is_healthy(host):
    """Xen's 'e' prints open ports only: no port line there is no unread evidence when none is open."""
    a = host.bind_ipi(0, 0, 0)
    host.send(0, 0, a)
    host.close_port(0, 0, a)  # closed, its event still LINKED on vCPU 0's queue 7
    rep = examine(host)
    assert rep.findings == [] and rep.verdict == "healthy", (rep.findings, rep.unread)


def test_scenario_ports_run_out(tmp_path):
    create_host(str(tmp_path), nr_domains=2, nr_vcpus=1, max_ports_domu=128)
    with SimHost(str(tmp_path)) as h:
        for _ in range(116):
            h.bind_ipi(1, 1)
        assert rules(examine(h)) == {("ports-near-limit", 1, ())}
        for _ in range(11):
            h.bind_ipi(1, 1)
        assert rules(examine(h)) == {("ports-exhausted", 1, ())}


def test_scenario_e_dump_from_the_simulator_agrees(host):
    """The simulator prints 'e' as Xen does; read back, it gives the same verdict as the live tables."""
    p0, p1 = busy_host(host)[0]
    host.mask(0, 0, p0)
    host.send(1, 1, p1)
    ev = edump.parse("\n".join("(XEN) " + line for line in host.debug_key_e()))
    assert ev.warnings == []
    assert rules(doctor.examine(ev)) == {("pending-masked", 0, (p0,))}


# --- the command ---------------------------------------------------------------------------------------------
def test_cli_doctor_exit_codes_json_and_snapshots(host, tmp_path, capsys):
    busy_host(host)
    assert main(["doctor"]) == 0
    assert "doctor: healthy: no findings in 2 domain(s)" in capsys.readouterr().out
    p0, p1 = connect(host)
    host.mask(0, 0, p0)
    host.send(1, 1, p1)
    snap = tmp_path / "before.json"
    assert main(["doctor", "--json", "--save", str(snap)]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["healthy"] is False and out["findings"][0]["rule"] == "pending-masked"
    time.sleep(1.1)
    assert main(["doctor", "--since", str(snap)]) == 3
    text = capsys.readouterr().out
    assert f"ERROR   d0:{p0}: port {p0} is pending but masked for at least 1 s" in text
    assert main(["doctor", "-d", "1"]) == 0
    capsys.readouterr()


def test_cli_doctor_reads_files_and_reports_bad_ones(tmp_path, capsys):
    e = tmp_path / "e.txt"
    e.write_text(e_text())
    assert main(["doctor", "--edump", str(e)]) == 3
    assert "port 4 is pending and unmasked but not LINKED on any queue" in capsys.readouterr().out
    (tmp_path / "junk").write_text("nothing\n")
    for args, code, message in [
        (["doctor", "--edump", str(tmp_path / "junk")], 1, "no 'Event channel information for domain N:' section"),
        (["doctor", "--edump", str(tmp_path / "missing")], 1, "cannot read 'e' dump"),
        (["doctor", "--lsevtchn", str(e)], 2, "say which domain with one --domain"),
        (["doctor", "--edump", str(e), "--from", str(e)], 2, "pick one source of evidence"),
        (["doctor", "--edump", str(e), "--since", str(e)], 1, "not JSON"),
        (["doctor", "--from", str(tmp_path / "junk")], 1, "not a xenevt raw dump"),
    ]:
        assert main(args) == code, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_cli_issue_reproducer_reports_nothing_wrong(tmp_path):
    """Issue 10's command line, verbatim: a drained queue's stale head points at a port now on another queue."""
    script = ('xenevt() { "$PY" -m xenevt "$@"; }\n'
              "A=$(xenevt bind ipi); xenevt set-priority $A 0; xenevt notify $A; xenevt wait -t .2; "
              "xenevt set-priority $A 7; xenevt notify $A; xenevt doctor\n")
    create_host(str(tmp_path), nr_domains=2, nr_vcpus=2)
    env = dict(os.environ, XENEVT_STATE=str(tmp_path), PY=sys.executable)
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().splitlines()[-1].startswith("doctor: healthy: no findings in"), r.stdout


def test_a_masked_pending_ipi_per_vcpu_is_linux_pv_spinlock_kicker_not_a_stuck_port():
    """Real Xen (xen-ci): Linux's PV spinlocks keep one IPI per vCPU masked and poll it, so it rests pending and
    masked (dom0's ports 2 and 12 in the 'e' dump). One per vCPU is info; two on one vCPU, or any other state,
    stays pending-masked."""
    text = "\n".join([
        "(XEN) 'e' pressed -> dumping event-channel info",
        "(XEN) Event channel information for domain 0:",
        "(XEN) Polling vCPUs: {}",
        "(XEN)     port [p/m/s]",
        "(XEN)        1 [0/0/  -   ]: s=5 n=0 x=0 v=0",
        "(XEN)        2 [1/1/  -   ]: s=6 n=0 x=0",
        "(XEN)       12 [1/1/  -   ]: s=6 n=1 x=0",
    ])
    rep = doctor.examine(edump.parse(text))
    assert [(f.rule, f.severity, f.ports) for f in rep.findings] == [("masked-ipi", "info", [2]),
                                                                    ("masked-ipi", "info", [12])]
    assert rep.exit_code == 0 and "PV-spinlock kicker" in rep.findings[0].title
    rep = doctor.examine(edump.parse(text + "\n(XEN)       13 [1/1/  -   ]: s=6 n=1 x=0"
                                            "\n(XEN)       14 [1/1/  -   ]: s=3 n=0 x=0 d=0 p=1"))
    assert sorted((f.rule, f.ports[0]) for f in rep.findings if f.rule != "remote-end-mismatch") == [
        ("masked-ipi", 2), ("pending-masked", 12), ("pending-masked", 13), ("pending-masked", 14)]
    assert rep.exit_code == 3
