"""examples/ run on the simulator as a user runs them (a fresh process, outside the checkout), the plugin's
fixtures from a user's own test file, and the rule that examples use only names in ``xenevt.__all__``."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import xenevt

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# scripts of ours that run where xenevt is installed, as a user's would: the nested runner's domU check
PUBLIC_ONLY = EXAMPLES + [ROOT / "ci" / "xen" / "domu_check.py"]


def run(tmp_path: Path, name: str, *args: str, state: Path | None = None) -> subprocess.CompletedProcess:
    """``python NAME ARGS`` copied outside the checkout, on the simulator in ``state`` (default tmp_path/h)."""
    script = tmp_path / name
    shutil.copy(ROOT / "examples" / name, script)
    env = dict(os.environ, XENEVT_BACKEND="sim", XENEVT_STATE=str(state or tmp_path / "h"))
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_issues_script_binds_on_dom1_receives_on_dom0_and_reads_the_verdict(tmp_path):
    r = run(tmp_path, "front_door.py")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["backend"] == "sim" and out["sender"][0] == 1 and out["received"] == [out["receiver"][1]]
    assert out["sent"] == "queued" and out["verdict"] == "healthy"


def test_bind_and_wait(tmp_path):
    r = run(tmp_path, "bind_and_wait.py")
    assert r.returncode == 0 and r.stdout.startswith("event on port "), r.stderr


def test_ping_pong(tmp_path):
    r = run(tmp_path, "ping_pong.py", "7")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("7 round(s) of ping-pong between dom1 port ")


def test_doctor_gate_passes_a_healthy_host_and_stops_a_stuck_port(tmp_path, sim_host):
    state = Path(sim_host.state)
    r = run(tmp_path, "doctor_gate.py", state=state)
    assert r.returncode == 0 and "doctor: healthy" in r.stdout, r.stdout + r.stderr
    p = sim_host.bind_unbound(1, 0)
    q = sim_host.bind_interdomain(0, 1, p)
    sim_host.mask(0, q)
    sim_host.notify(1, p)  # pending on a masked port: nothing will ever deliver it
    r = run(tmp_path, "doctor_gate.py", state=state)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"dom0 [{q}]" in r.stdout and "doctor: problems" in r.stdout


def test_read_raw_dump_reads_a_saved_file_without_a_host(tmp_path, sim_host):
    p = sim_host.bind_unbound(1, 0)
    q = sim_host.bind_interdomain(0, 1, p)
    sim_host.mask(0, q)
    sim_host.notify(1, p)
    saved = sim_host.save_raw(str(tmp_path / "d0.raw"), xenevt.Source.live(0))
    assert saved["domain"] == 0 and saved["abi"] == "FIFO" and saved["bytes"] > 0
    r = run(tmp_path, "read_raw_dump.py", str(tmp_path / "d0.raw"), state=tmp_path / "nowhere")
    assert r.returncode == 0, r.stderr
    assert f"  port {q}: PM" in r.stdout and "doctor: problems" in r.stdout  # (pending and masked)
    assert not (tmp_path / "nowhere").exists(), "a file is read without opening (or creating) a host"


def _names_used(path: Path) -> set[str]:
    """Every xenevt name a script uses: ``from xenevt import X``, ``xenevt.X``; a submodule import is
    returned as its dotted name (never in __all__)."""
    tree = ast.parse(path.read_text(), str(path))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xenevt":
            if node.module != "xenevt":
                used.add(node.module)
            else:
                used |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            used |= {a.name for a in node.names if a.name.startswith("xenevt.")}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "xenevt":
            used.add(node.attr)
    return used


@pytest.mark.parametrize("path", PUBLIC_ONLY, ids=[p.name for p in PUBLIC_ONLY])
def test_examples_use_only_public_names(path):
    assert _names_used(path), f"{path.name} uses xenevt"
    assert _names_used(path) <= set(xenevt.__all__), sorted(_names_used(path) - set(xenevt.__all__))


def test_the_public_names_check_catches_a_private_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import xenevt\nfrom xenevt.backend import select_backend\nxenevt.open()\nxenevt._front\n")
    assert _names_used(bad) - set(xenevt.__all__) == {"xenevt.backend", "_front"}


def test_every_public_name_resolves_and_has_a_docstring():
    for name in xenevt.__all__:
        value = getattr(xenevt, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), name


USER_TEST = '''
import pytest
import xenevt


def test_an_event_arrives(host):
    p = host.bind_unbound(0, 0)
    q = host.bind_interdomain(0, 0, p)
    with host.events(0, timeout=0.5) as ev:
        assert list(ev) == [q]
    host.notify(0, q)
    with host.events(0, count=1, timeout=10) as ev:
        assert list(ev) == [p]


def test_each_sim_host_is_fresh(sim_host):
    assert sim_host.domains() == [0, 1]
    assert sim_host.ports(0) == []
    sim_host.bind_ipi(0)


def test_each_sim_host_is_fresh_again(sim_host):
    assert sim_host.ports(0) == []


def test_xen_host(xen_host):
    assert xen_host.kind == "xen"
'''


def test_a_users_test_file_runs_on_the_plugins_fixtures(tmp_path):
    """Outside the checkout, no conftest: the fixtures come from the installed pytest11 entry point."""
    (tmp_path / "test_user.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XENEVT_", "PYTEST_"))}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "test_user.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if os.path.exists("/dev/xen/evtchn"):
        assert r.returncode == 0 and "3 passed, 1 skipped" not in r.stdout, r.stdout
        return
    assert r.returncode == 0 and "3 passed, 1 skipped" in r.stdout, r.stdout + r.stderr
    assert "not running on Xen" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"], cwd=tmp_path,
                       env=env | {"XENEVT_REQUIRE_XEN": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "2 passed, 2 errors" in r.stdout, r.stdout
    assert "XENEVT_REQUIRE_XEN=1 but /dev/xen/evtchn does not exist" in r.stdout


def test_the_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("pdoc")
    r = subprocess.run(["bash", str(ROOT / "ci" / "docs.sh"), str(tmp_path / "api")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PY=sys.executable))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "api" / "xenevt.html").read_text()
    for name in ("open", "Host", "Source", "Diagnosis", "Events", "read_dump", "doctor"):
        assert f'id="{name}"' in page, name
