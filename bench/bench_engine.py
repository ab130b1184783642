"""Consume-loop benchmark: the C engine vs a plain C loop vs the Python reference, FIFO then 2-level.

Prints events consumed per second for each, measured in this run on the same
queued state, and the two ratios the engine is held to: C engine time over
the plain loop's (target <= 1.25) and C engine speed over the reference's
(target >= 50).  The 2-level section does the same for Linux's 2-level upcall
scan (every port of the 4096 pending on one vCPU), beside the FIFO figure.
A figure printer, not a test: it asserts nothing.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from cffi import FFI

from xenevt import abi
from xenevt.engine import Consume, DomainMemory, engine_for, twolevel_for

HERE = os.path.dirname(os.path.abspath(__file__))


def build_plain():
    ffi = FFI()
    ffi.cdef("uint32_t plain_consume(uint32_t *array, uint32_t *cb, uint32_t *local_head, uint32_t *out);")
    ffi.cdef("uint32_t plain_l2_consume(uint64_t *pending, uint64_t *mask, const uint64_t *cpu_mask, "
             "uint8_t *upcall_pending, uint64_t *sel, uint32_t *scan, uint32_t *out);")
    source = ""
    for name in ("plain_loop.c", "plain_l2_loop.c"):
        with open(os.path.join(HERE, name)) as f:
            source += f.read() + "\n"
    ffi.set_source("_xenevt_bench_plain", source, extra_compile_args=["-O2", "-std=c11"])
    tmp = tempfile.mkdtemp(prefix="xenevt-bench-")
    ffi.compile(tmpdir=tmp, verbose=False)
    sys.path.insert(0, tmp)
    import _xenevt_bench_plain  # noqa: E402

    return _xenevt_bench_plain


def queued_domain(pages: int, nr_events: int) -> DomainMemory:
    """One vCPU, ``nr_events`` ports pending and linked over 4 priorities."""
    mem = DomainMemory.create(nr_vcpus=1, max_pages=pages)
    for _ in range(pages):
        mem.add_page(fill=0)
    mem.register_control_block(0)
    for port in range(1, nr_events + 1):
        mem.update_chan(port, priority=port % 4)
    e = engine_for(mem, "c")
    for port in range(1, nr_events + 1):
        e.set_pending(port)
    return mem


def timed(fn, restore, reps):
    times = []
    for _ in range(reps):
        restore()
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def main() -> None:
    pages, nr = 64, 64 * 1024 - 1
    mem = queued_domain(pages, nr)
    image = mem.snapshot()

    def restore():
        mem.buffer[:] = image

    c = engine_for(mem, "c")
    t_api, n_api = timed(lambda: len(c.consume(0, Consume.ACK, nr + 1)[0]), restore, 31)
    # the C loop itself, called exactly as the plain loop is (one cffi call, ports left in a C buffer)
    from xenevt._native import ffi as nffi
    from xenevt._native import lib as nlib

    nout, nerr = nffi.new("uint32_t[]", nr + 1), nffi.new("xe_error *")
    guest = c._guests  # the engine's own descriptor for vCPU 0's guest state
    t_c, n_c = timed(
        lambda: nlib.xe_guest_consume(c._d, 0, guest, Consume.ACK, nout, nr + 1, 1 << 30, nerr), restore, 31
    )

    plain = build_plain()
    ffi = plain.ffi
    base = ffi.from_buffer("char[]", mem.buffer, require_writable=True)
    geo = mem.geometry
    array = ffi.cast("uint32_t *", base + geo.pages_offset)
    cb = ffi.cast("uint32_t *", base + mem.cb_byte_offset(0))
    local = ffi.cast("uint32_t *", base + geo.guest_offset + 4)
    out = ffi.new("uint32_t[]", nr + 1)
    t_p, n_p = timed(lambda: plain.lib.plain_consume(array, cb, local, out), restore, 31)

    small = 8191
    mem_small = queued_domain(8, small)
    image_small = mem_small.snapshot()
    ref = engine_for(mem_small, "python")

    def restore_small():
        mem_small.buffer[:] = image_small

    t_r, n_r = timed(lambda: len(ref.consume(0, Consume.ACK, small + 1)[0]), restore_small, 3)

    assert n_c == n_p == n_api == nr and n_r == small, (n_c, n_p, n_api, n_r)
    rate_c, rate_p, rate_r = n_c / t_c, n_p / t_p, n_r / t_r
    print(f"consume benchmark: {nr} events over 4 priorities, {pages} event-array pages, median of runs")
    print(f"  plain C loop (limit)   {rate_p / 1e6:10.2f} M events/s")
    print(f"  C engine               {rate_c / 1e6:10.2f} M events/s")
    print(f"  C engine via Python API{nr / t_api / 1e6:10.2f} M events/s  (ports returned as a list)")
    print(f"  Python reference       {rate_r / 1e6:10.4f} M events/s  ({small} events)")
    print(f"  engine time / plain time   {rate_p / rate_c:6.3f}x  (target <= 1.25)")
    print(f"  engine speed / reference   {rate_c / rate_r:6.0f}x  (target >= 50)")
    assert abi.EVENT_WORDS_PER_PAGE == 1024
    bench_twolevel(plain, rate_c)


def pending_2l_domain() -> DomainMemory:
    """One vCPU, every 2-level port but 0 pending (Xen never raises reserved port 0): 63 full words and one of 63."""
    mem = DomainMemory.create(nr_vcpus=1, max_pages=4, nr_chans=abi.EVTCHN_2L_NR_CHANNELS)
    e = twolevel_for(mem, "c")
    for port in range(1, abi.EVTCHN_2L_NR_CHANNELS):
        e.set_pending(port)
    return mem


def bench_twolevel(plain, rate_fifo: float) -> None:
    """The 2-level upcall scan: C engine, the plain loop and the reference on the same state, in this run."""
    nr = abi.EVTCHN_2L_NR_CHANNELS - 1
    mem = pending_2l_domain()
    image = mem.snapshot()

    def restore():
        mem.buffer[:] = image

    e = twolevel_for(mem, "c")
    t_api, n_api = timed(lambda: len(e.consume(0, Consume.ACK, nr + 1)[0]), restore, 101)
    from xenevt._native import ffi as nffi
    from xenevt._native import lib as nlib

    nout, nerr = nffi.new("uint32_t[]", nr + 1), nffi.new("xe_error *")
    t_c, n_c = timed(lambda: nlib.xe_l2_consume(e._d, 0, Consume.ACK, nout, nr + 1, 1 << 30, nerr), restore, 101)

    ffi = plain.ffi
    base = ffi.from_buffer("char[]", mem.buffer, require_writable=True)
    geo = mem.geometry
    vi = geo.vcpu_info_offset(0)
    cpu_mask = ffi.new("uint64_t[]", [(1 << 64) - 1] * 64)  # Linux's cpu_evtchn_mask: every port on CPU 0
    args = (ffi.cast("uint64_t *", base + geo.l2_offset + 2048), ffi.cast("uint64_t *", base + geo.l2_offset + 2560),
            cpu_mask, ffi.cast("uint8_t *", base + vi), ffi.cast("uint64_t *", base + vi + 8),
            ffi.cast("uint32_t *", base + geo.l2_scan_offset), ffi.new("uint32_t[]", nr + 1))
    t_p, n_p = timed(lambda: plain.lib.plain_l2_consume(*args), restore, 101)

    ref = twolevel_for(mem, "python")
    t_r, n_r = timed(lambda: len(ref.consume(0, Consume.ACK, nr + 1)[0]), restore, 3)

    assert n_c == n_p == n_api == n_r == nr, (n_c, n_p, n_api, n_r)
    rate_c, rate_p, rate_r = n_c / t_c, n_p / t_p, n_r / t_r
    print(f"2-level consume benchmark: {nr} events pending on one vCPU (64 selector words), median of runs")
    print(f"  plain C loop (limit)   {rate_p / 1e6:10.2f} M events/s  (Linux's per-CPU bitmap, no checks)")
    print(f"  C engine               {rate_c / 1e6:10.2f} M events/s  (notify_vcpu read per pending port)")
    print(f"  C engine via Python API{nr / t_api / 1e6:10.2f} M events/s  (ports returned as a list)")
    print(f"  Python reference       {rate_r / 1e6:10.4f} M events/s")
    print(f"  engine time / plain time   {rate_p / rate_c:6.3f}x")
    print(f"  engine speed / reference   {rate_c / rate_r:6.0f}x")
    print(f"  2-level / FIFO C engine    {rate_c / rate_fifo:6.3f}x  (events/s)")


if __name__ == "__main__":
    main()
