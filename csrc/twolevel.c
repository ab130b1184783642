/*
 * The 2-level event-channel ABI: Xen's side after xen/common/event_2l.c,
 * the guest's (the upcall's scan, mask/unmask) after Linux's
 * drivers/xen/events/events_2l.c, on one domain's shared_info bitmaps,
 * vcpu_info and Linux's saved scan position (xenevt/engine/layout.py).
 *
 * Both sides use locked bit operations on the shared words (Xen's
 * guest_test_and_set_bit, Linux's sync_*_bit), so every shared word is
 * touched with an __atomic builtin.  Ports and vCPUs from callers, and the
 * scan position read from guest memory, are checked before they index
 * anything; every loop is bounded.
 */
#include "xenevt_fifo.h"
#include "fifo_internal.h"

_Static_assert(sizeof(xe_vcpu_info) == 64, "struct vcpu_info is 64 bytes on x86_64");
_Static_assert(sizeof(xe_l2_scan) == 8, "xe_l2_scan is 8 bytes");

#define BIT64(n) ((uint64_t)1 << (n))
#define ALL64 (~(uint64_t)0)

static int test_and_set64(uint64_t *w, uint32_t bit)
{
    return (__atomic_fetch_or(w, BIT64(bit), __ATOMIC_SEQ_CST) & BIT64(bit)) != 0;
}

static int test_and_clear64(uint64_t *w, uint32_t bit)
{
    return (__atomic_fetch_and(w, ~BIT64(bit), __ATOMIC_SEQ_CST) & BIT64(bit)) != 0;
}

static int test64(const uint64_t *w, uint32_t bit)
{
    return (int)((__atomic_load_n(w, __ATOMIC_ACQUIRE) >> bit) & 1);
}

/* Ports with a bit in both bitmaps and a channel entry. */
static uint32_t nr_ports(const xe_l2_domain *d)
{
    return d->nr_chans < XE_EVTCHN_2L_NR_CHANNELS ? d->nr_chans : XE_EVTCHN_2L_NR_CHANNELS;
}

/* vCPU v's vcpu_info, or NULL for a vCPU the domain does not have. */
static xe_vcpu_info *vinfo(const xe_l2_domain *d, uint32_t v)
{
    if (v >= d->nr_vcpus)
        return NULL;
    if (v < XE_L2_SHARED_VCPUS)
        return d->vcpu_info + v;
    if (d->vcpu_info_extra == NULL)
        return NULL;
    return d->vcpu_info_extra + (v - XE_L2_SHARED_VCPUS);
}

/* Xen's vcpu_mark_events_pending(): a locked test-and-set of bit 0 of
 * evtchn_upcall_pending; only a newly set bit kicks the vCPU. */
static int mark_events_pending(xe_vcpu_info *vi)
{
    return (__atomic_fetch_or(&vi->evtchn_upcall_pending, 1, __ATOMIC_SEQ_CST) & 1) ? 0 : XE_SP_UPCALL;
}

/*
 * evtchn_2l_set_pending().  Returns XE_SP_WAS_PENDING (already pending:
 * Xen stops there), XE_SP_MASKED (newly pending but masked: pending bit
 * only), XE_SP_UPCALL (selector bit and upcall newly set: kick the vCPU),
 * or 0 (newly pending, coalesced into a selector bit or an upcall already
 * pending).
 */
int xe_l2_set_pending(xe_l2_domain *d, uint32_t port)
{
    uint32_t word = port / XE_L2_WORDS, bit = port % XE_L2_WORDS;
    xe_vcpu_info *vi;

    if (port >= nr_ports(d))
        return XE_E_PORT;
    vi = vinfo(d, d->chans[port].notify_vcpu);
    if (vi == NULL)
        return XE_E_VCPU;
    if (test_and_set64(&d->pending[word], bit))
        return XE_SP_WAS_PENDING;
    if (test64(&d->mask[word], bit))
        return XE_SP_MASKED;
    if (test_and_set64(&vi->evtchn_pending_sel, word))
        return 0;
    return mark_events_pending(vi);
}

/*
 * evtchn_2l_unmask() (EVTCHNOP_unmask).  Returns 0 when the port was not
 * masked (Xen then does nothing, pending or not), XE_SP_NOT_PENDING when it
 * was masked but not pending, else XE_SP_WAS_PENDING, with XE_SP_UPCALL
 * when the re-raise newly marked the upcall.
 */
int xe_l2_unmask(xe_l2_domain *d, uint32_t port)
{
    uint32_t word = port / XE_L2_WORDS, bit = port % XE_L2_WORDS;
    xe_vcpu_info *vi;

    if (port >= nr_ports(d))
        return XE_E_PORT;
    vi = vinfo(d, d->chans[port].notify_vcpu);
    if (vi == NULL)
        return XE_E_VCPU;
    if (!test_and_clear64(&d->mask[word], bit))
        return 0;
    if (!test64(&d->pending[word], bit))
        return XE_SP_NOT_PENDING;
    if (test_and_set64(&vi->evtchn_pending_sel, word))
        return XE_SP_WAS_PENDING;
    return XE_SP_WAS_PENDING | mark_events_pending(vi);
}

int xe_l2_clear_pending(xe_l2_domain *d, uint32_t port)
{
    if (port >= nr_ports(d))
        return XE_E_PORT;
    test_and_clear64(&d->pending[port / XE_L2_WORDS], port % XE_L2_WORDS);
    return XE_OK;
}

int xe_l2_is_pending(const xe_l2_domain *d, uint32_t port)
{
    if (port >= nr_ports(d))
        return XE_E_PORT;
    return test64(&d->pending[port / XE_L2_WORDS], port % XE_L2_WORDS);
}

int xe_l2_is_masked(const xe_l2_domain *d, uint32_t port)
{
    if (port >= nr_ports(d))
        return XE_E_PORT;
    return test64(&d->mask[port / XE_L2_WORDS], port % XE_L2_WORDS);
}

/* --- guest side --------------------------------------------------------- */

/* Linux's active_evtchns(): pending, not masked, and in this CPU's
 * cpu_evtchn_mask, which Linux keeps as the ports bound to the CPU: here,
 * the ports whose notify_vcpu is this vCPU.  At most 64 channel reads. */
static uint64_t active_bits(const xe_l2_domain *d, uint32_t vcpu, uint32_t word)
{
    uint64_t cand = __atomic_load_n(&d->pending[word], __ATOMIC_ACQUIRE)
                    & ~__atomic_load_n(&d->mask[word], __ATOMIC_ACQUIRE);
    uint64_t act = 0;
    uint32_t base = word * XE_L2_WORDS, bit;

    while (cand) {
        bit = (uint32_t)__builtin_ctzll(cand);
        cand &= cand - 1;
        if (base + bit < d->nr_chans && d->chans[base + bit].notify_vcpu == vcpu
            && !(xe_fault(XE_FAULT_L2_CPU_MASK_UNSET) && xe_fault_point(XE_POINT_L2_CPU_MASK, base + bit)))
            act |= BIT64(bit);
    }
    return act;
}

/*
 * Linux's upcall on one vCPU (__xen_evtchn_do_upcall around
 * evtchn_2l_handle_events), delivering into out[] instead of calling IRQ
 * handlers.  Each pass: clear evtchn_upcall_pending, take the selector with
 * xchg, scan words round-robin from the saved word, the first visit of
 * that word from the saved bit and a second visit of the whole word later;
 * after each port save the position just past it.  Passes repeat while Xen
 * has set evtchn_upcall_pending again, as Linux's do/while does.
 *
 * Linux has no batch limit.  Here a batch stops before the port that would
 * exceed out_len, or before a step past max_steps (one step per word
 * visited, per port delivered, and per pass after the first; the wrap back
 * to word 0 is free, a visit always follows it); the selector bits of the
 * words not finished go back into evtchn_pending_sel and
 * evtchn_upcall_pending is set again (the invariant Xen keeps: a selector
 * bit set means an upcall is pending), so the next call resumes at the
 * position saved after the last port and loses nothing.  max_steps >= 3
 * always makes progress: at worst the start word's first visit finds
 * nothing, the next visit finds a port, and the third step delivers it.
 */
static uint32_t l2_upcall(xe_l2_domain *d, uint32_t vcpu, uint32_t flags, uint32_t *out, uint32_t out_len,
                          uint32_t max_steps, xe_error *err)
{
    xe_vcpu_info *vi = vinfo(d, vcpu);
    xe_l2_scan *sc;
    uint64_t words_left, words, bits, rest;
    uint32_t start_word, start_bit, word, bit, i, port, n = 0, steps = 0;

    err->code = XE_OK;
    err->port = err->vcpu = err->priority = 0;
    if (vi == NULL) {
        err->code = XE_E_VCPU;
        err->vcpu = vcpu;
        return 0;
    }
    sc = &d->scan[vcpu];
    for (;;) {
        start_word = __atomic_load_n(&sc->current_word_idx, __ATOMIC_RELAXED);
        start_bit = __atomic_load_n(&sc->current_bit_idx, __ATOMIC_RELAXED);
        if (start_word >= XE_L2_WORDS || start_bit >= XE_L2_WORDS) {
            /* Guest memory said so: never a shift count or an index.  Reset
             * before the selector is taken, so nothing is lost. */
            __atomic_store_n(&sc->current_word_idx, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&sc->current_bit_idx, 0, __ATOMIC_RELAXED);
            err->code = XE_E_SCAN;
            err->vcpu = vcpu;
            return n;
        }
        __atomic_store_n(&vi->evtchn_upcall_pending, 0, __ATOMIC_SEQ_CST);
        words_left = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
        word = start_word;
        for (i = 0; words_left != 0; i++) {
            words = words_left & (ALL64 << word);
            if (words == 0) { /* nothing at or past word: wrap (no step: a visit follows) */
                word = 0;
                continue;
            }
            if (steps >= max_steps)
                goto stop;
            steps++;
            word = (uint32_t)__builtin_ctzll(words);
            bits = active_bits(d, vcpu, word);
            bit = (word == start_word && i == 0) ? start_bit : 0;
            while ((rest = bits & (ALL64 << bit)) != 0) {
                if (n >= out_len || steps >= max_steps)
                    goto stop;
                steps++;
                bit = (uint32_t)__builtin_ctzll(rest);
                port = word * XE_L2_WORDS + bit;
                if (flags & XE_CONSUME_MASK)
                    test_and_set64(&d->mask[word], bit);
                if (flags & XE_CONSUME_ACK)
                    test_and_clear64(&d->pending[word], bit);
                out[n++] = port;
                bit = (bit + 1) % XE_L2_WORDS;
                __atomic_store_n(&sc->current_word_idx, bit ? word : (word + 1) % XE_L2_WORDS,
                                 __ATOMIC_RELAXED);
                __atomic_store_n(&sc->current_bit_idx, bit, __ATOMIC_RELAXED);
                if (bit == 0)
                    break;
            }
            /* The start word is visited twice; any other word once. */
            if (word != start_word || i != 0)
                words_left &= ~BIT64(word);
            word = (word + 1) % XE_L2_WORDS;
        }
        if (n >= out_len || steps >= max_steps
            || !__atomic_load_n(&vi->evtchn_upcall_pending, __ATOMIC_SEQ_CST))
            return n;
        steps++;
    }

stop:
    __atomic_fetch_or(&vi->evtchn_pending_sel, words_left, __ATOMIC_SEQ_CST);
    __atomic_store_n(&vi->evtchn_upcall_pending, 1, __ATOMIC_SEQ_CST);
    return n;
}

uint32_t xe_l2_consume(xe_l2_domain *d, uint32_t vcpu, uint32_t flags, uint32_t *out, uint32_t out_len,
                       uint32_t max_steps, xe_error *err)
{
    xe_vcpu_info *vi = vinfo(d, vcpu);
    xe_guest_vcpu *g = vi != NULL && d->guests != NULL ? &d->guests[vcpu] : NULL;
    uint32_t end = 0, n;

    /* The upcall count (xe_upcall_begin) moves where something is pending: else nothing is written (but a
     * corrupt scan position mended). */
    if (g != NULL && !__atomic_load_n(&vi->evtchn_upcall_pending, __ATOMIC_ACQUIRE)
        && !__atomic_load_n(&vi->evtchn_pending_sel, __ATOMIC_ACQUIRE))
        g = NULL;
    if (g != NULL)
        end = xe_upcall_begin(g);
    n = l2_upcall(d, vcpu, flags, out, out_len, max_steps, err);
    if (g != NULL)
        __atomic_store_n(&g->ready, (xe_load(&g->ready) & XE_QUEUE_MASK) | end, __ATOMIC_RELEASE);
    return n;
}

/* evtchn_2l_test_and_set_mask(): returns the old mask bit. */
int xe_l2_guest_mask(xe_l2_domain *d, uint32_t port)
{
    if (port >= nr_ports(d))
        return XE_E_PORT;
    return test_and_set64(&d->mask[port / XE_L2_WORDS], port % XE_L2_WORDS);
}

/*
 * Linux's evtchn_2l_unmask() run on vCPU `vcpu` (XE_L2_OWN_VCPU: on the
 * port's own, its notify_vcpu).  Returns 0 when Linux makes the
 * EVTCHNOP_unmask hypercall instead (the caller then does xe_l2_unmask):
 * the port belongs to another vCPU (mask left set), or an HVM guest found
 * it pending (mask set again).  Otherwise 1: mask cleared here, with
 * XE_SP_UPCALL added when it was pending and its selector bit was clear,
 * so Linux set evtchn_upcall_pending itself (the "resend").
 */
int xe_l2_guest_unmask(xe_l2_domain *d, uint32_t port, uint32_t vcpu, uint32_t flags)
{
    uint32_t word = port / XE_L2_WORDS, bit = port % XE_L2_WORDS, own;
    xe_vcpu_info *vi;

    if (port >= nr_ports(d))
        return XE_E_PORT;
    own = d->chans[port].notify_vcpu;
    if (vcpu == XE_L2_OWN_VCPU)
        vcpu = own;
    vi = vinfo(d, vcpu);
    if (vi == NULL)
        return XE_E_VCPU;
    /* (Linux before Xen's 3e61615263 resent on the vCPU it ran on, whoever's the port was) */
    if (vcpu != own && !xe_fault(XE_FAULT_L2_UNMASK_HERE))
        return 0;
    test_and_clear64(&d->mask[word], bit);
    if (!test64(&d->pending[word], bit))
        return 1;
    if (flags & XE_L2_UNMASK_HVM) {
        test_and_set64(&d->mask[word], bit);
        return 0;
    }
    if (test_and_set64(&vi->evtchn_pending_sel, word))
        return 1;
    __atomic_store_n(&vi->evtchn_upcall_pending, 1, __ATOMIC_SEQ_CST);
    return 1 | XE_SP_UPCALL;
}

int xe_l2_guest_clear_pending(xe_l2_domain *d, uint32_t port)
{
    if (port >= nr_ports(d))
        return XE_E_PORT;
    test_and_clear64(&d->pending[port / XE_L2_WORDS], port % XE_L2_WORDS);
    return XE_OK;
}

/* Is [p, p + len) inside the image and aligned?  Compared as integers: the
 * pointers were computed from offsets found in shared memory. */
static int in_image(const void *p, size_t len, uintptr_t base, size_t size, uintptr_t align)
{
    uintptr_t a = (uintptr_t)p;

    if (a < base || a % align != 0 || len > size)
        return 0;
    return a - base <= size - len;
}

int xe_l2_check(const xe_l2_domain *d, const void *base, size_t size, uint32_t *where)
{
    uintptr_t b = (uintptr_t)base;
    uint32_t low = d->nr_vcpus < XE_L2_SHARED_VCPUS ? d->nr_vcpus : XE_L2_SHARED_VCPUS;
    uint32_t high = d->nr_vcpus - low;

    *where = 0;
    if (d->nr_vcpus == 0 || d->nr_vcpus > 256 || d->nr_chans < 2 || d->nr_chans > XE_EVTCHN_FIFO_NR_CHANNELS)
        return XE_E_STATE;
    if (!in_image(d->pending, XE_L2_WORDS * sizeof(uint64_t), b, size, 8))
        *where = XE_L2_AT_PENDING;
    else if (!in_image(d->mask, XE_L2_WORDS * sizeof(uint64_t), b, size, 8))
        *where = XE_L2_AT_MASK;
    else if (!in_image(d->vcpu_info, low * sizeof(xe_vcpu_info), b, size, 8))
        *where = XE_L2_AT_VCPU_INFO;
    else if (high && !in_image(d->vcpu_info_extra, high * sizeof(xe_vcpu_info), b, size, 8))
        *where = XE_L2_AT_VCPU_INFO_EXTRA;
    else if (!in_image(d->scan, d->nr_vcpus * sizeof(xe_l2_scan), b, size, 4))
        *where = XE_L2_AT_SCAN;
    else if (!in_image(d->chans, d->nr_chans * sizeof(xe_chan), b, size, 4))
        *where = XE_L2_AT_CHANS;
    return *where ? XE_E_RANGE : XE_OK;
}
