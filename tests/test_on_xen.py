"""Real event channels: run in dom0 by the nested Xen runner (ci/xen), skipped elsewhere.

XENEVT_REQUIRE_XEN=1 turns "not on Xen" into a failure.  Each test checks
xenevt against what Xen itself reports (lsevtchn, the 'e' debug key) or
against the kernel's own memory, never against xenevt alone.
XENCI_BREAK=1 flips one expectation and XENCI_HANG=1 waits for an event that
never comes: the runner's own failure paths are tested with them.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time

import pytest

HAVE_XEN = os.path.exists("/dev/xen/evtchn")
REQUIRE = os.environ.get("XENEVT_REQUIRE_XEN") == "1"
LSEVTCHN = shutil.which("lsevtchn") or (glob.glob("/usr/lib/xen-*/bin/lsevtchn") or ["lsevtchn"])[0]

if not HAVE_XEN:
    if REQUIRE:
        pytest.fail("XENEVT_REQUIRE_XEN=1 but /dev/xen/evtchn does not exist", pytrace=False)
    pytest.skip("not running on Xen", allow_module_level=True)

import jsonschema  # noqa: E402  (Debian's python3-jsonschema in the runner's dom0)

from xenevt.backend import select_backend  # noqa: E402
from xenevt.evidence import edump, lsevtchn  # noqa: E402
from xenevt.memory.kcore import KernelMemory, read_self, read_symbols  # noqa: E402

pytestmark = pytest.mark.xen


@pytest.fixture
def xen():
    b = select_backend("xen")
    yield b
    b.shutdown()


def checked(path: str, stdout: str) -> list[dict]:
    """Each document of a command's --json output (one per line), validated against the shipped schema: the
    command's own definition (``path``: its command path), or ``error`` for a failure's object."""
    from xenevt.schema import command_schema, schema

    docs = [json.loads(line) for line in stdout.splitlines()]
    assert docs, f"{path} printed no JSON"
    for doc in docs:
        want = command_schema(path) if "error" not in doc else {"$ref": "#/$defs/error", "$defs": schema()["$defs"]}
        jsonschema.Draft202012Validator(want).validate(doc)
    return docs


def facts_of(statuses):
    return {st.port: (st.state, st.vcpu, st.remote_domain, st.remote_port, st.virq) for st in statuses}


def test_kernel_uses_the_fifo_abi(xen):
    assert xen.info()["abi"] == "FIFO"
    with open("/proc/xen/capabilities") as f:
        assert "control_d" in f.read()


def test_status_of_every_dom0_port_matches_lsevtchn(xen):
    p = xen.bind_unbound(0, 0)  # something of ours in the table too
    out = subprocess.run([LSEVTCHN, "0"], capture_output=True, text=True, check=True).stdout
    theirs = {port: (f.state, f.vcpu, f.remote_domain, f.remote_port, f.virq)
              for port, f in lsevtchn.parse(out, 0).domains[0].ports.items()}
    ours = facts_of(xen.list_ports(0))
    if os.environ.get("XENCI_BREAK") == "1":
        ours[p] = ("interdomain",) + ours[p][1:]  # a deliberately wrong expectation
    assert p in theirs and ours == theirs


def test_e_debug_key_agrees_with_status(xen):
    q = xen.bind_unbound(0, 0)
    ev = edump.parse(xen.debug_dump("e"))
    dom0 = ev.domains[0]
    assert dom0.abi in (None, "FIFO")
    seen = {port: (f.state, f.vcpu, f.remote_domain) for port, f in dom0.ports.items()}
    mine = {st.port: (st.state, st.vcpu, st.remote_domain) for st in xen.list_ports(0)}
    assert seen[q][0::2] == ("unbound", 0)  # Linux spreads user ports over vCPUs: any vCPU will do
    assert {p: s for p, s in seen.items() if s[0] != "reserved"} == mine


def test_events_arrive_through_the_fd_and_dump_self_sees_the_mask(xen):
    p = xen.bind_unbound(0, 0)
    q = xen.bind_interdomain(0, 0, p)
    assert xen.consume(0, 0, 8, 10.0) == [q]
    # deliver an event on p but read it without unmasking: the evtchn driver leaves p MASKED
    xen._evtchn.xenevtchn_notify(xen._h, q)
    fd = xen._evtchn.xenevtchn_fd(xen._h)
    import select

    assert select.select([fd], [], [], 10.0)[0]
    assert xen._evtchn.xenevtchn_pending(xen._h) == p
    mem, _ = read_self()
    assert mem.word(p) >> 30 & 1, "the kernel's own event word of p shows MASKED"
    xen.unmask(0, p)
    mem, _ = read_self()
    assert not mem.word(p) >> 30 & 1 and not mem.word(p) >> 31 & 1


def test_dump_self_shows_every_online_cpu(xen):
    mem, what = read_self()
    with open("/sys/devices/system/cpu/online") as f:
        from xenevt.memory.kcore import parse_cpu_list

        online = parse_cpu_list(f.read())
    assert all(mem.cb_offset(cpu) is not None for cpu in online), what
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "dump", "--self"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (d,) = checked("dump", r.stdout)[0]["domains"]
    assert d["abi"] == "FIFO" and d["event_array_pages"] >= 1
    assert not any(q["broken"] for v in d["vcpus"] for q in v["queues"])


def test_privcmd_maps_dom0s_own_event_array_page(xen):
    """The event-array page read through kcore equals the same frame mapped through privcmd."""
    syms = read_symbols("/proc/kallsyms", ("event_array", "page_offset_base", "xen_p2m_addr"))
    km = KernelMemory()
    try:
        vaddr = km.u64(syms["event_array"], "event_array[0]")
        base = km.u64(syms["page_offset_base"], "page_offset_base")
        p2m = km.u64(syms["xen_p2m_addr"], "xen_p2m_addr")
        pfn = (vaddr - base) >> 12
        mfn = km.u64(p2m + 8 * pfn, f"p2m[{pfn}]")
        direct = km.read(vaddr, 4096, "event-array page 0")
    finally:
        km.close()
    (mapped,) = xen.map_frames(0, [mfn])
    words_a = struct.unpack("<1024I", direct)
    words_b = struct.unpack("<1024I", mapped)
    same = sum(a == b for a, b in zip(words_a, words_b, strict=True))
    assert same >= 1000, f"only {same} of 1024 words agree (mfn {mfn:#x})"


def test_cli_list_and_status_on_xen():
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "list"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    ports = checked("list", r.stdout)[0]["ports"]
    out = subprocess.run([LSEVTCHN, "0"], capture_output=True, text=True, check=True).stdout
    assert {p["port"] for p in ports} == set(lsevtchn.parse(out, 0).domains[0].ports)
    assert all("flags" in p for p in ports), "dom0's own ports carry their FIFO flags"
    some = [str(p["port"]) for p in ports[:3]]
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "status", *some], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and [st["port"] for st in checked("status", r.stdout)] == list(map(int, some)), r.stderr


def test_every_json_that_runs_in_dom0_validates():
    """What each command prints with --json on real Xen follows the shipped schema (tests/test_schema.py holds
    every command to it on the simulator): info, list of every domain, doctor --list-rules, a bind held for a
    second, a failure's error object; the rest (list, status, dump, doctor, watch, notify) in their own tests."""
    xe = [sys.executable, "-m", "xenevt", "--json"]
    for path, args, codes in (("info", ["info"], (0,)), ("list", ["list", "--all-domains"], (0,)),
                              ("doctor", ["doctor", "--list-rules"], (0,)),
                              ("bind unbound", ["bind", "unbound", "0", "--timeout", "1"], (0,)),
                              ("status", ["status", "131071"], (1,)), ("list", ["list", "--no-such"], (2,))):
        r = subprocess.run(xe + args, capture_output=True, text=True, timeout=300)
        assert r.returncode in codes, (args, r.returncode, r.stderr)
        docs = checked(path, r.stdout)
        assert all(d["schema"] == "xenevt/1" for d in docs) and ("error" in docs[0]) == (codes != (0,)), docs
    info = json.loads(subprocess.run(xe + ["info"], capture_output=True, text=True, timeout=120).stdout)
    assert info["backend"] == "xen" and 0 in [d["domain"] for d in info["domains"]]


def test_cli_bind_holds_and_notify_to_pings_it():
    xe = [sys.executable, "-m", "xenevt", "--backend", "xen"]
    # the holder's time covers two notifier processes' start under QEMU on a loaded machine (seconds each; more
    # than 60 s once, on a machine running other work); it ends as soon as both events came
    holder = subprocess.Popen(xe + ["bind", "unbound", "0", "--count", "2", "--timeout", "200"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = holder.stdout.readline().strip()
    assert port.isdigit(), holder.stderr.read()
    r = subprocess.run(xe + ["notify", "--to", f"0:{port}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(xe + ["--json", "notify", "--to", f"0:{port}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (sent,) = checked("notify", r.stdout)
    assert (sent["remote_domain"], sent["remote_port"]) == (0, int(port)), sent
    out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.endswith(f": event on port {port}") for line in lines), out
    # the same held with --json: the port object, then each event (NDJSON)
    holder = subprocess.Popen(xe + ["--json", "bind", "unbound", "0", "--count", "1", "--timeout", "200"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = holder.stdout.readline()
    port = json.loads(first)["port"]
    r = subprocess.run(xe + ["notify", "--to", f"0:{port}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    docs = checked("bind unbound", first + out)
    assert docs[0]["state"] == "unbound" and [d["port"] for d in docs[1:]] == [port], docs


def test_doctor_reads_the_real_e_dump():
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "doctor"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode in (0, 3), r.stderr
    (rep,) = checked("doctor", r.stdout)
    assert rep["source"].endswith("'e' dump")
    assert not [f for f in rep["findings"] if f["rule"].startswith("chain-")], rep["findings"]


def test_waiting_for_an_event_that_never_comes(xen):
    """Only with XENCI_HANG=1: proves a hang ends by the per-test timeout, with this test named."""
    if os.environ.get("XENCI_HANG") != "1":
        pytest.skip("XENCI_HANG not set")
    xen.bind_unbound(0, 0)
    xen.consume(0, 0, 1, None)  # nobody notifies: blocks until the runner's timeout
    time.sleep(1e9)


def test_watch_counts_this_guests_xen_interrupts(xen):
    """/proc/interrupts' Xen rows move when events arrive on a port this process bound."""
    p = xen.bind_unbound(0, 0)
    q = xen.bind_interdomain(0, 0, p)
    before = {r.key: r.total for r in xen.activity(0)}
    # IRQ rows, and the xenbus counters of each backend device dom0 serves (netback's vifs)
    assert before and all(r.startswith(("irq ", "xenbus backend/")) for r in before), sorted(before)
    assert any(r.startswith("irq ") for r in before)
    for _ in range(5):
        xen._evtchn.xenevtchn_notify(xen._h, q)
        xen.consume(0, 0, 8, 10.0)
    after = {r.key: r.total for r in xen.activity(0)}
    assert sum(after.values()) - sum(before.values()) >= 5
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "watch", "--interval", "0.5", "-n", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    samples = checked("watch", r.stdout)
    assert [s["sample"] for s in samples] == [1, 2]
    assert any(row["what"].startswith(("xen-dyn", "xen-percpu")) for row in samples[-1]["rows"])


@pytest.fixture
def domu():
    """The PV domU the runner started (XENCI_DOMU); its absence is a failure when the runner said why."""
    if os.environ.get("XENCI_DOMU_ERROR"):
        pytest.fail(f"the runner could not start a domU: {os.environ['XENCI_DOMU_ERROR']}")
    if not os.environ.get("XENCI_DOMU"):
        pytest.skip("no domU here (the nested runner starts one)")
    return int(os.environ["XENCI_DOMU"])


@pytest.fixture
def domu_2l():
    """The runner's 2-level PV domU (XENCI_DOMU_2L: the same Linux booted with xen.fifo_events=0)."""
    if os.environ.get("XENCI_DOMU_2L_ERROR"):
        pytest.fail(f"the runner could not start the 2-level domU: {os.environ['XENCI_DOMU_2L_ERROR']}")
    if not os.environ.get("XENCI_DOMU_2L"):
        pytest.skip("no 2-level domU here (the nested runner starts one)")
    return int(os.environ["XENCI_DOMU_2L"])


def domu_result(domu: int, key: str = "data/xenci-result", wait: float = 240) -> dict:
    """What ci/xen/domu_check.py in ``domu`` wrote to ``key`` of its xenstore directory."""
    path = f"/local/domain/{domu}/{key}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        r = subprocess.run(["xenstore-read", path], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            got = json.loads(r.stdout)
            assert "error" not in got, got["error"]
            return got
        time.sleep(1)
    pytest.fail(f"domain {domu} wrote nothing to {path} in {wait:.0f} s")


def test_domu_sees_its_own_queues_and_ports_as_xen_does(xen, domu):
    """Inside the domU, xenevt read its own FIFO pages (dump --self) and reported through xenstore: the
    ports whose words its kernel unmasked are exactly the open ports dom0's EVTCHNOP_status finds there."""
    got = domu_result(domu)
    assert (got["domid"], got["abi"], got["broken"]) == (domu, "FIFO", 0) and got["pages"] >= 1
    assert all(got["control_blocks"]), "every vCPU of the domU registered a control block"
    open_ports = [s.port for s in xen.list_ports(domu)]
    assert got["unmasked"] == open_ports and open_ports, (got["unmasked"], open_ports)
    # what Xen 4.17 + Linux 6.1 allow a PV domU: EVTCHNOP_status through privcmd is refused even for itself,
    # and xenevt says so in its one line
    assert got["status"] == "ok" or got["status"].startswith(f"errno {errno.EPERM}: cannot list the ports"), got


def test_interdomain_channel_with_a_pv_domu(xen, domu):
    """dom0 allocates a port in the domU for itself, connects to it, notifies: Xen's own dump shows the event
    waiting in the domU (its kernel never bound the port, so the word is still MASKED), and doctor says so."""
    assert domu in xen.domains()
    p = xen.bind_unbound(domu, 0)                    # xc_evtchn_alloc_unbound in the domU
    st = xen.status(domu, p)
    assert (st.state, st.remote_domain) == ("unbound", 0)
    q = xen.bind_interdomain(0, domu, p)
    a, b = xen.status(0, q), xen.status(domu, p)
    assert (a.state, a.remote_domain, a.remote_port) == ("interdomain", domu, p)
    assert (b.state, b.remote_domain, b.remote_port) == ("interdomain", 0, q)
    out = subprocess.run([LSEVTCHN, str(domu)], capture_output=True, text=True, check=True).stdout
    theirs = {port: (f.state, f.remote_domain, f.remote_port)
              for port, f in lsevtchn.parse(out, domu).domains[domu].ports.items()}
    assert theirs == {s.port: (s.state, s.remote_domain, s.remote_port) for s in xen.list_ports(domu)}
    xen.notify(0, q)
    seen = edump.parse(xen.debug_dump("e")).domains[domu].ports[p]
    assert (seen.pending, seen.masked, seen.state, seen.remote_port) == (True, True, "interdomain", q)
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "doctor", "-d", "0", "-d", str(domu)],
                       capture_output=True, text=True, timeout=300)
    found = {(f["rule"], f["domain"], tuple(f["ports"])) for f in checked("doctor", r.stdout)[0]["findings"]}
    assert ("pending-masked", domu, (p,)) in found
    assert not any(rule == "remote-end-mismatch" for rule, _, _ in found)
    xen.close(0, q)
    st = xen.status(domu, p)
    assert (st.state, st.remote_domain) == ("unbound", 0)


_looks = iter(range(1, 1000))


def look_again(domu: int) -> dict:
    """A fresh dump --self from the domU (domu_check.py answers each new token in data/xenci-request; written
    again if unanswered, as the domU may have read the request just before it changed)."""
    token = f"look{next(_looks)}"
    for _ in range(6):
        subprocess.run(["xenstore-write", f"/local/domain/{domu}/data/xenci-request", token], check=True)
        r = subprocess.run(["xenstore-read", f"/local/domain/{domu}/data/xenci-result-{token}"], capture_output=True)
        deadline = time.monotonic() + 20
        while r.returncode and time.monotonic() < deadline:
            time.sleep(0.5)
            r = subprocess.run(["xenstore-read", f"/local/domain/{domu}/data/xenci-result-{token}"],
                               capture_output=True)
        if r.returncode == 0:
            break
    return domu_result(domu, f"data/xenci-result-{token}", 1)


def _settled_2l(got: dict) -> bool:
    """No event in flight in the domU's own view: no unmasked port pending, no upcall or selector bit set.
    Timer and IPI events come and go in microseconds; a snapshot caught mid-delivery is taken again."""
    return not set(got["pending"]) & set(got["unmasked"]) and all(v[0] == 0 and v[2] == 0 for v in got["vcpus"])


def settled_look(domu: int, got: dict | None = None) -> dict:
    for _ in range(4):
        if got is not None and _settled_2l(got):
            return got
        got = look_again(domu)
    return got


def settled_edump(xen, domu: int):
    """Xen's 'e' dump of ``domu``, taken again while an event is caught in flight there (an unmasked port
    pending, or a selector bit set)."""
    for _ in range(4):
        dom = edump.parse(xen.debug_dump("e")).domains[domu]
        if not any(f.pending and not f.masked or f.selector for f in dom.ports.values()):
            break
    return dom


def l2_bits_of(got: dict, chans: dict) -> dict:
    """The domU's own view of each open port: (pending, masked, its vCPU's selector bit for the port's word)."""
    return {p: (p in got["pending"], p not in got["unmasked"], bool(got["vcpus"][st.vcpu][2] >> (p // 64) & 1))
            for p, st in chans.items()}


def assert_views_agree(xen, domu: int, got: dict) -> dict:
    """The 2-level domU's own view (dump --self) against dom0's: EVTCHNOP_status and Xen's 'e' dump, which
    prints the 2-level print_state [pending/masked/selector] for it.  Returns the channels."""
    assert (got["domid"], got["abi"]) == (domu, "2-level") and not got["warnings"], got
    assert all(v is not None and v[1] in (0, 1) for v in got["vcpus"]), got["vcpus"]
    # the engine's prediction of Linux's next upcall on each vCPU, from the memory as read: nothing to deliver
    assert got["next_upcall"] == [[] for _ in got["vcpus"]], got["next_upcall"]
    chans = {st.port: st for st in xen.list_ports(domu)}
    bound = [p for p in chans if p not in got["masked_pending"]]  # dom0's stuck port is not Linux's
    assert got["unmasked"] == sorted(bound) and bound, (got["unmasked"], sorted(chans))
    # Linux's cpu_evtchn_mask names the CPU Xen notifies
    assert got["cpu"] == [chans[p].vcpu for p in got["unmasked"]], (got["cpu"], {p: chans[p].vcpu for p in bound})
    dom = settled_edump(xen, domu)
    assert dom.abi == "2-level", "Xen printed its 2-level print_state (one selector bit) for the domain"
    seen = {p: (f.pending, f.masked, f.selector) for p, f in dom.ports.items() if f.state != "reserved"}
    assert seen == l2_bits_of(got, chans)
    return chans


def frames_view(domu: int, xen=None) -> dict:
    """dom0's dump of the domU's shared_info, mapped through privcmd (the frame Xen reports for it): each
    port's (pending, masked).  With ``xen``, the same memory source in this process (no CLI start-up)."""
    if xen is not None:
        from xenevt import memory

        mem = memory.open_source(memory.Ask(domain=domu, shared_info="auto"), xen).image().mem
        return {p: (mem.l2_bit("pending", p), mem.l2_bit("mask", p)) for p in range(1, mem.nr_chans)}
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "dump", "--domain", str(domu), "--shared-info",
                        "auto"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (d,) = checked("dump", r.stdout)[0]["domains"]
    assert d["abi"] == "2-level", d
    return {p["port"]: (p["flags"]["pending"], p["flags"]["masked"]) for p in d["ports"]}


def test_2l_domu_sees_its_own_bitmaps_as_xen_does(xen, domu_2l):
    """The domU booted with xen.fifo_events=0 dumps its own shared_info bitmaps and vcpu_infos (dump --self):
    its kernel unmasked exactly the ports Xen has open for it, on the vCPUs Xen notifies, and each port's
    pending, mask and selector bits are what Xen's 'e' dump prints; dom0 reading the same shared_info frame
    through privcmd sees the same bitmaps."""
    got = settled_look(domu_2l, domu_result(domu_2l))
    print(f"domU {domu_2l}: {got['source']}; unmasked {got['unmasked']} on vCPUs {got['cpu']}")
    assert got["masked_pending"] == [], got
    chans = assert_views_agree(xen, domu_2l, got)
    assert_frames_agree(domu_2l, got, chans)


def assert_frames_agree(domu: int, got: dict, chans: dict, xen=None) -> None:
    """dom0's privcmd view of the shared_info bitmaps against the domU's own: the same mask bit on every open
    port, the same ports pending and masked (an unmasked port's pending bit lives microseconds)."""
    ours = frames_view(domu, xen)
    assert {p: ours[p][1] for p in chans} == {p: p not in got["unmasked"] for p in chans}
    assert [p for p, (pending, masked) in ours.items() if pending and masked] == got["masked_pending"]


def test_2l_domu_doctor_healthy_then_a_stuck_port(xen, domu_2l):
    """doctor -d on the 2-level domU is healthy; then dom0 allocates a port in it, connects and notifies: the
    domU's Linux never unmasks a port it did not bind, so the event waits (pending, masked, no selector bit),
    the domU's own dump, dom0's privcmd view and Xen's 'e' dump all say so, and doctor finds it."""
    domu_result(domu_2l)  # booted and reporting
    xe = [sys.executable, "-m", "xenevt", "--json", "doctor", "-d", str(domu_2l)]
    for _ in range(3):  # one sample can catch a timer event mid-upcall (pending, selector already cleared)
        r = subprocess.run(xe, capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            break
    (rep,) = checked("doctor", r.stdout)
    assert r.returncode == 0 and rep["verdict"] == "healthy", rep
    assert rep["checked"][str(domu_2l)] >= 1
    p = xen.bind_unbound(domu_2l, 0)
    q = xen.bind_interdomain(0, domu_2l, p)
    try:
        xen.notify(0, q)
        got = settled_look(domu_2l)
        assert got["masked_pending"] == [p] and p not in got["unmasked"], got
        chans = assert_views_agree(xen, domu_2l, got)
        assert l2_bits_of(got, chans)[p] == (True, True, False)
        st = chans[p]
        assert (st.state, st.remote_domain, st.remote_port) == ("interdomain", 0, q)
        assert_frames_agree(domu_2l, got, chans, xen)
        r = subprocess.run(xe, capture_output=True, text=True, timeout=300)
        (rep,) = checked("doctor", r.stdout)
        found = {(f["rule"], f["domain"], tuple(f["ports"])) for f in rep["findings"]}
        assert r.returncode == 3 and ("pending-masked", domu_2l, (p,)) in found, rep
        assert not any(rule == "remote-end-mismatch" for rule, _, _ in found)
    finally:
        xen.close(0, q)
    st = xen.status(domu_2l, p)
    assert (st.state, st.remote_domain) == ("unbound", 0)


# --- issue 14: names, dead peers ------------------------------------------------------------------------------
def xenevt_json(*args: str, ok=(0,)) -> dict:
    """``xenevt --json COMMAND ...`` (a one-word command), its document validated against the schema."""
    r = subprocess.run([sys.executable, "-m", "xenevt", "--json", *args], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode in ok, (args, r.returncode, r.stderr)
    (doc,) = checked(args[0], r.stdout)
    return doc


def xs_port(path: str) -> int:
    return int(subprocess.run(["xenstore-read", path], capture_output=True, text=True, check=True).stdout)


def test_list_names_the_domus_console_and_xenstore_ports_from_both_ends(xen, domu):
    """list -d DOMU names the ports xenstore records for the domU's console and xenstore; list -d 0 names dom0's
    ends of them (xenconsoled's, xenstored's, both daemons in dom0 here) as the backend ends for that domU."""
    domu_result(domu)  # booted: its console and xenstore are connected
    want = {"console": xs_port(f"/local/domain/{domu}/console/port"),
            "xenstore": xs_port(f"/local/domain/{domu}/store/port")}
    theirs = {p["port"]: p for p in xenevt_json("list", "-d", str(domu))["ports"]}
    ends = {}
    for kind, port in want.items():
        name = theirs[port]["name"]
        assert (name["kind"], name["owner"], name["end"]) == (kind, domu, "frontend"), theirs[port]
        assert name["source"] == f"xenstore /local/domain/{domu}/{'store' if kind == 'xenstore' else kind}/port"
        assert theirs[port]["state"] == "interdomain" and theirs[port]["remote_domain"] == 0, theirs[port]
        assert name["peer"] == {"domain": 0, "port": theirs[port]["remote_port"]}
        ends[kind] = theirs[port]["remote_port"]
    ours = {p["port"]: p for p in xenevt_json("list", "-d", "0")["ports"]}
    for kind, port in ends.items():
        name = ours[port]["name"]
        assert (name["kind"], name["owner"], name["end"]) == (kind, domu, "backend"), ours[port]
        assert name["peer"] == {"domain": domu, "port": want[kind]}
        assert ours[port]["remote_domain"] == domu and ours[port]["remote_port"] == want[kind]
        assert name["text"].startswith(f"d0:{port} d{domu} {kind}"), name["text"]


@pytest.mark.timeout(400)  # a guest booted and destroyed, doctor twice: ~40 s under QEMU, more on a loaded host
def test_a_destroyed_guest_leaves_dom0_a_dead_peer(xen):
    """The PV test guest allocates a port for dom0, dom0 connects to it, the guest is destroyed: Xen sends dom0's
    end back to unbound, waiting for a domain that no longer exists, and doctor -d 0 says dead-peer on it."""
    from tests.scenarios import guestrun

    why = guestrun.usable()
    if why:
        if REQUIRE:
            pytest.fail(why)
        pytest.skip(why)
    q = None
    try:
        with guestrun.GuestRun("scenario deadpeer\n0 alloc_unbound self 0\nend\n", name="xenevt-guest-deadpeer",
                               timeout=120) as run:
            steps = [ln.split() for ln in run.lines if ln.startswith("STEP ")]
            assert steps and steps[0][2] == "ok", run.lines
            gport, guest = int(steps[0][3]), run.domid
            q = xen.bind_interdomain(0, guest, gport)
            st = xen.status(0, q)
            assert (st.state, st.remote_domain, st.remote_port) == ("interdomain", guest, gport)
            # inconclusive (4) is doctor's honest answer while something of a domain being built went unread (seen
            # once on 4.20); what is checked here is only that the live peer is not called dead
            rep = xenevt_json("doctor", "-d", "0", ok=(0, 3, 4))
            assert not [f for f in rep["findings"] if f["rule"] == "dead-peer" and q in f["ports"]], rep["findings"]
        # __exit__ destroyed it (xl destroy): Xen closed its ports, which sent dom0's end back to unbound
        deadline = time.monotonic() + 60
        while guest in xen.domains() and time.monotonic() < deadline:
            time.sleep(0.5)
        gone = guest not in xen.domains()
        st = xenevt_json("status", "-d", "0", str(q))
        assert (st["state"], st["remote_domain"]) == ("unbound", guest), st
        rep = xenevt_json("doctor", "-d", "0", ok=(3,))
        found = [f for f in rep["findings"] if f["rule"] == "dead-peer" and f["ports"] == [q]]
        assert found and found[0]["domain"] == 0 and found[0]["severity"] == "warning", rep["findings"]
        why = "which no longer exists" if gone else "which is dying"
        assert f"port {q} is waiting for domain {guest}, {why}" in found[0]["title"], found
    finally:
        if q is not None:
            xen.close(0, q)


def vif_ports(domu: int, wait: float = 120) -> dict:
    """The domU's vif 0 ports as its netfront recorded them in xenstore, once connected: (queue, direction) ->
    port (queue None for a single-queue vif: event-channel-tx/-rx at the device's top)."""
    base = f"/local/domain/{domu}/device/vif/0"
    deadline = time.monotonic() + wait
    while True:
        r = subprocess.run(["xenstore-ls", "-f", base], capture_output=True, text=True)
        found = {}
        for line in r.stdout.splitlines():
            path, _, value = line.partition(" = ")
            rest = path[len(base):].strip("/").split("/")
            if rest[-1] in ("event-channel-tx", "event-channel-rx") and len(rest) <= 2:
                queue = int(rest[0][len("queue-"):]) if len(rest) == 2 else None
                found[(queue, rest[-1][-2:])] = int(value.strip('"'))
        state = re.search(rf"^{re.escape(base)}/state = \"(\d)\"", r.stdout, re.M)
        if found and state and state.group(1) == "4":
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"domain {domu}'s vif never connected: {r.stdout[-600:] or r.stderr}")
        time.sleep(1)


@pytest.mark.parametrize("which", ["domu", "domu_2l"])
def test_list_names_each_domus_vif_ports_from_both_ends(xen, request, which):
    """Each domU has a real PV vif (netfront <-> dom0's netback): list -d DOMU names its tx/rx ports (per queue
    on the 2-vCPU domU) by their xenstore nodes, and list -d 0 names netback's ends as that vif's backend,
    tied to the /proc/interrupts row netback registered for the queue (vifD.0-qN-tx)."""
    domu = request.getfixturevalue(which)
    got = domu_result(domu)
    want = vif_ports(domu)
    theirs = {p["port"]: p for p in xenevt_json("list", "-d", str(domu))["ports"]}
    ours = {p["port"]: p for p in xenevt_json("list", "-d", "0")["ports"]}
    print(f"domU {domu} vif ports: {want}")
    for (queue, direction), port in want.items():
        row = theirs[port]
        name = row["name"]
        assert (name["kind"], name["device"], name["owner"], name["end"], name.get("queue"),
                name.get("direction")) == ("vif", "vif 0", domu, "frontend", queue, direction), row
        assert row["state"] == "interdomain" and row["remote_domain"] == 0, row
        back = row["remote_port"]
        bname = ours[back]["name"]
        assert (bname["kind"], bname["end"], bname["owner"], bname.get("direction")) == (
            "vif", "backend", domu, direction), ours[back]
        assert bname["peer"] == {"domain": domu, "port": port}
        assert bname.get("irq", "").endswith(f"vif{domu}.0-q{queue or 0}-{direction}"), bname
        where = f"queue {queue} {direction}" if queue is not None else direction
        assert name["text"] == f"d{domu}:{port} vif 0 {where} {ARROW} d0:{back}", name["text"]
        # the domU's own names (its xenstore, as watch reads them): netfront's IRQ row for the port (eth0-q0-tx)
        assert re.fullmatch(rf"irq \d+ \S+-q{queue or 0}-{direction}", got["vif_irqs"].get(str(port)) or ""), got
    assert sorted(got["vif_irqs"], key=int) == sorted(map(str, want.values()), key=int), got["vif_irqs"]


ARROW = "\u2194"


def ask_domu(domu: int, *words: str, wait: float = 60) -> dict:
    """Have the domU's domu_check.py do ``words`` (unmask PORT, storm PORT SECONDS) on its own ports."""
    token = f"cmd{next(_looks)}"
    subprocess.run(["xenstore-write", f"/local/domain/{domu}/data/xenci-request", " ".join([token, *words])],
                   check=True)
    return domu_result(domu, f"data/xenci-result-{token}", wait)


def set_l2_mask(xen, domu: int, port: int) -> None:
    """Set ``port``'s bit in the 2-level ``domu``'s evtchn_mask, through a writable privcmd mapping of its
    shared_info, the domain paused meanwhile (its kernel changes the same word without a lock of ours):
    a driver's mask that nothing will ever lift, made from outside."""
    from xenevt.backend.xen import libs
    from xenevt.engine.layout import L2_MASK

    frame, _ = xen.shared_info_frame(domu)
    fm = libs.load("xenforeignmemory")
    h = fm.xenforeignmemory_open(libs.quiet_logger(), 0)
    assert h != libs.ffi.NULL
    xl = __import__("tests.scenarios.guestrun", fromlist=["find_xl"]).find_xl() or "xl"
    subprocess.run([xl, "pause", str(domu)], check=True, timeout=60)
    try:
        errs = libs.ffi.new("int[]", 1)
        addr = fm.xenforeignmemory_map(h, domu, 3, 1, libs.ffi.new("xen_pfn_t[]", [frame]), errs)  # PROT_RW
        assert addr != libs.ffi.NULL and errs[0] == 0, (libs.ffi.errno, errs[0])
        try:
            word = libs.ffi.cast("uint64_t *", libs.ffi.cast("char *", addr) + L2_MASK)
            word[port // 64] |= 1 << (port % 64)
        finally:
            fm.xenforeignmemory_unmap(h, addr, 1)
    finally:
        fm.xenforeignmemory_close(h)
        subprocess.run([xl, "unpause", str(domu)], check=True, timeout=60)


def test_the_exporter_names_netbacks_vif_ports_and_promtool_reads_it(xen, domu, domu_2l):
    """`xenevt exporter --once` in dom0 on real Xen: every domain listed, dom0's ports by state as `list` counts
    them, and netback's end of each domU's vif queues a series of its own, labelled with the vif; the exposition
    goes to the runner's host (tests/console_file.py), where the real promtool checks it."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.console_file import console_lines

    for d in (domu, domu_2l):
        vif_ports(d)  # (connected first: netback binds its ends when the frontend connects)
    r = subprocess.run([sys.executable, "-m", "xenevt", "exporter", "--once", "--timeout", "200"],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    text = r.stdout.decode()
    print("\n".join(console_lines("exporter-dom0.prom", r.stdout)))
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def of(name: str, **labels) -> list:
        return [s for s in samples if s.name == name and all(s.labels.get(k) == str(v) for k, v in labels.items())]

    assert [s.value for s in of("xenevt_collect_success", source="evidence")] == [1.0], text[-2000:]
    assert {int(s.labels["domain"]) for s in of("xenevt_domain_info")} >= {0, domu, domu_2l}
    rows = xenevt_json("list", "-d", "0")["ports"]
    for state in ("interdomain", "virq", "ipi"):
        want = sum(1 for p in rows if p["state"] == state)
        assert [s.value for s in of("xenevt_ports", domain=0, state=state)] == [want], state
    for d in (domu, domu_2l):
        backs = {p["port"]: p for p in rows if p["state"] == "interdomain" and p["remote_domain"] == d
                 and p["remote_port"] in vif_ports(d).values()}
        assert backs, (d, rows)
        for port in backs:
            got = of("xenevt_port_events_total", domain=0, port=port)
            assert got and got[0].labels["device"].startswith(f"d{d} vif 0"), (d, port, got)


def test_a_domus_own_exporter_covers_itself(xen, domu, domu_2l):
    """In each domU, `xenevt exporter --once` (domu_check.py runs it, as a guest's monitoring agent would) covers
    its own domain only.  The 2-level domU (privcmd unrestricted) reads its port table: its ports are the ones
    dom0 lists for it.  The FIFO domU keeps privcmd's default, restricted: no EVTCHNOP_status, so its table is
    unread evidence (counted, never called healthy) and the exporter still serves what it could read."""
    got = ask_domu(domu_2l, "exporter", wait=240)
    assert got.get("rc") == 0, got
    assert got["domains"] == [domu_2l] and got["evidence"] == [1.0] and got["series"] > 0, got
    assert got["ports"] == len(xenevt_json("list", "-d", str(domu_2l))["ports"]), got
    got = ask_domu(domu, "exporter", wait=240)
    assert got.get("rc") == 0 and got["domains"] == [domu] and got["evidence"] == [1.0], got
    listed = len(xenevt_json("list", "-d", str(domu))["ports"])
    assert (got["ports"], got["unread"][0] == 0) in ((listed, True), (0, False)), got  # (read whole, or refused)


def first_vif_port(xen, domu: int, direction: str) -> tuple[int, int, str]:
    """The domU's vif port of its first queue in ``direction`` (tx, rx), once connected: (its port, dom0's end,
    the name doctor gives it)."""
    domu_result(domu)
    ports = vif_ports(domu)
    queue = min((q for q, _ in ports), key=lambda q: -1 if q is None else q)
    p = ports[(queue, direction)]
    where = f"vif 0 queue {queue} {direction}" if queue is not None else f"vif 0 {direction}"
    return p, xen.status(domu, p).remote_port, where


@pytest.mark.timeout(600)
def test_a_stuck_vif_port_in_the_domu_is_found_from_dom0_by_name(xen, domu_2l):
    """The 2-level domU's vif rx port is masked from outside and dom0 notifies it (netback's end, a raw
    EVTCHNOP_send): the event waits, pending and masked, and the guest's network would stop there.  doctor
    -d DOMU in dom0 finds it and names it by device (text and JSON); the guest unmasking it (EVTCHNOP_unmask,
    what doctor's advice amounts to) delivers the event and doctor is healthy about it again."""
    from tests.scenarios.targets import XenTarget

    domu = domu_2l
    p, q, where = first_vif_port(xen, domu, "rx")
    set_l2_mask(xen, domu, p)
    try:
        t = XenTarget()
        try:
            t.send(q)  # dom0's end of the rx channel: netback's port, a port of dom0's own
        finally:
            t.close_target()
        rep = xenevt_json("doctor", "-d", str(domu), ok=(3,))
        found = [(f, n) for f, n in zip(rep["findings"], [f.get("names") for f in rep["findings"]], strict=True)
                 if f["rule"] == "pending-masked" and f["ports"] == [p]]
        assert found, rep["findings"]
        f, names = found[0]
        assert names and names[0]["device"] == "vif 0" and names[0]["text"].startswith(f"d{domu}:{p} {where}"), f
        text = subprocess.run([sys.executable, "-m", "xenevt", "doctor", "-d", str(domu)], capture_output=True,
                              text=True, timeout=300).stdout
        print(text)
        assert f"d{domu}:{p} ({where} {ARROW} d0:{q})" in text, text
    finally:
        got = ask_domu(domu, "unmask", str(p))
    assert got == {"unmasked": p}, got
    st = edump.parse(xen.debug_dump("e")).domains[domu].ports[p]
    assert not st.masked, "EVTCHNOP_unmask by the guest lifted the mask"
    rep = xenevt_json("doctor", "-d", str(domu), ok=(0, 3))
    assert not [f for f in rep["findings"] if p in f["ports"] and f["rule"] == "pending-masked"], rep["findings"]


@pytest.mark.timeout(600)
def test_a_domu_notifying_its_vif_in_a_loop_is_flagged_from_dom0(xen, domu_2l):
    """The 2-level domU notifies its vif's tx port in a loop with nothing on the ring (a rogue frontend, the
    XSA-391 class).  doctor -d 0 --interval in dom0 flags netback's end of it, named by device, with the rate
    it measured (what Linux delivers of the flood: its lateeoi throttle holds the EOI back, so a few hundred a
    second under QEMU, fewer on a loaded host, where an idle vif takes none; hence --storm-rate 1), and does not
    call that port stuck though it rests masked between the delayed EOIs."""
    domu = domu_2l
    p, q, _ = first_vif_port(xen, domu, "tx")
    token = f"cmd{next(_looks)}"
    # the flood lasts until doctor is done (at most 300 s): a loaded host's two samples may take long
    subprocess.run(["xenstore-write", f"/local/domain/{domu}/data/xenci-request", f"{token} storm {p} 300"],
                   check=True)
    domu_result(domu, f"data/xenci-result-{token}-started", 60)
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "xenevt", "--json", "doctor", "-d", "0", "--interval", "8",
                            "--storm-rate", "1"], capture_output=True, text=True, timeout=280)
    finally:
        took = time.monotonic() - t0
        subprocess.run(["xenstore-write", f"/local/domain/{domu}/data/xenci-result-{token}-stop", "1"], check=True)
    sent = domu_result(domu, f"data/xenci-result-{token}", 180)
    print(f"domU {domu} sent {sent}; doctor rc {r.returncode} in {took:.1f} s; dom0's end of its port {p}: {q}")
    (rep,) = checked("doctor", r.stdout)
    mine = [f for f in rep["findings"] if q in f["ports"]]
    for f in rep["findings"]:
        print(f["severity"], f["rule"], f["ports"], f["title"], "|", f["evidence"])
    said = [(f["rule"], f["ports"], f["title"]) for f in rep["findings"] if f["severity"] != "info"]
    assert r.returncode == 3 and mine, (f"rc {r.returncode}, doctor {took:.0f} s, storm {sent}, dom0 port {q}: "
                                        f"{said} unread {rep['unread']}")
    rules = {f["rule"] for f in mine}
    assert "event-storm" in rules, rules
    # Linux holds netback's port masked between its delayed EOIs: events still flow, so it is not stuck
    assert "pending-masked" not in rules, mine
    storm = next(f for f in mine if f["rule"] == "event-storm")
    assert f"the sender is domain {domu} (its port {p})" in storm["evidence"], storm
    assert storm["names"][storm["ports"].index(q)]["device"] == "vif 0", storm


PLAIN = (0, 0x40000000)


def fifo_view(dump: dict, timers: set[int] = frozenset()) -> dict:
    """As ci/xen/domu_check.py's: each vCPU's READY bits and queue heads, every word not at rest (0 or MASKED);
    a timer VIRQ event Xen queued after the domU's own look (a word of ``timers`` pending, alone in a READY
    queue) taken back out."""
    vcpus = []
    for v in dump["vcpus"]:
        late = {q["priority"] for q in v["queues"] if q["chain"] and set(q["chain"]) <= timers}
        vcpus.append([[p for p in v.get("ready", []) if p not in late], v.get("heads", {})])
    late_timers = {w["port"] for w in dump["ports"] if w["port"] in timers and w["flags"]["pending"]}
    return {"vcpus": vcpus, "words": [[w["port"], w["word"]] for w in dump["ports"]
                                      if w["word"] not in PLAIN and w["port"] not in late_timers]}


@pytest.mark.timeout(600)  # xl dump-core of 512 MB under QEMU TCG
def test_dom0_reads_a_paused_domus_queues_as_the_domu_does(xen, domu, tmp_path):
    """dom0 reads the FIFO domU's event array and control blocks through privcmd (dump --domain, the kernel's
    symbols from a System.map) and from an `xl dump-core` of it: with the domU paused right after its own
    dump --self, all three views agree.  Debian's linux-image ships a stub System.map (the real one is in the
    -dbg package); the domU runs dom0's kernel, which a PV guest loads unrandomized, so dom0's own kallsyms
    (without module symbols) is that kernel's System.map."""
    from tests.scenarios import guestrun

    domu_result(domu)
    smap = tmp_path / "System.map"
    with open("/proc/kallsyms") as f:
        smap.write_text("".join(ln for ln in f if "[" not in ln))
    xl = guestrun.find_xl() or "xl"
    core = tmp_path / "core"
    # a paused vCPU's singleshot timer still fires: Xen queues VIRQ_TIMER (pending, linked, READY) meanwhile
    timers = {st.port for st in xen.list_ports(domu) if st.state == "virq" and st.virq == 0}
    assert timers
    for _ in range(6):
        got = look_again(domu)
        subprocess.run([xl, "pause", str(domu)], check=True, timeout=60)
        try:
            (live,) = xenevt_json("dump", "-d", str(domu), "--system-map", str(smap))["domains"]
            if fifo_view(live, timers) != got["view"]:
                continue  # an event arrived between the domU's look and the pause (in flight): look again
            subprocess.run([xl, "dump-core", str(domu), str(core)], check=True, timeout=300, capture_output=True)
            (dead,) = xenevt_json("dump", "--dump-core", str(core), "--system-map", str(smap))["domains"]
            core.unlink()
            break
        finally:
            subprocess.run([xl, "unpause", str(domu)], check=True, timeout=60)
    print(f"domU {domu}: {json.dumps(got['view'])}")
    assert live["abi"] == "FIFO" and live["domain"] == domu, live
    assert fifo_view(live, timers) == got["view"]
    # every port the domU's kernel unmasked (its bound ports) is a channel dom0 lists, unmasked
    assert [w["port"] for w in live["ports"] if not w["flags"]["masked"]] == got["unmasked"]
    assert fifo_view(dead, timers) == got["view"]
    assert (dead["abi"], dead["event_array_pages"]) == ("FIFO", live["event_array_pages"])


def l2_view(dump: dict) -> dict:
    """A 2-level dump's facts as ci/xen/domu_check.py reports them: per vCPU [upcall_pending, upcall_mask,
    pending_sel], the ports pending, the ports unmasked."""
    return {"vcpus": [[v["evtchn_upcall_pending"], v["evtchn_upcall_mask"], v["evtchn_pending_sel"]]
                      if v["vcpu_info_known"] else None for v in dump["vcpus"]],
            "pending": sorted(p["port"] for p in dump["ports"] if p["flags"]["pending"]),
            "unmasked": sorted(p["port"] for p in dump["ports"] if not p["flags"]["masked"])}


def raised_during_pause(got: dict, seen: dict, timers: dict[int, int]) -> dict:
    """The domU's own view with Xen's 2-level raise (event_2l.c) of each timer VIRQ that dom0's view has
    pending and the domU's had not: a paused vCPU's singleshot timer still fires, so Xen sets the port's
    pending bit and, the port being unmasked, its word's selector bit and the vCPU's upcall flag."""
    want = {"vcpus": [list(v) for v in got["vcpus"]], "pending": list(got["pending"]),
            "unmasked": list(got["unmasked"])}
    for port, vcpu in sorted(timers.items()):
        if port in seen["pending"] and port not in want["pending"] and port in want["unmasked"]:
            want["pending"] = sorted(want["pending"] + [port])
            want["vcpus"][vcpu][0] = 1
            want["vcpus"][vcpu][2] |= 1 << (port // 64)
    return want


@pytest.mark.timeout(600)
def test_dom0_reads_a_paused_2l_domus_bitmaps_as_the_domu_does(xen, domu_2l, tmp_path):
    """dom0 reads the 2-level domU's shared_info and vcpu_infos through its kernel's symbols (dump --domain
    --system-map: HYPERVISOR_shared_info and the per-CPU xen_vcpu pointers, the guest's page tables walked by
    Xen): with the domU paused right after its own dump --self, both give the same upcall flags, selectors,
    pending ports and unmasked ports, given Xen's raise of a timer VIRQ that fires during the pause."""
    from tests.scenarios import guestrun

    domu = domu_2l
    domu_result(domu)
    smap = tmp_path / "System.map"
    with open("/proc/kallsyms") as f:
        smap.write_text("".join(ln for ln in f if "[" not in ln))
    xl = guestrun.find_xl() or "xl"
    timers = {st.port: st.vcpu for st in xen.list_ports(domu) if st.state == "virq" and st.virq == 0}
    assert timers
    for _ in range(6):
        got = settled_look(domu)
        subprocess.run([xl, "pause", str(domu)], check=True, timeout=60)
        try:
            (live,) = xenevt_json("dump", "-d", str(domu), "--system-map", str(smap))["domains"]
        finally:
            subprocess.run([xl, "unpause", str(domu)], check=True, timeout=60)
        seen = l2_view(live)
        want = raised_during_pause(got, seen, timers)
        if seen == want:
            break  # else an event other than a timer's arrived between the domU's look and the pause: again
    print(f"domU {domu}: {json.dumps(got)}; dom0's view {json.dumps(seen)}")
    assert (live["abi"], live["domain"]) == ("2-level", domu) and not live["warnings"], live
    assert "kernel" in live["source"], live["source"]
    assert seen == want, (seen, want)


# --- issue 15: xenevt's notify -> deliver beside a plain C program ----------------------------------------------
PINGPONG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "c", "evtchn_pingpong")


@contextlib.contextmanager
def on_vcpu0():
    """This process, and the C program it starts, on dom0's vCPU 0: the vCPU that binds a port decides where Linux
    puts it (each interdomain bind takes that vCPU's next vCPU in turn), and a process on the other vCPU than its
    event pays a cross-vCPU wakeup (an IPI under QEMU); left to the scheduler, that is where each side landed, not
    what it costs (unpinned, the ratio read 1.13x-1.59x across runs)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def c_run(rounds: int) -> float:
    """Seconds of one run of tests/c/evtchn_pingpong.c (a loopback channel in dom0, a fresh one each process:
    notify, poll the evtchn fd, read the port, unmask), its start-up included."""
    t0 = time.perf_counter()
    r = subprocess.run([PINGPONG, str(rounds), "0"], capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    assert r.returncode == 0 and f"{rounds} round trips" in r.stdout, (r.stdout, r.stderr)
    return took


def xenevt_run(xen, rounds: int) -> float:
    """Seconds of the same loop through xenevt's library (the xen backend's notify_wait: the send and the wait for
    the answer in one C call) on a fresh channel,
    as the C program's is: Linux's evtchn driver puts each interdomain port it binds on the binding vCPU's next
    vCPU in turn, so successive runs of either side see both placements."""
    a = xen.bind_unbound(0, 0)
    b = xen.bind_interdomain(0, 0, a)
    try:
        assert xen.consume(0, 0, 1, 5.0) == [b]  # Xen leaves the new interdomain end pending once
        t0 = time.perf_counter()
        for _ in range(rounds):
            assert xen.notify_wait(0, b, 0, 0, 1, 5.0) == [a]
            assert xen.notify_wait(0, a, 0, 0, 1, 5.0) == [b]
        return time.perf_counter() - t0
    finally:
        xen.close(0, a)
        xen.close(0, b)


def round_trips(xen, rounds: int, pairs: int = 5) -> tuple[float, float, float]:
    """(xenevt's, C's seconds per notify -> deliver, the median of their ratios): the two runs interleaved pair by
    pair, since under QEMU the host's speed drifts over a minute by as much as the difference measured (runs of
    one side then the other read 1.18x-1.40x of the same code); the C program's start-up (a run of no rounds,
    the least of three) is taken out of each of its runs."""
    start = min(c_run(0) for _ in range(3))
    ours, theirs = [], []
    for _ in range(pairs):
        theirs.append(max(1e-9, c_run(rounds) - start) / (2 * rounds))
        ours.append(xenevt_run(xen, rounds) / (2 * rounds))
    ratios = sorted(o / c for o, c in zip(ours, theirs, strict=True))
    return sorted(ours)[pairs // 2], sorted(theirs)[pairs // 2], ratios[pairs // 2]


@pytest.mark.timeout(600)
def test_notify_deliver_round_trip_beside_a_c_program(xen):
    """xenevt's notify -> deliver on a loopback channel in dom0 against the same loop in C on libxenevtchn: the
    figure xen-ci's summary prints (issue 28's goal: at most 1.2x).  A figure, not a timed assertion."""
    if not os.path.exists(PINGPONG):
        if REQUIRE:
            pytest.fail(f"{PINGPONG} was not built (the runner builds it where libxen-dev is installed)")
        pytest.skip("no C program to compare with")
    rounds = 2000  # the C figure subtracts a process start (tens of ms under QEMU): the loops must dwarf it
    with on_vcpu0():
        ours, c, ratio = round_trips(xen, rounds)
    print(f"XENCI-BENCH notify->deliver: xenevt {ours * 1e6:.0f} us, C {c * 1e6:.0f} us "
          f"(median of 5 interleaved pairs {ratio:.2f}x, goal <= 1.2x)")


def test_the_front_door_script_runs_unchanged_in_dom0(tmp_path):
    """examples/front_door.py (issue 22: only xenevt.__all__), outside the checkout, on the real host: the event
    sent arrives; doctor's verdict is read (dom0's may be problems: its PV spinlock ports, a real dom0's state)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "front_door.py"
    shutil.copy(os.path.join(root, "examples", "front_door.py"), script)
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["backend"] == "xen" and out["received"] == [out["receiver"][1]]
    assert out["verdict"] in ("healthy", "problems", "inconclusive")


def test_a_users_test_file_runs_on_the_real_host_through_the_plugin(tmp_path):
    """A user's test file, unchanged from the simulator's (tests/test_examples.py), runs on xen_host here."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from tests.test_examples import USER_TEST

    (tmp_path / "test_user.py").write_text(USER_TEST)
    env = dict(os.environ, PYTHONPATH=root, XENEVT_REQUIRE_XEN="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xenevt.pytest_plugin",
                        "-o", "addopts=", "test_user.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout + r.stderr


def test_dom0_runs_xenevt_from_its_debian_package(xen):
    """xen-ci's dom0 installed xenevt's .deb for its own Debian with dpkg (ci/xen/init.sh), as an admin would with
    apt: the tests here import that package, the command is the package's, and dpkg knows every file of it."""
    if not os.path.exists("/xenci/xenevt.deb"):
        pytest.skip("dom0 runs the checkout's xenevt (xenci --deb no)")
    version = os.environ.get("XENCI_DEB_VERSION")
    assert version, "dom0 was given xenevt's .deb but dpkg did not install it (the console's XENCI-INFO dpkg lines)"
    import xenevt

    assert xenevt.__file__.startswith("/usr/lib/python3/dist-packages/xenevt/"), xenevt.__file__
    status = subprocess.run(["/usr/bin/dpkg-query", "-W", "-f", "${Status}", "xenevt"], capture_output=True, text=True,
                            timeout=60)
    assert status.stdout == "install ok installed", status
    upstream = version.split("-")[0]
    shown = subprocess.run(["/usr/bin/xenevt", "--version"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.split()[-1] == upstream == xenevt.__version__, (shown, version)
    files = subprocess.run(["/usr/bin/dpkg", "-L", "xenevt"], capture_output=True, text=True, timeout=60).stdout.split()
    assert any(re.search(r"/xenevt/_native\..*so$", f) for f in files), files
    assert "/usr/share/man/man1/xenevt.1.gz" in files and "/usr/bin/xenevt" in files
    # the installed command on this host's real event channels
    listed = subprocess.run(["/usr/bin/xenevt", "list", "--json"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and json.loads(listed.stdout)["ports"], listed.stderr
