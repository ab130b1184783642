"""doctor's registry: every rule declared once where it is defined, run in a documented order that changes no
finding, declarations that cannot drift from what the checks emit, and `doctor --list-rules`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import writer
from xenevt.dump import build_dump
from xenevt.evidence import collect, doctor
from xenevt.evidence import rules as registry
from xenevt.evidence.model import DomainFacts, Evidence, PortFacts
from xenevt.evidence.report import SEVERITIES, Report
from xenevt.evidence.rules.registry import CHECKS, RULES, Check, Needs, Rule, Subject, UndeclaredFinding, check


def test_every_rule_declared_once_with_its_family_severities_and_doc():
    listed = registry.rules()
    ids = [r.id for r in listed]
    assert len(ids) == len(set(ids)) == len(RULES) and set(ids) == set(RULES)
    assert {r.family for r in listed} == set(registry.FAMILIES)  # every family module registers something
    ranks = [registry.FAMILIES.index(c.family) for c in registry.checks()]
    assert ranks == sorted(ranks)
    for r in listed:
        assert r.severities == tuple(s for s in SEVERITIES if s in r.severities), r.id  # known, in order, once
        assert r.doc.endswith(".") and "\n" not in r.doc and len(r.doc) < 200, r.id
    assert {c.needs for c in registry.checks() if Needs.TWO_SAMPLES in c.needs} and all(
        RULES[i].family == "rates" for c in registry.checks() if Needs.TWO_SAMPLES in c.needs for i in c.rules)


def test_a_second_registration_or_an_unknown_severity_is_refused():
    before = (len(CHECKS), dict(RULES))

    def fn(s):
        pass

    with pytest.raises(ValueError, match="'pending-masked' registered twice"):
        check(Rule("pending-masked", ("info",), "Again."))(fn)
    with pytest.raises(ValueError, match="'new-rule' registered twice"):
        check(Rule("new-rule", ("info",), "Once."), Rule("new-rule", ("info",), "Twice."))(fn)
    with pytest.raises(ValueError, match="severities"):
        check(Rule("new-rule", ("fatal",), "Unknown severity."))(fn)
    assert (len(CHECKS), RULES) == before


def subject(dom: DomainFacts, prev: DomainFacts | None = None, age: float | None = None) -> Subject:
    ev = Evidence("t")
    ev.domains[dom.domain] = dom
    return Subject(Report(), ev, dom, prev, age, 1000.0, 10.0)


def test_a_finding_its_check_did_not_declare_is_raised_as_a_bug():
    s = subject(DomainFacts(1))
    s.running = Check(lambda s: None, "test", Needs.NONE, {"ok": Rule("ok", ("info", "warning"), "Fine.")})
    s.add("warning", "ok", [3], "title", "evidence", "advice")
    with pytest.raises(UndeclaredFinding, match="error 'ok'"):
        s.add("error", "ok", [3], "title", "evidence", "advice")
    with pytest.raises(UndeclaredFinding, match="'other'"):
        s.add("info", "other", [3], "title", "evidence", "advice")
    assert [(f.severity, f.rule, f.domain) for f in s.report.findings] == [("warning", "ok", 1)]


def test_needs_gate_the_checks():
    two = Check(lambda s: None, "test", Needs.TWO_SAMPLES, {})
    queues = Check(lambda s: None, "test", Needs.QUEUES, {})
    plain = Check(lambda s: None, "test", Needs.EARLIER | Needs.HOST, {})
    dom = DomainFacts(0, ports={5: PortFacts(5, "ipi", vcpu=0)})
    assert [subject(dom).runs(c) for c in (two, queues, plain)] == [False, False, True]
    assert subject(dom, DomainFacts(0), 0.0).runs(two) is False  # an earlier sample at the same instant: no rate
    assert subject(dom, DomainFacts(0), 5.0).runs(two) is True
    ev = Evidence("t")
    collect.add_dump(ev, build_dump(writer.domain(ports={5: "PL"}, heads={(0, 7): 5}, ready={0: 1 << 7}), 0, "t",
                                    guest_known=False))
    assert subject(ev.domains[0]).runs(queues) is True


def breakage() -> tuple[Evidence, Evidence]:
    """Two samples of one domain with findings from several families and several findings per rule."""
    mem = writer.domain(nr_vcpus=2, ports={5: "PM", 6: "P", 7: "B", 8: "PL", 9: "PM", 20: "PL->21", 21: "PL->20"},
                        heads={(0, 7): 20, (1, 3): 8}, ready={0: 1 << 7})
    samples = []
    for taken in (100.0, 200.0):
        ev = Evidence("t", taken_at=taken, listed=[0])
        collect.add_dump(ev, build_dump(mem, 0, "t", guest_known=False))
        dom = ev.domains[0]
        dom.ports[30] = PortFacts(30, "unbound", vcpu=0, remote_domain=7)  # a peer that is gone
        samples.append(ev)
    return samples[0], samples[1]


def test_the_order_checks_run_in_changes_no_finding(monkeypatch):
    before, now = breakage()
    rep = doctor.examine(now, before).as_dict()
    assert len({f["rule"] for f in rep["findings"]}) >= 5 and len(rep["findings"]) >= 7
    monkeypatch.setattr(registry, "_ordered", list(reversed(registry.checks())))
    assert doctor.examine(now, before).as_dict() == rep


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xenevt", *args], capture_output=True, text=True,
                          env={"XENEVT_STATE": "/nonexistent/xenevt-state", "PATH": "/usr/bin:/bin"})


def test_list_rules_text_and_json():
    text, js = run("doctor", "--list-rules"), run("--json", "doctor", "--list-rules")
    assert text.returncode == js.returncode == 0 and text.stderr == js.stderr == ""
    rows = [line.split(None, 3) for line in text.stdout.splitlines()]
    assert [(r[0], r[1], r[2]) for r in rows] == [(r.id, r.family, "/".join(r.severities)) for r in registry.rules()]
    assert json.loads(js.stdout) == {"schema": "xenevt/1", "rules": [r.as_dict() for r in registry.rules()]}
    assert json.loads(js.stdout)["rules"][-1]["needs"] == ["two samples"]


def test_list_rules_reads_no_evidence():
    out = run("doctor", "--list-rules", "--edump", "e.txt")
    assert out.returncode == 2 and "--list-rules lists the rules: it reads no evidence" in out.stderr
