"""Ports Xen itself consumes (alloc_unbound_xen_event_channel: ioreq servers, vm_event rings) and the Xen
version the simulator follows (``sim init --xen``): EVTCHNOP_status refuses them on 4.17 (EACCES, before the
permission check) and reports them on 4.20; a guest cannot send on, close, move or prioritise them; unmask
leaves them alone; EVTCHNOP_reset keeps them; an event sent to one goes to Xen, not to the guest's word.
Facts from Xen 4.17.7's and 4.20.4's xen/common/event_channel.c (evtchn_status, evtchn_close(guest=1),
evtchn_send, evtchn_bind_vcpu) and event_channel.h (evtchn_usable)."""

from __future__ import annotations

import errno
import json

import pytest
from click.testing import CliRunner

from xenevt.cli import cli
from xenevt.errors import ChannelError
from xenevt.evidence import edump
from xenevt.sim.host import SimHost, create_host


def host(tmp_path, xen):
    create_host(str(tmp_path), xen=xen)
    return SimHost(str(tmp_path))


def code(fn, *args):
    with pytest.raises(ChannelError) as e:
        fn(*args)
    return errno.errorcode[e.value.errno]


@pytest.mark.parametrize("xen", ["4.17", "4.20"])
def test_status_of_a_xen_port_depends_on_the_version(tmp_path, xen):
    with host(tmp_path, xen) as h:
        p = h.xen_port(1, 0)
        if xen == "4.17":
            assert code(h.status, 0, 1, p) == "EACCES"
            assert code(h.status, 1, 1, p) == "EACCES"
        else:
            st = h.status(0, 1, p)
            assert (st.state, st.remote_domain, st.xen_owned) == ("unbound", 0, True)
        assert code(h.status, 0, 1, 999) == "EINVAL"  # the port's validity first, either version


def test_status_checks_the_port_before_the_caller(tmp_path):
    """Xen: ESRCH, then EINVAL for an invalid port, then XSM's EPERM."""
    with host(tmp_path, "4.20") as h:
        assert code(h.status, 1, 0, 999) == "EINVAL"
        assert code(h.status, 1, 0, 1) == "EPERM"


def test_a_guest_cannot_use_a_port_xen_consumes(tmp_path):
    with host(tmp_path, "4.20") as h:
        p = h.xen_port(1, 0)
        assert code(h.send, 1, 1, p) == "EINVAL"
        assert code(h.close_port, 1, 1, p) == "EINVAL"
        assert code(h.bind_vcpu, 1, 1, p, 1) == "EINVAL"
        assert code(h.set_priority, 1, 1, p, 3) == "EACCES"
        h.evtchn_unmask(1, 1, p)  # not usable: left alone, no error
        assert h.status(1, 1, p).flags["masked"]


def test_reset_leaves_xen_ports_and_a_peer_event_goes_to_xen(tmp_path):
    with host(tmp_path, "4.20") as h:
        p = h.xen_port(1, 0)
        q = h.alloc_unbound(1, 1, 0)
        d0 = h.bind_interdomain(0, 0, 1, p)  # the device model binds to the Xen-consumed port
        r = h.send(0, 0, d0)
        assert r.outcome == "taken by Xen"
        assert not h.status(1, 1, p).flags["pending"]
        h.reset(1, 1)
        assert h.status(1, 1, p).state == "interdomain" and h.status(1, 1, q).state == "closed"
        h.close_port(0, 0, d0)  # the peer leaves: Xen's port waits again
        assert h.status(1, 1, p).state == "unbound"


def test_cli_xen_port_list_and_the_e_key(tmp_path):
    r = CliRunner()
    state = str(tmp_path / "s")
    assert r.invoke(cli, ["--state", state, "sim", "init", "--xen", "4.17"]).exit_code == 0
    out = r.invoke(cli, ["--state", state, "--json", "sim", "xen-port", "1"])
    assert out.exit_code == 0, out.output
    port = json.loads(out.output)["port"]
    listing = r.invoke(cli, ["--state", state, "-d", "1", "list"])
    assert listing.exit_code == 0 and "consumed by Xen itself" in " ".join(listing.output.split())
    with SimHost(state) as h:
        lines = h.debug_key_e()
        info = h.info()
    assert info["xen_version"] == "4.17"
    facts = edump.parse("\n".join(lines))
    assert not facts.unread
    port_facts = facts.domains[1].ports[port]
    assert (port_facts.xen_consumer, port_facts.pending, port_facts.masked) == (1, False, True)


def test_sim_init_refuses_an_unknown_xen_version(tmp_path):
    r = CliRunner().invoke(cli, ["--state", str(tmp_path), "sim", "init", "--xen", "4.19"])
    assert r.exit_code == 2 and "4.19" in r.output
