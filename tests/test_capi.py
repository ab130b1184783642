"""csrc/xen_api.h declares the Xen libraries' API once: both bindings read it, and nothing else declares it."""

from __future__ import annotations

import errno
import re

import pytest

from xenevt import capi
from xenevt.errors import ChannelError

COMMENT = re.compile(r"/\*.*?\*/", re.S)


def functions(text: str) -> set[str]:
    return set(re.findall(r"(\w+)\s*\(", COMMENT.sub("", text)))


def test_struct_evtchn_status_has_xens_layout():
    """xen/include/public/event_channel.h: dom, port, status, vcpu, then the union (x86_64, 24 bytes)."""
    from xenevt.backend.xen import libs

    fields = ("dom", "port", "status", "vcpu", "u")
    assert [libs.ffi.offsetof("struct evtchn_status", f) for f in fields] == [0, 4, 8, 12, 16]
    assert libs.ffi.sizeof("struct evtchn_status") == 24
    assert libs.ffi.offsetof("struct evtchn_status", "u") + 4 == 20  # u.interdomain.port


def test_the_simulator_writes_in_python_what_the_header_embeds_and_the_rest_in_c():
    from xenevt.sim import libglue, simlib

    glue: set[str] = set()

    class Recorder:  # stands in for the embedding's ffi: records each @ffi.def_extern function
        NULL = None

        def def_extern(self):
            def record(fn):
                glue.add(fn.__name__)
                return fn

            return record

    libglue.install(Recorder())
    embedded = functions(capi.declarations(embedded_only=True))
    sim_python, sim_c = (functions(text) for text in simlib.own_declarations())
    assert glue == embedded | sim_python  # (sim_python: the fallbacks of the C fast path, xenevtchn_sim.h)
    with open(f"{simlib.csrc_dir()}/xenevtchn_sim.c") as f:
        text = COMMENT.sub("", f.read())
    in_c = set(re.findall(r"^(?!static)\w[\w \*]*?\b(\w+)\(", text, re.M))
    assert in_c == (functions(capi.declarations()) - embedded) | sim_c


def test_no_other_declaration_of_the_api():
    """The drift issue 11 found (xc_evtchn_status taking struct evtchn_status * here and void * there)."""
    import inspect

    from xenevt.backend.xen import libs
    from xenevt.sim import libglue, libxen, simlib

    for mod in (libs, libglue, libxen, simlib):
        src = inspect.getsource(mod)
        assert "xenevtchn_open(" not in src.replace("def xenevtchn_open(", ""), mod.__name__
        assert "struct evtchn_status {" not in src and "HxxIII" not in src, mod.__name__


def test_check_turns_a_failed_return_into_a_channel_error(monkeypatch):
    from xenevt.backend.xen import libs

    assert libs.check(7, "bind", 0) == 7
    monkeypatch.setattr(libs.ffi, "errno", errno.ESRCH)
    with pytest.raises(ChannelError) as e:
        libs.check(-1, "notify", 3, 17)
    assert str(e.value) == "cannot notify port 17 of domain 3: no such domain (ESRCH)"
    assert (e.value.errno, e.value.call, e.value.domain, e.value.port) == (errno.ESRCH, "notify", 3, 17)
    with pytest.raises(ChannelError, match=r"cannot map frames of domain 2: no such domain \(ESRCH\)"):
        libs.check(libs.ffi.NULL, "map frames of", 2)
    p = libs.ffi.new("int *")
    assert libs.check(p, "map frames of", 2) == p
