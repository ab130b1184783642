"""Simulated Linux guests on the 2-level ABI: boot, every hypercall and guest operation, consume, reset, recovery
from kills, ``sim check`` and the CLI, beside FIFO guests on the same host."""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
import time

import pytest

from xenevt import abi
from xenevt.cli import main
from xenevt.engine.layout import ABI_2L, ABI_FIFO
from xenevt.errors import ChannelError, StateError, UsageError
from xenevt.sim.check import check_host
from xenevt.sim.host import FILE_NAME, SimHost, create_host
from xenevt.sim.statefile import DOM_BARE, DOM_ENTRY, DOM_KERNEL_2L, DOM_TABLE, RAISE

ALL = (1 << 64) - 1


@pytest.fixture
def state(tmp_path):
    """dom0's kernel chose FIFO, dom1's and dom2's 2-level."""
    d = str(tmp_path / "host")
    create_host(d, nr_domains=3, nr_vcpus=2, max_ports_dom0=256, max_ports_domu=256, abis={1: "2l", 2: "2l"})
    return d


@pytest.fixture
def host(state):
    with SimHost(state) as h:
        yield h


def vinfo(h, domid, vcpu=0):
    """(evtchn_upcall_pending, evtchn_upcall_mask, evtchn_pending_sel)"""
    return h.domains[domid].mem.vcpu_info(vcpu)


def bit(h, domid, which, port) -> bool:
    return h.domains[domid].mem.l2_bit(which, port)


def set_vinfo(h, domid, vcpu, upcall=None, sel=None):
    mem = h.domains[domid].mem
    at = mem.geometry.vcpu_info_offset(vcpu)
    if upcall is not None:
        mem.buffer[at] = upcall
    if sel is not None:
        struct.pack_into("<Q", mem.buffer, at + 8, sel)


def forget_claims(h):
    """So that this process's claims do not count as live consumers (as if it were another, gone, process)."""
    h.consumers.claimed.clear()
    for d in h.domains.values():
        for v in range(d.mem.nr_vcpus):
            d.mem.set_consumer(v, 0)


# --- create_host and the flag --------------------------------------------------------------------------------
def test_a_2l_kernel_boots_with_every_port_masked_and_no_control_block(host):
    d0, d1 = host.domains[0].mem, host.domains[1].mem
    assert (d0.event_abi, d0.nr_pages, d0.cb_offset(0)) == (ABI_FIFO, 1, 0)
    assert (d1.event_abi, d1.nr_pages, d1.cb_offset(0), d1.cb_offset(1)) == (ABI_2L, 0, None, None)
    assert list(d1.l2_mask()) == [ALL] * 64  # xen_evtchn_mask_all(): all 4096, past the domain's 256 too
    assert not any(d1.l2_pending()) and list(d1.l2_scan(0)) == [0, 0]
    assert (host.domains[1].kernel_2l, host.domains[0].kernel_2l) == (True, False)
    info = {d["domain"]: d for d in host.info()["domains"]}
    assert [info[d]["abi"] for d in (0, 1, 2)] == ["FIFO", "2-level", "2-level"]
    assert info[1]["control_blocks"] == [] and info[1]["event_array_pages"] == 0


def test_the_kernels_choice_is_a_flag_of_the_domain_table(state, tmp_path):
    with open(os.path.join(state, FILE_NAME), "rb") as f:
        data = bytearray(f.read())
    flags = [DOM_ENTRY.unpack_from(data, DOM_TABLE + i * DOM_ENTRY.size)[1] for i in range(3)]
    assert [f & DOM_KERNEL_2L for f in flags] == [0, DOM_KERNEL_2L, DOM_KERNEL_2L]
    at = DOM_TABLE + DOM_ENTRY.size + 4
    struct.pack_into("<I", data, at, DOM_KERNEL_2L | DOM_BARE)
    with open(os.path.join(state, FILE_NAME), "wb") as f:
        f.write(data)
    with pytest.raises(StateError, match=rf"offset {at:#x}: field domain_table\[1\].flags: flags 0xa: domain 1 is "
                       "bare \\(no kernel\\), yet names the ABI its kernel chose"):
        SimHost(state)


def test_create_host_refuses_what_no_kernel_chooses(tmp_path):  # (the caller's mistake: a usage error)
    with pytest.raises(UsageError, match="event-channel ABI 'lifo' of domain 1 is not one a guest kernel chooses"):
        create_host(str(tmp_path), abis={1: "lifo"})
    with pytest.raises(UsageError, match="event-channel ABI '3l' of domain 0"):
        create_host(str(tmp_path), abi="3l")
    with pytest.raises(UsageError, match=r"no domain 4 to give the 2l ABI \(the host has domains 0..1\)"):
        create_host(str(tmp_path), abis={4: "2l"})
    with pytest.raises(UsageError, match="domain 1 is bare: it has no kernel to choose the 2l ABI"):
        create_host(str(tmp_path), bare=(1,), abis={1: "2l"})
    create_host(str(tmp_path), abi="2l", bare=(1,))  # every kernel 2-level; the bare domain has none
    with SimHost(str(tmp_path)) as h:
        assert (h.domains[0].kernel_2l, h.domains[1].kernel_2l, h.domains[1].bare) == (True, False, True)
        assert not any(h.domains[1].mem.l2_mask())  # as Xen made it: nothing masked


# --- Xen's rules and the guest's, on a 2-level kernel ---------------------------------------------------------
def test_bind_unmasks_the_port_and_a_send_is_consumed_once(host):
    p = host.bind_ipi(1, 1)
    q = host.bind_ipi(1, 1, masked=True)  # (a port Linux has not enabled yet)
    assert (bit(host, 1, "mask", p), bit(host, 1, "mask", q)) == (False, True)
    seq = host.domains[1].mem.upcall_seq(0)
    assert host.send(1, 1, p).outcome == "raised"
    assert vinfo(host, 1) == (1, 0, 1) and host.domains[1].mem.upcall_seq(0) == seq + 1  # SP.UPCALL: kicked
    assert host.consume(1, 0) == [p]
    assert vinfo(host, 1) == (0, 0, 0) and not bit(host, 1, "pending", p)
    assert host.consume(1, 0) == []


def test_a_second_raise_under_a_pending_upcall_coalesces_without_a_kick(host):
    a, b = host.bind_ipi(1, 1), host.bind_ipi(1, 1)
    mem = host.domains[1].mem
    host.send(1, 1, a)
    seq = mem.upcall_seq(0)
    assert host.send(1, 1, b).outcome == "raised"  # newly pending, selector bit already set: no new upcall
    assert host.send(1, 1, b).outcome == "coalesced"  # already pending
    assert mem.upcall_seq(0) == seq
    assert host.consume(1, 0) == [a, b]


def test_linux_scans_round_robin_from_where_it_stopped(host):
    ports = [host.bind_ipi(1, 1) for _ in range(5)]
    for p in ports[:3]:
        host.send(1, 1, p)
    assert host.consume(1, 0) == ports[:3]
    host.send(1, 1, ports[0])
    host.send(1, 1, ports[4])
    assert host.consume(1, 0) == [ports[4], ports[0]]  # resumes past port 3, then the start word once more


def test_a_batch_limit_loses_nothing(host):
    ports = [host.bind_ipi(1, 1) for _ in range(70)]  # two selector words
    for p in ports:
        host.send(1, 1, p)
    got = []
    while batch := host.consume(1, 0, max_events=16):
        assert len(batch) <= 16
        assert batch[-1] == ports[-1] or vinfo(host, 1)[0] == 1  # the upcall stays pending for the rest
        got += batch
    assert sorted(got) == ports and len(got) == 70


def test_mask_keeps_the_event_pending_and_unmask_delivers_it(host):
    p = host.bind_ipi(1, 1)
    host.mask(1, 1, p)
    assert host.send(1, 1, p).outcome == "pending, masked"
    assert vinfo(host, 1) == (0, 0, 0) and host.consume(1, 0) == []
    seq = host.domains[1].mem.upcall_seq(0)
    host.unmask(1, 1, p)  # Linux's own unmask: selector bit and upcall set by the guest, the vCPU kicked
    assert vinfo(host, 1) == (1, 0, 1) and host.domains[1].mem.upcall_seq(0) == seq + 1
    assert host.consume(1, 0) == [p]


def test_unmask_of_a_port_on_another_vcpu_goes_through_xen(host):
    rp = host.alloc_unbound(1, 1, 0)
    host.bind_vcpu(1, 1, rp, 1)
    p0 = host.bind_interdomain(0, 0, 1, rp)
    host.mask(1, 1, rp)
    host.send(0, 0, p0)
    host.unmask(1, 1, rp)
    assert vinfo(host, 1, 1) == (1, 0, 1) and vinfo(host, 1, 0) == (0, 0, 0)
    assert host.consume(1, 0) == [] and host.consume(1, 1) == [rp]


def test_set_priority_is_enosys_with_the_reason(host):
    p = host.bind_ipi(1, 1)
    with pytest.raises(ChannelError) as e:
        host.set_priority(1, 1, p, 3)
    assert e.value.errno == errno.ENOSYS
    assert str(e.value) == (f"cannot set the priority of port {p} of domain 1: the domain is on the 2-level ABI: "
                            "ports have no priority (ENOSYS)")


def test_close_masks_and_clears_and_the_port_is_reused(host):
    p = host.bind_ipi(1, 1)
    host.mask(1, 1, p)
    host.send(1, 1, p)
    host.close_port(1, 1, p)
    assert (bit(host, 1, "pending", p), bit(host, 1, "mask", p)) == (False, True)
    assert host.bind_ipi(1, 1) == p and not bit(host, 1, "mask", p)


def test_a_moved_port_is_delivered_on_its_new_vcpu(host):
    rp = host.alloc_unbound(1, 1, 0)
    p0 = host.bind_interdomain(0, 0, 1, rp)
    host.bind_vcpu(1, 1, rp, 1)
    host.send(0, 0, p0)
    assert host.consume(1, 0) == [] and host.consume(1, 1) == [rp]


def test_interdomain_between_a_fifo_and_a_2l_kernel(host):
    rp = host.alloc_unbound(1, 1, 0)
    p0 = host.bind_interdomain(0, 0, 1, rp)
    assert host.consume(0, 0) == [p0]  # the bind left dom0's (FIFO) end pending, as Xen does
    assert host.send(0, 0, p0).outcome == "raised" and host.consume(1, 0) == [rp]
    assert host.send(1, 1, rp).outcome == "queued" and host.consume(0, 0) == [p0]


def test_a_sleeping_consumer_wakes_on_a_2l_raise(host):
    p = host.bind_ipi(1, 1)
    got = []
    t = threading.Thread(target=lambda: got.append(host.consume(1, 0, timeout=5)))
    t.start()
    time.sleep(0.1)
    start = time.monotonic()
    host.send(1, 1, p)
    t.join(5)
    assert got == [[p]] and time.monotonic() - start < 2


def test_status_and_list_show_the_2l_bits(host):
    p = host.bind_ipi(1, 1)
    host.mask(1, 1, p)
    host.send(1, 1, p)
    st = host.status(1, 1, p)
    assert st.word == abi.WORD_PENDING | abi.WORD_MASKED and st.flags["pending"] and st.flags["masked"]
    assert [s.port for s in host.list_ports(1, 1)] == [p]


# --- reset: the kernel sets up the ABI it chose again ---------------------------------------------------------
def test_reset_leaves_a_2l_kernel_on_2l_with_every_port_masked(host):
    a, b = host.bind_ipi(1, 1), host.bind_ipi(1, 1)
    host.send(1, 1, a)
    host.reset(1, 1)
    mem = host.domains[1].mem
    assert mem.event_abi == ABI_2L and mem.nr_pages == 0 and mem.cb_offset(0) is None
    assert list(mem.l2_mask()) == [ALL] * 64 and host.list_ports(1, 1) == []
    assert host.bind_ipi(1, 1) == a and not bit(host, 1, "mask", a) and bit(host, 1, "mask", b)
    host.reset(0, 0)
    assert host.domains[0].mem.event_abi == ABI_FIFO and host.domains[0].mem.nr_pages == 1  # FIFO again


def test_a_2l_kernel_moved_to_fifo_by_a_hypercall_returns_to_2l_after_reset(host):
    from xenevt.sim.foreign import CONTROL_BLOCK_GFN

    p = host.bind_ipi(1, 1)
    host.mask(1, 1, p)
    host.send(1, 1, p)
    host.init_control(1, 1, 0, CONTROL_BLOCK_GFN, 0)
    assert host.domains[1].mem.event_abi == ABI_FIFO
    host.pause(1)
    host.reset(0, 1)
    host.pause(1, False)
    assert host.domains[1].mem.event_abi == ABI_2L and list(host.domains[1].mem.l2_mask()) == [ALL] * 64


# --- kills: a consumer or a raise cut short -------------------------------------------------------------------
def _pending(h, n=3, vcpu=0):
    ports = [h.bind_ipi(1, 1, vcpu) for _ in range(n)]
    for p in ports:
        h.send(1, 1, p)
    return ports


def test_consumer_killed_after_taking_the_selector_is_rebuilt_on_the_next_open(state):
    """Killed between the xchg of the selector and the scan: pending, unmasked ports no selector bit announces.
    Not an inconsistency (a live upcall shows it), but the dead consumer's vCPU gets its selector back."""
    with SimHost(state) as h:
        ports = _pending(h)
        set_vinfo(h, 1, 0, upcall=0, sel=0)
        forget_claims(h)
        h.domains[1].mem.set_consumer(0, 999999)
    assert check_host(state)[0] == [
        "domain 1 vCPU 0: consumer: names pid 999999, which holds no consumer lock (a consumer that is gone)"]
    with SimHost(state) as h:
        assert h.recovered == ["cleared vCPU 0 of domain 1: its consumer (pid 999999) is gone"]
        assert vinfo(h, 1) == (1, 0, 1)
        h.claim_vcpu(1, 0)
        assert h.consume(1, 0) == ports
    assert check_host(state)[0] == []


def test_consumer_killed_after_clearing_the_upcall_is_taken_over(state):
    """Killed between clearing evtchn_upcall_pending and taking the selector: bits the guest will not look at.
    The next consumer of the vCPU finds the dead pid and mends it before it starts."""
    with SimHost(state) as h:
        ports = _pending(h)
        set_vinfo(h, 1, 0, upcall=0)
        forget_claims(h)
        h.domains[1].mem.set_consumer(0, 999999)
    assert check_host(state)[0] == [
        "domain 1 vCPU 0: consumer: names pid 999999, which holds no consumer lock (a consumer that is gone)",
        "domain 1 vCPU 0: evtchn_pending_sel: selector bits 0x1 but evtchn_upcall_pending is clear: the guest will "
        "not look (an upcall or a raise cut short)"]
    with SimHost(state, recover=False) as h:  # (no open recovery: the claim does it)
        h.claim_vcpu(1, 0)
        assert h.recovered == ["took over vCPU 0 of domain 1 from a consumer that is gone (pid 999999)"]
        assert h.consume(1, 0) == ports


def test_sim_check_repair_of_a_killed_2l_consumer_rebuilds_its_selector(state, capsys):
    with SimHost(state) as h:
        ports = _pending(h, vcpu=1)
        set_vinfo(h, 1, 1, upcall=0, sel=0)
        forget_claims(h)
        h.domains[1].mem.set_consumer(1, 999999)
    assert main(["--state", state, "sim", "check", "--repair"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "repaired: domain 1 vCPU 1: announced selector word(s) 0 again; domain 1 vCPU 1: cleared consumer pid 999999",
        "clean after 1 repair(s)"]
    with SimHost(state) as h:
        assert h.consume(1, 1) == ports


def test_raise_killed_before_the_selector_is_finished_by_the_next_lock_holder(state):
    with SimHost(state) as h:
        p = h.bind_ipi(1, 1)
        with h.domains[1].mem.l2_pending() as pv:
            pv[0] |= 1 << p  # Xen set the pending bit, then the process died
        h.file.jw[RAISE // 4 + 1] = p
        h.file.jw[RAISE // 4] = 2
    assert check_host(state)[0] == [f"journal: raise: a raise of port {p} of domain 1 was cut short"]
    with SimHost(state) as h:
        assert h.recovered == [f"finished a raise of port {p} of domain 1"]
        assert vinfo(h, 1) == (1, 0, 1) and h.consume(1, 0) == [p]


def test_raise_killed_between_selector_and_upcall_is_finished_by_the_next_lock_holder(state):
    with SimHost(state) as h:
        p = h.bind_ipi(1, 1)
        with h.domains[1].mem.l2_pending() as pv:
            pv[0] |= 1 << p
        set_vinfo(h, 1, 0, sel=1)
        h.file.jw[RAISE // 4 + 1] = p
        h.file.jw[RAISE // 4] = 2
    assert check_host(state)[0] == [
        f"journal: raise: a raise of port {p} of domain 1 was cut short",
        "domain 1 vCPU 0: evtchn_pending_sel: selector bits 0x1 but evtchn_upcall_pending is clear: the guest will "
        "not look (an upcall or a raise cut short)"]
    with SimHost(state) as h:
        seq = h.domains[1].mem.upcall_seq(0)
        h.send(0, 0, h.bind_ipi(0, 0))  # any lock holder finishes it
        assert vinfo(h, 1) == (1, 0, 1) and h.consume(1, 0) == [p]
        assert h.domains[1].mem.upcall_seq(0) == seq  # (recovery ran at the open, with its kick)
    assert check_host(state)[0] == []


# --- sim check on 2-level -------------------------------------------------------------------------------------
def _scan(h):
    h.domains[1].mem.l2_scan(0)[0] = 64


def _upcall_value(h):
    set_vinfo(h, 1, 1, upcall=2)


def _sel_no_upcall(h):
    p = h.bind_ipi(1, 1)
    h.mask(1, 1, p)
    h.send(1, 1, p)
    set_vinfo(h, 1, 0, sel=1, upcall=0)


def _pending_port0(h):
    with h.domains[2].mem.l2_pending() as pv:
        pv[0] |= 1


def _pending_past_valid(h):
    with h.domains[2].mem.l2_pending() as pv:
        pv[63] |= 1 << 63


CHECK_CASES = {
    "scan position": (_scan, ["domain 1 vCPU 0: scan: Linux's saved scan position (word 64, bit 0) is past the 64x64 "
                              "bitmaps"]),
    "upcall value": (_upcall_value, ["domain 1 vCPU 1: evtchn_upcall_pending: 0x2: Xen and Linux only ever store 0 "
                                     "or 1"]),
    "selector without upcall": (_sel_no_upcall, ["domain 1 vCPU 0: evtchn_pending_sel: selector bits 0x1 but "
                                                 "evtchn_upcall_pending is clear: the guest will not look (an upcall "
                                                 "or a raise cut short)"]),
    "pending port 0": (_pending_port0, ["d2:0: pending: PENDING in shared_info's bitmap, but Xen has no "
                                        "channel for the port (valid ports 1..63)"]),
    "pending past valid": (_pending_past_valid, ["d2:4095: pending: PENDING in shared_info's bitmap, but "
                                                 "Xen has no channel for the port (valid ports 1..63)"]),
}


@pytest.mark.parametrize("case", sorted(CHECK_CASES))
def test_check_names_each_2l_inconsistency_and_repair_mends_it(state, case, capsys):
    build, expected = CHECK_CASES[case]
    with SimHost(state) as h:
        build(h)
        forget_claims(h)
    assert check_host(state)[0] == expected
    assert main(["--state", state, "sim", "check", "--repair"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("clean after") and all(line.startswith("repaired: ") for line in lines[:-1])
    assert check_host(state)[0] == []


def test_what_a_2l_guest_legitimately_shows_is_clean(state, capsys):
    """Pending and masked; pending and unmasked with no selector bit (moved to another vCPU while pending); a
    selector bit with the upcall pending; a FIFO domain's stale bitmaps: none is an inconsistency."""
    with SimHost(state) as h:
        a = h.bind_ipi(1, 1)
        h.mask(1, 1, a)
        h.send(1, 1, a)
        rp = h.alloc_unbound(1, 1, 0)
        p0 = h.bind_interdomain(0, 0, 1, rp)
        h.send(0, 0, p0)
        h.bind_vcpu(1, 1, rp, 1)
        assert h.consume(1, 0) == []  # vCPU 0 took the selector; rp is now vCPU 1's, which has no selector bit
        assert bit(h, 1, "pending", rp) and vinfo(h, 1, 1) == (0, 0, 0)
        b = h.bind_ipi(2, 2)
        h.send(2, 2, b)  # selector and upcall set, not consumed
        with h.domains[0].mem.l2_pending() as pv:
            pv[0] |= 1  # a FIFO domain's bitmaps are only what Xen left there
        forget_claims(h)
    assert main(["--state", state, "sim", "check"]) == 0
    assert capsys.readouterr().out == "clean\n"


def test_kill_campaign_on_2l_kernels():
    from tests.crash_campaign import run

    f = run(40, quiet=True, abis=("2l", "2l", "fifo"))
    assert f["kills"] >= 40 and f["inconsistent"] == 0, f["lines"]


# --- the CLI --------------------------------------------------------------------------------------------------
def cli(state, capsys, *args):
    rc = main(["--state", state, *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_sim_init_abi_options(tmp_path, capsys):
    state = str(tmp_path)
    rc, out, _ = cli(state, capsys, "sim", "init", "--domains", "3", "--domain-abi", "1=2l")
    assert rc == 0 and out.endswith("ABIs domain 0 FIFO, domain 1 2-level, domain 2 FIFO\n")
    rc, out, _ = cli(state, capsys, "sim", "init", "--force", "--abi", "2l")
    assert rc == 0 and out.endswith("2 vCPU(s) each, 2-level ABI\n")
    rc, out, _ = cli(state, capsys, "--json", "sim", "info")
    assert [d["abi"] for d in json.loads(out)["domains"]] == ["2-level", "2-level"]
    rc, _, err = cli(state, capsys, "sim", "init", "--force", "--domain-abi", "1=3l")
    assert rc == 2 and "Invalid value for '--domain-abi': ABI '3l' of domain 1 is not one of fifo, 2l" in err
    rc, _, err = cli(state, capsys, "sim", "init", "--force", "--domain-abi", "7=2l")
    assert rc == 2 and err == "xenevt: no domain 7 to give the 2l ABI (the host has domains 0..1)\n"


def test_cli_commands_on_a_2l_domain(state, capsys):
    assert cli(state, capsys, "-d", "1", "bind", "unbound", "0")[1] == "1\n"
    assert cli(state, capsys, "bind", "interdomain", "1", "1")[1] == "1\n"
    rc, out, _ = cli(state, capsys, "notify", "1")
    assert out == "notified d0:1 -> d1:1: raised\n"
    rc, out, _ = cli(state, capsys, "-d", "1", "wait", "-n", "1", "-t", "5")
    assert rc == 0 and out == "domain 1 vCPU 0: event on port 1\n"
    assert cli(state, capsys, "-d", "1", "mask", "1")[1] == "masked d1:1 (now -M)\n"
    assert cli(state, capsys, "notify", "1")[1].endswith(": pending, masked\n")
    assert cli(state, capsys, "-d", "1", "unmask", "1")[1] == "unmasked d1:1 (now P-)\n"
    rc, out, _ = cli(state, capsys, "-d", "1", "--json", "wait", "-n", "1", "-t", "5")
    assert rc == 0 and json.loads(out)["port"] == 1
    rc, _, err = cli(state, capsys, "-d", "1", "set-priority", "1", "3")
    assert rc == 1 and err == ("xenevt: cannot set the priority of port 1 of domain 1: the domain is on the 2-level "
                               "ABI: ports have no priority (ENOSYS)\n")
    assert cli(state, capsys, "-d", "1", "bind-vcpu", "1", "1")[0] == 0
    cli(state, capsys, "notify", "1")
    rc, out, _ = cli(state, capsys, "-d", "1", "wait", "--vcpu", "1", "-n", "1", "-t", "5")
    assert out == "domain 1 vCPU 1: event on port 1\n"
    rc, out, _ = cli(state, capsys, "-d", "1", "--json", "watch", "--once", "-i", "0.05")
    row = json.loads(out)["rows"][0]
    assert (row["port"], row["total"], row["raised_total"]) == (1, 3, 3)
    rc, out, _ = cli(state, capsys, "-d", "1", "--json", "status", "1")
    assert json.loads(out)["vcpu"] == 1
    assert cli(state, capsys, "sim", "check")[1] == "clean\n"
    assert cli(state, capsys, "-d", "1", "close", "1")[0] == 0
    rc, out, _ = cli(state, capsys, "sim", "reset", "--all", "--yes")
    assert rc == 0 and out == "domain 0: closed 1 port(s); domain 1: closed 0 port(s); domain 2: closed 0 port(s)\n"
    with SimHost(state) as h:
        assert h.domains[1].mem.event_abi == ABI_2L and h.domains[0].mem.event_abi == ABI_FIFO
    assert cli(state, capsys, "sim", "check")[1] == "clean\n"


def test_check_leaves_a_live_2l_consumers_vcpu_alone(state):
    with SimHost(state) as h:
        h.claim_vcpu(1, 0)
        set_vinfo(h, 1, 0, sel=1, upcall=0)  # what a consumer mid-upcall shows
        left, _, notes = check_host(state)
        assert left == [] and notes == [
            f"domain 1 vCPU 0: selector and upcall flag not checked: a consumer (pid {os.getpid()}) is running"]
