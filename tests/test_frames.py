"""Dumps from frames: this kernel's memory (--self, via kcore) and privcmd mappings (--gfn)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from tests import kcore_writer, writer
from xenevt.cli import main
from xenevt.dump import build_dump
from xenevt.errors import BackendUnavailable
from xenevt.memory.kcore import KernelReadError, parse_cpu_list, read_self
from xenevt.sim.host import SimHost, create_host


def guest_mid_consume():
    """Two vCPUs; vCPU 0 has queue 7 = 5 -> 9 -> 12 with Linux part-way through it (local head 9),
    queue 2 = 3 untouched; vCPU 1 has a corrupt chain 20 -> 5000 (past the array)."""
    mem = writer.domain(nr_vcpus=2, pages=2, ports={
        5: "P->9", 9: "PL->12", 12: "PL", 3: "PL", 20: "PL->5000", 7: "PM"},
        heads={(0, 7): 5, (0, 2): 3, (1, 4): 20}, ready={0: (1 << 7) | (1 << 2), 1: 1 << 4})
    mem.guest(0)[1 + 7] = 9  # Linux's cpu_queue: consumed 5, next is 9
    return mem


def dump_of(mem, guest=True):
    return build_dump(mem, 0, "x", guest_known=guest).as_dict()


def test_self_reads_what_the_kernel_holds(tmp_path):
    src = guest_mid_consume()
    mem, what = read_self(*kcore_writer.write(src, tmp_path))
    assert "2 event-array page(s), 2 CPU(s)" in what
    a, b = dump_of(src), dump_of(mem)
    assert a["vcpus"] == b["vcpus"] and a["ports"] == b["ports"]
    q = {(q["vcpu"], q["priority"]): q for v in b["vcpus"] for q in v["queues"]}
    assert q[(0, 7)]["chain"] == [9, 12] and q[(0, 7)]["head_from"] == "guest"
    assert q[(0, 2)]["chain"] == [3]
    assert (q[(1, 4)]["status"], q[(1, 4)]["bad_port"]) == ("range", 5000)


def test_self_cpu_without_control_block(tmp_path):
    """The reviewer's CPU-offline question: a CPU that has no control block is shown as such."""
    mem, _ = read_self(*kcore_writer.write(guest_mid_consume(), tmp_path, offline=(1,)))
    d = dump_of(mem)
    assert d["vcpus"][1]["control_block"] is False and d["vcpus"][0]["control_block"] is True


@pytest.mark.parametrize("kw,error,message", [
    ({"two_level": True}, KernelReadError, "uses the 2-level ABI but HYPERVISOR_shared_info"),
    ({"hide": True}, BackendUnavailable, "hides kernel addresses (kptr_restrict): run as root"),
    ({"drop_symbol": "cpu_queue"}, KernelReadError, "cpu_queue not in"),
    ({"cut_segment": True}, KernelReadError, "event-array page 0 at 0xffff888010000000 is not in"),
])
def test_self_refuses_with_a_reason(tmp_path, kw, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_self(*kcore_writer.write(guest_mid_consume(), tmp_path, **kw))


def test_self_rejects_a_file_that_is_not_a_core(tmp_path):
    core, syms, cpus = kcore_writer.write(guest_mid_consume(), tmp_path)
    open(core, "wb").write(b"not an elf at all" * 10)
    with pytest.raises(KernelReadError, match="not a 64-bit little-endian ELF core"):
        read_self(core, syms, cpus)
    with pytest.raises(BackendUnavailable, match="cannot read kcore /nonexistent: no such file"):
        read_self("/nonexistent", syms, cpus)


def test_cpu_lists():
    assert parse_cpu_list("0-3,6\n") == [0, 1, 2, 3, 6]
    assert parse_cpu_list("0") == [0]
    with pytest.raises(KernelReadError):
        parse_cpu_list("zero")


def test_cpu_lists_are_bounded_and_ascii():
    """A crafted list never costs more than Linux's largest NR_CPUS entries, and only ASCII digits count."""
    for text in ("0-4294967295", "0-99999999", "\u00b9", "\u0663", "1_0", "3-1", "-1", "0-8192"):
        with pytest.raises(KernelReadError):
            parse_cpu_list(text)
    assert parse_cpu_list("0-8191")[-1] == 8191


def test_self_rejects_crafted_cores_with_one_line(tmp_path):
    mem = guest_mid_consume()
    core, syms, cpus = kcore_writer.write(mem, tmp_path)
    data = bytearray(open(core, "rb").read())
    struct.pack_into("<Q", data, 32, 1 << 63)  # e_phoff past what lseek takes
    open(core, "wb").write(data)
    with pytest.raises(KernelReadError, match="program header table truncated"):
        read_self(core, syms, cpus)
    core, syms, cpus = kcore_writer.write(mem, tmp_path)
    data = bytearray(open(core, "rb").read())
    struct.pack_into("<Q", data, 64 + 8, 1 << 63)  # the first segment's file offset
    open(core, "wb").write(data)
    with pytest.raises(KernelReadError, match="file offset out of range"):
        read_self(core, syms, cpus)
    core, syms, _ = kcore_writer.write(mem, tmp_path)
    open(cpus, "w").write("0,300\n")
    with pytest.raises(KernelReadError, match="CPU 300 is possible; this reader takes CPU ids 0..255"):
        read_self(core, syms, cpus)
    open(cpus, "wb").write(b"0-1\xff\n")
    with pytest.raises(KernelReadError, match="cannot parse CPU list"):
        read_self(core, syms, cpus)
    text = open(syms).read().replace("ffffffff82000000", "ffffffff8200000\u0663")
    open(syms, "w").write(text)
    with pytest.raises(KernelReadError, match="not in kallsyms format"):
        read_self(core, syms, cpus)


def test_cli_dump_self(tmp_path, capsys):
    core, syms, cpus = kcore_writer.write(guest_mid_consume(), tmp_path)
    args = ["dump", "--self", "--kcore", core, "--kallsyms", syms, "--cpus-file", cpus]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "head 9 (guest): 9 -> 12  [end]" in out and "LINK/head 5000 has no event word" in out
    assert main(args + ["--raw", str(tmp_path / "self.raw")]) == 0
    capsys.readouterr()
    assert main(["dump", "--from", str(tmp_path / "self.raw"), "--json"]) == 0
    (saved,) = json.loads(capsys.readouterr().out)["domains"]
    assert saved["vcpus"] == dump_of(read_self(core, syms, cpus)[0])["vcpus"]
    open(core, "wb").write(b"")
    assert main(args) == 1
    assert capsys.readouterr().err.startswith("xenevt: ") and True


def test_cli_dump_self_on_this_machine_fails_in_one_line(capsys):
    """No Xen here: whatever is missing (the FIFO symbols, root, kcore), one line and exit 1."""
    if os.path.exists("/dev/xen/evtchn"):
        pytest.skip("this host runs Xen")
    rc = main(["dump", "--self"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("xenevt: ") and err.count("\n") == 1


def test_gfn_dump_equals_the_backend_view(tmp_path, monkeypatch, capsys):
    state = str(tmp_path / "s")
    create_host(state)
    monkeypatch.setenv("XENEVT_STATE", state)
    with SimHost(state) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, p1)
        h.send(1, 1, p1)
        gfns = h.gfns(0)
    assert main(["--json", "dump"]) == 0
    (live,) = json.loads(capsys.readouterr().out)["domains"]
    cbs = [f"{g}:{o}" for g, o in gfns["control_blocks"].values()]
    args = ["--json", "dump"] + [f"--gfn={g:#x}" for g in gfns["event_array"]] + [f"--control={c}" for c in cbs]
    assert main(args) == 0
    (mapped,) = json.loads(capsys.readouterr().out)["domains"]
    assert mapped["vcpus"][0]["queues"] == [dict(q, head_from="control block") for q in live["vcpus"][0]["queues"]]
    assert [w["port"] for w in mapped["ports"]] == [w["port"] for w in live["ports"]]
    assert main(["dump", "--gfn", "0x123"]) == 1
    assert "cannot map frames of domain 0: frame 0x123 is not an event-array, control-block or shared_info page" in (
        capsys.readouterr().err)
    assert main(["dump", "--control", "5:3", "--gfn", "1"]) == 2
    assert "not 8-byte aligned" in capsys.readouterr().err
    assert main(["dump", "--self", "--gfn", "1"]) == 2
    assert main(["--as", "1", "-d", "0", "dump", "--gfn", hex(gfns["event_array"][0])]) == 1  # (--as alone: dom1)
    assert "(EPERM)" in capsys.readouterr().err


def test_frames_of_the_wrong_shape_are_named():
    from xenevt.dump.frames import FrameError, from_frames

    with pytest.raises(FrameError, match="event-array page 1 has 100 bytes, not 4096"):
        from_frames([bytes(4096), bytes(100)], [None])
    with pytest.raises(FrameError, match="control block of vCPU 0 has 8 bytes, not 72"):
        from_frames([bytes(4096)], [bytes(8)])
    with pytest.raises(FrameError, match="129 event-array pages"):
        from_frames([bytes(4096)] * 129, [None])


def test_cli_bad_frame_numbers(capsys):
    assert main(["dump", "--gfn", "zz"]) == 2
    assert "frame number 'zz' is not a number" in capsys.readouterr().err
    assert main(["dump", "--gfn", "1", "--control", "1"]) == 2
    assert "'1' is not GFN:OFFSET" in capsys.readouterr().err


def test_a_kernel_whose_upcall_moved_between_two_reads_is_read_as_frames_from_outside(tmp_path, monkeypatch):
    """A running kernel's upcall takes no lock: a read inside one sees LINKs cleared beside local heads not yet
    moved on.  Read twice, Linux's per-CPU state must hold still for its own heads to be trusted."""
    from xenevt.memory import kcore

    src = kcore.KcoreSource(*kcore_writer.write(guest_mid_consume(), tmp_path))
    assert src.image().guest_known
    real, reads = kcore.read_image, []

    def moving(*a, **kw):
        mem, what, known = real(*a, **kw)
        reads.append(mem)
        if len(reads) == 1:  # the first read caught an upcall that then moved its local head on
            g = mem.guest(0)
            g[1 + 7] = g[1 + 7] + 1
        return mem, what, known

    monkeypatch.setattr(kcore, "read_image", moving)
    img = src.image()
    assert len(reads) == 2 and not img.guest_known and img.mem.settled is False
    assert build_dump(img.mem, 0, img.source, guest_known=img.guest_known).vcpus[0].guest_heads is None
