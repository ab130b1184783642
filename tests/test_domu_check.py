"""ci/xen/domu_check.py, the nested runner's look from inside a domU, run here on the simulator: its public
calls give the facts dom0's tests compare (the same script runs on real Xen in xen-ci's domUs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import xenevt
from xenevt.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def domu_check(tmp_path, monkeypatch):
    """The script as a module, its host the simulator in tmp_path and its "this kernel" dom1's live memory."""
    state = str(tmp_path / "h")
    assert main(["--state", state, "sim", "init", "--domain-abi", "1=2l"]) == 0
    spec = importlib.util.spec_from_file_location("domu_check", ROOT / "ci" / "xen" / "domu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    real_open = xenevt.open
    monkeypatch.setattr(xenevt, "open", lambda backend=None, *a, **k: real_open("sim", state))
    monkeypatch.setattr(xenevt.Source, "self_kernel", classmethod(lambda cls: cls.live(1)))
    return mod, state


def test_a_2l_guests_look_names_its_bound_ports_their_cpus_and_pending(domu_check):
    mod, state = domu_check
    with xenevt.open("sim", state) as host:
        p = host.bind_unbound(1, 0)
        q = host.bind_interdomain(0, 1, p)
        r = host.bind_unbound(1, 0)
        host.bind_vcpu(1, r, 1)
        host.mask(1, p)
        host.notify(0, q)  # raised on dom1's p, masked: pending and masked
        chans = {st.port: st for st in host.ports(1)}
    got = mod.look(1)
    assert (got["domid"], got["abi"], got["status"]) == (1, "2-level", "ok"), got
    assert got["masked_pending"] == [p] and p in got["pending"] and p not in got["unmasked"], got
    assert got["unmasked"] == sorted(set(chans) - {p}) == [r], (got["unmasked"], sorted(chans))
    assert got["cpu"] == [chans[r].vcpu] == [1]
    assert len(got["vcpus"]) == 2 and all(v is not None for v in got["vcpus"])


def test_a_fifo_guests_look_lists_its_unmasked_ports_and_queues(domu_check, monkeypatch):
    mod, state = domu_check
    monkeypatch.setattr(xenevt.Source, "self_kernel", classmethod(lambda cls: cls.live(0)))
    with xenevt.open("sim", state) as host:
        p = host.bind_unbound(0, 0)
        q = host.bind_interdomain(0, 0, p)
        chans = {st.port: st for st in host.ports(0)}
    got = mod.look(0)
    assert (got["abi"], got["broken"], got["status"]) == ("FIFO", 0, "ok") and all(got["control_blocks"]), got
    assert set(got["unmasked"]) == set(chans), (got["unmasked"], sorted(chans))
    # Xen set the new interdomain port pending: it is queued, not at rest
    assert [q, q] not in got["view"]["words"] and any(port == q for port, _ in got["view"]["words"]), got["view"]
    assert got["vif_irqs"] == {}
