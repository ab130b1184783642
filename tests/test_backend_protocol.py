"""Both backends offer every member of the Backend protocol with its parameters (mypy proves the types in
`make lint`, backend/base.py's conforms; this holds the names where mypy is not installed, e.g. the floors)."""

import inspect

import pytest

from xenevt.backend.base import Backend
from xenevt.backend.sim import SimBackend
from xenevt.backend.xen import XenBackend
from xenevt.memory import MemoryBackend

MEMBERS = sorted({n for c in (Backend, MemoryBackend) for n in list(vars(c)) + list(vars(c).get("__annotations__", {}))
                  if not n.startswith("_") and n != "conforms"})


def test_the_protocol_names_what_memory_sources_and_callers_ask():
    assert {"translate_address", "shared_info_frame", "map_frames", "fifo_memory", "channels", "reset",
            "kernel_interrupts", "shutdown"} <= set(MEMBERS)


@pytest.mark.parametrize("impl", [SimBackend, XenBackend], ids=["sim", "xen"])
def test_each_backend_has_every_member_with_its_parameters(impl):
    for name in MEMBERS:
        assert hasattr(impl, name), f"{impl.__name__} lacks {name}"
        want = getattr(Backend, name, None)
        if callable(want):
            have = list(inspect.signature(getattr(impl, name)).parameters)
            assert have[:len(inspect.signature(want).parameters)] == list(inspect.signature(want).parameters), name


def test_the_simulator_says_in_one_line_what_it_cannot_do(tmp_path):
    from xenevt.errors import BackendUnavailable
    from xenevt.sim.host import create_host

    create_host(str(tmp_path))
    b = SimBackend(str(tmp_path))
    try:
        with pytest.raises(BackendUnavailable, match="runs no guest kernel") as e:
            b.translate_address(1, 0, 0xFFFFFFFF81000000)
        assert "\n" not in str(e.value)
        frame, vcpus = b.shared_info_frame(1)
        assert frame > 0 and vcpus == 2
    finally:
        b.shutdown()
