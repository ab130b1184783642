"""``--as``: on the simulator the calling domain is checked for every operation, by Xen's rules
(xen/common/event_channel.c + XSM's dummy policy):

* alloc_unbound, status (so list) and reset name a domain: the caller must be it or privileged (XSM_TARGET);
* send, close, unmask, bind_vcpu, set_priority and bind_interdomain/virq/ipi take no domain: they act on the
  calling domain only, privileged or not; masking a word and consuming the queues are the guest's own kernel.

Each refusal is one line naming the caller, the domain (and port), EPERM; exit 1; the state file unchanged.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from xenevt.cli import main
from xenevt.sim.host import FILE_NAME, SimHost, create_host


@pytest.fixture
def state(tmp_path, monkeypatch):
    """dom0 port 1 <-> dom1 port 1 (dom0's end pending), dom0 IPI port 2 with an event queued."""
    d = str(tmp_path / "host")
    create_host(d, nr_domains=3)
    with SimHost(d) as h:
        h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        h.send(0, 0, h.bind_ipi(0, 0))
    monkeypatch.setenv("XENEVT_STATE", d)
    return d


def digest(state: str) -> str:
    with open(os.path.join(state, FILE_NAME), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


PERM = "domain {caller} may not operate on another domain's ports (EPERM)"
REFUSED = [
    # (argv, what the line names)
    (["--as", "1", "-d", "0", "wait", "-t", "0"], "cannot consume events of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "sim", "reset", "-d", "0"], "cannot reset domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "sim", "reset", "--all", "--yes"], "cannot reset domain 0: " + PERM.format(caller=1)),  # none reset
    (["--as", "1", "-d", "0", "notify", "2"], "cannot notify port 2 of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "close", "2"], "cannot close port 2 of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "mask", "2"], "cannot mask port 2 of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "unmask", "2"], "cannot unmask port 2 of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "set-priority", "2", "3"],
     "cannot set the priority of port 2 of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "bind-vcpu", "1", "1"], "cannot move port 1 of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "status", "2"], "cannot get the status of port 2 of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "list"], "cannot list the ports of domain 0: " + PERM.format(caller=1)),
    (["--as", "1", "-d", "0", "bind", "unbound", "1"],
     "cannot allocate an unbound port in domain 0: " + PERM.format(caller=1)),
    (["--as", "2", "-d", "1", "bind", "unbound", "0"],
     "cannot allocate an unbound port in domain 1: " + PERM.format(caller=2)),
    # a privileged dom0 too: these hypercalls have no domain argument in Xen
    (["--as", "0", "-d", "1", "notify", "1"], "cannot notify port 1 of domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "1", "close", "1"], "cannot close port 1 of domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "1", "unmask", "1"], "cannot unmask port 1 of domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "1", "mask", "1"], "cannot mask port 1 of domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "1", "set-priority", "1", "2"],
     "cannot set the priority of port 1 of domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "1", "bind-vcpu", "1", "1"], "cannot move port 1 of domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "1", "bind", "ipi", "--count", "1", "--timeout", "0"],
     "cannot bind IPI for domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "1", "bind", "virq", "timer", "--count", "1", "--timeout", "0"],
     "cannot bind VIRQ for domain 1: " + PERM.format(caller=0)),
    (["--as", "0", "-d", "2", "wait", "-t", "0"], "cannot consume events of domain 2: " + PERM.format(caller=0)),
]


@pytest.mark.parametrize("argv,line", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refused_in_one_line_with_eperm_and_nothing_changed(state, capsys, argv, line):
    before = digest(state)
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (1, "", f"xenevt: {line}\n")
    assert digest(state) == before


def test_refusal_in_json_names_caller_domain_port_errno(state, capsys):
    import json

    code, out, _ = run(capsys, "--json", "--as", "1", "-d", "0", "notify", "2")
    e = json.loads(out)
    assert code == 1 and (e["errno"], e["domain"], e["port"]) == ("EPERM", 0, 2) and "domain 1 may not" in e["error"]


ALLOWED = [
    ["--as", "0", "-d", "1", "list"],                  # status: privileged
    ["--as", "0", "-d", "1", "status", "1"],
    ["--as", "0", "-d", "1", "bind", "unbound", "2"],  # alloc_unbound: privileged
    ["--as", "0", "sim", "reset", "-d", "2"],          # reset: privileged
    ["--as", "2", "sim", "reset", "-d", "2"],          # reset: the domain itself
    ["--as", "1", "-d", "1", "notify", "1"],           # a domU on its own ports
    ["--as", "1", "-d", "1", "list"],
    ["--as", "1", "-d", "1", "wait", "-t", "0"],
    ["-d", "1", "notify", "1"],                        # no --as: acting as the domain itself
    ["-d", "2", "wait", "-t", "0"],
    ["notify", "2"],                                   # dom0 on its own ports
    ["wait", "-t", "0"],
    ["sim", "reset", "--all", "--yes"],                # no --as: dom0, every domain
]


@pytest.mark.parametrize("argv", ALLOWED, ids=[" ".join(a) for a in ALLOWED])
def test_allowed_by_xen(state, capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 0, err


def test_host_level_rules(state):
    """The same rules on SimHost itself, which the library and the backend share."""
    with SimHost(state) as h:
        for call in (lambda: h.claim_vcpu(0, 1, caller=1), lambda: h.consume(0, 0, timeout=0, caller=2),
                     lambda: h.reset(1, 0), lambda: h.bind_interdomain(0, 1, 0, 1), lambda: h.send(0, 1, 1)):
            with pytest.raises(Exception, match=r"may not operate on another domain's ports \(EPERM\)"):
                call()
        assert h.domains[0].mem.consumer(1) == 0  # the refused claim left no trace
        assert h.status(0, 1, 1).state == "interdomain"
        h.reset(1, 1)  # a domain resets itself
        assert h.list_ports(0, 1) == []
