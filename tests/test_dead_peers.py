"""Dead peers and stuck waiters: `sim destroy` as Xen's evtchn_destroy(), its kill-safety, and doctor's rules
on a port connected to or waiting for a domain that is dying or gone."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest

from xenevt.cli import main
from xenevt.errors import ChannelError
from xenevt.evidence import collect, doctor
from xenevt.evidence.model import Evidence, PortFacts
from xenevt.sim.check import check_host
from xenevt.sim.host import SimHost, create_host
from xenevt.sim.statefile import DOM_ENTRY, DOM_GONE, DOM_TABLE, INTENT, INTENT_COMMITTED


def rules(rep) -> set[tuple[str, int, tuple, str]]:
    return {(f.rule, f.domain, tuple(f.ports), f.severity) for f in rep.findings}


def channel(h: SimHost, d: int, r: int) -> tuple[int, int]:
    """d's end bound to r's unbound port, as a backend binds to a frontend's."""
    rp = h.alloc_unbound(0, r, d)
    return h.bind_interdomain(d, d, r, rp), rp


@pytest.fixture
def host(tmp_path):
    create_host(str(tmp_path), nr_domains=3)
    return str(tmp_path)


# --- sim destroy ------------------------------------------------------------------------------------------
def test_destroy_closes_every_port_and_sends_peers_back_to_unbound(host):
    with SimHost(host) as h:
        p0, p2 = channel(h, 0, 2)
        p1, _ = channel(h, 1, 2)
        waiting = h.alloc_unbound(0, 0, 2)           # dom0 waits for domain 2, never bound
        xen = h.xen_port(2, 0)                        # Xen's own port: evtchn_destroy closes it too
        ipi = h.bind_ipi(2, 2)
        h.destroy_domain(0, 2)
        assert 2 not in h.domains and 2 in h.gone
        for d, p in ((0, p0), (1, p1), (0, waiting)):
            st = h.status(0, d, p)
            assert (st.state, st.remote_domain) == ("unbound", 2)
        with pytest.raises(ChannelError) as e:
            h.list_ports(0, 2)
        assert e.value.errno == errno.ESRCH
        with pytest.raises(ChannelError) as e:
            h.bind_interdomain(0, 0, 2, p2)
        assert e.value.errno == errno.ESRCH
        del xen, ipi
    with SimHost(host, read_only=True) as h:  # kept across opens: the domain table flag
        assert sorted(h.domains) == [0, 1] and [d["domain"] for d in h.info()["domains"]] == [0, 1]
    assert check_host(host)[0] == []


def test_dying_stays_listed_refuses_new_ports_and_destroying_again_finishes_it(host):
    with SimHost(host) as h:
        p0, _ = channel(h, 0, 1)
        h.destroy_domain(0, 1, dying=True)
        assert h.domains[1].dying and h.list_ports(0, 1) == []
        assert {d["domain"]: d["dying"] for d in h.info()["domains"]} == {0: False, 1: True, 2: False}
        with pytest.raises(ChannelError, match="the domain is dying") as e:
            h.alloc_unbound(0, 1, 0)
        assert e.value.errno == errno.EINVAL
        assert h.status(0, 0, p0).state == "unbound"
        assert check_host(host)[0] == []
        h.destroy_domain(0, 1)
        assert 1 in h.gone
    assert check_host(host)[0] == []


def test_who_may_destroy(host):
    with SimHost(host) as h:
        for caller, domid, err in ((1, 2, errno.EPERM), (0, 0, errno.EINVAL), (0, 9, errno.ESRCH)):
            with pytest.raises(ChannelError) as e:
                h.destroy_domain(caller, domid)
            assert e.value.errno == err, (caller, domid)


class Killed(Exception):
    """Stands for SIGKILL at a step of the destroy."""


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8])
def test_a_destroy_cut_short_is_redone_whole(host, monkeypatch, steps):
    with SimHost(host) as h:
        ends = [channel(h, 0, 2)[0] for _ in range(3)] + [channel(h, 1, 2)[0]]
    h = SimHost(host)
    left = [steps]

    def crash():
        left[0] -= 1
        if left[0] < 0:
            raise Killed

    monkeypatch.setattr(h.file, "crash_point", crash)
    with pytest.raises(Killed):
        h.destroy_domain(0, 2)
    assert h.file.jw[INTENT // 4] == INTENT_COMMITTED  # the intent is left for the next lock holder
    h.close()
    monkeypatch.undo()
    with SimHost(host) as h:
        assert any("redid destroy" in r for r in h.recovered) and 2 in h.gone
        assert all(h.status(0, d, p).state == "unbound" for d, p in zip((0, 0, 0, 1), ends, strict=True))
    assert check_host(host)[0] == []


def test_a_destroy_redone_after_its_last_step_changes_nothing(host):
    with SimHost(host) as h:
        p0, _ = channel(h, 0, 2)
        h.destroy_domain(0, 2)
        h.file.jw[INTENT // 4] = INTENT_COMMITTED  # as if killed between the flag store and clearing the record
    with SimHost(host) as h:
        assert any("redid destroy" in r for r in h.recovered)
        assert 2 in h.gone and h.status(0, 0, p0).remote_domain == 2
    assert check_host(host)[0] == []


def test_state_file_refuses_a_domain_dying_and_gone(host):
    path = os.path.join(host, "host.xes")
    with open(path, "r+b") as f:
        at = DOM_TABLE + 2 * DOM_ENTRY.size + 4
        f.seek(at)
        f.write((DOM_GONE | 16).to_bytes(4, "little"))
    with pytest.raises(Exception, match=r"domain_table\[2\]\.flags: flags 0x30: domain 2 is both dying and gone"):
        SimHost(host, read_only=True)


def test_sim_destroy_command(host, capsys):
    with SimHost(host) as h:
        p0, _ = channel(h, 0, 2)
    assert main(["--state", host, "sim", "destroy", "2"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"domain 2 destroyed (gone): closed 1 port(s); 1 peer port(s) now unbound waiting for " \
                          f"it: d0:{p0}"
    assert main(["--state", host, "--json", "sim", "destroy", "2"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "cannot destroy domain 2: no such domain (ESRCH)"
    assert main(["--state", host, "sim", "destroy", "1", "--dying"]) == 0
    assert "domain 1 destroyed (dying): closed 0 port(s)" in capsys.readouterr().out
    assert main(["--state", host, "sim", "check"]) == 0


# --- doctor -----------------------------------------------------------------------------------------------
def evidence(ports: dict[int, PortFacts], listed: list[int] | None, dying: dict[int, bool] | None = None):
    ev = Evidence("t", listed=listed)
    ev.domain(0).ports = ports
    for d, flag in (dying or {}).items():
        ev.domain(d).dying = flag
    return ev


def test_dead_peer_rules_on_built_evidence():
    waiting = PortFacts(5, "unbound", vcpu=0, remote_domain=7)
    connected = PortFacts(6, "interdomain", vcpu=0, remote_domain=7, remote_port=3)
    alive = PortFacts(8, "unbound", vcpu=0, remote_domain=1)
    rep = doctor.examine(evidence({5: waiting, 6: connected, 8: alive}, listed=[0, 1]))
    assert rules(rep) == {("dead-peer", 0, (5,), "warning"), ("dead-peer", 0, (6,), "error")}
    f = next(f for f in rep.findings if f.ports == [5])
    assert f.title == "port 5 is waiting for domain 7, which no longer exists"
    assert "xenstore-ls /local/domain/0/backend" in f.advice
    # the domain list unknown (an 'e' dump, lsevtchn): nothing to judge against, so nothing said
    assert doctor.examine(evidence({5: waiting}, listed=None)).findings == []
    # dying: listed, but flagged; the dying domain itself is information, then a warning when it stays so
    rep = doctor.examine(evidence({5: PortFacts(5, "unbound", vcpu=0, remote_domain=1)}, [0, 1], {1: True}))
    assert rules(rep) == {("dead-peer", 0, (5,), "warning"), ("domain-dying", 1, (), "info")}
    assert "which is dying (XEN_DOMINF_dying)" in rep.findings[0].title


def test_since_tells_a_destroyed_peer_and_a_stuck_dying_domain():
    before = evidence({5: PortFacts(5, "interdomain", vcpu=0, remote_domain=1, remote_port=2)}, [0, 1], {1: True})
    now = evidence({5: PortFacts(5, "unbound", vcpu=0, remote_domain=1)}, [0, 1], {1: True})
    now.taken_at = before.taken_at + 30
    rep = doctor.examine(now, Evidence.from_json(before.to_json()))
    assert rules(rep) == {("dead-peer", 0, (5,), "warning"), ("domain-dying", 1, (), "warning")}
    dead = next(f for f in rep.findings if f.rule == "dead-peer")
    assert "connected to its port 2 in the earlier sample" in dead.evidence
    assert next(f for f in rep.findings if f.rule == "domain-dying").title == "domain 1 is dying, and was 30 s " \
                                                                               "earlier"


def test_snapshot_keeps_the_domain_list_and_dying_flags():
    ev = evidence({}, [0, 3], {3: True})
    ev.xen_version = "4.17"
    back = Evidence.from_json(ev.to_json())
    assert (back.listed, back.domains[3].dying, back.xen_version) == ([0, 3], True, "4.17")
    assert Evidence.from_json(Evidence("t").to_json()).listed is None


def test_doctor_after_sim_destroy(host, capsys, tmp_path):
    with SimHost(host) as h:
        p0, _ = channel(h, 0, 2)
        ok = h.alloc_unbound(0, 0, 1)  # waiting for a living domain: normal
    snap = tmp_path / "a.json"
    assert main(["--state", host, "doctor", "--save", str(snap)]) == 0
    capsys.readouterr()
    assert main(["--state", host, "sim", "destroy", "2"]) == 0
    assert main(["--state", host, "--json", "doctor", "--since", str(snap)]) == 3
    rep = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [(f["rule"], f["domain"], f["ports"]) for f in rep["findings"]] == [("dead-peer", 0, [p0])]
    assert "connected to its port" in rep["findings"][0]["evidence"] and ok != p0


# --- the real backend's sources, on stand-ins --------------------------------------------------------------
def test_limits_from_xl_list(tmp_path, monkeypatch):
    from xenevt.backend.xen.hostinfo import xl_limits as _xl_limits

    fake = tmp_path / "xl"
    configs = [{"domid": 0, "config": {}}, {"domid": 3, "config": {"b_info": {"event_channels": 2047}}},
               {"domid": 4, "config": {"b_info": {}}}]
    (tmp_path / "list.json").write_text(json.dumps(configs))
    fake.write_text(f"#!/bin/sh\nexec /bin/cat {tmp_path / 'list.json'}\n")  # (PATH holds only this folder)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    limits = _xl_limits()
    assert limits == {3: (2048, "max_event_channels from `xl list -l`"),
                      4: (1024, "libxl's default max_event_channels: the domain's config sets none")}
    ev = Evidence("t")
    dom = ev.domain(3)
    dom.max_ports, dom.limit_from = limits[3]
    dom.ports = {p: PortFacts(p, "ipi", vcpu=0) for p in range(1, 1900)}
    (f,) = doctor.examine(ev).findings
    assert f.rule == "ports-near-limit" and f.evidence == "1899 ports in use, limit 2047 (max_event_channels " \
                                                          "from `xl list -l`)"
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert _xl_limits() == {}


def test_collect_reads_the_domain_list_from_the_backend(host):
    with SimHost(host) as h:
        channel(h, 0, 2)
        h.destroy_domain(0, 2)
    from xenevt.backend import select_backend

    b = select_backend("sim", state_dir=host, read_only=True)
    try:
        ev = collect.from_backend(b)
    finally:
        b.shutdown()
    assert ev.listed == [0, 1] and ev.domains[0].dying is False and ev.xen_version == "4.20"
    assert ev.domains[1].limit_from == "the simulated hypervisor's max_evtchn_port"


def test_a_whole_edump_lists_every_domain(tmp_path, capsys):
    """A pasted 'e' dump names every domain Xen has: a port waiting for one without a section is a dead peer."""
    from tests import edump_writer as ew

    lines = ew.domain_lines(0, [ew.port_line(1, "unbound", d=5), ew.port_line(2, "unbound", d=1)]) + \
        ew.domain_lines(1, [ew.port_line(1, "ipi")])
    f = tmp_path / "e.txt"
    f.write_text(ew.console(lines))
    assert main(["--json", "doctor", "--edump", str(f)]) == 3
    (finding,) = json.loads(capsys.readouterr().out)["findings"]
    assert (finding["rule"], finding["domain"], finding["ports"]) == ("dead-peer", 0, [1])
    f.write_text("\n".join(ew.console(lines).splitlines()[1:]) + "\n")  # its start overwritten: nothing listed
    assert main(["--json", "doctor", "--edump", str(f)]) == 4
    assert json.loads(capsys.readouterr().out)["findings"] == []
