"""The built wheel carries everything: installed into a fresh venv outside the checkout, the commands work,
`sim libpath` included (built from the C sources shipped in the package), with an unmodified libxenevtchn
program running on it.  The wheel is built from the sdist (`python -m build`), so this also checks the sdist."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PINGPONG_C = ROOT / "tests" / "c" / "evtchn_pingpong.c"
XENEVTCHN_H = "/usr/include/xenevtchn.h"
SIM_SOURCES = ["xenevtchn_sim.c", "xen_api.h", "xenevtchn_sim.h", "simhost.c", "xenevt_host_api.h"]


@pytest.fixture(scope="module")
def timings(pytestconfig):
    """Seconds per stage (and the wheel's size), printed as one line when the module is done."""
    t: dict[str, float] = {}
    yield t
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture and t:
        with capture.global_and_fixture_disabled():
            print("\ntest_wheel: " + ", ".join(f"{k} {v:.0f} KiB" if k.startswith("wheel") else f"{k} {v:.1f} s"
                                                for k, v in t.items()))


def _timed(timings, stage, cmd, **kw):
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    timings[stage] = timings.get(stage, 0.0) + time.monotonic() - t0
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory, timings):
    """(sdist, wheel) built by `python -m build` from the checkout: the sdist first, the wheel from it."""
    if importlib.util.find_spec("build") is None:  # the [test] extra has it; an older venv may not
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "build"], check=True)
    out = tmp_path_factory.mktemp("dist")
    r = _timed(timings, "build sdist+wheel", [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
               cwd=str(out), timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    sdists, wheels = sorted(out.glob("xenevt-*.tar.gz")), sorted(out.glob("xenevt-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    timings["wheel"] = wheels[0].stat().st_size / 1024
    return sdists[0], wheels[0]


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory, timings):
    """A fresh venv in a temp dir holding only the wheel and its dependencies, and an environment that runs
    commands there: cwd outside the checkout, no PYTHONPATH, its own simlib cache and simulated host."""
    home = tmp_path_factory.mktemp("wheel-home")
    venv = home / "venv"
    r = _timed(timings, "venv+install", [sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XENEVT_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH")}
    env.update(XDG_CACHE_HOME=str(home / "cache"), XENEVT_STATE=str(home / "state"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    r = _timed(timings, "venv+install", [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(dist[1])],
               cwd=str(home), env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return home, venv, env


def _run(installed, *args, timeout=120, **extra_env):
    home, venv, env = installed
    cmd = [str(venv / "bin" / args[0]), *args[1:]] if args[0] in ("xenevt", "python") else list(args)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=str(home), env=dict(env, **extra_env),
                          timeout=timeout)


def test_sdist_carries_the_c_sources(dist):
    with tarfile.open(dist[0]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    want = {f"csrc/{f}" for f in os.listdir(ROOT / "csrc") if f.endswith((".c", ".h"))}
    assert want <= names, sorted(want - names)
    assert {"setup.py", "pyproject.toml", "xenevt/_build_native.py", "MANIFEST.in"} <= names


def test_wheel_carries_the_sim_sources_inside_the_package(dist):
    with zipfile.ZipFile(dist[1]) as whl:
        names = set(whl.namelist())
        for name in SIM_SOURCES:  # the same bytes as the checkout's one copy
            assert whl.read(f"xenevt/sim/_csrc/{name}") == (ROOT / "csrc" / name).read_bytes()
    assert any(n.startswith("xenevt/_native") and n.endswith(".so") for n in names)
    assert not [n for n in names if n.startswith("csrc/")]  # nothing lands at the top of site-packages
    # every subpackage of the checkout is in the wheel
    pkgs = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "xenevt").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in pkgs} <= names


def test_wheel_carries_the_json_schema(dist, installed):
    """xenevt/data/schema.json is package data: in the wheel as in the checkout, and what the installed
    `xenevt schema` prints (the JSON of every --json output is held to it: tests/test_schema.py)."""
    with zipfile.ZipFile(dist[1]) as whl:
        assert whl.read("xenevt/data/schema.json") == (ROOT / "xenevt" / "data" / "schema.json").read_bytes()
    r = _run(installed, "xenevt", "schema")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads((ROOT / "xenevt" / "data" / "schema.json").read_text())


def test_wheel_installs_the_man_pages(dist, installed):
    """The pages of man/ are the wheel's data files (share/man/man1), installed under the venv's prefix, where
    `man` finds them by name."""
    pages = sorted(p.name for p in (ROOT / "man").glob("*.1"))
    with zipfile.ZipFile(dist[1]) as whl:
        shipped = sorted(n.rsplit("/", 1)[1] for n in whl.namelist() if "/data/share/man/man1/" in n)
    assert shipped == pages and "xenevt-sim-init.1" in pages
    _, venv, _ = installed
    assert sorted(p.name for p in (venv / "share" / "man" / "man1").glob("*.1")) == pages
    if shutil.which("man"):
        r = subprocess.run(["man", "-M", str(venv / "share" / "man"), "xenevt-dump"], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
        assert r.returncode == 0 and "xenevt-dump" in r.stdout, r.stderr


def test_installed_xenevt_is_the_wheel_not_the_checkout(installed):
    home, venv, _ = installed
    r = _run(installed, "python", "-c",
             "import xenevt, xenevt._native; from xenevt.sim import simlib; print(xenevt.__file__); "
             "print(simlib.csrc_dir())")
    assert r.returncode == 0, r.stderr
    pkg_file, csrc = r.stdout.split()
    assert pkg_file.startswith(str(venv)) and not pkg_file.startswith(str(ROOT))
    assert csrc == os.path.join(os.path.dirname(pkg_file), "sim", "_csrc")


def test_demo_runs_from_the_wheel(installed, timings):
    t0 = time.monotonic()
    r = _run(installed, "xenevt", "demo")
    timings["demo"] = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "== close" in r.stdout and "Traceback" not in r.stderr


def test_c_program_runs_on_the_wheels_sim_library(installed, timings, tmp_path):
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip(f"{sys.executable} has no shared libpython: libxenevtchn-sim.so cannot embed it")
    if not os.path.exists(XENEVTCHN_H) or not shutil.which("gcc"):
        if os.environ.get("CI"):
            pytest.fail(f"{XENEVTCHN_H} missing: .ci/run installs libxen-dev")
        pytest.skip(f"{XENEVTCHN_H} not installed (apt install libxen-dev)")
    home = installed[0]
    t0 = time.monotonic()
    r = _run(installed, "xenevt", "sim", "libpath")
    timings["sim libpath (first build)"] = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    lib = r.stdout.strip()
    assert lib.startswith(str(home / "cache")) and os.path.exists(os.path.join(lib, "libxenevtchn.so.1"))
    exe = str(tmp_path / "pingpong")
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", str(PINGPONG_C), "-o", exe, f"-L{lib}",
                    "-lxenevtchn"], check=True)
    state = str(tmp_path / "host")
    r = _run(installed, "xenevt", "--state", state, "sim", "init")
    assert r.returncode == 0, r.stderr
    r = _run(installed, exe, "200", XENEVT_STATE=state, LD_LIBRARY_PATH=lib, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pingpong: 200 round trips on ports 1 <-> 2"
    # the real binding declares the API from the installed copy of the header the library was built from
    r = _run(installed, "xenevt", "--backend", "xen", "--json", "list", XENEVT_STATE=state, LD_LIBRARY_PATH=lib)
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout)["ports"], list)
