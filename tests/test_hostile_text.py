"""Text a domain or a file chose never reaches the terminal raw: every view and every error of it, text and JSON,
goes through safetext (issue 21, item 8)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from xenevt.activity import parse_interrupts
from xenevt.evidence.names import from_xenstore
from xenevt.sim.host import SimHost, create_host

# an OSC retitling the window, a CSI clearing the screen, a C1 CSI, a bidi override, DEL, a NUL
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e\x7f\x00"
# any byte a terminal acts on: C0 but tab and newline, DEL, and (UTF-8) C1 controls and the bidi/format range
RAW = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\x8b-\x8f\xaa-\xae]|\xe2\x81[\xa6-\xa9]")


@pytest.fixture
def hostile_state(tmp_path):
    """dom1 with a vif, and a vbd node whose value is hostile (written as a domain writes its own nodes)."""
    d = str(tmp_path / "state")
    create_host(d)
    with SimHost(d) as h:
        h.device_add("vif", 1, 0)
    path = os.path.join(d, "xenstore.json")
    with open(path) as f:
        doc = json.load(f)
    doc["nodes"]["/local/domain/1/device/vbd/51712/event-channel"] = HOSTILE
    doc["nodes"]["/local/domain/1/console/port"] = HOSTILE * 3
    with open(path, "w") as f:  # in place: the file keeps its owner and 0600
        json.dump(doc, f)
    return d


VIEWS = [
    ["sim", "device", "list"], ["--json", "sim", "device", "list"],
    ["list", "-d", "1"], ["--json", "list", "-d", "1"],
    ["status", "-d", "1", "1"], ["--json", "status", "-d", "1", "1"],
    ["dump", "-d", "1"], ["--json", "dump", "-d", "1"],
    ["doctor", "-d", "1"], ["--json", "doctor", "-d", "1"],
    ["watch", "--once", "-i", "0.1", "-d", "1"], ["--json", "watch", "--once", "-i", "0.1", "-d", "1"],
]


@pytest.mark.parametrize("argv", VIEWS, ids=" ".join)
def test_no_view_of_a_hostile_xenstore_value_carries_a_raw_control_byte(hostile_state, argv):
    r = subprocess.run([sys.executable, "-m", "xenevt", "--no-pager", *argv], capture_output=True, timeout=60,
                       env=dict(os.environ, XENEVT_STATE=hostile_state, COLUMNS="200"))
    assert r.returncode in (0, 3), (r.returncode, r.stderr)  # 3: doctor's findings
    for stream in (r.stdout, r.stderr):
        assert not RAW.search(stream), stream
    if argv[:3] == ["sim", "device", "list"]:
        assert b"\\x1b]0;pwned\\x07" in r.stdout  # shown, escaped: the operator sees what the domain wrote
    if argv[0] == "--json":
        for line in r.stdout.splitlines():
            json.loads(line) if argv[1] == "watch" else None
        if argv[1] != "watch":
            json.loads(r.stdout)  # still JSON


def test_an_error_quoting_outside_text_is_escaped(tmp_path):
    bad = tmp_path / "e\x1b[2Jdump\u202e.txt"
    bad.write_bytes(b"\x1b]0;x\x07 not an 'e' dump\n")
    for argv in (["doctor", "--edump", str(bad)], ["--json", "doctor", "--edump", str(bad)],
                 ["dump", "--from", str(bad)]):
        r = subprocess.run([sys.executable, "-m", "xenevt", *argv], capture_output=True, timeout=60,
                           env=dict(os.environ, XENEVT_STATE=str(tmp_path / "s")))
        assert r.returncode in (1, 2), r
        assert r.stderr.count(b"\n") == 1 and not RAW.search(r.stderr) and not RAW.search(r.stdout), r


def test_names_from_xenstore_paths_and_interrupt_rows_are_escaped():
    dev = "0\x1b[2J\u202e"
    named, _ = from_xenstore({f"/local/domain/3/device/vif/{dev}/event-channel": "7"})
    name = named[(3, 7)]
    assert name.text() == "d3 vif 0\\x1b[2J\\u202e" and name.source.isprintable()
    rows = parse_interrupts("           CPU0\n 40:  5  xen-dyn    -event     vif\x1b]0;t\x07-q0-tx\n", "t")
    assert rows and all(r.name.isprintable() and r.key.isprintable() for r in rows)
