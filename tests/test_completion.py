"""Shell completion through click's own hook, as a shell drives it: the env protocol in a real process, the
scripts `xenevt completion SHELL` prints, and the values read from the host (domains, a domain's open ports,
VIRQ names) without making one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from xenevt.sim.host import SimHost, create_host

XENEVT = [sys.executable, "-m", "xenevt"]


@pytest.fixture
def state(tmp_path):
    """dom0:1 <-> dom1:1, dom1:2 a VIRQ timer port, dom1:3 unbound for dom0; dom0 has 1 port only."""
    d = str(tmp_path / "state")
    create_host(d)
    with SimHost(d) as h:
        h.bind_interdomain(0, 0, 1, h.alloc_unbound(1, 1, 0))
        h.bind_virq(1, 1, 0, 0)
        h.alloc_unbound(1, 1, 0)
    return d


def complete(line: str, env: dict | None = None, shell: str = "bash") -> tuple[int, list[str]]:
    """What bash's completion function gets for ``line`` (the cursor at its end): click's bash protocol,
    COMP_WORDS and COMP_CWORD as the script sets them.  Returns the exit code and the values offered."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    e = {k: v for k, v in os.environ.items() if k not in ("XENEVT_STATE", "XENEVT_BACKEND")}
    e.update(env or {}, COMP_WORDS=line, COMP_CWORD=str(cword), _XENEVT_COMPLETE=f"{shell}_complete")
    r = subprocess.run(XENEVT, env=e, capture_output=True, text=True, timeout=60)
    assert r.stderr == "", r.stderr
    values = [row.split(",", 1)[1] for row in r.stdout.splitlines() if "," in row]
    return r.returncode, values


def test_status_offers_the_open_ports_of_the_domain_named(state):
    env = {"XENEVT_STATE": state, "XENEVT_BACKEND": "sim"}
    assert complete("xenevt status -d 1 ", env) == (0, ["1", "2", "3"])
    assert complete("xenevt -d 1 status ", env) == (0, ["1", "2", "3"])  # the global -d as well
    assert complete("xenevt status ", env) == (0, ["1"])  # dom0's
    assert complete(f"xenevt --state {state} -b sim mask -d 1 ", {}) == (0, ["1", "2", "3"])
    assert complete("xenevt --as 1 status -d 1 ", env) == (0, ["1", "2", "3"])  # dom1 reads its own
    assert complete("xenevt --as 1 status -d 0 ", env) == (0, [])  # and not dom0's (EPERM): nothing offered
    assert complete("xenevt -d 1 notify 1 ", env)[1] == ["1", "2", "3"]


def test_domains_virqs_commands_and_options(state):
    env = {"XENEVT_STATE": state, "XENEVT_BACKEND": "sim"}
    assert complete("xenevt list -d ", env) == (0, ["0", "1"])
    assert complete("xenevt bind unbound ", env) == (0, ["0", "1"])
    assert complete("xenevt bind virq ", env)[1][:3] == ["timer", "debug", "console"]
    assert complete("xenevt bind virq co", env)[1] == ["console", "con_ring"]
    assert complete("xenevt st", env)[1] == ["status"]
    assert "init" in complete("xenevt sim ", env)[1]
    assert complete("xenevt completion ", env)[1] == ["bash", "zsh", "fish"]
    assert "--domain" in complete("xenevt list --", env)[1]


def test_a_missing_host_offers_nothing_and_makes_none(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "XENEVT_BACKEND": "sim"}
    assert complete("xenevt status -d 1 ", env) == (0, [])  # the default place: nothing there, nothing made
    assert complete("xenevt list -d ", env) == (0, [])
    missing = tmp_path / "nope"
    assert complete(f"xenevt --state {missing} status ", env) == (0, [])
    assert not missing.exists() and not (tmp_path / "run").exists() and list(home.iterdir()) == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_its_script(shell):
    r = subprocess.run(XENEVT + ["completion", shell], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"_XENEVT_COMPLETE={shell}_complete" in r.stdout, r.stderr
    assert {"bash": "complete -o nosort -F _xenevt_completion xenevt", "zsh": "compdef _xenevt_completion xenevt",
            "fish": "complete --no-files --command xenevt"}[shell] in r.stdout
    # the same script as click's own hook prints (eval "$(_XENEVT_COMPLETE=bash_source xenevt)")
    hook = subprocess.run(XENEVT, env=dict(os.environ, _XENEVT_COMPLETE=f"{shell}_source"), capture_output=True,
                          text=True, timeout=60)
    assert hook.returncode == 0 and hook.stdout.rstrip("\n") == r.stdout.rstrip("\n")


def test_bash_sources_it(tmp_path):
    """The issue's check: `source <(xenevt completion bash); complete -p xenevt` in bash."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    cmd = " ".join(XENEVT)
    r = subprocess.run(["bash", "-c", f"source <({cmd} completion bash); complete -p xenevt"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "complete -o nosort -F _xenevt_completion xenevt", r.stderr


def test_bash_itself_completes_dom1s_ports(state, tmp_path):
    """bash runs the function the script defines, as a TAB would (a `xenevt` on PATH that is this checkout's)."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "xenevt").write_text(f"#!/bin/sh\nexec {sys.executable} -m xenevt \"$@\"\n")
    (bindir / "xenevt").chmod(0o755)
    script = ("source <(xenevt completion bash)\n"
              "COMP_WORDS=(xenevt status -d 1 ''); COMP_CWORD=4\n"
              "_xenevt_completion xenevt '' status\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", XENEVT_STATE=state, XENEVT_BACKEND="sim")
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["1", "2", "3"], (r.stdout, r.stderr)
