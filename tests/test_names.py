"""Port names (issue 14): the simulated xenstore, the xenstore-ls reader, the naming rules, list/status/doctor/watch."""

from __future__ import annotations

import json
import os

import pytest

from xenevt.activity import Row
from xenevt.backend.xen.xenstore import parse_ls, wanted
from xenevt.cli import main
from xenevt.errors import EvidenceError, StateError
from xenevt.evidence.model import PortFacts
from xenevt.evidence.names import build, from_xenstore
from xenevt.sim.host import XENSTORE_NAME, SimHost, create_host


@pytest.fixture
def host(tmp_path, monkeypatch):
    """dom0, two domUs; d1: a 2-queue vif, a vbd, console, xenstore, a VIRQ, an IPI and an unnamed port."""
    d = str(tmp_path)
    create_host(d, 3)
    with SimHost(d) as h:
        made = {"vif": h.device_add("vif", 1, queues=2), "vbd": h.device_add("vbd", 1),
                "console": h.device_add("console", 1), "store": h.device_add("store", 1),
                "vif2": h.device_add("vif", 2)}
        made["virq"] = h.bind_virq(1, 1, 0, 0)
        made["ipi"] = h.bind_ipi(1, 1, 1)
        made["unbound"] = h.alloc_unbound(1, 1, 2)
    monkeypatch.setenv("XENEVT_STATE", d)
    return d, made


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_kind_is_named_on_the_simulator(host, capsys):
    _, made = host
    code, out, _ = run(capsys, "list", "-d", 1, "--json")
    assert code == 0
    names = {p["port"]: p["name"] for p in json.loads(out)["ports"]}
    vif = made["vif"]["ports"]
    assert [names[p["port"]]["text"] for p in vif] == [
        f"d1:{vif[0]['port']} vif 0 queue 0 tx ↔ d0:{vif[0]['peer']}",
        f"d1:{vif[1]['port']} vif 0 queue 0 rx ↔ d0:{vif[1]['peer']}",
        f"d1:{vif[2]['port']} vif 0 queue 1 tx ↔ d0:{vif[2]['peer']}",
        f"d1:{vif[3]['port']} vif 0 queue 1 rx ↔ d0:{vif[3]['peer']}"]
    first = names[vif[0]["port"]]
    assert first == {"text": first["text"], "kind": "vif", "device": "vif 0", "owner": 1, "id": "0", "queue": 0,
                     "direction": "tx", "end": "frontend", "peer": {"domain": 0, "port": vif[0]["peer"]},
                     "source": "xenstore /local/domain/1/device/vif/0/queue-0/event-channel-tx"}
    vbd = names[made["vbd"]["ports"][0]["port"]]
    assert (vbd["kind"], vbd["device"], vbd["source"]) == (
        "vbd", "vbd 51712", "xenstore /local/domain/1/device/vbd/51712/event-channel")
    assert names[made["console"]["ports"][0]["port"]]["kind"] == "console"
    assert names[made["store"]["ports"][0]["port"]]["source"] == "xenstore /local/domain/1/store/port"
    assert names[made["virq"]]["text"] == f"d1:{made['virq']} VIRQ timer"
    assert names[made["ipi"]]["text"] == f"d1:{made['ipi']} IPI vCPU 1"
    assert names[made["unbound"]] is None


def test_the_backend_end_is_named_by_its_peer(host, capsys):
    _, made = host
    p = made["vif"]["ports"][2]
    code, out, _ = run(capsys, "status", p["peer"], "-d", 0, "--json")
    name = json.loads(out)["name"]
    assert code == 0 and name["text"] == f"d0:{p['peer']} d1 vif 0 queue 1 tx ↔ d1:{p['port']}"
    assert name["end"] == "backend" and name["source"].startswith(f"peer d1:{p['port']}'s xenstore ")
    code, out, _ = run(capsys, "status", p["peer"], "-d", 0)
    assert f"  name:     d0:{p['peer']} d1 vif 0 queue 1 tx ↔ d1:{p['port']}  (peer " in out
    code, out, _ = run(capsys, "list", "-d", 2)
    assert code == 0 and "vif 0 tx" in out and "vif 0 rx" in out


def test_json_is_unchanged_but_for_the_name(host, capsys):
    code, out, _ = run(capsys, "list", "-d", 1, "--json")
    rows = json.loads(out)["ports"]
    with SimHost(host[0], read_only=True) as h:
        plain = [st.as_dict() for st in h.list_ports(1, 1)]
    assert [{k: v for k, v in r.items() if k != "name"} for r in rows] == plain


def test_doctor_and_watch_name_ports(host, capsys):
    _, made = host
    port = made["vif"]["ports"][0]["port"]
    with SimHost(host[0]) as h:
        h.mask(1, 1, port)
        h.send(0, 0, made["vif"]["ports"][0]["peer"])
    code, out, _ = run(capsys, "doctor", "-d", 1)
    assert code == 3 and f"d1:{port} (vif 0 queue 0 tx ↔ d0:" in out
    code, out, _ = run(capsys, "doctor", "-d", 1, "--json")
    finding = next(f for f in json.loads(out)["findings"] if f["ports"] == [port])
    assert finding["names"][0]["text"].startswith(f"d1:{port} vif 0 queue 0 tx")
    code, out, _ = run(capsys, "watch", "--json", "--once", "-i", "0.05", "-d", 1)
    rows = {r["port"]: r for r in json.loads(out)["rows"]}
    assert code == 0 and rows[port]["name"]["device"] == "vif 0"
    assert rows[made["unbound"]]["name"] is None


def test_device_add_errors_are_one_line(host, capsys):
    assert run(capsys, "sim", "device", "add", "console", 1)[2] == \
        f"xenevt: domain 1 has a console already (port {host[1]['console']['ports'][0]['port']})\n"
    code, _, err = run(capsys, "sim", "device", "add", "vif", 7)
    assert code != 0 and err.count("\n") == 1 and "7" in err
    code, _, err = run(capsys, "sim", "device", "add", "vif", 0)
    assert code == 2 and err == "xenevt: domain 0 cannot be its own vif's backend\n"
    code, out, _ = run(capsys, "sim", "device", "list")
    assert code == 0 and "/local/domain/2/device/vif/0/event-channel-tx = " in out


@pytest.mark.parametrize("text, why", [
    (b"{", "not JSON"), (b"[]", "not a simulated xenstore"), (b"[" * 100000, "not JSON"),
    (b'{"xenstore": 1, "nodes": {"x": "1"}}', "not an absolute xenstore path"),
    (b'{"xenstore": 1, "nodes": {"/a": 5}}', "not a string"),
])
def test_a_damaged_xenstore_file_says_what(host, capsys, text, why):
    with open(os.path.join(host[0], XENSTORE_NAME), "wb") as f:
        f.write(text)
    with SimHost(host[0], read_only=True) as h, pytest.raises(StateError, match=why) as e:
        h.xenstore_nodes()
    assert "\n" not in str(e.value) and XENSTORE_NAME in str(e.value)
    code, _, err = run(capsys, "list", "-d", 1)  # names are extra: the ports are still listed, and why unnamed
    assert code == 0 and err.startswith(f"xenevt: note: no xenstore names: {host[0]}/{XENSTORE_NAME}: ")


LS = """/local/domain/0 = ""
/local/domain/0/name = "Domain-0"
/local/domain/5/name = "guest"
/local/domain/5/console/port = "2"
/local/domain/5/store/port = "1"
/local/domain/5/device/vif/0/backend = "/local/domain/0/backend/vif/5/0"
/local/domain/5/device/vif/0/multi-queue-num-queues = "2"
/local/domain/5/device/vif/0/queue-0/event-channel-tx = "12"
/local/domain/5/device/vif/0/queue-0/event-channel-rx = "13"
/local/domain/5/device/vif/0/mac = "00:16:3e:00:00:01"
/local/domain/5/device/vbd/768/event-channel = "7"   (n5,r0)
/local/domain/5/data/odd = "a\\\\b\\"c\\011d\\n"
/local/domain/0/backend/vif/5/0/frontend = "/local/domain/5/device/vif/0"
"""


def test_xenstore_ls_reader():
    nodes = parse_ls(LS)
    assert nodes["/local/domain/5/device/vbd/768/event-channel"] == "7"
    assert "/local/domain/5/device/vif/0/mac" not in nodes and "/local/domain/0" not in nodes
    assert wanted("/local/domain/5/device/vif/0/queue-1/event-channel-rx")
    assert not wanted("/local/domain/5/data/odd")
    named, notes = from_xenstore(nodes)
    assert not notes
    assert named[(5, 12)].text() == "d5 vif 0 queue 0 tx" and named[(5, 2)].kind == "console"
    assert named[(5, 7)].device == "vbd 768" and named[(5, 1)].kind == "xenstore"
    from xenevt.backend.xen.xenstore import _unescape

    assert _unescape('a\\\\b\\"c\\011d\\n') == 'a\\b"c\td\n'
    for bad, why in [("/a = 1", "line 1: not '/path"), ('/a = "1', "no closing quote"), ("junk", "line 1")]:
        with pytest.raises(EvidenceError, match=why):
            parse_ls(bad)


def test_netback_irq_names_tie_dom0_rows_to_ports():
    """Linux prints no port for an event-channel IRQ: a vif queue's IRQ is found by netback's name for it."""
    nodes = parse_ls(LS)

    class St:
        def __init__(self, port, state, rd=None, rp=None, virq=None, vcpu=0, pirq=None):
            self.port, self.state, self.remote_domain, self.remote_port = port, state, rd, rp
            self.virq, self.vcpu, self.pirq = virq, vcpu, pirq

    rows = [Row("irq 40", "xen-dyn event vif5.0-q0-tx", [3]), Row("irq 41", "xen-dyn event vif5.0-q0-rx", [3]),
            Row("irq 9", "xen-dyn event xenbus", [1])]
    names = build([(0, St(87, "interdomain", 5, 12)), (0, St(88, "interdomain", 5, 13)), (0, St(3, "pirq", pirq=9))],
                  nodes, {0: rows})
    assert names.label(0, 87) == "d0:87 d5 vif 0 queue 0 tx ↔ d5:12"
    assert names.get(0, 87).irq == "irq 40 vif5.0-q0-tx" and names.irq_port(0, "irq 41") == 88
    assert names.irq_port(0, "irq 9") is None and names.text(0, 3) == "PIRQ 9"
    bad = build([(5, St(12, "unbound", 0))], {"/local/domain/5/console/port": "x"})
    assert bad.get(5, 12) is None and bad.notes == ["xenstore /local/domain/5/console/port holds 'x', not a port"]


# --- the real backend's sources, on stand-ins --------------------------------------------------------------
def test_xen_backend_falls_back_to_xenstore_ls(tmp_path, monkeypatch):
    import stat

    from xenevt.backend.xen import libs
    from xenevt.backend.xen.xenstore import read_nodes
    from xenevt.errors import BackendUnavailable

    real_load = libs.load

    def load(name):
        if name == "xenstore":
            raise BackendUnavailable("the Xen library libxenstore.so.4 is not installed")
        return real_load(name)

    monkeypatch.setattr(libs, "load", load)
    (tmp_path / "ls.txt").write_text(LS)
    fake = tmp_path / "xenstore-ls"
    fake.write_text(f"#!/bin/sh\n[ \"$1 $2\" = '-f /local/domain' ] && exec /bin/cat {tmp_path / 'ls.txt'}\nexit 9\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    nodes, where = read_nodes(libs)
    assert where == "xenstore-ls -f" and nodes == parse_ls(LS)
    (tmp_path / "ls.txt").write_text("garbage\n")
    with pytest.raises(EvidenceError, match="line 1"):
        read_nodes(libs)
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(BackendUnavailable, match="not installed.*; and no xenstore-ls"):
        read_nodes(libs)


def test_libxenstore_walk_is_bounded(monkeypatch):
    """A domain with more devices and queues than the bounds: the walk reads within them."""
    from xenevt.backend.xen import xenstore as xs

    tree = {"/local/domain": [str(d) for d in range(3)] + ["junk"],
            "/local/domain/1/device": ["vif"], "/local/domain/1/device/vif": [str(i) for i in range(100)],
            "/local/domain/0/backend": ["vif"], "/local/domain/0/backend/vif": ["1"],
            "/local/domain/0/backend/vif/1": ["0"]}
    values = {"/local/domain/1/device/vif/0/multi-queue-num-queues": "9999",
              "/local/domain/1/device/vif/0/queue-3/event-channel-tx": "12",
              "/local/domain/1/device/vif/99/event-channel": "5",
              "/local/domain/0/backend/vif/1/0/frontend": "/local/domain/1/device/vif/0"}

    class Fake(xs.LibXenstore):
        def __init__(self):
            self.requests = 0
            self.asked: list[str] = []

        def ls(self, path, limit):
            return [] if self._spent() else tree.get(path, [])[:limit]

        def read(self, path):
            self.asked.append(path)
            return None if self._spent() else values.get(path)

    f = Fake()
    nodes = f.walk()
    assert nodes["/local/domain/1/device/vif/0/queue-3/event-channel-tx"] == "12"
    assert "/local/domain/1/device/vif/99/event-channel" not in nodes  # device 99: beyond MAX_DEVICES
    assert nodes["/local/domain/0/backend/vif/1/0/frontend"] == "/local/domain/1/device/vif/0"
    assert sum("/queue-" in p for p in f.asked) == xs.MAX_QUEUES * len(xs.QUEUE_KEYS)
    monkeypatch.setattr(xs, "MAX_READS", 10)
    f = Fake()
    f.walk()
    assert len(f.asked) <= 10 + 3 * len(xs.DOMAIN_KEYS)


def test_a_guest_walks_its_own_directory_when_it_may_not_list_the_others():
    """Inside a domU xenstored refuses to list /local/domain; the walk reads the guest's own id (``domid``,
    relative to its home) and names its own devices' ports."""
    from xenevt.backend.xen import xenstore as xs

    tree = {"/local/domain/7/device": ["vif"], "/local/domain/7/device/vif": ["0"]}
    values = {"domid": "7", "/local/domain/7/device/vif/0/event-channel-tx": "9",
              "/local/domain/7/device/vif/0/event-channel-rx": "10"}

    class Guest(xs.LibXenstore):
        def __init__(self):
            self.requests = 0

        def ls(self, path, limit):
            return tree.get(path, [])[:limit]  # /local/domain itself: EACCES, an empty answer

        def read(self, path):
            return values.get(path)

    nodes = Guest().walk()
    assert nodes == {p: v for p, v in values.items() if p.startswith("/")}
    names = build([(7, PortFacts(9, "interdomain", remote_domain=0, remote_port=40))], nodes)
    assert names.text(7, 9) == "vif 0 tx"


def test_dump_names_the_ports_it_shows(host, capsys):
    """dump's words (FIFO) and ports (2-level) carry the same names as list: a name object in --json, a
    column in the text view."""
    _, made = host
    vif = made["vif"]["ports"]
    code, out, _ = run(capsys, "dump", "-d", 1, "--json", "--all-words")
    assert code == 0
    words = {w["port"]: w for w in json.loads(out)["domains"][0]["ports"]}
    assert words[vif[1]["port"]]["name"]["text"] == f"d1:{vif[1]['port']} vif 0 queue 0 rx ↔ d0:{vif[1]['peer']}"
    assert words[made["unbound"]]["name"] is None
    code, out, _ = run(capsys, "dump", "-d", 1, "--all-words")
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == [str(vif[2]["port"])])
    assert line.rstrip().endswith(f"vif 0 queue 1 tx ↔ d0:{vif[2]['peer']}"), line
    with SimHost(host[0]) as h:  # the backend's end, seen from dom0's dump
        h.send(1, 1, vif[0]["port"])
    code, out, _ = run(capsys, "dump", "-d", 0, "--json")
    words = {w["port"]: w for w in json.loads(out)["domains"][0]["ports"]}
    assert words[vif[0]["peer"]]["name"]["end"] == "backend"


def test_inside_a_guest_netfronts_irqs_are_tied_to_its_own_vif_ports():
    """A guest's /proc/interrupts names netfront's IRQs after the vif's device id (vif0-q0-tx, netfront's
    "vif%s-q%u"), and the guest's own xenstore says which ports those are: the rows are tied to them even where
    the guest may not ask EVTCHNOP_status (a restricted PV domU)."""
    from xenevt.evidence.names import for_backend

    class Guest:
        kernel_interrupts = True  # a kernel's /proc/interrupts rows

        def xenstore(self):
            return {"/local/domain/7/device/vif/0/event-channel-tx": "9",
                    "/local/domain/7/device/vif/0/event-channel-rx": "10",
                    "/local/domain/7/console/port": "2"}, "libxenstore"

        def activity(self, domain):
            return [Row("irq 30", "xen-dyn-lateeoi event vif0-q0-tx", [5]),
                    Row("irq 31", "xen-dyn-lateeoi event vif0-q0-rx", [3]),
                    Row("irq 32", "xen-dyn-lateeoi event vif1-q0-tx", [1]),
                    Row("xenbus device/vif/0", "xenbus vif-0", [8])]

    names = for_backend(Guest(), [], frontends_of=7)
    assert names.irq_port(7, "irq 30") == 9 and names.irq_port(7, "irq 31") == 10
    assert names.irq_port(7, "irq 32") is None  # this guest has no vif 1
    assert names.text(7, 10) == "vif 0 rx" and names.get(7, 10).irq == "irq 31 vif0-q0-rx"
    assert names.text(7, 2) == "console"


def test_a_name_is_a_value():
    """Name is written out rather than a frozen dataclass (its import cost): equal by its fields, hashable,
    immutable, its repr and copies as they were."""
    import copy
    import pickle
    from dataclasses import FrozenInstanceError

    from xenevt.evidence.names import Name

    a = Name("vif", "vif 0", "xenstore x", 1, "0", 0, "tx", "frontend")
    b = Name("vif", "vif 0", "xenstore x", 1, "0", 0, "tx", "frontend")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Name("vif", "vif 0", "xenstore x", 1, "0", 0, "rx", "frontend") and a != ("vif",)
    assert repr(Name("ipi", "IPI vCPU 1", "s")) == ("Name(kind='ipi', device='IPI vCPU 1', source='s', owner=None, "
                                                    "id=None, queue=None, direction=None, end=None, irq=None)")
    with pytest.raises(FrozenInstanceError):
        a.irq = "irq 40"
    assert copy.copy(a) == a and copy.deepcopy(a) == a and pickle.loads(pickle.dumps(a)) == a
