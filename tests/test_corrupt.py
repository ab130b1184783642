"""A corrupt state file or raw dump is one line naming the file, offset and field; never a crash, never used.

One test per class of corruption of the simulator's state file (host header, domain table, domain image
header, control-block offset, queue tails, channel records), each through the commands that read the file
(list, dump, doctor, wait): exit 1, exactly that line on stderr, the file unchanged.  Then what another process
may change after the open, and raw dump files whose checksum is right but whose fields are impossible.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import pytest

from xenevt.cli import main
from xenevt.dump import build_dump, load_raw
from xenevt.dump.rawfile import CB_RECORD, GUEST_VCPU, HEADER_SIZE
from xenevt.engine import Geometry, LayoutError
from xenevt.engine.layout import CB_STATE_OFFSET
from xenevt.errors import StateError
from xenevt.evidence import collect
from xenevt.evidence.model import Evidence
from xenevt.sim.host import FILE_NAME, SimHost, create_host

PAGE = 4096
DOM0 = PAGE  # create_host puts dom0's image right after the header page
GEO0 = Geometry(2, 4, 4096)  # dom0 of create_host's defaults: 2 vCPUs, 4096 ports
DOM1 = DOM0 + GEO0.size
COMMANDS = [["list"], ["dump"], ["doctor"], ["wait", "-t", "0"]]


@pytest.fixture
def state(tmp_path, monkeypatch):
    """dom0 <-> dom1 interdomain, a VIRQ and an IPI on dom0, an event queued."""
    d = str(tmp_path / "state")
    create_host(d)
    with SimHost(d) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, p1)  # dom0 port 1
        h.bind_virq(0, 0, 0)             # dom0 port 2
        a = h.bind_ipi(0, 0)             # dom0 port 3
        h.send(0, 0, a)
    monkeypatch.setenv("XENEVT_STATE", d)
    return d


def path_of(state: str) -> str:
    return os.path.join(state, FILE_NAME)


def poke(state: str, offset: int, fmt: str, value: int) -> None:
    with open(path_of(state), "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def digest(state: str) -> str:
    with open(path_of(state), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(*args: str, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def chan_at(port: int, field_offset: int = 0, dom: int = DOM0, geo: Geometry = GEO0) -> int:
    return dom + geo.chans_offset + 16 * port + field_offset


# (what is written where, the field named, the reason) — one representative per class
CASES = {
    "host header": (12, "<I", 0, "nr_domains", "domain count 0 out of range 1..32752"),
    "domain table past the images": (12, "<I", 20000, "nr_domains",
                                     "a table of 20000 domains ends at 0x76000, past the journal page at 0x26000"),
    "image inside the table": (64 + 8, "<Q", 0, "domain_table[0].offset",
                               "domain 0's image offset 0x0 is not a page boundary inside the file after the domain "
                               "table (from 0x1000)"),
    "domain table: duplicate": (64 + 24, "<I", 0, "domain_table[1].domid",
                                "domain 0 is listed twice (entries 0 and 1)"),
    "domain table: overlap": (64 + 24 + 8, "<Q", DOM0 + PAGE, "domain_table[0].size",
                              f"domain 0's image ({GEO0.size} bytes at 0x1000) overlaps domain 1's at 0x2000"),
    "image header": (DOM0 + 8, "<I", 0, "nr_vcpus", "vCPU count 0 out of range 1..256"),
    "array size": (DOM0 + 16, "<I", 9, "nr_pages", "event array of 9 pages exceeds its 4-page capacity"),
    "control block offset": (DOM0 + CB_STATE_OFFSET + 4, "<I", 0x7FFFFFFF, "control_block[1]",
                             "control block offset 0x7ffffffe is not 8-byte aligned inside its page"),
    "queue tail": (DOM0 + GEO0.tails_offset + 4 * 7, "<I", 5000, "tails[0][7]",
                   "tail port 5000 has no event word (the array has 1024 ports)"),
    "channel state": (chan_at(1), "<B", 200, "channel[1].state", "state 200 is not a Xen channel state (0..6)"),
    "channel priority": (chan_at(3, 1), "<B", 99, "channel[3].priority", "priority 99 out of range 0..15"),
    "channel vCPU": (chan_at(3, 4), "<H", 9999, "channel[3].notify_vcpu", "vCPU 9999 out of range 0..1"),
    "channel remote domain": (chan_at(1, 8), "<H", 7, "channel[1].remote_dom", "domain 7 is not on this host"),
    "channel remote port": (chan_at(1, 12), "<I", 1 << 20, "channel[1].remote_port",
                            "port 1048576 out of range 1..1023 of domain 1"),
    "channel VIRQ": (chan_at(2, 10), "<H", 99, "channel[2].aux", "VIRQ 99 out of range 0..23"),
    "channel port 0": (chan_at(0), "<B", 3, "channel[0].state", "port 0 is in state 3, not reserved"),
}


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_state_file_is_one_line_and_left_alone(state, capsys, case, args):
    offset, fmt, value, field, why = CASES[case]
    poke(state, offset, fmt, value)
    before = digest(state)
    code, out, err = run(*args, capsys=capsys)
    at = {"domain_table[0].size": 64 + 16, "domain_table[1].domid": 64 + 24}.get(field, offset)
    assert (code, out, err) == (1, "", f"xenevt: state file {path_of(state)}: offset {at:#x}: field {field}: {why}\n")
    assert digest(state) == before


@pytest.mark.parametrize("engine", ["c", "python"])
def test_bad_control_block_offset_never_reaches_the_engine(state, capsys, monkeypatch, engine):
    """The SIGSEGV of issue 10: an offset far outside the page, for every vCPU slot and both engines."""
    monkeypatch.setenv("XENEVT_ENGINE", engine)
    for bad in (0x10000001, 4096 - 72 + 8 + 1, 0xFFFFFFFF):
        poke(state, DOM1 + CB_STATE_OFFSET, "<I", bad)
        before = digest(state)
        for args in COMMANDS:
            code, _, err = run(*args, capsys=capsys)
            where = f"offset {DOM1 + CB_STATE_OFFSET:#x}: field control_block[0]"
            assert code == 1 and err.count("\n") == 1 and where in err, err
        assert digest(state) == before


def test_changes_after_the_open_are_caught_where_read(state):
    """Another process writing the shared header after we opened: checked on use, never followed."""
    with SimHost(state) as h:
        h.send(0, 0, 3)
        poke(state, DOM0 + 16, "<I", 200)  # nr_pages past the array's capacity
        with pytest.raises(LayoutError, match=rf"state file {path_of(state)}: offset 0x1010: field nr_pages: event "
                                              r"array of 200 pages exceeds its 4-page capacity"):
            h.status(0, 0, 3)  # reads the word: the array's size is checked on that read
        h.send(0, 0, 3)  # the engine still holds the size it checked (no new generation): safe
        poke(state, DOM0 + 16, "<I", 1)
        poke(state, DOM0 + CB_STATE_OFFSET, "<I", 1 << 30)  # control block of vCPU 0 far away
        poke(state, DOM0 + 24, "<I", 77)  # generation: the engine re-reads the header
        with pytest.raises(LayoutError, match=r"offset 0x1040: field control_block\[0\]"):
            h.send(0, 0, 3)
        poke(state, DOM0 + CB_STATE_OFFSET, "<I", 1)
        poke(state, chan_at(3, 4), "<H", 500)  # the channel record itself
        with pytest.raises(StateError, match=r"field channel\[3\]\.notify_vcpu: vCPU 500 out of range 0..1"):
            h.send(0, 0, 3)
        poke(state, chan_at(3, 4), "<H", 0)
        h.send(0, 0, 3)
        size = os.path.getsize(path_of(state))
        os.truncate(path_of(state), size - PAGE)  # touching the lost page would be SIGBUS
        with pytest.raises(StateError, match="the file changed size under us"):
            h.send(0, 0, 3)
        os.truncate(path_of(state), size)


def test_a_host_of_more_domains_than_one_page_of_entries(tmp_path, monkeypatch, capsys):
    """200 domains (the table runs into a second page, the images after it): every hypercall, the C hot path's
    send and consume included, reaches the last domain; a hostile entry offset there is refused by name."""
    d = str(tmp_path / "big")
    create_host(d, nr_domains=200, nr_vcpus=1)
    with SimHost(d) as h:
        p = h.alloc_unbound(199, 199, 0)
        q = h.bind_interdomain(0, 0, 199, p)
        assert (h.send(0, 0, q).target_domain, h.send(199, 199, p).target_port) == (199, q)
        assert h.consume(199, 0, 8) == [p] and h.consume(0, 0, 8) == [q]
    monkeypatch.setenv("XENEVT_STATE", d)
    code, out, _ = run("doctor", capsys=capsys)
    assert code == 0 and "no findings in 200 domain(s), 2 port(s)" in out
    entry = 64 + 199 * 24
    poke(d, entry + 8, "<Q", PAGE)  # domain 199's image at the table's second page
    code, out, err = run("list", capsys=capsys)
    assert (code, out) == (1, "") and f"offset {entry + 8:#x}: field domain_table[199].offset: domain 199's image " \
        "offset 0x1000 is not a page boundary inside the file after the domain table (from 0x2000)" in err


def test_wrong_file_size_and_table_past_the_end(state, capsys):
    size = os.path.getsize(path_of(state))
    poke(state, 64 + 16, "<Q", size)  # dom0's image as big as the file: runs past its end
    code, _, err = run("list", capsys=capsys)
    assert code == 1 and "field domain_table[0].size: domain 0's image of" in err and "runs past the file's end" in err


# --- raw dump files: right checksum, impossible fields -------------------------------------------------


def _raw_with_impossible_fields(state: str, tmp_path) -> str:
    raw = str(tmp_path / "d.raw")
    assert main(["dump", "--raw", raw]) == 0
    with open(raw, "rb") as f:
        d = bytearray(f.read())
    nv, npages = struct.unpack_from("<II", d, 16)
    struct.pack_into("<I", d, HEADER_SIZE + 4, 0x10080)  # vCPU 0's READY: bit 16 set
    struct.pack_into("<I", d, HEADER_SIZE + 4 + 8 + 4 * 5, 200000)  # vCPU 0's head[5] past the array
    chans = HEADER_SIZE + nv * CB_RECORD.size + nv * GUEST_VCPU.size + npages * PAGE
    d[chans + 16] = 200                                   # port 1: state 200
    d[chans + 16 * 3 + 1] = 99                            # port 3: priority 99
    struct.pack_into("<H", d, chans + 16 * 2 + 4, 9999)   # port 2: vCPU 9999
    struct.pack_into("<I", d, len(d) - 4, zlib.crc32(d[:-4]))
    with open(raw, "wb") as f:
        f.write(d)
    return raw, chans


def test_raw_dump_impossible_fields_are_warnings_not_facts(state, tmp_path, capsys):
    raw, chans = _raw_with_impossible_fields(state, tmp_path)
    capsys.readouterr()
    expected = [
        f"dump file {raw}: offset {chans + 16:#x}: field channel[1].state: state 200 is not a Xen channel state "
        "(0..6); the record is ignored",
        f"dump file {raw}: offset {chans + 32 + 4:#x}: field channel[2].notify_vcpu: vCPU 9999 out of range 0..1; "
        "the record is ignored",
        f"dump file {raw}: offset {chans + 48 + 1:#x}: field channel[3].priority: priority 99 out of range 0..15; "
        "the record is ignored",
        "vCPU 0 control block: READY 0x00010080 has bits above 15 set; the FIFO ABI has 16 queues",
        "vCPU 0 control block: head of queue 5 is port 200000, past the array's 1024 ports",
    ]
    code, out, err = run("dump", "--from", raw, "--json", capsys=capsys)
    (d,) = json.loads(out)["domains"]
    assert code == 0 and d["warnings"] == expected
    assert [w["port"] for w in d["ports"] if "state" in w] == []  # no impossible record shown as a channel
    code, out, err = run("dump", "--from", raw, capsys=capsys)
    assert code == 0 and [line.strip() for line in out.splitlines() if "warning:" in line] == \
        [f"warning: {w}" for w in expected]
    # doctor's evidence carries them as unread: no clean bill of health on such a file
    loaded = load_raw(raw)
    ev = Evidence(f"raw dump {raw}")
    collect.add_dump(ev, build_dump(loaded.mem, loaded.domain, ev.source, channels=loaded.channels(),
                                    guest_known=loaded.guest_known, max_ports=loaded.mem.nr_chans))
    assert [str(u) for u in ev.unread] == [f"domain 0: {w}" for w in expected] and ev.warnings == []
    code, out, _ = run("doctor", "--from", raw, "--json", capsys=capsys)
    assert code == 4 and json.loads(out)["verdict"] == "inconclusive"


def test_raw_dump_of_a_healthy_host_has_no_warning(state, tmp_path, capsys):
    raw = str(tmp_path / "ok.raw")
    assert main(["dump", "--raw", raw]) == 0
    capsys.readouterr()
    code, out, _ = run("dump", "--from", raw, "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["domains"][0]["warnings"] == []
