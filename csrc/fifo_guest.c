/*
 * Guest side of the FIFO ABI: the upcall's consume loop and the word
 * operations a guest may do, after Linux drivers/xen/events/events_fifo.c.
 * Unlike Linux, every head and LINK read from shared memory is checked
 * before use, and a bad one stops the walk with the port named.
 */
#include "fifo_internal.h"

/* Bound on spinning while Xen holds BUSY on a word (Xen holds it for at
 * most 5 cmpxchg attempts, so this is generous). */
#define XE_BUSY_SPINS 1000000

/* Linux's clear_linked(): clear LINKED and LINK in one cmpxchg and return
 * the LINK that was there.  Xen may write LINK concurrently (while the word
 * is LINKED), which is why this is a loop and not a plain store. */
static uint32_t clear_linked(uint32_t *word)
{
    uint32_t old, new, w = xe_load(word);

    do {
        old = w;
        new = old & ~(XE_W_LINKED | XE_EVTCHN_FIFO_LINK_MASK);
        w = xe_cmpxchg(word, old, new);
    } while (w != old);
    return w & XE_EVTCHN_FIFO_LINK_MASK;
}

static uint32_t fail(xe_error *err, int32_t code, uint32_t port, uint32_t vcpu, uint32_t prio,
                     uint32_t n)
{
    err->code = code;
    err->port = port;
    err->vcpu = vcpu;
    err->priority = prio;
    return n;
}

/*
 * Linux's evtchn_fifo_handle_events() for one vCPU, delivering into out[]
 * instead of calling IRQ handlers.  Stops when nothing is READY, when
 * out_len ports were delivered, or after max_steps queue entries; local
 * READY bits and queue heads stay in *g, so the next call resumes exactly
 * where this one stopped.  Returns the number of ports written to out.
 */
uint32_t xe_guest_consume(xe_domain *d, uint32_t vcpu, xe_guest_vcpu *g, uint32_t flags,
                          uint32_t *out, uint32_t out_len, uint32_t max_steps, xe_error *err)
{
    xe_control_block *cb;
    uint32_t ready, q, head, port, link, w, n = 0, steps = 0, upcall;
    uint32_t *word;

    fail(err, XE_OK, 0, 0, 0, 0);
    if (vcpu >= d->nr_vcpus)
        return fail(err, XE_E_VCPU, 0, vcpu, 0, 0);
    cb = d->cb ? d->cb[vcpu] : NULL;
    if (cb == NULL)
        return fail(err, XE_E_NO_CONTROL, 0, vcpu, 0, 0);

    /* Nothing READY, here or kept: no upcall, nothing written. */
    if (!((xe_load(&g->ready) | xe_load(&cb->ready)) & XE_QUEUE_MASK))
        return 0;
    upcall = xe_upcall_begin(g);
    /* Bits above the 16 queues are never set by Xen; Linux's find_first_bit
     * would index past its queue array with them, so they are dropped. */
    ready = (g->ready | xe_xchg(&cb->ready, 0)) & XE_QUEUE_MASK;
    while (ready && n < out_len && steps < max_steps) {
        steps++;
        q = (uint32_t)__builtin_ctz(ready); /* lowest bit: highest priority */
        head = g->head[q];
        if (head == 0) {
            /* Reached the tail last time: the next head is in the control
             * block (acquire: Xen wrote the word before the head). */
            head = xe_load(&cb->head[q]);
            if (head == 0)
                goto bad_queue_zero;
        }
        port = head;
        word = xe_word(d, port);
        if (word == NULL)
            goto bad_queue_range;
        if (!(xe_load(word) & XE_W_LINKED))
            goto bad_queue_unlinked;

        link = clear_linked(word);
        if (link == 0)
            ready &= ~XE_BIT(q);

        w = xe_load(word);
        if ((w & XE_W_PENDING) && !(w & XE_W_MASKED)) {
            if (flags & XE_CONSUME_MASK)
                xe_set(word, XE_W_MASKED);
            if (flags & XE_CONSUME_ACK)
                xe_clear(word, XE_W_PENDING);
            out[n++] = port;
        }
        g->head[q] = link;
        ready |= xe_xchg(&cb->ready, 0) & XE_QUEUE_MASK;
    }
    xe_store(&g->ready, ready | upcall);
    return n;

    /* A bad queue is reported and dropped from this vCPU's local state so
     * that later calls still serve the other queues. */
bad_queue_zero:
    fail(err, XE_E_ZERO_HEAD, 0, vcpu, q, n);
    goto drop;
bad_queue_range:
    fail(err, XE_E_RANGE, port, vcpu, q, n);
    goto drop;
bad_queue_unlinked:
    fail(err, XE_E_UNLINKED, port, vcpu, q, n);
drop:
    g->head[q] = 0;
    xe_store(&g->ready, (ready & ~XE_BIT(q)) | upcall);
    return n;
}

int xe_guest_mask(xe_domain *d, uint32_t port)
{
    uint32_t *word = port ? xe_word(d, port) : NULL;

    if (word == NULL)
        return XE_E_RANGE;
    return xe_test_and_set(word, XE_W_MASKED);
}

/*
 * Linux's clear_masked_cond() (after XSA-332): clear MASKED locally only
 * if the event is not PENDING, never while Xen holds BUSY.  Returns 1 when
 * done locally, 0 when the guest must use the EVTCHNOP_unmask hypercall.
 */
int xe_guest_unmask(xe_domain *d, uint32_t port)
{
    uint32_t *word = port ? xe_word(d, port) : NULL;
    uint32_t w, old;
    long spins;

    if (word == NULL)
        return XE_E_RANGE;
    w = xe_load(word);
    for (spins = 0; spins < XE_BUSY_SPINS; spins++) {
        if (!(w & XE_W_MASKED))
            return 1;
        if (w & XE_W_PENDING)
            return 0;
        old = w & ~XE_W_BUSY;
        w = xe_cmpxchg(word, old, old & ~XE_W_MASKED);
        if (w == old)
            return 1;
    }
    return XE_E_BUSY;
}

int xe_guest_clear_pending(xe_domain *d, uint32_t port)
{
    uint32_t *word = port ? xe_word(d, port) : NULL;

    if (word == NULL)
        return XE_E_RANGE;
    xe_clear(word, XE_W_PENDING);
    return XE_OK;
}
