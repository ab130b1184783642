"""C engine vs the Python reference on random operation sequences.

Both run the same sequence on identical images; after every operation the
results and every byte of the two images must agree.  The sequences mix
hypervisor and guest operations with the awkward cases: masked ports,
priority and vCPU changes mid-queue, ports past the array, pages added
late, missing control blocks, and words or heads corrupted by a broken guest.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenevt import abi
from xenevt.engine import DomainMemory, engine_for

from . import writer

# ports clustered so that operations collide: low ports, around the first
# page boundary, and a few past anything mapped
PORTS = st.one_of(st.integers(1, 8), st.integers(1, 8), st.integers(0, 12), st.integers(1020, 1030),
                  st.integers(2040, 2050), st.just(5000))
WORDS = st.builds(
    lambda flags, link: flags | link,
    st.sampled_from([0, abi.WORD_PENDING, abi.WORD_LINKED, abi.WORD_PENDING | abi.WORD_LINKED, abi.WORD_MASKED,
                     abi.WORD_PENDING | abi.WORD_MASKED | abi.WORD_LINKED, abi.WORD_BUSY | abi.WORD_LINKED]),
    st.one_of(st.just(0), PORTS),
)

# weights: mostly raising and consuming, with enough of everything else
KINDS = (["raise"] * 8 + ["consume"] * 4 + ["hv_unmask"] * 2 + ["guest_mask", "guest_unmask", "clear_pending",
         "guest_clear_pending", "set_priority", "set_priority", "bind_vcpu", "expand", "init_control", "walk", "walk",
         "corrupt_word", "corrupt_head", "corrupt_ready"])


@st.composite
def OPS(draw):
    kind = draw(st.sampled_from(KINDS))
    if kind in ("raise", "hv_unmask", "clear_pending", "guest_mask", "guest_unmask", "guest_clear_pending"):
        return (kind, draw(PORTS))
    if kind == "consume":
        return (kind, draw(st.integers(0, 3)), draw(st.sampled_from([1, 1, 0, 2, 3])),
                draw(st.sampled_from([1000, 1, 2, 3, 0])))
    if kind == "set_priority":
        return (kind, draw(PORTS), draw(st.integers(0, 15)))
    if kind == "bind_vcpu":
        return (kind, draw(PORTS), draw(st.integers(0, 3)))
    if kind in ("expand", "walk"):
        return (kind, draw(st.booleans()))
    if kind == "init_control":
        return (kind, draw(st.integers(0, 3)))
    if kind == "corrupt_word":
        return (kind, draw(PORTS), draw(WORDS))
    if kind == "corrupt_head":
        return (kind, draw(st.integers(0, 3)), draw(st.integers(0, 15)), draw(st.one_of(st.just(0), PORTS)))
    return (kind, draw(st.integers(0, 3)), draw(st.integers(0, 0xFFFFF)))


def apply(mem: DomainMemory, e, op):
    """Run one operation; returns what the engine returned (compared across engines)."""
    kind, *args = op
    if kind == "raise":
        return e.set_pending(args[0])
    if kind == "hv_unmask":
        return e.unmask(args[0])
    if kind == "clear_pending":
        return e.clear_pending(args[0])
    if kind in ("guest_mask", "guest_unmask", "guest_clear_pending"):
        return getattr(e, kind)(args[0])
    if kind == "consume":
        return e.consume(args[0] % mem.nr_vcpus, args[1], args[2])
    if kind in ("set_priority", "bind_vcpu"):
        port, value = args
        if not 0 < port < mem.nr_chans:
            return None
        if kind == "set_priority":
            mem.update_chan(port, priority=value)
        else:
            mem.update_chan(port, notify_vcpu=value % mem.nr_vcpus)
        return None
    if kind == "expand":
        if mem.nr_pages >= mem.max_pages:
            return None
        index = mem.add_page(fill=abi.WORD_MASKED if args[0] else 0)
        return e.page_added(index)
    if kind == "init_control":
        mem.register_control_block(args[0] % mem.nr_vcpus)
        return None
    if kind == "corrupt_word":
        port, value = args
        if mem.word(port) is not None:
            mem.set_word(port, value)
        return None
    if kind == "corrupt_head":
        cb = mem.control_block(args[0] % mem.nr_vcpus)
        if cb is not None:
            cb[2 + args[1]] = args[2]
        return None
    if kind == "corrupt_ready":
        cb = mem.control_block(args[0] % mem.nr_vcpus)
        if cb is not None:
            cb[0] = args[1]
        return None
    if kind == "walk":
        starts = None
        if args[0]:  # walk from the guest's local heads, as a dump of a live guest does
            starts = [mem.guest(v)[1 + p] for v in range(mem.nr_vcpus) for p in range(16)]
        return e.walk(starts)
    raise AssertionError(kind)


def normalise(result):
    """Enums and ints compare equal; tuples and lists are compared as lists."""
    if isinstance(result, (list, tuple)):
        return [normalise(r) for r in result]
    return int(result) if result is not None else None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nr_vcpus=st.integers(1, 3),
    max_pages=st.integers(1, 3),
    pages=st.sampled_from([1, 1, 1, 2, 0]),
    cbs=st.one_of(st.just({0, 1, 2}), st.sets(st.integers(0, 2))),
    unmasked=st.one_of(st.just(list(range(1, 13)) + list(range(1020, 1031))), st.lists(PORTS, max_size=30)),
    ops=st.lists(OPS(), min_size=5, max_size=80),
)
def test_c_and_reference_agree(nr_vcpus, max_pages, pages, cbs, unmasked, ops):
    lockstep(nr_vcpus, min(pages, max_pages), max_pages, cbs, unmasked, ops)


def lockstep(nr_vcpus: int, pages: int, max_pages: int, cbs, unmasked, ops) -> None:
    """The same domain image twice, ``ops`` applied to one by the C engine and to the other by the reference:
    every result and every byte of the two images equal after each step."""
    images = []
    for _ in range(2):
        mem = writer.domain(nr_vcpus=nr_vcpus, pages=pages, max_pages=max_pages,
                            control_blocks=tuple(v for v in cbs if v < nr_vcpus))
        for port in unmasked:
            if mem.word(port) is not None:
                mem.set_word(port, 0)
        images.append(mem)
    c, ref = engine_for(images[0], "c"), engine_for(images[1], "python")
    for step, op in enumerate(ops):
        got_c = normalise(apply(images[0], c, op))
        got_ref = normalise(apply(images[1], ref, op))
        assert got_c == got_ref, f"step {step} {op}: C {got_c} != reference {got_ref}"
        assert images[0].snapshot() == images[1].snapshot(), f"images differ after step {step} {op}"
