"""Engine behaviour over both implementations (C and the Python reference)."""

from __future__ import annotations

from xenevt import abi
from xenevt.engine import SP, Consume, Err, Walk

from . import writer

ACK = Consume.ACK


def queue(e, vcpu=0, prio=7):
    results, chain = e.walk()
    head, start, count, status, bad, other = results[vcpu * 16 + prio]
    return chain[start : start + count], Walk(status), bad


def test_link_appends_at_tail_and_sets_ready_once(make_engine):
    mem = writer.domain(unmasked=(3, 4, 5))
    e = make_engine(mem)
    first = SP(e.set_pending(3))
    assert SP.LINKED in first and SP.NEW_HEAD in first and SP.UPCALL in first
    for port in (4, 5):
        r = SP(e.set_pending(port))
        assert SP.LINKED in r and SP.NEW_HEAD not in r and SP.UPCALL not in r
    assert queue(e) == ([3, 4, 5], Walk.END, 0)
    assert mem.control_block(0)[0] == 1 << 7
    assert mem.tails()[7] == 5
    assert writer.word("PL->4") == mem.word(3)


def test_consume_serves_highest_priority_first(make_engine):
    mem = writer.domain(unmasked=(10, 11, 12, 13), chans={12: {"priority": 2}, 13: {"priority": 2}})
    e = make_engine(mem)
    for port in (10, 11, 12, 13):
        e.set_pending(port)
    ports, err = e.consume(0, ACK, 100)
    assert ports == [12, 13, 10, 11]
    assert err[0] == Err.OK
    assert all(mem.word(p) == 0 for p in (10, 11, 12, 13))
    assert mem.control_block(0)[0] == 0 and mem.guest_ready(0) == 0 and mem.upcall_counts()[0] == 2


def test_pending_coalesces_while_linked(make_engine):
    mem = writer.domain(unmasked=(6,))
    e = make_engine(mem)
    e.set_pending(6)
    r = SP(e.set_pending(6))
    assert SP.WAS_PENDING in r and SP.ALREADY_LINKED in r
    assert e.consume(0, ACK, 10)[0] == [6]
    assert e.consume(0, ACK, 10)[0] == []


def test_batch_resumes_where_it_stopped(make_engine):
    ports = list(range(1, 40))
    mem = writer.domain(unmasked=tuple(ports))
    e = make_engine(mem)
    for p in ports:
        e.set_pending(p)
    got = []
    while True:
        batch, err = e.consume(0, ACK, 7)
        assert err[0] == Err.OK
        if not batch:
            break
        got += batch
    assert got == ports


# --- the 2013 review's questions -------------------------------------------------


def test_event_pending_while_masked_is_delivered_after_unmask(make_engine):
    """Reviewer: 'unmask races'. Xen's unmask relinks a port that became pending while masked."""
    mem = writer.domain()  # every word MASKED, as Linux initialises pages
    e = make_engine(mem)
    assert SP.MASKED in SP(e.set_pending(9))
    assert mem.word(9) == abi.WORD_PENDING | abi.WORD_MASKED
    assert e.consume(0, ACK, 10)[0] == []
    # the guest's local unmask must defer to the hypercall when PENDING (XSA-332)
    assert e.guest_unmask(9) == 0
    r = SP(e.unmask(9))
    assert SP.LINKED in r and SP.UPCALL in r
    assert e.consume(0, ACK, 10)[0] == [9]


def test_guest_unmask_clears_locally_when_not_pending(make_engine):
    mem = writer.domain()
    e = make_engine(mem)
    assert e.guest_unmask(9) == 1
    assert mem.word(9) == 0
    assert e.guest_mask(9) == 0 and e.guest_mask(9) == 1


def test_link_to_unmapped_page_is_an_error_not_a_crash(make_engine):
    """Reviewer: 'do you need to check for word != NULL?'. A LINK past the mapped array."""
    mem = writer.domain(ports={3: "PL->4", 4: "PL->1500"}, heads={(0, 7): 3}, ready={0: 1 << 7})
    e = make_engine(mem)
    ports, (code, port, vcpu, prio) = e.consume(0, ACK, 10)
    assert ports == [3, 4]
    assert (Err(code), port, vcpu, prio) == (Err.RANGE, 1500, 0, 7)
    assert queue(e)[1] == Walk.STALE
    # the bad queue was dropped; the vCPU keeps working
    assert e.consume(0, ACK, 10) == ([], (Err.OK, 0, 0, 0))


def test_queue_walk_on_cyclic_chain_terminates(make_engine):
    mem = writer.domain(ports={3: "PL->4", 4: "PL->5", 5: "PL->3"}, heads={(0, 7): 3}, ready={0: 1 << 7})
    e = make_engine(mem)
    before = mem.snapshot()
    assert queue(e) == ([3, 4, 5], Walk.CYCLE, 3)
    assert mem.snapshot() == before, "the walker must not change memory"
    ports, err = e.consume(0, ACK, 100)
    assert sorted(ports) == [3, 4, 5] and len(ports) == 3
    assert Err(err[0]) == Err.UNLINKED and err[1] == 3


def test_head_zero_with_ready_set(make_engine):
    mem = writer.domain(ready={0: 1 << 4})
    e = make_engine(mem)
    ports, err = e.consume(0, ACK, 10)
    assert ports == [] and Err(err[0]) == Err.ZERO_HEAD and err[3] == 4


def test_no_control_block_drops_event(make_engine):
    """Reviewer: 'what happens when you offline a CPU?'. No control block: Xen drops the event before it touches
    the word (XSA-107 class); real Xen 4.17 and 4.20 leave PENDING clear (xen-guest scenario
    g-fifo-event-to-vcpu-without-control-block)."""
    mem = writer.domain(nr_vcpus=2, control_blocks=(0,), unmasked=(5,), chans={5: {"notify_vcpu": 1}})
    e = make_engine(mem)
    r = SP(e.set_pending(5))
    assert r == SP.NO_CONTROL
    assert mem.word(5) == 0
    assert Err(e.consume(1, ACK, 10)[1][0]) == Err.NO_CONTROL


def test_event_before_page_is_remembered_until_expand(make_engine):
    """Reviewer: 'cleanup on failure' / expand_array. Events for ports without a page are not lost."""
    mem = writer.domain(pages=1, max_pages=2)
    e = make_engine(mem)
    assert SP(e.set_pending(1500)) == SP.DEFERRED
    mem.add_page(fill=0)
    assert e.page_added(1) == 1
    assert e.consume(0, ACK, 10)[0] == [1500]


def test_priority_change_while_linked_keeps_old_queue(make_engine):
    mem = writer.domain(unmasked=(3, 4))
    e = make_engine(mem)
    e.set_pending(3)
    mem.update_chan(3, priority=1)
    assert SP.ALREADY_LINKED in SP(e.set_pending(3))
    assert queue(e, prio=7)[0] == [3]
    assert e.consume(0, ACK, 10)[0] == [3]
    r = SP(e.set_pending(3))
    assert SP.MOVED in r and SP.NEW_HEAD in r
    assert queue(e, prio=1)[0] == [3]
    # the old queue's tail (3) was invalidated: 4 becomes a new head there
    assert SP.NEW_HEAD in SP(e.set_pending(4))
    assert queue(e, prio=7)[0] == [4]
    assert e.consume(0, ACK, 10)[0] == [3, 4]


def test_vcpu_move(make_engine):
    mem = writer.domain(nr_vcpus=2, unmasked=(3,))
    e = make_engine(mem)
    e.set_pending(3)
    assert e.consume(0, ACK, 10)[0] == [3]
    mem.update_chan(3, notify_vcpu=1)
    e.set_pending(3)
    assert e.consume(0, ACK, 10)[0] == []
    assert e.consume(1, ACK, 10)[0] == [3]


def test_bad_arguments(make_engine):
    mem = writer.domain(unmasked=(3,), chans={3: {"notify_vcpu": 5}})
    e = make_engine(mem)
    assert e.set_pending(0) == Err.PORT
    assert e.set_pending(mem.nr_chans) == Err.PORT
    assert e.set_pending(3) == Err.VCPU
    mem.update_chan(3, notify_vcpu=0)
    mem.tails()[7] = 99999
    before = mem.snapshot()
    assert e.set_pending(3) == Err.STATE
    assert mem.snapshot() == before


def test_consume_mask_flag_models_evtchn_device(make_engine):
    mem = writer.domain(unmasked=(3,))
    e = make_engine(mem)
    e.set_pending(3)
    assert e.consume(0, Consume.ACK | Consume.MASK, 10)[0] == [3]
    assert mem.word(3) == abi.WORD_MASKED
