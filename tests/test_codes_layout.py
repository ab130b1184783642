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
