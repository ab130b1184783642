"""A 32-bit guest on the simulator (statefile DOM_GUEST_32) and the replay of XSA-342 (xenevt/replay/xen_sim.py
xen-compat-2l-limit): its 2-level limit of 1024 ports, the switch that gives it a 64-bit guest's 4096 as Xen before
62bcdc4edb did, the flag kept in the state file, and doctor judging the limit by the bitness only where the
evidence knows it."""

from __future__ import annotations

import errno
import json

import pytest

from xenevt import abi
from xenevt.cli import main
from xenevt.engine import faults
from xenevt.errors import ChannelError
from xenevt.evidence import doctor
from xenevt.evidence.model import DomainFacts, Evidence, PortFacts
from xenevt.sim.foreign import CONTROL_BLOCK_GFN
from xenevt.sim.host import SimHost, create_host
from xenevt.sim.statefile import DOM_ENTRY, DOM_GUEST_32, DOM_TABLE, FILE_NAME

COMPAT = abi.EVTCHN_2L_NR_CHANNELS_32


@pytest.fixture
def state(tmp_path):
    """d1 a 32-bit guest on 2-level, d2 a 64-bit one on 2-level; both allowed 4096 ports by max_event_channels."""
    d = str(tmp_path / "host")
    create_host(d, nr_domains=3, nr_vcpus=1, max_ports_domu=4096, abis={1: "2l", 2: "2l"}, guest_32=(1,))
    return d


def _fill(h: SimHost, domid: int, upto: int) -> int:
    port = 0
    while port < upto:
        port = h.bind_ipi(domid, domid, 0)
    return port


def test_a_32_bit_guest_on_2_level_gets_ports_1_to_1023_and_no_more(state, sim_path):
    with SimHost(state) as h:
        assert _fill(h, 1, COMPAT - 1) == COMPAT - 1
        with pytest.raises(ChannelError) as e:
            h.bind_ipi(1, 1, 0)
        assert e.value.errno == errno.ENOSPC
        assert str(e.value) == ("cannot bind IPI for domain 1: no free port (all 1023 in use: a 32-bit guest on the "
                                "2-level ABI has ports 1..1023 only) (ENOSPC)")
        assert _fill(h, 2, COMPAT) == COMPAT  # the 64-bit guest goes on past it
        assert sorted(h.domains[1].open_ports())[-1] == COMPAT - 1


def test_the_switch_gives_a_32_bit_guest_a_64_bit_guests_limit_only_while_on(state, sim_path):
    with SimHost(state) as h:
        _fill(h, 1, COMPAT - 1)
        with faults.switched_on(faults.COMPAT_LIMIT_AT_CREATE):
            assert h.bind_ipi(1, 1, 0) == COMPAT
            assert h.domains[2].max_evtchns() == abi.EVTCHN_2L_NR_CHANNELS  # (a 64-bit guest's, unchanged)
        with pytest.raises(ChannelError, match="ports 1..1023 only"):
            h.bind_ipi(1, 1, 0)
    assert faults.active() == 0


def test_on_fifo_a_32_bit_guest_has_fifo_s_limit(tmp_path):
    d = str(tmp_path / "h")
    create_host(d, nr_domains=2, nr_vcpus=1, max_ports_domu=2048, guest_32=(1,))  # (its kernel on FIFO)
    with SimHost(d) as h:
        assert h.domains[1].max_evtchns() == abi.EVTCHN_FIFO_NR_CHANNELS
        assert _fill(h, 1, COMPAT + 5) == COMPAT + 5  # FIFO's event words are 32 bits for every guest


def test_back_on_2_level_after_a_reset_the_limit_is_the_guest_s_again(tmp_path):
    d = str(tmp_path / "h")
    create_host(d, nr_domains=2, nr_vcpus=1, max_ports_domu=2048, abis={1: "2l"}, guest_32=(1,))
    with SimHost(d) as h:
        h.init_control(1, 1, 0, CONTROL_BLOCK_GFN, 0)
        assert h.domains[1].max_evtchns() == abi.EVTCHN_FIFO_NR_CHANNELS
        h.reset(1, 1)
        assert h.domains[1].max_evtchns() == COMPAT


def test_the_flag_is_kept_in_the_domain_table_and_survives_reopen(state):
    with SimHost(state) as h:
        assert [h.domains[d].guest_32 for d in range(3)] == [False, True, False]
        assert [d["guest_bits"] for d in h.info()["domains"]] == [64, 32, 64]
    with open(f"{state}/{FILE_NAME}", "rb") as f:
        raw = f.read(DOM_TABLE + 3 * DOM_ENTRY.size)
    flags = [DOM_ENTRY.unpack_from(raw, DOM_TABLE + i * DOM_ENTRY.size)[1] for i in range(3)]
    assert [bool(fl & DOM_GUEST_32) for fl in flags] == [False, True, False]
    with SimHost(state, read_only=True) as h:  # reopened: the same limit
        assert h.domains[1].guest_32 and h.domains[1].max_evtchns() == COMPAT


def test_sim_init_makes_a_32_bit_guest_and_refuses_a_domain_it_does_not_have(tmp_path, capsys):
    where = str(tmp_path / "h")
    assert main(["--state", where, "--json", "sim", "init", "--domain-abi", "1=2l", "--guest-32", "1"]) == 0
    doms = json.loads(capsys.readouterr().out)["domains"]
    assert [d["guest_bits"] for d in doms] == [64, 32]
    assert main(["--state", where, "sim", "info"]) == 0
    table = capsys.readouterr().out
    assert "32-bit" in table and "1023" in table
    assert main(["--state", where, "sim", "init", "--force", "--guest-32", "7"]) == 2
    err = capsys.readouterr().err
    assert "no domain 7 to make a 32-bit guest (the host has domains 0..1)" in err and len(err.splitlines()) == 1


# --- doctor: the bitness only where the evidence knows it ----------------------------------------------------------
def _l2_dom(open_ports: range, extra: int, bits: int | None, closed: tuple[int, ...] = ()) -> DomainFacts:
    ports = {p: PortFacts(p, "closed" if p in closed else "ipi", vcpu=0) for p in open_ports}
    ports[extra] = PortFacts(extra, "interdomain", vcpu=0, remote_domain=0, remote_port=9)
    return DomainFacts(1, abi="2-level", ports=ports, max_ports=abi.EVTCHN_2L_NR_CHANNELS, guest_bits=bits)


def _findings(dom: DomainFacts) -> dict[str, tuple[tuple[int, ...], str | None]]:
    ev = Evidence("t")
    ev.domains[1] = dom
    return {f.rule: (tuple(f.ports), f.resembles) for f in doctor.examine(ev).findings}


def test_a_32_bit_guest_s_port_past_1023_is_found_and_named_after_xsa_342():
    found = _findings(_l2_dom(range(1, COMPAT), COMPAT, 32))
    assert found["port-beyond-2l-limit"] == ((COMPAT,), "xen-compat-2l-limit")
    assert found["ports-exhausted"][1] is None  # (1024 in use of 1023: true, and no old bug's)
    ev = Evidence("t")
    ev.domains[1] = _l2_dom(range(1, COMPAT), 1, 32)  # (ports 1..1023, all it has)
    f = next(f for f in doctor.examine(ev).findings if f.rule == "ports-exhausted")
    assert f.evidence == "1023 ports in use, of the 2-level ABI's 1024 ports for a 32-bit guest (port 0 is never used)"
    assert "no setting gives more than 1024 ports to a 32-bit guest" in f.advice


def test_the_same_port_of_a_64_bit_guest_or_of_one_not_known_is_no_finding():
    for bits in (64, None):  # (on real Xen the evidence does not say: 4096 is assumed, never fewer)
        assert "port-beyond-2l-limit" not in _findings(_l2_dom(range(1, COMPAT), COMPAT, bits)), bits


def test_a_32_bit_guest_s_port_past_1023_with_ports_below_closed_names_no_bug():
    # a port bound on FIFO and left open by a reset race finds the ports below it closed: not XSA-342's state
    found = _findings(_l2_dom(range(1, COMPAT), 1500, 32, closed=(700,)))
    assert found["port-beyond-2l-limit"] == ((1500,), None)


def test_a_port_past_4095_is_the_reset_race_s_whatever_the_guest():
    for bits in (32, 64, None):
        found = _findings(_l2_dom(range(1, 4), abi.EVTCHN_2L_NR_CHANNELS, bits))
        assert found["port-beyond-2l-limit"] == ((abi.EVTCHN_2L_NR_CHANNELS,), "xen-reset-racing-open"), bits


def test_a_snapshot_keeps_the_bitness():
    ev = Evidence("t")
    ev.domains[1] = _l2_dom(range(1, 3), 5, 32)
    assert Evidence.from_json(ev.to_json()).domains[1].guest_bits == 32


def test_a_32_bit_guests_own_kernel_knows_its_1024_ports(state):
    """The guest side agrees with Xen's: Linux's xen_evtchn_nr_channels() and its own mask and unmask on a 32-bit
    kernel reach 1024 ports (its words squared), whatever a buggy Xen let it open above them."""
    from xenevt.sim.libxen import SimLibraries

    with SimHost(state) as h:
        _fill(h, 1, COMPAT - 1)
        with faults.switched_on(faults.COMPAT_LIMIT_AT_CREATE):
            high = h.bind_ipi(1, 1, 0)
        with pytest.raises(ChannelError, match=r"past the 2-level ABI's bitmaps \(a 32-bit guest's: 1024 ports\)"):
            h.mask(1, 1, high)
        h.mask(1, 1, COMPAT - 1)  # (its last port is its own to mask)
        h.mask(2, 2, h.bind_ipi(2, 2, 0))
    lib = SimLibraries(state, domid=1)
    try:
        assert lib._nr_channels() == COMPAT
    finally:
        lib.shutdown()
