"""The Debian package (`make deb`, ci/deb.py): one version everywhere (fast); then, slow, for each suite: the .deb
built in a chroot of the suite passes that suite's lintian, ships what it promises, installs with dpkg + apt into
a bare root of the suite (no Xen there, no python3 before it), runs there on the simulator and purges cleanly.

Cold (no cache under $XENEVT_DEB_CACHE) each suite's chroot and base root are made first: 12-14 min for both
suites on a busy 2-core machine; warm about 1 min for both (3-4 min busy; the test prints its stages' seconds).
Without root or mmdebstrap the slow tests skip; XENEVT_REQUIRE_DEB=1 (CI) makes that a failure."""

from __future__ import annotations

import email.utils
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import xenevt

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("ci_deb", ROOT / "ci" / "deb.py")
deb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(deb)

HAVE_DPKG = shutil.which("dpkg") is not None


# --- fast: the one version -------------------------------------------------------------------------------------
def test_the_package_version_is_the_projects():
    version = deb.check_versions()
    assert version == xenevt.__version__
    assert deb.upstream_of(deb.changelog_top()[0]) == version
    for suite in deb.SUITES:
        assert deb.upstream_of(deb.suite_version(suite)) == version
        assert deb.deb_name(suite, "amd64").startswith(f"xenevt_{version}-")


def _tree(tmp_path: Path, changelog_version: str, module_version: str = xenevt.__version__) -> Path:
    (tmp_path / "xenevt").mkdir()
    (tmp_path / "debian").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "xenevt" / "__init__.py").write_text(f'__version__ = "{module_version}"\n')
    text = (ROOT / "debian" / "changelog").read_text()
    top = deb.changelog_top()[0]
    (tmp_path / "debian" / "changelog").write_text(text.replace(f"({top})", f"({changelog_version})", 1))
    return tmp_path


def test_a_changelog_for_another_version_is_refused_by_name(tmp_path):
    root = _tree(tmp_path, "9.9.9-1")
    with pytest.raises(deb.DebError, match=r"debian/changelog's top entry '9\.9\.9-1' is not for pyproject"):
        deb.check_versions(str(root))


def test_a_module_version_apart_is_refused_by_name(tmp_path):
    root = _tree(tmp_path, deb.changelog_top()[0], module_version="0.0.1")
    with pytest.raises(deb.DebError, match=r"__version__ '0\.0\.1' is not pyproject\.toml's"):
        deb.check_versions(str(root))


@pytest.mark.skipif(not HAVE_DPKG, reason="dpkg compares Debian versions")
def test_each_suites_build_sorts_below_the_plain_one_and_trixie_above_bookworm():
    # an upgrade from Debian 12 to 13 moves to the trixie build; a plain (archive) upload beats both
    order = [deb.suite_version("bookworm"), deb.suite_version("trixie"), deb.changelog_top()[0]]
    for low, high in zip(order, order[1:], strict=False):
        assert subprocess.run(["dpkg", "--compare-versions", low, "lt", high]).returncode == 0, (low, high)


def test_the_suites_changelog_entry_is_dated_a_second_after_the_entry_under_it():
    # newer, as lintian wants; not the build's time, so a rebuild of the same tree is the same package
    entry = deb.suite_entry("trixie")
    assert entry.startswith(f"xenevt ({deb.suite_version('trixie')}) trixie; urgency=medium\n")
    date = email.utils.parsedate_to_datetime(entry.rstrip().split("  ")[-1])
    assert (date - email.utils.parsedate_to_datetime(deb.changelog_top()[2])).total_seconds() == 1


def test_an_unknown_suite_is_one_line_and_exit_1():
    r = subprocess.run([sys.executable, str(ROOT / "ci" / "deb.py"), "build", "--suite", "sid", "--out", "/none"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == "deb: unknown suite 'sid': one of bookworm, trixie\n"


def test_the_exporter_unit_dh_installs_is_the_one_in_the_package():
    link = ROOT / "debian" / "xenevt.xenevt-exporter.service"
    assert link.is_symlink() and link.resolve() == ROOT / "xenevt" / "metrics" / "data" / "xenevt-exporter.service"


# --- slow: build, look inside, install -------------------------------------------------------------------------
CAN_BUILD = os.geteuid() == 0 and shutil.which("mmdebstrap") is not None and HAVE_DPKG


@pytest.fixture(scope="module", params=sorted(deb.SUITES))
def built(request, tmp_path_factory):
    """(suite, the .deb, its lintian report, the unpacked tree, its control fields) for each suite."""
    if not CAN_BUILD:
        why = "building needs root, dpkg and mmdebstrap (apt install mmdebstrap)"
        if os.environ.get("XENEVT_REQUIRE_DEB") == "1":  # CI: a missing tool is a failure, not a skip
            pytest.fail(f"XENEVT_REQUIRE_DEB=1 but {why}")
        pytest.skip(why)
    suite = request.param
    out = tmp_path_factory.mktemp(f"deb-{suite}")
    res = deb.build(suite, str(out))
    unpacked = out / "unpacked"
    subprocess.run(["dpkg-deb", "-x", res["deb"], str(unpacked)], check=True)
    fields = {}
    for name in ("Package", "Version", "Architecture", "Depends", "Recommends", "Suggests"):
        fields[name] = subprocess.run(["dpkg-deb", "-f", res["deb"], name], check=True, capture_output=True,
                                      text=True).stdout.strip()
    print(f"\ntest_deb {suite}: " + ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items()))
    return suite, Path(res["deb"]), res["lintian"], unpacked, fields


@pytest.mark.slow
def test_lintian_finds_no_error_or_warning(built):
    suite, path, report, _, _ = built
    bad = [line for line in report.splitlines() if line.startswith(("E:", "W:"))]
    assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_the_control_fields(built):
    suite, path, _, _, f = built
    assert f["Package"] == "xenevt" and f["Version"] == deb.suite_version(suite)
    assert path.name == f"xenevt_{f['Version']}_{f['Architecture']}.deb"
    deps = [d.strip() for d in f["Depends"].split(",")]
    for want in ("python3-click", "python3-rich", "python3-cffi"):
        assert any(d.split()[0] == want for d in deps), (want, deps)
    # the extension is abi3: no python3 upper bound that a newer python3 of the suite would break
    assert not any(d.startswith("python3 (<<") for d in deps), deps
    recommends = [r.strip().split()[0] for r in f["Recommends"].split(",")]
    assert "libxenevtchn1" in recommends and "python3-prometheus-client" in recommends
    assert any(r.startswith("libxenmisc4.") for r in recommends), recommends
    # what only some commands import: sim libpath's compiler and headers, the exporter's --web-config
    suggests = [r.strip().split()[0] for r in f["Suggests"].split(",")]
    assert sorted(suggests) == ["gcc", "python3-bcrypt", "python3-dev", "python3-yaml"], suggests


def _site(unpacked: Path) -> Path:
    return unpacked / "usr" / "lib" / "python3" / "dist-packages" / "xenevt"


@pytest.mark.slow
def test_it_ships_the_extension_the_sim_sources_man_pages_completions_and_the_unit(built):
    from xenevt.sim import simlib

    _, _, _, unpacked, _ = built
    site = _site(unpacked)
    natives = list(site.glob("_native*.so"))
    assert len(natives) == 1 and natives[0].read_bytes()[:4] == b"\x7fELF", natives
    assert natives[0].name == "_native.abi3.so"
    missing = [n for n in simlib.C_SOURCES if not (site / "sim" / "_csrc" / n).is_file()]
    assert not missing, missing
    assert (site / "metrics" / "data" / "xenevt-exporter.service").is_file()
    man = unpacked / "usr" / "share" / "man" / "man1"
    pages = sorted(p.name for p in (ROOT / "man").glob("*.1"))
    assert pages and sorted(p.name[:-3] for p in man.glob("*.1.gz")) == pages
    bash = unpacked / "usr/share/bash-completion/completions/xenevt"
    zsh = unpacked / "usr/share/zsh/vendor-completions/_xenevt"
    fish = unpacked / "usr/share/fish/vendor_completions.d/xenevt.fish"
    assert "_XENEVT_COMPLETE=bash_complete" in bash.read_text()
    assert zsh.read_text().startswith("#compdef xenevt")
    assert "_XENEVT_COMPLETE=fish_complete" in fish.read_text()
    units = list(unpacked.glob("**/systemd/system/xenevt-exporter.service"))
    assert len(units) == 1
    assert units[0].read_text() == (ROOT / "xenevt" / "metrics" / "data" / "xenevt-exporter.service").read_text()
    script = unpacked / "usr" / "bin" / "xenevt"
    # a console script of the wheel's kind: easy_install's would import pkg_resources, which nothing depends on
    text = script.read_text()
    assert text.split("\n")[0] in ("#!/usr/bin/python3", "#! /usr/bin/python3") and "pkg_resources" not in text


@pytest.mark.slow
def test_it_installs_in_a_bare_root_and_runs_the_simulator_there(built, tmp_path):
    suite, path, _, _, f = built
    t0 = time.monotonic()
    root = deb.make_root(suite, str(tmp_path / "root"))
    unpacked_s = time.monotonic() - t0
    shutil.copy(path, os.path.join(root, "tmp", path.name))
    cache = [deb.archives(suite)]

    def sh(script: str, what: str) -> str:
        return deb.in_root(root, ["sh", "-c", script], what, cache, timeout=900).stdout

    # dpkg alone stops on the missing dependencies (the root has no python3); apt-get -f brings them
    out = sh(f"dpkg -i /tmp/{path.name} 2>&1 || echo DPKG-FAILED", "dpkg -i")
    assert "DPKG-FAILED" in out and "dependency problems" in out, out[-2000:]
    t1 = time.monotonic()
    deb.apt_in_root(root, ["--no-install-recommends", "-f", "install"], "apt-get -f install", cache)
    install_s = time.monotonic() - t1
    assert sh("dpkg-query -W -f '${Status} ${Version}' xenevt", "dpkg-query") == \
        f"install ok installed {deb.suite_version(suite)}"
    # no Xen library came with it (Recommends): the simulator needs none
    assert "libxenevtchn" not in sh("dpkg-query -W -f '${Package}\\n'", "the installed packages")
    assert sh("xenevt --version", "xenevt --version") == f"xenevt, version {xenevt.__version__}\n"
    out = sh("set -e; X='xenevt --state /tmp/host --no-pager'; $X sim init --yes --domains 2; "
             "P=$($X -d 1 bind unbound 0); L=$($X bind interdomain 1 $P); $X notify $L; $X -d 1 list; "
             "$X -d 1 wait -n 1 -t 5; $X doctor", "the simulator in the root")
    assert "domain 1: 1 open port(s)" in out and "domain 1 vCPU 0: event on port 1" in out, out
    # without Xen: the xen backend says so in one line; its binding declares the API from the shipped header
    # (cffi, a Depends) and names the package of the library it cannot find (a Recommends, not installed)
    r = deb.in_root(root, ["sh", "-c", "xenevt --backend xen list; echo exit $?"], "xenevt --backend xen", cache)
    assert r.stdout.strip().endswith("exit 1") and "Traceback" not in r.stderr, r
    assert r.stderr.startswith("xenevt: not running on Xen") and len(r.stderr.splitlines()) == 1, r.stderr
    out = sh("python3 -c 'from xenevt.backend.xen import libs\ntry:\n    libs.load(\"xenevtchn\")\n"
             "except Exception as e:\n    print(type(e).__name__, e)'", "the xen binding")
    assert out.startswith("BackendUnavailable the Xen library libxenevtchn.so.1 is not installed "
                          "(Debian package libxenevtchn1)"), out
    # the installed completion machinery answers (the scripts call it so)
    comp = sh("env COMP_WORDS='xenevt si' COMP_CWORD=1 _XENEVT_COMPLETE=bash_complete xenevt", "completion")
    assert "plain,sim" in comp.splitlines(), comp
    # the exporter's unit is installed but not enabled
    assert not os.path.lexists(os.path.join(root, "etc/systemd/system/multi-user.target.wants/"
                                                   "xenevt-exporter.service"))
    # every Recommends exists in the suite (the Xen libraries' names are the suite's own)
    for name in [r.strip().split()[0] for r in f["Recommends"].split(",")]:
        policy = sh(f"apt-cache policy {name}", f"apt-cache policy {name}")
        assert "Candidate:" in policy and "Candidate: (none)" not in policy, (name, policy)
    sh("dpkg --purge xenevt", "dpkg --purge")
    assert not os.path.exists(os.path.join(root, "usr/lib/python3/dist-packages/xenevt"))
    print(f"\ntest_deb {suite} root: unpacked {unpacked_s:.0f} s, apt-get -f install {install_s:.0f} s, "
          f"all {time.monotonic() - t0:.0f} s")
