"""The memory-source layer: the chooser picks one source per request, and each source gives the same image."""

from __future__ import annotations

import struct

import pytest

from tests import kcore_writer, writer
from xenevt import abi, memory
from xenevt.backend import select_backend
from xenevt.dump import build_dump
from xenevt.dump.rawfile import save_raw
from xenevt.memory import linux
from xenevt.memory.kcore import KernelReadError
from xenevt.sim.host import SimHost, create_host


@pytest.fixture
def sim(tmp_path):
    """A simulated host with an event queued on dom0 (interdomain from dom1), and its read-only backend."""
    state = str(tmp_path / "s")
    create_host(state)
    with SimHost(state) as h:
        p1 = h.alloc_unbound(1, 1, 0)
        h.bind_interdomain(0, 0, 1, p1)
        h.send(1, 1, p1)
        gfns = h.gfns(0)
    b = select_backend("sim", state_dir=state, read_only=True)
    yield b, gfns
    b.shutdown()


def guest():
    mem = writer.domain(nr_vcpus=2, pages=2, ports={5: "P->9", 9: "PL->12", 12: "PL", 3: "PL"},
                        heads={(0, 7): 5, (0, 2): 3}, ready={0: (1 << 7) | (1 << 2)})
    mem.guest(0)[1 + 7] = 9  # Linux part-way through queue 7
    return mem


def view(img, **kw):
    d = build_dump(img.mem, img.domain, img.source, guest_known=img.guest_known, **kw).as_dict()
    return d["vcpus"], d["ports"]


# --- the chooser ---------------------------------------------------------------------------------------------
def test_files_and_this_kernel_need_no_backend(tmp_path):
    """A saved file, this kernel and a dump-core file are read without one: the caller opens (or creates) no
    simulated host for them."""
    for ask in (memory.Ask(from_file="x.raw"), memory.Ask(self_kernel=True), memory.Ask(dump_core="c", system_map="m")):
        assert not ask.needs_backend
    assert isinstance(memory.open_source(memory.Ask(from_file="x.raw")), memory.RawFileSource)
    src = memory.open_source(memory.Ask(self_kernel=True, kcore="k", kallsyms="s", cpus_file="c"))
    assert isinstance(src, memory.KcoreSource) and (src.kcore, src.kallsyms, src.cpus_file) == ("k", "s", "c")


def test_frames_and_the_backend_view_use_the_backend_they_are_given(sim):
    b, _ = sim
    asks = [memory.Ask(domain=1, gfns=(7,), controls=((8, 0),)), memory.Ask(domain=1), memory.Ask(all_domains=True),
            memory.Ask(domain=1, shared_info="auto"), memory.Ask(domain=1, system_map="System.map")]
    assert all(a.needs_backend for a in asks)
    src = memory.open_source(asks[0], b)
    assert isinstance(src, memory.FramesSource) and (src.domain, src.gfns, src.controls) == (1, [7], [(8, 0)])
    assert src.backend is b
    src = memory.open_source(asks[1], b)
    assert type(src) is memory.LiveSource and src.domain == 1 and src.backend is b
    every = memory.open_sources(asks[2], b)
    assert [s.domain for s in every] == b.domains() == [0, 1]
    with pytest.raises(ValueError, match="all_domains"):
        memory.open_source(asks[2], b)
    with pytest.raises(ValueError, match="needs_backend"):
        memory.open_source(asks[1])


# --- each source -----------------------------------------------------------------------------------------------
def test_live_source_copies_the_backend_memory_once(sim):
    b, gfns = sim
    src = memory.open_source(memory.Ask(domain=0), b)
    img = src.fifo_image()
    assert (img.domain, img.source, img.saved_source, img.guest_known) == (0, "sim", "sim domain 0", True)
    assert img.max_ports == img.mem.nr_chans and img.channel_table
    live = b.fifo_memory(0)
    assert img.mem.snapshot() == live.snapshot()
    img.mem.page_words(0)[5] ^= 1  # a copy: decoding (or spoiling) it cannot disturb the host
    assert img.mem.snapshot() != live.snapshot()
    assert {p: st.state for p, st in src.channels().items()} == {p: st.state for p, st in b.channels(0).items()}
    pages = src.read_frames(gfns["event_array"])
    assert pages == [bytes(live.page_words(i)) for i in range(live.nr_pages)]
    with pytest.raises(memory.MemoryUnavailable, match="the sim backend cannot read kernel symbols"):
        src.read_symbol("event_array", 8)


def test_frames_source_equals_the_live_view_without_the_guest_heads(sim):
    b, gfns = sim
    cbs = tuple((g, o) for g, o in gfns["control_blocks"].values())
    src = memory.open_source(memory.Ask(domain=0, gfns=tuple(gfns["event_array"]), controls=cbs), b)
    img = src.fifo_image()
    live = memory.open_source(memory.Ask(domain=0), b).fifo_image()
    assert (img.source, img.guest_known, img.max_ports, img.channel_table) == (
        f"sim: {len(gfns['event_array'])} frame(s) mapped through privcmd", False, None, False)
    assert [bytes(img.mem.page_words(i)) for i in range(img.mem.nr_pages)] == [
        bytes(live.mem.page_words(i)) for i in range(live.mem.nr_pages)]
    assert [bytes(img.mem.control_block(v)) for v in range(img.mem.nr_vcpus)] == [
        bytes(live.mem.control_block(v)) for v in range(live.mem.nr_vcpus)]
    assert src.channels() is not None


def test_raw_file_source_gives_back_what_was_saved(sim, tmp_path):
    b, _ = sim
    live = memory.open_source(memory.Ask(domain=0), b).fifo_image()
    path = str(tmp_path / "d0.raw")
    save_raw(path, live.mem, 0, live.saved_source, guest=True, channels=True)
    src = memory.open_source(memory.Ask(from_file=path))
    img = src.fifo_image()
    assert (img.domain, img.source, img.guest_known, img.max_ports) == (
        0, f"file {path} (sim domain 0)", True, live.mem.nr_chans)
    assert view(img) == view(live)
    assert sorted(src.channels()) == sorted(b.channels(0))
    with pytest.raises(memory.MemoryUnavailable, match="a raw dump file cannot read guest frames"):
        src.read_frames([1])


def test_raw_file_without_a_channel_table_knows_no_limit(tmp_path):
    path = str(tmp_path / "f.raw")
    save_raw(path, guest(), 4, "frames", guest=False, channels=False)
    src = memory.RawFileSource(path)
    img = src.fifo_image()
    assert (img.domain, img.guest_known, img.max_ports, src.channels()) == (4, False, None, None)


def test_kcore_source_reads_the_queues_and_any_symbol(tmp_path, monkeypatch):
    monkeypatch.setenv("XENEVT_SELF_DOMID", "3")
    mem = guest()
    core, syms, cpus = kcore_writer.write(mem, tmp_path)
    src = memory.open_source(memory.Ask(self_kernel=True, kcore=core, kallsyms=syms, cpus_file=cpus))
    img = src.fifo_image()
    assert (img.domain, img.guest_known, img.max_ports, img.channel_table) == (3, True, None, False)
    assert view(img) == view(memory.FifoImage(mem, 3, "x", True))
    assert struct.unpack("<I", src.read_symbol("event_array_pages", 4)) == (2,)
    first = struct.unpack("<Q", src.read_symbol("event_array", 8, offset=8))[0]
    assert first == kcore_writer.DMAP_PAGES + abi.PAGE_SIZE
    with pytest.raises(KernelReadError, match="no_such_symbol is not in"):
        src.read_symbol("no_such_symbol", 8)
    with pytest.raises(memory.MemoryUnavailable, match="this kernel cannot read guest frames"):
        src.read_frames([0])


def test_linux_layout_reads_through_any_kernel_reader():
    """What the next sources (another domain from dom0, a dump-core file) reuse: only read/u32/u64/mapped."""
    mem = guest()
    segs = {}

    class Reader:
        def read(self, addr, size, what):
            for base, blob in segs.items():
                if base <= addr and addr + size <= base + len(blob):
                    return blob[addr - base: addr - base + size]
            raise KernelReadError(f"{what} at {addr:#x} unmapped")

        def mapped(self, addr, size):
            return any(b <= addr and addr + size <= b + len(blob) for b, blob in segs.items())

        def u32(self, addr, what):
            return struct.unpack("<I", self.read(addr, 4, what))[0]

        def u64(self, addr, what):
            return struct.unpack("<Q", self.read(addr, 8, what))[0]

    syms = {"event_array": 0x1000, "event_array_pages": 0x2000, "__per_cpu_offset": 0x3000,
            "cpu_control_block": 0x10, "cpu_queue": 0x100}
    segs[0x1000] = struct.pack("<QQ", 0x100000, 0x101000)
    segs[0x2000] = struct.pack("<I", 2)
    segs[0x3000] = struct.pack("<QQ", 0x8000, 0x9000)
    for cpu in range(2):
        cb = 0x200000 + cpu * abi.PAGE_SIZE if mem.control_block(cpu) is not None else 0
        pcpu = bytearray(0x140)
        struct.pack_into("<Q", pcpu, syms["cpu_control_block"], cb)
        struct.pack_into("<16I", pcpu, syms["cpu_queue"], *mem.guest(cpu)[1:17])
        segs[0x8000 + cpu * 0x1000] = bytes(pcpu)
        if cb:
            segs[cb] = bytes(mem.control_block(cpu))
    for i in range(2):
        segs[0x100000 + i * abi.PAGE_SIZE] = bytes(mem.page_words(i))
    linux.check_symbols(syms, "a System.map")
    pages, cbs, heads = linux.read_fifo(Reader(), syms, [0, 1])
    assert pages == [bytes(mem.page_words(i)) for i in range(2)]
    assert cbs == [bytes(mem.control_block(v)) if mem.control_block(v) is not None else None for v in range(2)]
    assert heads[0][7] == 9
    with pytest.raises(KernelReadError, match=r"cpu_queue not in a System.map"):
        linux.check_symbols({k: v for k, v in syms.items() if k != "cpu_queue"}, "a System.map")
