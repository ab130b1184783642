"""The 2-level ABI in dump and doctor: every source (simulator, raw files v1 and v2, this kernel, frames), the
model and its views, and doctor's 2-level rules on state each test builds."""

from __future__ import annotations

import json
import re
import struct
import zlib

import pytest

from tests import kcore_writer
from xenevt import abi
from xenevt.cli import main
from xenevt.dump import build_dump
from xenevt.dump.frames import FrameError, from_shared_info
from xenevt.dump.model import TwoLevelDump
from xenevt.dump.rawfile import CRC, HEADER2_AT, HEADER_SIZE, DumpFileError, decode, encode
from xenevt.engine import DomainMemory
from xenevt.engine.layout import L2_MASK, L2_PENDING, VCPU_INFO_SIZE
from xenevt.errors import BackendUnavailable
from xenevt.evidence import collect, doctor
from xenevt.evidence.model import DomainFacts, Evidence, PortFacts, VcpuFacts
from xenevt.memory import Ask, MemoryUnavailable, open_source
from xenevt.memory.kcore import KernelReadError, read_self_image
from xenevt.sim.host import SimHost, create_host

SEL = 8  # vcpu_info.evtchn_pending_sel


@pytest.fixture
def host(tmp_path):
    """A host whose domain 1 is bare (2-level, no guest kernel): two vCPUs, ports in two selector words."""
    state = str(tmp_path / "s")
    create_host(state, bare=(1,))
    with SimHost(state) as h:
        yield state, h


def pms(p: dict) -> str:
    """A 2-level port object's bits as the text view writes them: P, M, and S (selector set; '?' not known)."""
    sel = p["selector"]
    return ("P" if p["flags"]["pending"] else "-") + ("M" if p["flags"]["masked"] else "-") + \
        ("S" if sel else "?" if sel is None else "-")


def ports_on(h, n: int, vcpu: int = 0) -> list[int]:
    return [h.bind_ipi(1, 1, vcpu) for _ in range(n)]


def image(h, domid: int = 1) -> DomainMemory:
    return DomainMemory(bytearray(h.domains[domid].mem.snapshot()))


def chans(h, domid: int = 1) -> dict:
    return {st.port: st for st in h.list_ports(0, domid)}


def set_sel(mem: DomainMemory, vcpu: int, value: int) -> None:
    struct.pack_into("<Q", mem.buffer, mem.geometry.vcpu_info_offset(vcpu) + SEL, value)


def set_upcall(mem: DomainMemory, vcpu: int, value: int) -> None:
    mem.buffer[mem.geometry.vcpu_info_offset(vcpu)] = value


def l2_bit(mem: DomainMemory, which: str, port: int, on: bool) -> None:
    words = mem.l2_pending() if which == "pending" else mem.l2_mask()
    if on:
        words[port // 64] |= 1 << port % 64
    else:
        words[port // 64] &= ~(1 << port % 64) & (1 << 64) - 1


# --- the model -----------------------------------------------------------------------------------------------
def test_dump_shows_vcpu_info_ports_and_the_next_upcall_in_order(host):
    state, h = host
    ports = ports_on(h, 70)            # 1..70: words 0 and 1 of vCPU 0
    other = h.bind_ipi(1, 1, 1)        # 71, vCPU 1
    for p in (3, 65, 10, 70):
        h.send(1, 1, p)
    h.mask(1, 1, 5)
    h.send(1, 1, 5)                    # pending but masked: not delivered
    h.send(1, 1, other)
    mem = image(h)
    mem.l2_scan(0)[0], mem.l2_scan(0)[1] = 0, 11  # Linux resumes after port 10
    before = mem.snapshot()
    d = build_dump(mem, 1, "sim", channels=chans(h))
    assert isinstance(d, TwoLevelDump) and mem.snapshot() == before  # the upcall ran on a copy
    j = d.as_dict()
    assert j["abi"] == "2-level" and j["ports_with_bits"] == mem.nr_chans == 1024 and j["scan_position_known"]
    v0, v1 = j["vcpus"]
    assert (v0["evtchn_upcall_pending"], v0["evtchn_upcall_mask"], v0["selector_words"]) == (1, 0, [0, 1])
    assert v0["evtchn_pending_sel"] == 3 and v0["scan"] == {"word": 0, "bit": 11}
    # word 0 from bit 11, word 1, then word 0 again whole: Linux's round robin
    assert v0["next_upcall"] == [65, 70, 3, 10]
    assert (v1["selector_words"], v1["next_upcall"]) == ([1], [other])
    flags = {p["port"]: (pms(p), p["vcpu"]) for p in j["ports"]}
    assert flags[3] == ("P-S", 0) and flags[5] == ("PMS", 0) and flags[other] == ("P-S", 1) and flags[4] == ("--S", 0)
    assert "priority" not in j["ports"][0] and j["ports"][0]["state"] and len(ports) == 70


def test_fifo_json_says_its_abi_and_is_otherwise_unchanged(host):
    state, h = host
    j = build_dump(image(h, 0), 0, "sim").as_dict()
    assert j["abi"] == "FIFO" and "event_array_pages" in j and "ports" in j and "ports_with_bits" not in j


def test_text_view(host, monkeypatch, capsys):
    state, h = host
    p = h.bind_ipi(1, 1, 0)
    h.send(1, 1, p)
    monkeypatch.setenv("XENEVT_STATE", state)
    assert main(["-d", "1", "dump"]) == 0
    out = capsys.readouterr().out
    assert "domain 1: 2-level ABI (shared_info's bitmaps), ports 0..1023 (limit: port 1023)" in out
    assert "vCPU 0: evtchn_upcall_pending 1, evtchn_upcall_mask 0, evtchn_pending_sel 0x0000000000000001 " \
           "[words 0]" in out
    assert f"next upcall delivers: {p} (resuming at word 0 bit 0)" in out
    assert main(["-d", "1", "dump", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["domains"][0]["vcpus"][0]["next_upcall"] == [p]


def test_impossible_vcpu_info_and_scan_are_warned_not_followed(host):
    state, h = host
    mem = image(h)
    set_upcall(mem, 0, 7)
    mem.l2_scan(1)[0] = 99
    d = build_dump(mem, 1, "x")
    assert any("evtchn_upcall_pending is 0x07" in w for w in d.warnings)
    assert any("vCPU 1: Linux's scan position is word 99 bit 0" in w for w in d.warnings)
    assert d.vcpus[1].next_upcall is None


# --- raw files ------------------------------------------------------------------------------------------------
def as_version_1(data: bytes) -> bytes:
    """A FIFO file as xenevt wrote it before 2-level: version 1, no abi field (the bodies are the same)."""
    out = bytearray(data[:-CRC.size])
    struct.pack_into("<I", out, 8, 1)
    out[HEADER2_AT:HEADER_SIZE] = bytes(HEADER_SIZE - HEADER2_AT)
    return bytes(out) + CRC.pack(zlib.crc32(out))


def refit(data: bytes) -> bytes:
    return data[:-CRC.size] + CRC.pack(zlib.crc32(data[:-CRC.size]))


def test_raw_v2_keeps_2_level_state_and_v1_fifo_files_still_load(host, tmp_path):
    state, h = host
    for p in ports_on(h, 3, 1):
        h.send(1, 1, p)
    mem = image(h)
    live = build_dump(mem, 1, "sim", channels=chans(h)).as_dict()
    raw = decode(encode(mem, 1, "sim domain 1"), "x.raw")
    assert raw.version == 2 and raw.vcpu_known == [True, True] and raw.has_channels
    again = build_dump(raw.mem, 1, "sim", channels=raw.channels(), vcpu_known=raw.vcpu_known).as_dict()
    assert again["vcpus"] == live["vcpus"] and again["ports"] == live["ports"]
    # without the channel table: Linux's CPU masks still say which vCPU each port is on
    raw = decode(encode(mem, 1, "k", channels=False), "x.raw")
    bare = build_dump(raw.mem, 1, "k", vcpu_known=raw.vcpu_known).as_dict()
    assert bare["vcpus"] == live["vcpus"] and [p["vcpu"] for p in bare["ports"]] == [1, 1, 1]
    fifo = image(h, 0)
    v1 = decode(as_version_1(encode(fifo, 0, "sim domain 0")), "old.raw")
    assert v1.version == 1 and v1.vcpu_known is None
    assert build_dump(v1.mem, 0, "x").as_dict()["vcpus"] == build_dump(fifo, 0, "x").as_dict()["vcpus"]


@pytest.mark.parametrize("at,value,message", [
    (8, 3, "unsupported version 3 at offset 0x8"),
    (HEADER2_AT, 7, "offset 0x68: field abi: 7 is neither 0 (2-level) nor 1 (FIFO)"),
    (HEADER2_AT + 4, 1, "offset 0x6c: field reserved: not zero"),
    (20, 1, "event-array page count 1 at offset 20: a 2-level dump has none (0)"),
    (28, 5000, "channel count 5000 out of range 2..4096 at offset 28"),
    (HEADER_SIZE + 4096, 2, "offset 0x1080: field vcpu[0].known: 2 is not 0 or 1"),
    (HEADER_SIZE + 4096 + 4, 1, "offset 0x1084: field vcpu[0].reserved: 1 is not 0"),
    (HEADER_SIZE + 4096 + 2 * 72, 64, "offset 0x1110: field current_word_idx[0]: 64 out of range 0..63"),
    (HEADER_SIZE + 4096 + 2 * 72 + 520 + 4, 99, "offset 0x131c: field current_bit_idx[1]: 99 out of range 0..63"),
])
def test_raw_v2_every_bad_field_is_named(host, at, value, message):
    state, h = host
    data = bytearray(encode(image(h), 1, "sim"))
    struct.pack_into("<I", data, at, value)
    with pytest.raises(DumpFileError, match="^" + re.escape(f"dump file x.raw: {message}")):
        decode(refit(bytes(data)), "x.raw")


def test_raw_v2_channel_count_needs_the_channels_flag(host):
    state, h = host
    data = bytearray(encode(image(h), 1, "sim", channels=False))
    struct.pack_into("<I", data, 28, 5)
    with pytest.raises(DumpFileError, match="channel count 5 at offset 28 without the CHANNELS flag"):
        decode(refit(bytes(data)), "x.raw")


def _loopback_masked(h) -> int:
    """A loopback channel of domain 1 with its receiving end masked and an event sent: pending and masked (not an
    IPI: one of those resting masked is Linux's PV-spinlock kicker, info only)."""
    p = h.alloc_unbound(1, 1, 1)
    q = h.bind_interdomain(1, 1, 1, p)
    h.mask(1, 1, p)
    h.send(1, 1, q)
    return p


def test_cli_saves_and_reads_a_2_level_dump(host, tmp_path, monkeypatch, capsys):
    state, h = host
    p = _loopback_masked(h)
    monkeypatch.setenv("XENEVT_STATE", state)
    path = tmp_path / "d1.raw"
    assert main(["-d", "1", "dump", "--raw", str(path)]) == 0
    assert "saved the 2-level state of domain 1 (shared_info and 2 vcpu_info(s))" in capsys.readouterr().out
    assert main(["--json", "-d", "1", "dump"]) == 0
    (live,) = json.loads(capsys.readouterr().out)["domains"]
    assert main(["--json", "dump", "--from", str(path)]) == 0
    (saved,) = json.loads(capsys.readouterr().out)["domains"]
    assert saved["ports"] == live["ports"] and saved["vcpus"] == live["vcpus"] and saved["abi"] == "2-level"
    assert main(["doctor", "--from", str(path), "--json"]) == 3
    found = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["rule"], f["ports"]) for f in found] == [("pending-masked", [p])]


# --- this kernel (kcore) ------------------------------------------------------------------------------------
def test_self_on_a_2_level_kernel_follows_xen_vcpu_not_the_stale_slot(host, tmp_path):
    state, h = host
    a, b = h.bind_ipi(1, 1, 0), h.bind_ipi(1, 1, 1)
    h.send(1, 1, a)
    h.send(1, 1, b)
    mem = image(h)
    mem.l2_scan(1)[0], mem.l2_scan(1)[1] = 0, 5
    mem2, what, known = read_self_image(*kcore_writer.write(mem, tmp_path))
    assert "2-level ABI, 2 CPU(s), 2 vcpu_info(s) read" in what and known == [True, True]
    want, got = build_dump(mem, 1, "x").as_dict(), build_dump(mem2, 1, "x").as_dict()
    assert got["vcpus"] == want["vcpus"] and got["vcpus"][1]["scan"] == {"word": 0, "bit": 5}
    assert [(p["port"], pms(p), p["vcpu"]) for p in got["ports"]] == [(a, "P-S", 0), (b, "P-S", 1)]


def test_self_vcpu_in_shared_info_or_missing(host, tmp_path):
    state, h = host
    h.send(1, 1, h.bind_ipi(1, 1, 0))
    mem = image(h)
    mem2, _, known = read_self_image(*kcore_writer.write(mem, tmp_path, in_shared=(0,), no_vcpu=(1,)))
    d = build_dump(mem2, 1, "x", vcpu_known=known).as_dict()
    assert known == [True, False] and d["vcpus"][0]["selector_words"] == [0]
    assert d["vcpus"][1] == {"vcpu": 1, "vcpu_info_known": False, "scan": {"word": 0, "bit": 0}}


def test_self_2_level_symbols_missing(host, tmp_path):
    state, h = host
    with pytest.raises(KernelReadError, match="uses the 2-level ABI but xen_vcpu not in"):
        read_self_image(*kcore_writer.write(image(h), tmp_path, drop_symbol="xen_vcpu"))


def test_cli_dump_self_2_level_and_its_raw_file(host, tmp_path, capsys):
    state, h = host
    h.send(1, 1, h.bind_ipi(1, 1, 1))
    core, syms, cpus = kcore_writer.write(image(h), tmp_path)
    args = ["dump", "--self", "--kcore", core, "--kallsyms", syms, "--cpus-file", cpus]
    assert main(args + ["--json"]) == 0
    (live,) = json.loads(capsys.readouterr().out)["domains"]
    assert live["abi"] == "2-level" and live["vcpus"][1]["next_upcall"] == [1]
    assert main(args + ["--raw", str(tmp_path / "self.raw")]) == 0
    capsys.readouterr()
    assert main(["dump", "--from", str(tmp_path / "self.raw"), "--json"]) == 0
    (saved,) = json.loads(capsys.readouterr().out)["domains"]
    assert saved["vcpus"] == live["vcpus"] and saved["ports"] == live["ports"]


# --- frames mapped through privcmd -------------------------------------------------------------------------
class FakeXen:
    """A backend whose privcmd mappings are a 2-level image's pages: the shared_info frame, and one page per
    vCPU holding its registered vcpu_info at offset 0x40."""

    name = "fake"
    SHARED = 0x5000

    def __init__(self, mem: DomainMemory, statuses: dict):
        self.mem, self.statuses = mem, statuses

    def shared_info_frame(self, domain):
        return self.SHARED, self.mem.nr_vcpus

    def map_frames(self, domain, gfns):
        at = self.mem.geometry.l2_offset
        out = []
        for g in gfns:
            if g == self.SHARED:
                out.append(bytes(self.mem.buffer[at: at + 4096]))
            else:
                v = g - 0x6000
                page = bytearray(4096)
                o = self.mem.geometry.vcpu_info_offset(v)
                page[0x40: 0x40 + VCPU_INFO_SIZE] = self.mem.buffer[o: o + VCPU_INFO_SIZE]
                out.append(bytes(page))
        return out

    def channels(self, domain):
        return self.statuses


def test_frames_source_reads_shared_info_and_named_vcpu_infos(host):
    state, h = host
    a = h.bind_ipi(1, 1, 1)
    h.send(1, 1, a)
    b = FakeXen(image(h), chans(h))
    img = open_source(Ask(domain=1, shared_info="auto"), b).image()
    d = build_dump(img.mem, 1, img.source, channels=b.statuses, guest_known=img.guest_known,
                   vcpu_known=img.vcpu_known).as_dict()
    assert "shared_info frame 0x5000 and 0 vcpu_info frame(s)" in img.source
    assert [v["vcpu_info_known"] for v in d["vcpus"]] == [False, False]
    assert pms(d["ports"][0]) == "P-?" and d["ports"][0]["vcpu"] == 1
    img = open_source(Ask(domain=1, shared_info=0x5000, vcpu_infos=((0x6000, 0x40), (0x6001, 0x40))),
                      b).image()
    d = build_dump(img.mem, 1, img.source, channels=b.statuses, guest_known=False, vcpu_known=img.vcpu_known)
    assert d.vcpus[1].selector_words == [0] and d.vcpus[1].next_upcall == [a] and d.vcpus[1].scan is None
    assert d.ports[0].flags == "P-S"


def test_frames_source_without_a_way_to_find_shared_info(host, monkeypatch, capsys):
    state, h = host
    b = FakeXen(image(h), {})

    def cannot(domain):
        raise BackendUnavailable("this backend has no XEN_DOMCTL_getdomaininfo")

    b.shared_info_frame = cannot
    with pytest.raises(MemoryUnavailable, match="give it with --shared-info FRAME"):
        open_source(Ask(domain=1, shared_info="auto"), b).image()
    monkeypatch.setenv("XENEVT_STATE", state)
    assert main(["-d", "1", "dump", "--shared-info", "auto"]) == 0  # the simulator's backend reports its frame
    assert "2-level ABI" in capsys.readouterr().out
    assert main(["dump", "--vcpu-info", "1:64"]) == 2
    assert "--vcpu-info describes a 2-level mapping" in capsys.readouterr().err
    assert main(["dump", "--shared-info", "1", "--vcpu-info", "1:3"]) == 2
    assert "vcpu_info offset 3 is not 64-byte aligned" in capsys.readouterr().err
    assert main(["dump", "--shared-info", "1", "--gfn", "2"]) == 2


def test_frames_of_the_wrong_shape_are_named():
    with pytest.raises(FrameError, match="shared_info page has 10 bytes, not 4096"):
        from_shared_info(bytes(10), [None])
    with pytest.raises(FrameError, match="vcpu_info of vCPU 0 has 8 bytes, not 64"):
        from_shared_info(bytes(4096), [bytes(8)])
    with pytest.raises(FrameError, match="port mask of vCPU 0 has 3 bytes, not 512"):
        from_shared_info(bytes(4096), [None], cpu_masks=[bytes(3)])


def test_shared_info_offsets_are_xens():
    page = bytearray(4096)
    page[L2_PENDING] = 1 << 5      # port 5 pending
    page[L2_MASK + 8] = 1          # port 64 masked
    mem = from_shared_info(bytes(page), [None])
    assert mem.l2_bit("pending", 5) and mem.l2_bit("mask", 64) and not mem.l2_bit("pending", 64)


# --- doctor ------------------------------------------------------------------------------------------------
def examine(mem, h, prev=None, domid: int = 1):
    ev = Evidence("test")
    collect.add_dump(ev, build_dump(mem, domid, "t", channels=chans(h, domid), max_ports=min(mem.nr_chans, 4096)))
    if prev is not None:
        ev.taken_at = prev.taken_at + 10
    return ev, doctor.examine(ev, prev)


def rules(rep):
    return [(f.severity, f.rule, f.ports, f.vcpu) for f in rep.findings]


def test_doctor_is_silent_on_a_healthy_2_level_domain(host):
    state, h = host
    ps = ports_on(h, 5) + [h.bind_ipi(1, 1, 1)]
    for p in ps:
        h.send(1, 1, p)
    a = h.alloc_unbound(1, 1, 0)
    _, rep = examine(image(h), h)
    assert rep.findings == [] and rep.verdict == "healthy" and a


def test_doctor_pending_and_masked(host):
    state, h = host
    p = _loopback_masked(h)
    ev, rep = examine(image(h), h)
    assert [r for r in rules(rep) if r[2] == [p]] == [("warning", "pending-masked", [p], None)]
    _, rep = examine(image(h), h, prev=Evidence.from_json(ev.to_json()))
    assert [r for r in rules(rep) if r[2] == [p]] == [("error", "pending-masked", [p], None)]


def test_doctor_pending_unmasked_with_the_selector_bit_clear(host):
    state, h = host
    p = h.bind_ipi(1, 1, 1)
    h.send(1, 1, p)
    mem = image(h)
    set_sel(mem, 1, 0)             # the selector write lost: the upcall will not scan the word
    ev, rep = examine(mem, h)
    f = rep.findings[0]
    assert rules(rep) == [("warning", "pending-not-queued", [p], 1)]
    assert f.title == f"port {p} is pending and unmasked but the selector bit of its word (0) is clear on vCPU 1"
    assert "confirm with --since" in f.evidence and "Linux's 2-level upcall" in f.advice
    _, rep = examine(mem, h, prev=Evidence.from_json(ev.to_json()))
    assert rules(rep) == [("error", "pending-not-queued", [p], 1)]


def test_doctor_pending_unmasked_with_upcall_pending_clear(host):
    state, h = host
    p = h.bind_ipi(1, 1, 0)
    h.send(1, 1, p)
    mem = image(h)
    set_upcall(mem, 0, 0)
    _, rep = examine(mem, h)
    assert rules(rep) == [("warning", "pending-not-queued", [p], 0)]
    assert "vCPU 0's evtchn_upcall_pending is clear (its selector bit 0 is set)" in rep.findings[0].title


def test_doctor_selector_bits_with_nothing_under_them(host):
    state, h = host
    p = h.bind_ipi(1, 1, 0)
    h.send(1, 1, p)
    mem = image(h)
    set_sel(mem, 0, 1 | 1 << 9)    # word 9 holds nothing
    l2_bit(mem, "pending", p, False)   # and word 0's event was cleared before the upcall
    _, rep = examine(mem, h)
    assert rules(rep) == [("info", "selector-without-pending", [], 0)]
    assert rep.findings[0].title == ("vCPU 0: selector bit(s) 0, 9 set with no pending, unmasked port of this "
                                     "vCPU under them") and rep.verdict == "healthy"


def test_doctor_fifo_rules_leave_2_level_ports_alone(host):
    """The simulator's EVTCHNOP_status says LINKED clear for every 2-level port: no 'not LINKED' finding."""
    state, h = host
    p = h.bind_ipi(1, 1, 0)
    h.send(1, 1, p)
    b_ev = collect.from_backend(_backend(state), [1])
    rep = doctor.examine(b_ev)
    assert rep.findings == [] and b_ev.domains[1].abi == "2-level"
    assert b_ev.domains[1].vcpus[0].control_block is None


def _backend(state):
    from xenevt.backend import select_backend

    return select_backend("sim", state_dir=state, read_only=True)


def facts(n_ports: int, max_ports: int | None) -> Evidence:
    ev = Evidence("t")
    dom = ev.domain(4)
    dom.abi, dom.max_ports = "2-level", max_ports
    dom.vcpus[0] = VcpuFacts(0, upcall_pending=False, upcall_mask=False, selector_words=[])
    for port in range(1, n_ports + 1):
        dom.ports[port] = PortFacts(port, "ipi", vcpu=0, pending=False, masked=False, selector=False)
    return ev


@pytest.mark.parametrize("used,max_ports,expect", [
    (3000, None, []),
    (3700, None, [("warning", "ports-near-limit", "3700 ports in use, of the 2-level ABI's 4096 ports for a 64-bit "
                   "guest (port 0 is never used)")]),
    (3700, 131072, [("warning", "ports-near-limit", "3700 ports in use, of the 2-level ABI's 4096 ports")]),
    (4095, 131072, [("error", "ports-exhausted", "4095 ports in use, of the 2-level ABI's 4096 ports")]),
    (60, 64, [("warning", "ports-near-limit", "60 ports in use, limit 63")]),
])
def test_doctor_2_level_port_limit(used, max_ports, expect):
    rep = doctor.examine(facts(used, max_ports))
    got = [(f.severity, f.rule, f.evidence) for f in rep.findings]
    assert [(s, r) for s, r, _ in got] == [(s, r) for s, r, _ in expect]
    for (_, _, evidence), (_, _, want) in zip(got, expect, strict=True):
        assert evidence.startswith(want)
    if expect and max_ports != 64:
        assert "no setting gives more than 4096 ports" in rep.findings[0].advice


def test_doctor_2_level_snapshot_round_trip(host):
    state, h = host
    p = h.bind_ipi(1, 1, 1)
    h.send(1, 1, p)
    ev, _ = examine(image(h), h)
    back = Evidence.from_json(ev.to_json())
    v = back.domains[1].vcpus[1]
    assert (v.upcall_pending, v.upcall_mask, v.selector_words) == (True, False, [0])
    assert back.domains[1].ports[p].selector is True and isinstance(back.domains[1], DomainFacts)


def test_a_simulated_linux_guest_on_2_level(tmp_path, monkeypatch, capsys):
    """`sim init --abi 2l`: Linux masked every port at boot and unmasks what it binds; after one upcall its
    scan resumes past the port it delivered, so the next event on a lower port comes on the second pass."""
    state = str(tmp_path / "s")
    create_host(state, abi="2l")
    with SimHost(state) as h:
        a = h.alloc_unbound(1, 1, 0)
        b = h.bind_interdomain(0, 0, 1, a)
        h.send(0, 0, b)
        assert h.consume(1, 0, 10, timeout=0) == [a]
        h.send(0, 0, b)
    monkeypatch.setenv("XENEVT_STATE", state)
    assert main(["--json", "-d", "1", "dump"]) == 0
    (j,) = json.loads(capsys.readouterr().out)["domains"]
    assert j["abi"] == "2-level" and j["plain_masked_ports"] == abi.EVTCHN_2L_NR_CHANNELS - 1
    assert j["vcpus"][0]["scan"] == {"word": 0, "bit": a + 1} and j["vcpus"][0]["next_upcall"] == [a]
    assert main(["doctor"]) == 0
    assert "doctor: healthy: no findings" in capsys.readouterr().out


def test_xen_backend_asks_getdomaininfo_for_the_shared_info_frame(tmp_path):
    """`--backend xen` over the simulator's libraries: the frame comes from xc_domain_getinfolist's record, then
    privcmd maps it; the bitmaps read so equal the simulator's own dump of the domain."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "xenevt", "sim", "libpath"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(r.stderr.strip())
    create_host(str(tmp_path), abi="2l")
    env = dict(os.environ, LD_LIBRARY_PATH=r.stdout.strip(), XENEVT_STATE=str(tmp_path), XENEVT_SELF_DOMID="0")
    r = subprocess.run([sys.executable, "-m", "xenevt", "--backend", "xen", "-d", "1", "dump", "--shared-info", "auto"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mapped = subprocess.run([sys.executable, "-m", "xenevt", "--backend", "xen", "--json", "-d", "1", "dump",
                             "--shared-info", "auto"], env=env, capture_output=True, text=True, timeout=60)
    own = subprocess.run([sys.executable, "-m", "xenevt", "--json", "-d", "1", "dump"], env=env,
                         capture_output=True, text=True, timeout=60)
    import json

    (a,), (b,) = json.loads(mapped.stdout)["domains"], json.loads(own.stdout)["domains"]
    assert a["abi"] == b["abi"] == "2-level"
    assert [(p["port"], p["flags"]) for p in a["ports"]] == [(p["port"], p["flags"]) for p in b["ports"]]
