"""The Python-side constants and layouts match the C header and Xen's ABI."""

from __future__ import annotations

import pytest

from xenevt import abi
from xenevt._native import ffi, lib
from xenevt.engine import SP, Consume, DomainMemory, Err, LayoutError, Walk, engine_for
from xenevt.engine import layout as L

from . import writer


def test_codes_match_c_header():
    for name, value in Err.__members__.items():
        c_name = "XE_OK" if name == "OK" else f"XE_E_{name}"
        assert getattr(lib, c_name) == value, name
    for name, value in SP.__members__.items():
        assert getattr(lib, f"XE_SP_{name}") == value, name
    for name, value in Consume.__members__.items():
        assert getattr(lib, f"XE_CONSUME_{name}") == value, name
    for name, value in Walk.__members__.items():
        assert getattr(lib, f"XE_WALK_{name}") == value, name


def test_abi_constants_match_c_header():
    for name in ("PENDING", "MASKED", "LINKED", "BUSY", "LINK_BITS", "LINK_MASK", "NR_CHANNELS", "MAX_QUEUES",
                 "PRIORITY_MAX", "PRIORITY_DEFAULT", "PRIORITY_MIN"):
        assert getattr(lib, f"XE_EVTCHN_FIFO_{name}") == getattr(abi, f"EVTCHN_FIFO_{name}"), name
    assert ffi.sizeof("xe_control_block") == abi.CONTROL_BLOCK_SIZE == 72
    assert ffi.offsetof("xe_control_block", "head") == abi.CONTROL_BLOCK_HEAD_OFFSET
    assert ffi.sizeof("xe_chan") == L.CHAN.size
    assert ffi.sizeof("xe_guest_vcpu") == L.GUEST_VCPU.size
    assert lib.XE_GUEST_UPCALL_ONE == L.GUEST_UPCALL_ONE == L.GUEST_READY_BITS + 1
    assert abi.INIT_CONTROL.size == 24


def test_word_flags_text():
    assert abi.word_flags(writer.word("PL->5")) == "P-L-"
    assert abi.word_link(writer.word("PL->5")) == 5


def test_layout_rejects_garbage():
    with pytest.raises(LayoutError, match="bad domain image magic"):
        DomainMemory(bytearray(8192))
    mem = DomainMemory.create(nr_vcpus=2, max_pages=1)
    with pytest.raises(LayoutError, match="truncated"):
        DomainMemory(bytearray(mem.snapshot()[:5000]))
    with pytest.raises(LayoutError, match="read-only"):
        DomainMemory(mem.snapshot())
    with pytest.raises(LayoutError, match="vCPU count 0"):
        DomainMemory.create(nr_vcpus=0)
    with pytest.raises(LayoutError, match="offset 12"):
        mem.register_control_block(0, offset=12)
    with pytest.raises(LayoutError, match="event array is full"):
        mem.add_page(), mem.add_page()


def test_engine_picks_implementation(monkeypatch):
    mem = DomainMemory.create()
    assert engine_for(mem).name == "c"
    monkeypatch.setenv("XENEVT_ENGINE", "python")
    assert engine_for(mem).name == "python"
    with pytest.raises(ValueError, match="'rust'"):
        engine_for(mem, "rust")


def test_walk_reports_a_port_on_two_queues(make_engine):
    mem = writer.domain(
        ports={3: "PL->5", 4: "PL->5", 5: "PL"},
        heads={(0, 2): 3, (0, 7): 4},
        ready={0: (1 << 2) | (1 << 7)},
    )
    results, chain = make_engine(mem).walk()
    assert results[2][2:5] == (2, Walk.END, 0)
    head, start, count, status, bad, other = results[7]
    assert (chain[start : start + count], status, bad, other) == ([4], Walk.SHARED, 5, 2)


def test_records_behave_as_the_dataclasses_they_were():
    """Geometry, Chan, PortStatus and the journal's Intent are written out (layout.Record) rather than made by
    @dataclass at import: equal field by field within their class, a repr naming each field, Geometry frozen and
    hashable, the others unhashable, a status's flags a dict of its own."""
    import copy
    import pickle
    from dataclasses import FrozenInstanceError

    from xenevt.engine import Chan, Geometry
    from xenevt.ports import PortStatus
    from xenevt.sim.statefile import Intent

    g = Geometry(2, 1, 1024)
    assert g == Geometry(2, 1, 1024, L.LAYOUT_VERSION) != Geometry(2, 1, 2048) and hash(g) == hash(Geometry(2, 1, 1024))
    assert repr(g) == "Geometry(nr_vcpus=2, max_pages=1, nr_chans=1024, version=2)"
    with pytest.raises(FrozenInstanceError):
        g.nr_vcpus = 3
    assert copy.deepcopy(g) == g == pickle.loads(pickle.dumps(g))
    c = Chan(3, aux=4)
    assert c == Chan(state=3, aux=4) != Chan(3) and c != (3,) and repr(c).startswith("Chan(state=3, priority=7, ")
    c.aux = 5
    assert vars(c)["aux"] == 5 and copy.copy(c) == c
    a, b = PortStatus(0, 5, "closed"), PortStatus(0, 5, "closed")
    assert a == b and a.flags == {} and a.flags is not b.flags and PortStatus(0, 5, "closed", flags=None).flags is None
    assert repr(PortStatus(1, 2, "virq", virq=3)) == (
        "PortStatus(domain=1, port=2, state='virq', vcpu=0, remote_domain=None, remote_port=None, virq=3, pirq=None, "
        "priority=None, word=None, flags={}, xen_owned=None)")
    assert Intent(1, 2, 0, 9, []) == Intent(1, 2, 0, 9, []) != Intent(1, 2, 0, 8, [])
    for unhashable in (c, a, Intent(1, 2, 0, 9, [])):
        with pytest.raises(TypeError):
            hash(unhashable)
