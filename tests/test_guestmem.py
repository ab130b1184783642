"""A guest's own kernel read from outside it: live from dom0 (privcmd + its page tables + its System.map) and
post mortem from an ``xl dump-core`` file, each equal to what the guest's ``dump --self`` reads of itself."""

from __future__ import annotations

import json
import struct

import pytest

from tests import guestmem_writer as gw
from tests import kcore_writer
from tests.fuzz.t_kcore import _guest, _guest_2l
from xenevt import abi
from xenevt.cli import main
from xenevt.dump import build_dump
from xenevt.errors import BackendUnavailable
from xenevt.memory import Ask, DumpCoreSource, GuestKernelSource, open_source
from xenevt.memory.dumpcore import DumpCore
from xenevt.memory.foreign import read_system_map
from xenevt.memory.kcore import read_self_image
from xenevt.memory.linux import KernelReadError

SLIDE = 0x1A400000  # a KASLR slide: 2 MiB steps


def view(mem, known=None) -> dict:
    d = build_dump(mem, 5, "x", guest_known=True, vcpu_known=known).as_dict()
    d.pop("source")
    return d


def self_view(mem, tmp_path) -> dict:
    """What the guest's own ``dump --self`` reads (kcore and kallsyms of the same kernel)."""
    folder = tmp_path / "self"
    folder.mkdir(exist_ok=True)
    m, _, known = read_self_image(*kcore_writer.write(mem, folder))
    return view(m, known)


GUESTS = {"fifo": _guest, "2-level": _guest_2l}


@pytest.mark.parametrize("abi_name", sorted(GUESTS))
@pytest.mark.parametrize("pv,slide", [(False, SLIDE), (False, 0), (True, 0)], ids=["hvm-kaslr", "hvm", "pv"])
def test_live_from_dom0_equals_the_guests_own_view(tmp_path, abi_name, pv, slide):
    mem = GUESTS[abi_name]()
    g = gw.GuestImage(mem, slide=slide, pv=pv)
    img = open_source(Ask(domain=5, system_map=g.system_map(tmp_path / "System.map")), gw.FakeXen(g)).image()
    assert isinstance(img.mem, type(mem)) and img.domain == 5 and img.guest_known
    assert view(img.mem, img.vcpu_known) == self_view(mem, tmp_path)
    assert ("no KASLR offset" if not slide else f"KASLR offset {slide:#x}") in img.source
    assert img.abi == ("FIFO" if abi_name == "fifo" else "2-level")


@pytest.mark.parametrize("abi_name", sorted(GUESTS))
@pytest.mark.parametrize("pv,slide", [(False, SLIDE), (True, 0)], ids=["hvm-kaslr", "pv"])
def test_dump_core_equals_the_guests_own_view(tmp_path, abi_name, pv, slide):
    mem = GUESTS[abi_name]()
    g = gw.GuestImage(mem, slide=slide, pv=pv)
    src = DumpCoreSource(g.dump_core(tmp_path / "core"), g.system_map(tmp_path / "System.map"), domain=5)
    img = src.image()
    assert view(img.mem, img.vcpu_known) == self_view(mem, tmp_path)
    assert ("PV" if pv else "HVM") in img.source
    if pv and abi_name == "2-level":  # shared_info is Xen's page, not guest RAM: the file's .xen_shared_info
        assert "shared_info from .xen_shared_info" in img.source


def test_kaslr_offset_given_or_wrong(tmp_path):
    g = gw.GuestImage(_guest(), slide=SLIDE)
    smap = g.system_map(tmp_path / "System.map")
    fake = gw.FakeXen(g)
    img = GuestKernelSource(fake, 5, smap, kaslr_offset=SLIDE).image()
    assert f"KASLR offset {SLIDE:#x} as given" in img.source
    with pytest.raises(KernelReadError, match=r"does not match domain 5's kernel \(vCPUs 0-1\) at --kaslr-offset "
                                              r"0x200000: linux_banner does not read 'Linux version' there"):
        GuestKernelSource(fake, 5, smap, kaslr_offset=0x200000).image()


def test_a_system_map_of_another_kernel_is_refused_in_one_line(tmp_path):
    g = gw.GuestImage(_guest(), slide=SLIDE)
    other = gw.GuestImage(_guest(), slide=SLIDE, no_banner=True)
    other.symbols.append(("linux_banner", gw.TEXT + 0x800, False))  # where another build keeps its banner
    smap = other.system_map(tmp_path / "other.map")
    with pytest.raises(KernelReadError) as e:
        GuestKernelSource(gw.FakeXen(g), 5, smap).image()
    assert "\n" not in str(e.value) and "is it this guest's System.map? (else give --kaslr-offset)" in str(e.value)
    with pytest.raises(KernelReadError, match="does not match the kernel in"):
        DumpCoreSource(g.dump_core(tmp_path / "core"), smap).image()


def test_without_a_banner_the_slide_is_checked_by_evtchn_ops(tmp_path):
    g = gw.GuestImage(_guest(), slide=SLIDE, no_banner=True)
    img = GuestKernelSource(gw.FakeXen(g), 5, g.system_map(tmp_path / "System.map")).image()
    assert f"KASLR offset {SLIDE:#x}" in img.source


def test_a_vcpu_in_user_mode_under_pti(tmp_path):
    """vCPU 0's CR3 is the user half of its PGD pair: live, the next vCPU's tables are used; in a dump-core
    file, the kernel half 4 KiB below."""
    mem = _guest()
    g = gw.GuestImage(mem, slide=SLIDE, user_mode=(0, 1))
    with pytest.raises(KernelReadError, match=r"vCPUs 0-1"):
        GuestKernelSource(gw.FakeXen(g), 5, g.system_map(tmp_path / "System.map")).image()
    g = gw.GuestImage(mem, slide=SLIDE, user_mode=(0,))
    img = GuestKernelSource(gw.FakeXen(g), 5, g.system_map(tmp_path / "System.map")).image()
    assert view(img.mem) == self_view(mem, tmp_path)
    g = gw.GuestImage(mem, slide=SLIDE, user_mode=(0, 1))
    img = DumpCoreSource(g.dump_core(tmp_path / "core"), g.system_map(tmp_path / "System.map")).image()
    assert view(img.mem) == self_view(mem, tmp_path)


def test_the_simulator_has_no_guest_kernel(tmp_path, capsys):
    from xenevt.backend.sim import SimBackend
    from xenevt.sim.host import create_host

    state = str(tmp_path / "s")
    create_host(state)
    smap = gw.GuestImage(_guest()).system_map(tmp_path / "System.map")
    b = SimBackend(state, read_only=True)
    try:
        with pytest.raises(BackendUnavailable, match="not available on the simulator"):
            GuestKernelSource(b, 1, smap).image()
    finally:
        b.shutdown()
    assert main(["--state", state, "dump", "-d", "1", "--system-map", smap]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not available on the simulator (it runs no guest kernel)" in err


def test_cli_dump_and_doctor_read_a_dump_core_file(tmp_path, capsys):
    mem = _guest()
    g = gw.GuestImage(mem, slide=SLIDE, pv=True)
    core, smap = g.dump_core(tmp_path / "core"), g.system_map(tmp_path / "System.map")
    assert main(["--json", "dump", "--dump-core", core, "--system-map", smap]) == 0
    (d,) = json.loads(capsys.readouterr().out)["domains"]
    assert d["source"].startswith(f"xl dump-core file {core} (PV") and d["abi"] == "FIFO"
    assert main(["dump", "--dump-core", core, "--system-map", smap]) == 0
    assert "xl dump-core file" in capsys.readouterr().out
    rc = main(["doctor", "--json", "--dump-core", core, "--system-map", smap])
    rep = json.loads(capsys.readouterr().out)
    assert rc in (0, 3, 4) and rep["source"] == f"xl dump-core {core}"
    raw = tmp_path / "guest.raw"
    assert main(["dump", "--dump-core", core, "--system-map", smap, "--raw", str(raw)]) == 0
    capsys.readouterr()
    assert main(["--json", "dump", "--from", str(raw)]) == 0
    (saved,) = json.loads(capsys.readouterr().out)["domains"]
    assert saved["vcpus"] == d["vcpus"] and saved["ports"] == d["ports"]


@pytest.mark.parametrize("args,text", [
    (["--dump-core", "c"], "--dump-core needs the guest kernel's symbols: give --system-map FILE"),
    (["--kaslr-offset", "0x200000"], "--kaslr-offset goes with --system-map"),
    (["--system-map", "m", "--self"], "pick one source"),
    (["--system-map", "m", "--kaslr-offset", "0x1000"], "KASLR offset 4096 is not 2097152-byte aligned"),
])
def test_cli_refuses_what_does_not_go_together(args, text, capsys):
    assert main(["dump", *args]) == 2
    assert text in capsys.readouterr().err


def test_cli_doctor_refuses_what_does_not_go_together(capsys):
    assert main(["doctor", "--system-map", "m"]) == 2
    assert "say which with one --domain" in capsys.readouterr().err
    assert main(["doctor", "--dump-core", "c"]) == 2
    assert "give --system-map FILE" in capsys.readouterr().err


# --- the dump-core reader's checks: one line naming the file, offset and field --------------------------------
def _corrupt(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _section(path, name):
    with DumpCore(path) as core:
        return core.sections[name]


@pytest.mark.parametrize("damage,text", [
    (lambda p: _corrupt(p, 18, struct.pack("<H", 3)), "offset 0x12, e_machine: 3: only x86-64 guests"),
    (lambda p: _corrupt(p, 16, struct.pack("<H", 2)), "offset 0x10, e_type: 2, not ET_CORE"),
    (lambda p: _corrupt(p, 60, struct.pack("<H", 900)), "e_shnum: 900 sections"),
    (lambda p: _corrupt(p, 40, struct.pack("<Q", 1 << 40)), "the section header table"),
    (lambda p: _corrupt(p, _section(p, ".xen_prstatus")[3] + 32, struct.pack("<Q", 7)),
     "sh_size of .xen_prstatus: 7 bytes, not 2 vCPU context(s) of 5168"),
    (lambda p: _corrupt(p, _section(p, ".xen_pages")[3] + 32, struct.pack("<Q", 1 << 50)),
     "sh_offset/sh_size of section"),
    (lambda p: _corrupt(p, _section(p, ".xen_pfn")[0] + 8, struct.pack("<Q", 0)), "must ascend"),
    (lambda p: _corrupt(p, _section(p, ".note.Xen")[0] + 32, struct.pack("<Q", 0x1234)), "xch_magic: 0x1234"),
    (lambda p: _corrupt(p, _section(p, ".note.Xen")[0] + 32 + 16, struct.pack("<Q", 1 << 40)),
     "xch_nr_pages"),
    (lambda p: _corrupt(p, _section(p, ".note.Xen")[0] + 32 + 8, struct.pack("<Q", 0)), "xch_nr_vcpus: 0"),
])
def test_dump_core_damage_is_one_line_naming_offset_and_field(tmp_path, damage, text):
    g = gw.GuestImage(_guest(), slide=SLIDE)
    core, smap = g.dump_core(tmp_path / "core"), g.system_map(tmp_path / "System.map")
    damage(core)
    with pytest.raises(KernelReadError) as e:
        DumpCoreSource(core, smap).image()
    assert text in str(e.value) and str(e.value).startswith(core) and "\n" not in str(e.value)


@pytest.mark.parametrize("drop", [".xen_pages", ".xen_pfn", ".note.Xen"])
def test_dump_core_without_a_section(tmp_path, drop):
    g = gw.GuestImage(_guest())
    core = g.dump_core(tmp_path / "core", drop_section=drop)
    with pytest.raises(KernelReadError, match=f"without {drop}|no {drop} section"):
        DumpCore(core)


def test_a_pv_2_level_dump_core_without_shared_info(tmp_path):
    g = gw.GuestImage(_guest_2l(), pv=True)
    core = g.dump_core(tmp_path / "core", no_shared=True)
    with pytest.raises(KernelReadError, match=r"the shared_info page \(HYPERVISOR_shared_info\) at 0xffffffffff5fc000 "
                                              r"is not mapped in .*core \(vCPU 0's page tables\)"):
        DumpCoreSource(core, g.system_map(tmp_path / "System.map")).image()


# --- symbols -------------------------------------------------------------------------------------------------
def test_system_map_lines_and_a_vmlinux_symbol_table(tmp_path):
    p = tmp_path / "System.map"
    p.write_text("ffffffff81000000 T _text\n0000000000012340 D cpu_queue\nffffffff81000040 D linux_banner\n")
    assert read_system_map(str(p)) == {"cpu_queue": 0x12340, "linux_banner": 0xFFFFFFFF81000040}
    p.write_text("ffffffff81000000 T _text\nnot a symbol line\n")
    with pytest.raises(KernelReadError, match=r"System.map, line 2: not a System.map line"):
        read_system_map(str(p))
    g = gw.GuestImage(_guest(), slide=SLIDE)
    v = g.vmlinux(tmp_path / "vmlinux")
    assert read_system_map(v) == read_system_map(g.system_map(tmp_path / "System.map"))
    img = GuestKernelSource(gw.FakeXen(g), 5, v).image()
    assert view(img.mem) == self_view(g.mem, tmp_path) and f"KASLR offset {SLIDE:#x}" in img.source
    data = bytearray(open(v, "rb").read())
    struct.pack_into("<H", data, 60, 0)
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(KernelReadError, match=r"bad, offset 58: bad section header table \(0 x 64 bytes\)"):
        read_system_map(str(tmp_path / "bad"))


def test_a_missing_system_map_is_one_line(tmp_path):
    with pytest.raises(BackendUnavailable, match=r"cannot read .*nope: no such file or directory"):
        GuestKernelSource(gw.FakeXen(gw.GuestImage(_guest())), 5, str(tmp_path / "nope")).image()


def test_2_level_limit_and_per_cpu_offsets(tmp_path):
    """Per-CPU symbols are offsets (never slid): every CPU's vcpu_info is found through __per_cpu_offset[]."""
    g = gw.GuestImage(_guest_2l(), slide=SLIDE)
    img = GuestKernelSource(gw.FakeXen(g), 5, g.system_map(tmp_path / "System.map")).image()
    assert img.vcpu_known == [True, True] and img.max_ports == abi.EVTCHN_2L_NR_CHANNELS


def test_the_xen_backend_over_the_simulators_library_says_it_cannot_walk(tmp_path):
    """The real binding's path (xc_translate_foreign_address through cffi) against libxenctrl-sim: one line."""
    import os
    import subprocess
    import sys

    from xenevt.sim.host import create_host

    r = subprocess.run([sys.executable, "-m", "xenevt", "sim", "libpath"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(r.stderr.strip())
    create_host(str(tmp_path / "s"))
    smap = gw.GuestImage(_guest()).system_map(tmp_path / "System.map")
    env = dict(os.environ, LD_LIBRARY_PATH=r.stdout.strip(), XENEVT_STATE=str(tmp_path / "s"), XENEVT_SELF_DOMID="0")
    r = subprocess.run([sys.executable, "-m", "xenevt", "--backend", "xen", "dump", "-d", "1", "--system-map", smap],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot walk a guest's page tables (EOPNOTSUPP: the simulator's library runs no guest kernel)" in r.stderr


def test_any_symbol_of_the_guest_kernel(tmp_path):
    """Both sources are memory sources like --self: a kernel symbol's bytes, at its run-time address."""
    g = gw.GuestImage(_guest(), slide=SLIDE)
    smap = g.system_map(tmp_path / "System.map")
    for src in (GuestKernelSource(gw.FakeXen(g), 5, smap), DumpCoreSource(g.dump_core(tmp_path / "core"), smap)):
        assert struct.unpack("<I", src.read_symbol("event_array_pages", 4)) == (2,)
        assert src.read_symbol("linux_banner", 13, offset=1) == b"inux version "
        with pytest.raises(KernelReadError, match="no_such_symbol is not in"):
            src.read_symbol("no_such_symbol", 8)
