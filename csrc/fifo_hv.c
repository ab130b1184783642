/*
 * Hypervisor side of the FIFO ABI: raising an event links its port at the
 * tail of its (vCPU, priority) queue.  Follows the order of operations of
 * xen/common/event_fifo.c; the caller holds the domain's event lock, which
 * stands in for Xen's per-queue locks (the guest runs lock-free against us,
 * so every shared word is still touched atomically).
 */
#include "fifo_internal.h"

uint32_t xe_fault_mask;
xe_fault_hook_fn xe_fault_hook;

void xe_faults_set(uint32_t mask, xe_fault_hook_fn hook)
{
    xe_fault_mask = mask;
    xe_fault_hook = mask ? hook : NULL;
}

uint32_t xe_faults_get(void)
{
    return xe_fault_mask;
}

/* Xen's try_set_link(): write LINK only while the tail word is LINKED.
 * 1 linked, 0 tail no longer linked (queue emptied), -1 lost a race. */
static int try_set_link(uint32_t *word, uint32_t *w, uint32_t link)
{
    uint32_t old, new;

    if (!(*w & XE_W_LINKED))
        return 0;
    old = *w;
    new = (old & ~(XE_W_BUSY | XE_EVTCHN_FIFO_LINK_MASK)) | link;
    *w = xe_cmpxchg(word, old, new);
    return *w == old ? 1 : -1;
}

/* Xen's evtchn_fifo_set_link(): one plain attempt, then BUSY on the tail
 * word (it blocks the guest's unmask, the only change that can keep the
 * cmpxchg failing) and at most 4 more.  Giving up counts as linked, as in
 * Xen: the event is then lost ("port not linked") and *gave_up says so. */
static int set_link(uint32_t *word, uint32_t link, int *gave_up)
{
    uint32_t w = xe_load(word);
    int ret, try;

    ret = try_set_link(word, &w, link);
    if (ret >= 0)
        return ret;

    xe_set(word, XE_W_BUSY);
    w = xe_load(word);
    for (try = 0; try < 4; try++) {
        ret = try_set_link(word, &w, link);
        if (ret >= 0) {
            if (ret == 0)
                xe_clear(word, XE_W_BUSY);
            return ret;
        }
    }
    xe_clear(word, XE_W_BUSY);
    *gave_up = 1;
    return 1;
}

static int valid_tail(const xe_domain *d, uint32_t tail)
{
    return tail == 0 || xe_word(d, tail) != NULL;
}

int xe_hv_set_pending(xe_domain *d, uint32_t port)
{
    xe_chan *ch;
    uint32_t *word, *tail_word;
    uint32_t v, prio, q, old_q;
    int result = 0, linked = 1, gave_up = 0;

    if (port == 0 || port >= d->nr_chans)
        return XE_E_PORT;
    ch = &d->chans[port];
    v = ch->notify_vcpu;
    prio = ch->priority;
    if (v >= d->nr_vcpus)
        return XE_E_VCPU;
    if (prio > XE_EVTCHN_FIFO_PRIORITY_MIN || ch->last_priority > XE_EVTCHN_FIFO_PRIORITY_MIN
        || ch->last_vcpu >= d->nr_vcpus)
        return XE_E_STATE;

    /* No array page yet: remember it, add_page_to_event_array() re-raises.
     * Before Xen 917c123029 the event was dropped here (the fault). */
    word = xe_word(d, port);
    if (word == NULL) {
        if (xe_fault(XE_FAULT_NO_PAGE_DROPPED))
            return XE_OK;
        ch->flags |= XE_CHAN_DEFERRED;
        return XE_SP_DEFERRED;
    }

    q = v * XE_EVTCHN_FIFO_MAX_QUEUES + prio;
    old_q = ch->last_vcpu * XE_EVTCHN_FIFO_MAX_QUEUES + ch->last_priority;
    /* Validate the hypervisor's own tails before touching any shared word,
     * so that corrupt state is reported, never half-applied. */
    if (!valid_tail(d, d->tails[q]) || !valid_tail(d, d->tails[old_q]))
        return XE_E_STATE;

    /* Control block not registered: Xen drops the event before it touches
     * the word (the guest may not unmask before registering, so nothing is
     * lost that it could see; real Xen leaves PENDING clear: xen-ci). */
    if (d->cb == NULL || d->cb[v] == NULL) {
        /* Before Xen 8aa0e9d2d1 PENDING was set first, and stayed set on
         * a word nobody would ever link (the fault). */
        if (xe_fault(XE_FAULT_PENDING_UNQUEUED))
            xe_set(word, XE_W_PENDING);
        return XE_SP_NO_CONTROL;
    }

    if (xe_test_and_set(word, XE_W_PENDING))
        result |= XE_SP_WAS_PENDING;

    if (xe_load(word) & XE_W_MASKED) {
        result |= XE_SP_MASKED;
    } else if (xe_test_and_set(word, XE_W_LINKED)) {
        result |= XE_SP_ALREADY_LINKED;
    } else {
        /* Was it the tail of its last queue?  That queue is empty now and
         * its tail must not be linked to by the next event there.  Before
         * Xen e33d4257fc only a re-add to the same queue was seen as one:
         * a moved old tail stayed its old queue's tail (the fault). */
        if (d->tails[old_q] == port && (old_q == q || !xe_fault(XE_FAULT_OLD_TAIL_LINKED)))
            d->tails[old_q] = 0;
        if (old_q != q) {
            ch->last_vcpu = (uint16_t)v;
            ch->last_priority = (uint8_t)prio;
            result |= XE_SP_MOVED;
        }
        linked = 0;
        if (d->tails[q] != 0) {
            tail_word = xe_word(d, d->tails[q]);
            linked = set_link(tail_word, port, &gave_up);
        }
        if (!linked) {
            xe_store(&d->cb[v]->head[prio], port);
            result |= XE_SP_NEW_HEAD;
        }
        if (gave_up)
            result |= XE_SP_LINK_GAVE_UP;
        d->tails[q] = port;
        result |= XE_SP_LINKED;
    }

    /* READY only for a new head: setting it on every append let guests
     * walk a stale head (fixed in Xen 4.4, 70ccddb14a; the fault puts the
     * old order back, the guest's step forced in before READY). */
    if (linked && xe_fault(XE_FAULT_READY_EVERY_ADD) && (result & XE_SP_LINKED)) {
        (void)xe_fault_point(XE_POINT_BEFORE_READY, port);
        linked = 0;
    }
    if (!linked && !xe_test_and_set(&d->cb[v]->ready, XE_BIT(prio)))
        result |= XE_SP_UPCALL;
    return result;
}

int xe_hv_unmask(xe_domain *d, uint32_t port)
{
    uint32_t *word;

    if (port == 0 || port >= d->nr_chans)
        return XE_E_PORT;
    word = xe_word(d, port);
    if (word == NULL)
        return XE_SP_DEFERRED;
    xe_clear(word, XE_W_MASKED);
    if (!(xe_load(word) & XE_W_PENDING))
        return XE_SP_NOT_PENDING;
    return xe_hv_set_pending(d, port);
}

int xe_hv_clear_pending(xe_domain *d, uint32_t port)
{
    uint32_t *word;

    if (port == 0 || port >= d->nr_chans)
        return XE_E_PORT;
    /* Only the word's PENDING: Xen never clears its struct evtchn's
     * `pending` (our DEFERRED), so a later page covering the port raises it
     * again, whatever was bound there since. */
    word = xe_word(d, port);
    if (word != NULL)
        xe_clear(word, XE_W_PENDING);
    return XE_OK;
}

/* EVTCHNOP_expand_array: the caller has mapped pages[page_index] and raised
 * nr_pages; re-raise what fired while the page was missing.  Returns the
 * number of ports re-raised, or a negative XE_E_* code. */
int xe_hv_page_added(xe_domain *d, uint32_t page_index)
{
    uint32_t port, first, last;
    int raised = 0, rc;

    if (page_index >= d->nr_pages || page_index >= XE_MAX_PAGES || d->pages[page_index] == NULL)
        return XE_E_RANGE;
    first = page_index * XE_WORDS_PER_PAGE;
    last = first + XE_WORDS_PER_PAGE;
    if (last > d->nr_chans)
        last = d->nr_chans;
    for (port = first ? first : 1; port < last; port++) {
        if (!(d->chans[port].flags & XE_CHAN_DEFERRED))
            continue;  /* (DEFERRED stays set: Xen never clears evtchn->pending) */
        rc = xe_hv_set_pending(d, port);
        if (rc < 0)
            return rc;
        raised++;
    }
    return raised;
}

int xe_word_get(const xe_domain *d, uint32_t port, uint32_t *value)
{
    const uint32_t *word = xe_word(d, port);

    if (word == NULL)
        return XE_E_RANGE;
    *value = xe_load(word);
    return XE_OK;
}

int xe_word_set(xe_domain *d, uint32_t port, uint32_t value)
{
    uint32_t *word = xe_word(d, port);

    if (word == NULL)
        return XE_E_RANGE;
    xe_store(word, value);
    return XE_OK;
}

/* Is [p, p + len) inside [base, base + size) and aligned to align?  Compared
 * as integers: the pointers come from shared memory's offsets, not from C. */
static int inside(const void *p, size_t len, uintptr_t base, size_t size, uintptr_t align)
{
    uintptr_t a = (uintptr_t)p;

    return a >= base && a % align == 0 && len <= size && a - base <= size - len;
}

int xe_domain_check(const xe_domain *d, const void *base, size_t size, uint32_t *where)
{
    uintptr_t b = (uintptr_t)base;
    uint32_t i;

    *where = 0;
    if (d->nr_pages > XE_MAX_PAGES || d->nr_vcpus == 0 || d->nr_vcpus > 256 || d->nr_chans < 2
        || d->nr_chans > XE_EVTCHN_FIFO_NR_CHANNELS)
        return XE_E_STATE;
    if (!inside(d->tails, (size_t)d->nr_vcpus * XE_EVTCHN_FIFO_MAX_QUEUES * sizeof(uint32_t), b, size, 4)
        || !inside(d->chans, (size_t)d->nr_chans * sizeof(xe_chan), b, size, 4))
        return XE_E_STATE;
    for (i = 0; i < d->nr_pages; i++) {
        if (d->pages[i] != NULL && !inside(d->pages[i], XE_WORDS_PER_PAGE * sizeof(uint32_t), b, size, 4)) {
            *where = i;
            return XE_E_RANGE;
        }
    }
    for (i = 0; d->cb != NULL && i < d->nr_vcpus; i++) {
        if (d->cb[i] != NULL && !inside(d->cb[i], sizeof(xe_control_block), b, size, 8)) {
            *where = i;
            return XE_E_NO_CONTROL;
        }
    }
    return XE_OK;
}
