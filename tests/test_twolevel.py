"""The 2-level ABI engine: Xen's event_2l.c rules and Linux's events_2l.c upcall, on both implementations.

Each rule is checked on state the test builds, then the C engine and the Python reference run the same
random operation sequences and must agree on every return and every byte of the image after each one.
"""

from __future__ import annotations

import random
import struct

import pytest

from xenevt import abi
from xenevt.engine import SP, Consume, DomainMemory, Err, LayoutError, twolevel_for
from xenevt.engine import layout as L
from xenevt.engine.twolevel import TwoLevelReference

ACK = Consume.ACK


@pytest.fixture
def make(impl):
    """(mem, engine): a fresh 2-level domain (4096 channels, bitmaps clear: everything unmasked)."""

    def build(nr_vcpus=2, nr_chans=4096, masked=(), bound=None):
        mem = DomainMemory.create(nr_vcpus=nr_vcpus, max_pages=4, nr_chans=nr_chans)
        for port, vcpu in (bound or {}).items():
            mem.update_chan(port, notify_vcpu=vcpu)
        for port in masked:
            mem.l2_mask()[port // 64] |= 1 << port % 64
        return mem, twolevel_for(mem, impl)

    return build


def sel(mem, vcpu):
    return mem.vcpu_info(vcpu)[2]


def upcall(mem, vcpu):
    return mem.vcpu_info(vcpu)[0]


def pending(mem, port):
    return mem.l2_bit("pending", port)


def masked(mem, port):
    return mem.l2_bit("mask", port)


def drain(e, vcpu=0, batch=1000, flags=ACK):
    got = []
    for _ in range(10000):
        ports, err = e.consume(vcpu, flags, batch)
        assert err[0] == Err.OK
        got += ports
        if not ports:
            return got
    raise AssertionError("consume never ran dry")


# --- Xen's side ------------------------------------------------------------------------------------------
def test_raise_sets_pending_selector_and_upcall(make):
    mem, e = make()
    assert e.set_pending(70) == SP.UPCALL
    assert pending(mem, 70) and sel(mem, 0) == 1 << 1 and upcall(mem, 0) == 1
    assert e.is_pending(70) == 1 and e.is_masked(70) == 0


def test_raise_on_masked_port_sets_pending_only(make):
    mem, e = make(masked=(9,))
    assert e.set_pending(9) == SP.MASKED
    assert pending(mem, 9) and sel(mem, 0) == 0 and upcall(mem, 0) == 0
    assert e.is_masked(9) == 1
    assert e.consume(0, ACK, 10)[0] == []


def test_unmask_reraises_a_pending_port(make):
    mem, e = make(masked=(9, 10))
    e.set_pending(9)
    assert e.unmask(9) == SP.WAS_PENDING | SP.UPCALL
    assert not masked(mem, 9) and sel(mem, 0) == 1 and upcall(mem, 0) == 1
    assert e.unmask(9) == 0  # no longer masked: Xen does nothing, though the port is pending
    assert e.unmask(10) == SP.NOT_PENDING and not masked(mem, 10)
    e.guest_mask(9)
    assert e.unmask(9) == SP.WAS_PENDING  # the selector bit is still set: nothing new to signal
    assert e.consume(0, ACK, 10)[0] == [9]


def test_second_event_coalesces(make):
    mem, e = make()
    assert e.set_pending(5) == SP.UPCALL
    assert e.set_pending(5) == SP.WAS_PENDING
    assert e.set_pending(6) == 0  # same word: selector bit already set
    assert e.set_pending(200) == 0  # new selector bit, but the upcall is already pending
    assert sel(mem, 0) == 1 | 1 << 3 and upcall(mem, 0) == 1
    assert e.consume(0, ACK, 10)[0] == [5, 6, 200]


def test_events_to_vcpu1_touch_vcpu1_only(make):
    mem, e = make(bound={64: 1, 65: 1})
    assert e.set_pending(64) == SP.UPCALL
    assert sel(mem, 1) == 2 and upcall(mem, 1) == 1
    assert sel(mem, 0) == 0 and upcall(mem, 0) == 0
    assert e.set_pending(3) == SP.UPCALL and sel(mem, 0) == 1 and sel(mem, 1) == 2
    e.set_pending(65)
    assert e.consume(0, ACK, 10)[0] == [3]
    assert e.consume(1, ACK, 10)[0] == [64, 65]


def test_clear_pending(make):
    mem, e = make()
    e.set_pending(8)
    assert e.clear_pending(8) == Err.OK and not pending(mem, 8)
    assert e.set_pending(8) == 0  # pending again, selector bit still set from before


def test_vcpu_beyond_32_uses_its_own_vcpu_info(make):
    mem, e = make(nr_vcpus=40, bound={100: 35})
    assert e.set_pending(100) == SP.UPCALL
    assert mem.vcpu_info(35) == (1, 0, 1 << 1)
    assert all(sel(mem, v) == 0 for v in range(40) if v != 35)
    assert e.consume(35, ACK, 10)[0] == [100]


# --- Linux's side ----------------------------------------------------------------------------------------
def test_guest_mask_and_clear(make):
    mem, e = make()
    assert e.guest_mask(7) == 0 and e.guest_mask(7) == 1 and masked(mem, 7)
    e.set_pending(7)
    assert e.guest_clear_pending(7) == Err.OK and not pending(mem, 7)


def test_guest_unmask_on_own_vcpu_resends(make):
    mem, e = make(masked=(9, 11))
    e.set_pending(9)
    assert e.guest_unmask(9) == 1 | SP.UPCALL  # pending, selector bit clear: Linux sets both itself
    assert not masked(mem, 9) and sel(mem, 0) == 1 and upcall(mem, 0) == 1
    assert e.guest_unmask(11) == 1 and not masked(mem, 11)  # not pending: just the mask
    e.guest_mask(9)
    assert e.guest_unmask(9, vcpu=0) == 1  # selector bit already set


def test_guest_unmask_hypercall_cases(make):
    mem, e = make(masked=(9, 10), bound={10: 1})
    assert e.guest_unmask(10, vcpu=0) == 0 and masked(mem, 10)  # another vCPU's port: EVTCHNOP_unmask
    assert e.unmask(10) == SP.NOT_PENDING and not masked(mem, 10)
    e.set_pending(9)
    assert e.guest_unmask(9, hvm=True) == 0 and masked(mem, 9) and sel(mem, 0) == 0  # HVM, pending: re-masked
    assert e.unmask(9) == SP.WAS_PENDING | SP.UPCALL
    assert e.guest_unmask(9, vcpu=7) == Err.VCPU


def test_consume_clears_upcall_and_selector_and_acks(make):
    mem, e = make()
    for port in (1, 2, 130):
        e.set_pending(port)
    ports, err = e.consume(0, ACK | Consume.MASK, 10)
    assert ports == [1, 2, 130] and err == (Err.OK, 0, 0, 0)
    assert upcall(mem, 0) == 0 and sel(mem, 0) == 0
    assert not any(pending(mem, p) for p in (1, 2, 130)) and all(masked(mem, p) for p in (1, 2, 130))
    assert list(mem.l2_scan(0)) == [2, 3]  # just past the last port delivered


def test_consume_without_ack_leaves_pending(make):
    mem, e = make()
    e.set_pending(4)
    # the start word is scanned twice (from the saved bit, then whole): without an ack the port is seen twice
    assert e.consume(0, 0, 10)[0] == [4, 4]
    assert pending(mem, 4) and sel(mem, 0) == 0
    assert e.consume(0, 0, 10)[0] == []  # no selector bit: not scanned again until raised
    assert e.set_pending(4) == SP.WAS_PENDING  # ...and Xen raises nothing for a pending port


def test_consume_round_robin_resumes_where_it_stopped(make):
    mem, e = make()
    for port in (1, 2, 65, 130):
        e.set_pending(port)
    assert e.consume(0, ACK, 2)[0] == [1, 2]
    assert list(mem.l2_scan(0)) == [0, 3]
    e.set_pending(1)
    e.set_pending(5)
    # word 0 from bit 3 first, then the later words, then word 0 again from its start
    assert e.consume(0, ACK, 10)[0] == [5, 65, 130, 1]
    # without a batch limit too: each upcall starts just past the last port delivered
    e.set_pending(3)
    e.set_pending(80)
    assert list(mem.l2_scan(0)) == [0, 2]
    assert e.consume(0, ACK, 10)[0] == [3, 80]
    e.set_pending(70)
    e.set_pending(90)
    assert list(mem.l2_scan(0)) == [1, 17]
    assert e.consume(0, ACK, 1)[0] == [90]  # word 1 from bit 17 first: port 70 waits its turn
    e.set_pending(2)
    assert e.consume(0, ACK, 10)[0] == [2, 70]


def test_consume_only_this_vcpus_ports(make):
    mem, e = make(bound={3: 1})
    e.set_pending(2)
    mem.update_chan(2, notify_vcpu=1)  # rebound after it was raised: Linux's cpu_evtchn_mask moved with it
    e.set_pending(3)
    assert e.consume(0, ACK, 10)[0] == []
    assert pending(mem, 2) and sel(mem, 0) == 0
    assert e.consume(1, ACK, 10)[0] == [2, 3]  # vCPU 1 scans the word for port 3 and finds port 2 there too


def test_batch_limit_loses_nothing(make):
    mem, e = make(nr_vcpus=3, bound={p: p % 3 for p in range(4096)})
    rng = random.Random(7)
    raised = sorted(rng.sample(range(4096), 900))
    for p in raised:
        e.set_pending(p)
    for batch, steps in ((1, 1 << 30), (7, 1 << 30), (1000, 3), (5, 4), (1000, 70)):
        for p in raised:
            e.set_pending(p)
        got = []
        for _ in range(10000):
            ports, err = e.consume(0, ACK, batch, steps)
            assert err[0] == Err.OK
            got += ports
            if not ports and sel(mem, 0) == 0:
                break
            if sel(mem, 0):
                assert upcall(mem, 0) == 1  # left work behind: the upcall is pending again
        assert sorted(got) == [p for p in raised if p % 3 == 0]
        assert upcall(mem, 0) == 0


def test_batch_limit_mid_start_word(make):
    """Stopping during the start word's second visit keeps it in the selector."""
    mem, e = make()
    for p in (10, 20, 30):
        e.set_pending(p)
    assert e.consume(0, ACK, 1)[0] == [10]  # scan (0, 11)
    e.set_pending(5)  # below the saved bit: served on the start word's second visit
    assert e.consume(0, ACK, 3)[0] == [20, 30, 5]
    e.set_pending(1)
    e.set_pending(3)
    assert e.consume(0, ACK, 1)[0] == [1]  # stopped with port 3 left in word 0
    assert sel(mem, 0) == 1 and upcall(mem, 0) == 1
    assert e.consume(0, ACK, 5)[0] == [3]


def test_max_steps_zero_takes_and_gives_back(make):
    mem, e = make()
    e.set_pending(64)
    assert e.consume(0, ACK, 10, 0) == ([], (Err.OK, 0, 0, 0))
    assert sel(mem, 0) == 2 and upcall(mem, 0) == 1 and pending(mem, 64)
    assert e.consume(0, ACK, 10)[0] == [64]


def test_three_steps_always_progress(make):
    """The worst case: the start word's first visit finds nothing past the saved bit."""
    mem, e = make(bound={70: 1})
    for p in (2, 70):
        e.set_pending(p)
    scan = mem.l2_scan(0)
    scan[0], scan[1] = 0, 40
    e.set_pending(64)  # word 1: vCPU 0's selector has words 0 and 1, word 1 with port 64 for it
    assert e.consume(0, ACK, 10, 2)[0] == []  # start word from bit 40 (1), word 1 (2): no step left for port 64
    assert e.consume(0, ACK, 10, 3)[0] == [64]
    assert e.consume(0, ACK, 10, 3)[0] == [2]  # word 0 from bit 1, wrap, word 0 whole: port 2
    assert sel(mem, 0) == 0 and upcall(mem, 0) == 0


# --- bounds ----------------------------------------------------------------------------------------------
def test_port_4096_and_past_the_table_refused(make):
    mem, e = make()
    before = mem.snapshot()
    for port in (4096, 5000, 1 << 32, -1):
        for op in (e.set_pending, e.unmask, e.clear_pending, e.is_pending, e.is_masked, e.guest_mask,
                   e.guest_unmask, e.guest_clear_pending):
            assert op(port) == Err.PORT, (op, port)
    assert mem.snapshot() == before
    mem, e = make(nr_chans=100)
    assert e.set_pending(100) == Err.PORT and e.set_pending(99) == SP.UPCALL


def test_bad_vcpus_refused(make):
    mem, e = make(bound={5: 2})
    before = mem.snapshot()
    assert e.set_pending(5) == Err.VCPU and e.unmask(5) == Err.VCPU and e.guest_unmask(5) == Err.VCPU
    assert e.consume(2, ACK, 10) == ([], (Err.VCPU, 0, 2, 0))
    assert e.consume(-1, ACK, 10)[1][0] == Err.VCPU
    assert mem.snapshot() == before


def test_ports_past_the_table_are_bound_to_no_vcpu(make):
    mem, e = make(nr_chans=100)
    mem.l2_pending()[1] = 1 << 63  # port 127: past the 100-port table
    mem.l2_pending()[0] = 1 << 3
    ba = mem.geometry.vcpu_info_offset(0)
    struct.pack_into("<Q", mem.buffer, ba + 8, 0b11)
    assert e.consume(0, ACK, 10)[0] == [3]
    assert mem.l2_bit("pending", 127)


@pytest.mark.parametrize("word, bit", [(64, 0), (0, 64), (0xFFFFFFFF, 5), (3, 1 << 31)])
def test_corrupt_scan_position_is_reset_not_followed(make, word, bit):
    mem, e = make()
    e.set_pending(200)
    scan = mem.l2_scan(0)
    scan[0], scan[1] = word, bit
    assert e.consume(0, ACK, 10) == ([], (Err.SCAN, 0, 0, 0))
    assert list(mem.l2_scan(0)) == [0, 0]
    assert sel(mem, 0) == 1 << 3 and upcall(mem, 0) == 1  # untouched: nothing lost
    assert e.consume(0, ACK, 10)[0] == [200]


def test_version1_image_refused(impl):
    mem = DomainMemory.create()
    struct.pack_into("<I", mem.buffer, 4, 1)
    old = DomainMemory(mem.buffer)
    with pytest.raises(LayoutError, match="no 2-level section"):
        twolevel_for(old, impl)


def test_chooser_follows_environment(monkeypatch):
    mem = DomainMemory.create()
    monkeypatch.delenv("XENEVT_ENGINE", raising=False)
    assert twolevel_for(mem).name == "c"
    monkeypatch.setenv("XENEVT_ENGINE", "python")
    assert isinstance(twolevel_for(mem), TwoLevelReference)
    with pytest.raises(ValueError):
        twolevel_for(mem, "rust")


def test_close_releases_the_buffer():
    mem = DomainMemory.create()
    e = twolevel_for(mem, "c")
    e.close()
    assert e.set_pending(3) == Err.PORT


def test_codes_and_layout_match_c_header():
    from xenevt._native import ffi, lib

    assert lib.XE_EVTCHN_2L_NR_CHANNELS == abi.EVTCHN_2L_NR_CHANNELS
    assert lib.XE_L2_SHARED_VCPUS == L.L2_SHARED_VCPUS and lib.XE_L2_WORDS == L.L2_WORDS
    assert ffi.sizeof("xe_vcpu_info") == L.VCPU_INFO_SIZE
    assert ffi.offsetof("xe_vcpu_info", "evtchn_pending_sel") == 8
    assert ffi.offsetof("xe_vcpu_info", "evtchn_upcall_mask") == 1
    assert ffi.sizeof("xe_l2_scan") == L.L2_SCAN.size
    assert lib.XE_E_SCAN == Err.SCAN


# --- C against the reference -----------------------------------------------------------------------------
HOT = [0, 1, 2, 3, 5, 63, 64, 65, 127, 128, 200, 1000, 4032, 4095]


def random_op(rng: random.Random, nr_vcpus: int, nr_chans: int):
    def port():
        r = rng.random()
        if r < 0.6:
            return rng.choice(HOT)
        if r < 0.97:
            return rng.randrange(min(nr_chans, 4096))
        return rng.choice([4096, nr_chans, 70000])

    kind = rng.choices(["raise", "consume", "unmask", "clear", "is", "guest_mask", "guest_unmask", "guest_clear",
                        "bind", "corrupt_scan", "corrupt_vcpu_info", "corrupt_bitmap"],
                       [30, 14, 6, 3, 3, 6, 6, 3, 5, 1, 1, 1])[0]
    if kind == "consume":
        return (kind, rng.randrange(nr_vcpus + 1), rng.choice([0, 1, 2, 3, 1, 1]),
                rng.choice([1, 2, 3, 1000, 0]), rng.choice([1 << 30, 1 << 30, 1, 2, 5, 70, 0]))
    if kind == "guest_unmask":
        return (kind, port(), rng.choice([None, None, 0, 1, nr_vcpus - 1, nr_vcpus]), rng.random() < 0.2)
    if kind == "bind":
        return (kind, port(), rng.choice(range(nr_vcpus)) if rng.random() < 0.95 else nr_vcpus + 3)
    if kind == "corrupt_scan":
        return (kind, rng.randrange(nr_vcpus), rng.choice([0, 5, 63, 64, 1 << 31]), rng.choice([0, 7, 63, 64]))
    if kind == "corrupt_vcpu_info":
        return (kind, rng.randrange(nr_vcpus), rng.choice([0, 1, 2, 0xFF]), rng.getrandbits(64))
    if kind == "corrupt_bitmap":
        return (kind, rng.choice(["pending", "mask"]), rng.randrange(64), rng.getrandbits(64))
    return (kind, port())


def apply(mem: DomainMemory, e, op):
    kind, *args = op
    if kind == "raise":
        return e.set_pending(args[0])
    if kind == "unmask":
        return e.unmask(args[0])
    if kind == "clear":
        return e.clear_pending(args[0])
    if kind == "is":
        return (e.is_pending(args[0]), e.is_masked(args[0]))
    if kind == "guest_mask":
        return e.guest_mask(args[0])
    if kind == "guest_clear":
        return e.guest_clear_pending(args[0])
    if kind == "guest_unmask":
        return e.guest_unmask(args[0], vcpu=args[1], hvm=args[2])
    if kind == "consume":
        return e.consume(*args)
    if kind == "bind":
        if 0 <= args[0] < mem.nr_chans:
            mem.update_chan(args[0], notify_vcpu=args[1])
        return None
    if kind == "corrupt_scan":
        scan = mem.l2_scan(args[0])
        scan[0], scan[1] = args[1], args[2]
        return None
    if kind == "corrupt_vcpu_info":
        at = mem.geometry.vcpu_info_offset(args[0])
        mem.buffer[at] = args[1]
        struct.pack_into("<Q", mem.buffer, at + 8, args[2])
        return None
    if kind == "corrupt_bitmap":
        words = mem.l2_pending() if args[0] == "pending" else mem.l2_mask()
        words[args[1]] = args[2]
        return None
    raise AssertionError(kind)


def normalise(result):
    if isinstance(result, (list, tuple)):
        return [normalise(r) for r in result]
    return int(result) if result is not None else None


@pytest.mark.parametrize("seed, nr_vcpus, nr_chans", [(1, 1, 4096), (2, 3, 4096), (3, 4, 1000), (4, 34, 4096),
                                                      (5, 2, 8192), (6, 3, 130)])
def test_c_and_reference_agree(seed, nr_vcpus, nr_chans):
    rng = random.Random(seed)
    images = [DomainMemory.create(nr_vcpus=nr_vcpus, max_pages=max(1, nr_chans // 1024), nr_chans=nr_chans)
              for _ in range(2)]
    for mem in images:  # the same random start: some ports masked, bound round the vCPUs
        r = random.Random(seed)
        for port in range(min(nr_chans, 4096)):
            if r.random() < 0.2:
                mem.l2_mask()[port // 64] |= 1 << port % 64
            mem.update_chan(port, notify_vcpu=r.randrange(nr_vcpus) if r.random() < 0.3 else 0)
    c, ref = twolevel_for(images[0], "c"), twolevel_for(images[1], "python")
    delivered = 0
    for step in range(2500):
        op = random_op(rng, nr_vcpus, nr_chans)
        got_c = normalise(apply(images[0], c, op))
        got_ref = normalise(apply(images[1], ref, op))
        assert got_c == got_ref, f"seed {seed} step {step} {op}: C {got_c} != reference {got_ref}"
        assert images[0].snapshot() == images[1].snapshot(), f"seed {seed}: images differ after step {step} {op}"
        if op[0] == "consume":
            delivered += len(got_c[0])
    assert delivered > 100  # the sequences do reach the consume loop
