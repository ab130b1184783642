/* Helpers shared by the engine's C files: word lookup and atomics. */
#ifndef XENEVT_FIFO_INTERNAL_H
#define XENEVT_FIFO_INTERNAL_H

#include "xenevt_fifo.h"

#define XE_BIT(n) (1u << (n))
#define XE_W_PENDING XE_BIT(XE_EVTCHN_FIFO_PENDING)
#define XE_W_MASKED XE_BIT(XE_EVTCHN_FIFO_MASKED)
#define XE_W_LINKED XE_BIT(XE_EVTCHN_FIFO_LINKED)
#define XE_W_BUSY XE_BIT(XE_EVTCHN_FIFO_BUSY)
#define XE_QUEUE_MASK ((1u << XE_EVTCHN_FIFO_MAX_QUEUES) - 1)

/* The event word of a port, or NULL when the port has none: past the
 * array, or on a page that is not mapped.  Every port taken from shared
 * memory (a head, a LINK, a tail) goes through here before it is used. */
static inline uint32_t *xe_word(const xe_domain *d, uint32_t port)
{
    uint32_t page = port / XE_WORDS_PER_PAGE;

    if (page >= d->nr_pages || page >= XE_MAX_PAGES)
        return NULL;
    if (d->pages[page] == NULL)
        return NULL;
    return d->pages[page] + port % XE_WORDS_PER_PAGE;
}

static inline uint32_t xe_load(const uint32_t *w)
{
    return __atomic_load_n(w, __ATOMIC_ACQUIRE);
}

static inline void xe_store(uint32_t *w, uint32_t v)
{
    __atomic_store_n(w, v, __ATOMIC_RELEASE);
}

/* Returns the old value of the bit, like Linux's sync_test_and_set_bit. */
static inline int xe_test_and_set(uint32_t *w, uint32_t bit)
{
    return (__atomic_fetch_or(w, bit, __ATOMIC_SEQ_CST) & bit) != 0;
}

static inline void xe_set(uint32_t *w, uint32_t bit)
{
    __atomic_fetch_or(w, bit, __ATOMIC_SEQ_CST);
}

static inline void xe_clear(uint32_t *w, uint32_t bit)
{
    __atomic_fetch_and(w, ~bit, __ATOMIC_SEQ_CST);
}

/* cmpxchg returning the value found, as Xen's and Linux's cmpxchg do. */
static inline uint32_t xe_cmpxchg(uint32_t *w, uint32_t old, uint32_t new)
{
    __atomic_compare_exchange_n(w, &old, new, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return old;
}

static inline uint32_t xe_xchg(uint32_t *w, uint32_t v)
{
    return __atomic_exchange_n(w, v, __ATOMIC_SEQ_CST);
}

/* The upcall count in a vCPU's xe_guest_vcpu.ready (above its READY bits): made odd before an upcall's first
 * write, and even again by the store of the value returned here, after its last; an upcall with nothing to do
 * writes nothing and leaves it alone.  A count a killed upcall left odd stays odd until the next one ends. */
static inline uint32_t xe_upcall_begin(xe_guest_vcpu *g)
{
    uint32_t r = xe_load(&g->ready), count = r & ~XE_QUEUE_MASK;

    if (!(count & XE_GUEST_UPCALL_ONE)) {
        count += XE_GUEST_UPCALL_ONE;
        __atomic_store_n(&g->ready, (r & XE_QUEUE_MASK) | count, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
    return count + XE_GUEST_UPCALL_ONE;
}

/* The fault switches (xe_faults_set): zero but in a replay. */
extern uint32_t xe_fault_mask;
extern xe_fault_hook_fn xe_fault_hook;

static inline int xe_fault(uint32_t fault)
{
    return (xe_fault_mask & fault) != 0;
}

static inline uint32_t xe_fault_point(uint32_t point, uint32_t port)
{
    return xe_fault_hook != NULL ? xe_fault_hook(point, port) : 0;
}

#endif
