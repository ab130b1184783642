"""watch in a real terminal (tmux) during an incident: one port of 40 storming is the first row, with its rate,
within the screen, at 80x24 and at 200x50."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

import xenevt

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt install tmux)")

STORM = """
import sys, time, xenevt
with xenevt.open("sim", sys.argv[1]) as host:
    end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        for _ in range(200):
            host.notify(0, int(sys.argv[2]))
"""


ROW = re.compile(r"d0:(?P<port>\d+)\s+(?P<name>.*?)\s+(?P<total>\d+)\s+(?P<raised>[\d,.]+)\s+(?P<delivered>[\d,.]+)"
                 r"\s+(?P<pm>[PM-]{2})\s*(?P<note>.*)$")


def screen(session: str, socket: str) -> list[str]:
    r = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                       check=True)
    return r.stdout.rstrip("\n").splitlines()


@pytest.mark.parametrize("cols,lines", [(80, 24), (200, 50)])
def test_a_storm_on_one_port_of_40_is_the_first_row_on_screen(tmp_path, cols, lines):
    state = str(tmp_path / "h")
    with xenevt.open("sim", state, create=True) as host:
        ports = [host.bind_ipi(0, 0) for _ in range(40)]
    loud = ports[17]  # neither first nor last in port order
    storm = subprocess.Popen([sys.executable, "-c", STORM, state, str(loud), "30"])
    socket, session = f"xenevt-test-{os.getpid()}-{cols}", "watch"
    # ($LINES/$COLUMNS as a shell exports them before the terminal was resized: watch asks the terminal itself)
    cmd = shlex.join([sys.executable, "-m", "xenevt", "--state", state, "watch", "-i", "0.5", "--storm-rate", "500"])
    subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", session, "-x", str(cols),
                    "-y", str(lines), f"env TERM=xterm-256color LINES=24 COLUMNS=80 {cmd}; sleep 30"], check=True)
    try:
        deadline, shown = time.monotonic() + 20, []
        while time.monotonic() < deadline:
            time.sleep(0.3)
            shown = screen(session, socket)
            time.sleep(0.1)
            if screen(session, socket) != shown:
                continue  # caught mid-frame
            rows = [ln for ln in shown if ln.split()[:1] and ln.split()[0].startswith("d0:")]
            if rows and "STORM" in rows[0]:
                break
        else:
            pytest.fail("no STORM row on screen:\n" + "\n".join(shown))
        assert len(shown) <= lines
        first = ROW.match(rows[0])
        assert first and int(first["port"]) == loud, shown
        assert float(first["raised"].replace(",", "")) >= 500 and first["note"].startswith("STORM"), shown
        # every other row in numeric port order after it, as many as fit; the rest counted
        others = [int(r.split()[0][3:]) for r in rows[1:]]
        assert others == sorted(others) and loud not in others, shown
        if len(ports) + 4 > lines:
            assert any("more row(s)" in ln for ln in shown), shown
        else:
            assert len(others) == len(ports) - 1, shown
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False)
        storm.kill()
        storm.wait()
