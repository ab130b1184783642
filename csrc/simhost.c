/*
 * The simulator's hot path over its mapped state file (declarations and the
 * lock slot's layout: xenevt_host_api.h; the file's format: statefile.py).
 *
 * The host lock (hostfile.c) is taken by every process and thread that
 * changes channel tables, and every open that reads them (Python's HostFile
 * and this file alike).  A holder killed at any instant is seen by the next
 * taker: the caller runs the journal's recovery, as the journal's intent
 * record and raise mark make every update redoable.
 *
 * Only the common case is decided here: whatever is unusual (an error to
 * report, a record that is not plainly valid, an update to finish first)
 * returns XE_HOST_SLOW and the Python hypercall runs, with its checks and
 * its error messages.  Every pointer comes from offsets checked against the
 * mapping; every record is checked before it is followed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fifo_internal.h"
#include "xenevt_host.h"

/* statefile.py and engine/layout.py: the numbers this file reads */
#define PAGE 4096u
#define J_INTENT (0x040 / 4)
#define J_RAISE_DOM (0x060 / 4)
#define J_RAISE_PORT (0x064 / 4)
#define DOM_PRIVILEGED 1u
#define DOM_GONE 32u
#define H_NR_PAGES 4
#define H_GENERATION 6
#define H_ABI 8
#define H_VALID 9
#define ECS_FREE 0
#define H_CB_STATE (64 / 4)
#define H_UPCALL (2048 / 4)
#define H_VCPU_STATE 1536  /* u8 per vCPU (engine/layout.py VCPU_STATE_OFFSET): 0 online */
#define ABI_2L 0u
#define ABI_FIFO 1u
#define ECS_UNBOUND 2
#define ECS_INTERDOMAIN 3
#define ECS_VIRQ 5
#define ECS_IPI 6
#define NR_VIRQS 24
#define DOMID_FIRST_RESERVED 0x7ff0u
#define SP_SHIFT_PORT 12
#define SP_SHIFT_DOM 32

_Static_assert(sizeof(xe_port_status) == 10 * sizeof(uint32_t), "Python reads xe_port_status as 10 u32s");

/* A file another process shrank would fault (SIGBUS) past its new end, and the journal page, the file's last,
 * goes first.  The mapping is watched (hostfile.c's guard, h->map_id): the hot path touches the file's last byte,
 * which a shrink turns into zero pages and a flag, with no system call; unwatched, it asks fstat(). */
static int size_unchanged(const xe_host *h)
{
    struct stat st;

    if (h->map_id > 0 && xe_map_guarded()) {
        (void)*(volatile uint8_t *)(h->base + h->size - 1);
        return !xe_map_faulted(h->map_id);
    }
    return h->fd < 0 || (fstat(h->fd, &st) == 0 && (uint64_t)st.st_size == h->size);
}

/* --- setup --------------------------------------------------------------------------------------------------- */
static int within(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static int dom_setup(xe_host *h, xe_host_dom *d)
{
    uint64_t img = d->image_offset, isz = d->image_size;
    uint64_t l2_end;
    uint32_t v, where;

    d->ok = 0;
    if (d->nr_vcpus == 0 || d->nr_vcpus > 256 || d->nr_chans < 2 || d->nr_chans > XE_EVTCHN_FIFO_NR_CHANNELS
        || d->max_pages == 0 || d->max_pages > XE_MAX_PAGES)
        return -1;
    if (img % PAGE || !within(img, isz, h->journal_offset) || !within(d->entry_offset, 8, img)
        || d->entry_offset % 8)
        return -1;
    /* the sections the hot path touches, each inside the image (the header page: upcall words, CB states) */
    if (isz < PAGE || !within(d->pages_offset, (uint64_t)d->max_pages * PAGE, isz)
        || !within(d->cb_pages_offset, (uint64_t)d->nr_vcpus * PAGE, isz)
        || !within(d->tails_offset, (uint64_t)d->nr_vcpus * 16 * 4, isz)
        || !within(d->guest_offset, (uint64_t)d->nr_vcpus * sizeof(xe_guest_vcpu), isz)
        || !within(d->chans_offset, (uint64_t)d->nr_chans * sizeof(xe_chan), isz)
        || d->pages_offset % PAGE || d->cb_pages_offset % PAGE || d->tails_offset % 4 || d->guest_offset % 4
        || d->chans_offset % 4)
        return -1;
    d->image = h->base + img;
    d->entry = (uint32_t *)(h->base + d->entry_offset);
    d->hdr = (uint32_t *)d->image;
    d->guests = (xe_guest_vcpu *)(d->image + d->guest_offset);
    d->stats = NULL;
    if (h->stats_base != NULL && within(d->stats_offset, (uint64_t)d->nr_chans * 16, h->stats_size))
        d->stats = h->stats_base + d->stats_offset;
    memset(&d->fifo, 0, sizeof(d->fifo));
    d->fifo.nr_vcpus = d->nr_vcpus;
    d->fifo.nr_chans = d->nr_chans;
    d->fifo.cb = d->cbs;
    d->fifo.tails = (uint32_t *)(d->image + d->tails_offset);
    d->fifo.chans = (xe_chan *)(d->image + d->chans_offset);
    for (v = 0; v < 256; v++)
        d->cbs[v] = NULL;
    d->fifo_ok = 0;
    d->gen = 0;
    memset(&d->l2, 0, sizeof(d->l2));
    if (d->version >= 2) {
        l2_end = (uint64_t)d->l2_scan_offset + (uint64_t)d->nr_vcpus * sizeof(xe_l2_scan);
        if (!within(d->l2_offset, PAGE, isz) || l2_end > isz || d->l2_offset % PAGE)
            return -1;
        d->l2.pending = (uint64_t *)(d->image + d->l2_offset + 2048);
        d->l2.mask = (uint64_t *)(d->image + d->l2_offset + 2560);
        d->l2.vcpu_info = (xe_vcpu_info *)(d->image + d->l2_offset);
        d->l2.vcpu_info_extra = d->nr_vcpus > XE_L2_SHARED_VCPUS ?
            (xe_vcpu_info *)(d->image + d->l2_extra_offset) : NULL;
        d->l2.scan = (xe_l2_scan *)(d->image + d->l2_scan_offset);
        d->l2.chans = d->fifo.chans;
        d->l2.guests = d->guests;
        d->l2.nr_vcpus = d->nr_vcpus;
        d->l2.nr_chans = d->nr_chans;
        if (xe_l2_check(&d->l2, d->image, isz, &where) < 0)
            return -1;
    }
    d->ok = 1;
    xe_host_refresh(h, d);  /* a bad header leaves fifo_ok 0: each use then goes the Python way, which says why */
    return 0;
}

int xe_host_setup(xe_host *h, uint32_t *bad)
{
    uint32_t i;

    *bad = h->nr_doms;
    if (h->base == NULL || h->size < 3 * PAGE || h->journal_offset != h->size - PAGE || h->size % PAGE)
        return -1;
    h->journal = (uint32_t *)(h->base + h->journal_offset);
    if (h->slot == NULL)  /* (a caller with its own mapping of the journal page takes the lock through it) */
        h->slot = h->base + h->journal_offset;
    if (h->rng == 0)
        h->rng = (uint32_t)getpid() * 2654435761u + 1;
    for (i = 0; i < h->nr_doms; i++) {
        if (dom_setup(h, &h->doms[i]) < 0) {
            *bad = i;
            return -1;
        }
    }
    return 0;
}

/* Build the descriptor aside, check it, then publish it (the pages first, their count last): a thread of this
 * process using the descriptor meanwhile sees the old array or the new, never a half-built one.  One refresher
 * at a time (threads of one process share the host's descriptors). */
static int refresh(xe_host_dom *d)
{
    xe_domain nd;
    xe_control_block *ncb[256];
    uint32_t gen, nr_pages, v, st, where, off;
    int rc;

    if (!d->ok)
        return XE_E_STATE;
    gen = __atomic_load_n(&d->hdr[H_GENERATION], __ATOMIC_ACQUIRE);
    nr_pages = __atomic_load_n(&d->hdr[H_NR_PAGES], __ATOMIC_RELAXED);
    if (nr_pages > d->max_pages)
        return XE_E_RANGE;
    nd = d->fifo;
    nd.cb = ncb;
    for (v = 0; v < d->nr_vcpus; v++) {
        st = __atomic_load_n(&d->hdr[H_CB_STATE + v], __ATOMIC_RELAXED);
        ncb[v] = NULL;
        if (st == 0)
            continue;
        off = st - 1;
        if (off % 8 || off > PAGE - sizeof(xe_control_block))
            return XE_E_NO_CONTROL;
        ncb[v] = (xe_control_block *)(d->image + d->cb_pages_offset + (uint64_t)v * PAGE + off);
    }
    for (v = 0; v < XE_MAX_PAGES; v++)
        nd.pages[v] = v < nr_pages ? (uint32_t *)(d->image + d->pages_offset + (uint64_t)v * PAGE) : NULL;
    nd.nr_pages = nr_pages;
    rc = xe_domain_check(&nd, d->image, d->image_size, &where);
    if (rc < 0)
        return rc;
    if (nr_pages < d->fifo.nr_pages)  /* (a teardown: the count first, then the pages) */
        __atomic_store_n(&d->fifo.nr_pages, nr_pages, __ATOMIC_RELEASE);
    for (v = 0; v < XE_MAX_PAGES; v++)
        __atomic_store_n(&d->fifo.pages[v], nd.pages[v], __ATOMIC_RELAXED);
    for (v = 0; v < d->nr_vcpus; v++)
        __atomic_store_n(&d->cbs[v], ncb[v], __ATOMIC_RELAXED);
    __atomic_store_n(&d->fifo.nr_pages, nr_pages, __ATOMIC_RELEASE);
    d->gen = gen;
    __atomic_store_n(&d->fifo_ok, 1, __ATOMIC_RELEASE);
    return XE_OK;
}

int xe_host_refresh(xe_host *h, xe_host_dom *d)
{
    int rc;

    while (__atomic_exchange_n(&h->refreshing, 1, __ATOMIC_ACQUIRE))
        sched_yield();
    rc = refresh(d);
    if (rc < 0)
        __atomic_store_n(&d->fifo_ok, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&h->refreshing, 0, __ATOMIC_RELEASE);
    return rc;
}

/* The domain's FIFO descriptor, re-read when its generation moved; NULL when it cannot be used (Python says why) */
static xe_domain *fifo_of(xe_host *h, xe_host_dom *d)
{
    if ((!__atomic_load_n(&d->fifo_ok, __ATOMIC_ACQUIRE)
         || __atomic_load_n(&d->hdr[H_GENERATION], __ATOMIC_ACQUIRE) != d->gen)
        && xe_host_refresh(h, d) < 0)
        return NULL;
    return &d->fifo;
}

/* --- lock of the host -------------------------------------------------------------------------------------- */
static int journal_busy(const xe_host *h)
{
    return __atomic_load_n(&h->journal[J_INTENT], __ATOMIC_ACQUIRE) != 0
        || __atomic_load_n(&h->journal[J_RAISE_DOM], __ATOMIC_ACQUIRE) != 0;
}

int xe_host_lock(xe_host *h)
{
    int rc = xe_lock_take(h->slot);

    if (rc >= 0 && journal_busy(h))
        rc |= XE_LOCK_RECOVER;
    return rc;
}

void xe_host_unlock(xe_host *h)
{
    xe_lock_give(h->slot);
}

static xe_host_dom *dom_of(xe_host *h, uint32_t domid, uint32_t *index);

/* --- the upcall word --------------------------------------------------------------------------------------- */
static long futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* The count bumped, the sleepers' flag cleared; returns whether someone sleeps (to be woken) */
static int upcall_bump(uint32_t *word)
{
    uint32_t old = __atomic_load_n(word, __ATOMIC_RELAXED), new;

    do {
        new = (old + 1) & XE_UPCALL_COUNT;
    } while (!__atomic_compare_exchange_n(word, &old, new, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return (old & XE_UPCALL_WAITERS) != 0;
}

void xe_upcall_bump(uint32_t *word)
{
    if (upcall_bump(word))
        futex(word, FUTEX_WAKE, INT_MAX, NULL);
}

int xe_upcall_sleep(uint32_t *word, uint32_t seq, int64_t timeout_ns)
{
    uint32_t want = (seq & XE_UPCALL_COUNT) | XE_UPCALL_WAITERS;
    uint32_t cur = seq & XE_UPCALL_COUNT;
    struct timespec ts;
    int rc;

    /* announce: the count unchanged, with the flag (a kick in between changes the count: no sleep) */
    if (!__atomic_compare_exchange_n(word, &cur, want, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) && cur != want)
        return 0;
    if (timeout_ns == 0) {
        cur = want;
        __atomic_compare_exchange_n(word, &cur, seq & XE_UPCALL_COUNT, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        return 0;
    }
    if (timeout_ns > 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
    }
    rc = futex(word, FUTEX_WAIT, want, timeout_ns > 0 ? &ts : NULL) != 0 ? errno : 0;
    /* no kick came (timed out, interrupted): the flag taken back, so a wait leaves the word as it found it */
    cur = want;
    __atomic_compare_exchange_n(word, &cur, seq & XE_UPCALL_COUNT, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
    if (rc != 0 && rc != EAGAIN && rc != ETIMEDOUT)
        return -rc;  /* (EINTR among them: a signal for the caller to handle) */
    return 0;
}

/* vcpu_mark_events_pending() under the lock; returns the word to wake once the lock is given (waking a consumer
 * while holding it would only have it wait for the lock when it answers), or NULL */
static uint32_t *kick(xe_host *h, uint32_t index, uint32_t vcpu)
{
    xe_host_dom *d;

    if (index >= h->nr_doms)
        return NULL;
    d = &h->doms[index];
    if (!d->ok || vcpu >= d->nr_vcpus)
        return NULL;
    if (d->version >= 2) {  /* evtchn_upcall_pending, on either ABI */
        if (vcpu < XE_L2_SHARED_VCPUS)
            __atomic_store_n(&d->l2.vcpu_info[vcpu].evtchn_upcall_pending, 1, __ATOMIC_RELEASE);
        else
            __atomic_store_n(&d->l2.vcpu_info_extra[vcpu - XE_L2_SHARED_VCPUS].evtchn_upcall_pending, 1,
                             __ATOMIC_RELEASE);
    }
    return upcall_bump(&d->hdr[H_UPCALL + vcpu]) ? &d->hdr[H_UPCALL + vcpu] : NULL;
}

void xe_host_wake(xe_host *h, uint32_t domid, uint32_t vcpu)
{
    uint32_t di;
    xe_host_dom *d = dom_of(h, domid, &di);

    if (d != NULL && vcpu < d->nr_vcpus)
        futex(&d->hdr[H_UPCALL + vcpu], FUTEX_WAKE, INT_MAX, NULL);
}

void xe_host_kick(xe_host *h, uint32_t index, uint32_t vcpu)
{
    uint32_t *wake = kick(h, index, vcpu);

    if (wake != NULL)
        futex(wake, FUTEX_WAKE, INT_MAX, NULL);
}

/* --- EVTCHNOP_send ------------------------------------------------------------------------------------------- */
static xe_host_dom *dom_of(xe_host *h, uint32_t domid, uint32_t *index)
{
    uint32_t i;

    for (i = 0; i < h->nr_doms; i++) {
        xe_host_dom *d = &h->doms[i];
        if (d->domid == domid && d->ok) {
            if (__atomic_load_n(&d->entry[1], __ATOMIC_RELAXED) & DOM_GONE)
                return NULL;
            *index = i;
            return d;
        }
    }
    return NULL;
}

/* A record no Xen could hold, or one that points out of the host (ports.chan_problem): the Python path names
 * the field. */
static int chan_plain(xe_host *h, const xe_host_dom *d, const xe_chan *c)
{
    uint32_t i;

    if (c->state > ECS_IPI || c->priority > XE_EVTCHN_FIFO_PRIORITY_MIN
        || c->last_priority > XE_EVTCHN_FIFO_PRIORITY_MIN || (c->flags & ~(XE_CHAN_DEFERRED | XE_CHAN_XEN))
        || c->notify_vcpu >= d->nr_vcpus || c->last_vcpu >= d->nr_vcpus)
        return 0;
    if (c->state == ECS_VIRQ && c->aux >= NR_VIRQS)
        return 0;
    if (c->state == ECS_INTERDOMAIN) {
        if (c->remote_dom >= DOMID_FIRST_RESERVED)
            return 0;
        for (i = 0; i < h->nr_doms; i++) {
            if (h->doms[i].domid == c->remote_dom && h->doms[i].ok)
                return c->remote_port > 0 && c->remote_port < h->doms[i].nr_chans;
        }
        return 0;
    }
    return 1;
}

/* stats.py's counters: u64 raised, u64 delivered per port, packed after a 28-byte header (so unaligned: no
 * atomics; as in Python, raises count under the host lock and deliveries on the vCPU's one consumer) */
static void count(xe_host_dom *d, uint32_t port, uint32_t which)
{
    uint64_t v;
    uint8_t *at;

    if (d->stats == NULL || port >= d->nr_chans)
        return;
    at = d->stats + 16 * (uint64_t)port + 8 * which;
    memcpy(&v, at, 8);
    v++;
    memcpy(at, &v, 8);
}

static void crash_point(xe_host *h)
{
    struct timespec ts;

    if (!h->crash_sleep_us)
        return;
    h->rng = h->rng * 1103515245u + 12345u;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)((h->rng >> 8) % h->crash_sleep_us) * 1000;
    nanosleep(&ts, NULL);
}

/* Xen's evtchn_port_set_pending() (or EVTCHNOP_unmask's relink) on the domain's ABI, inside the raise mark
 * (statefile.py: the next lock holder finishes it), then the vCPU kick; the record was checked by the caller.
 * Returns the XE_SP_* bits, or a negative code (XE_HOST_SLOW: not here) */
static int raise_locked(xe_host *h, xe_host_dom *t, uint32_t ti, uint32_t port, int unmask, uint32_t **wake)
{
    uint32_t abi = __atomic_load_n(&t->hdr[H_ABI], __ATOMIC_RELAXED);
    xe_domain *f = NULL;
    int rc;

    if (t->fifo.chans[port].flags & XE_CHAN_XEN)
        return 0;
    if (abi == ABI_FIFO) {
        if ((f = fifo_of(h, t)) == NULL)
            return XE_HOST_SLOW;  /* Python's refresh names the field */
    } else if (abi != ABI_2L || t->version < 2) {
        return XE_HOST_SLOW;
    }
    __atomic_store_n(&h->journal[J_RAISE_PORT], port, __ATOMIC_RELEASE);
    __atomic_store_n(&h->journal[J_RAISE_DOM], t->domid + 1, __ATOMIC_RELEASE);
    crash_point(h);
    if (f != NULL)
        rc = unmask ? xe_hv_unmask(f, port) : xe_hv_set_pending(f, port);
    else
        rc = unmask ? xe_l2_unmask(&t->l2, port) : xe_l2_set_pending(&t->l2, port);
    __atomic_store_n(&h->journal[J_RAISE_DOM], 0, __ATOMIC_RELEASE);
    if (rc >= 0 && (rc & XE_SP_UPCALL))
        *wake = kick(h, ti, t->fifo.chans[port].notify_vcpu);
    return rc;
}

static int64_t send_locked(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port, uint32_t **wake)
{
    xe_host_dom *d, *t;
    uint32_t di, ti, tport;
    xe_chan *c, *tc;
    int rc;

    if (caller != domid)
        return XE_HOST_SLOW;  /* EPERM, or no such caller: Python says which */
    d = dom_of(h, domid, &di);
    if (d == NULL || port == 0 || port >= d->nr_chans)
        return XE_HOST_SLOW;
    if (d->version >= 2 && port >= __atomic_load_n(&d->hdr[H_VALID], __ATOMIC_RELAXED))
        return XE_HOST_SLOW;
    c = &d->fifo.chans[port];
    if (!chan_plain(h, d, c) || (c->flags & XE_CHAN_XEN))
        return XE_HOST_SLOW;
    if (c->state == ECS_INTERDOMAIN) {
        t = dom_of(h, c->remote_dom, &ti);
        tport = c->remote_port;
        if (t == NULL || tport >= t->nr_chans)
            return XE_HOST_SLOW;
    } else if (c->state == ECS_IPI) {
        t = d;
        ti = di;
        tport = port;
    } else {
        return XE_HOST_SLOW;  /* unbound (dropped or told), or not a port one sends on */
    }
    tc = &t->fifo.chans[tport];
    if (!chan_plain(h, t, tc) || (tc->flags & XE_CHAN_XEN))
        return XE_HOST_SLOW;  /* (Xen's own port takes it: Python says so) */
    rc = raise_locked(h, t, ti, tport, 0, wake);
    if (rc < 0)
        return XE_HOST_SLOW;  /* (the Python raise meets the same refusal and reports it) */
    if (!(rc & XE_SP_NO_CONTROL))  /* (as effects.py: a drop for want of a control block is not counted) */
        count(t, tport, 0);
    return (int64_t)rc | (int64_t)tport << SP_SHIFT_PORT | (int64_t)t->domid << SP_SHIFT_DOM;
}

int64_t xe_host_send(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port)
{
    uint32_t *wake = NULL;
    int64_t out;
    int rc;

    if (!size_unchanged(h))
        return XE_HOST_SLOW;  /* touching the journal page of a shrunk file would fault: Python says so */
    rc = xe_host_lock(h);
    if (rc < 0)
        return XE_HOST_SLOW;
    if (rc != XE_LOCK_OK) {  /* an update to finish first: Python's lock holder does it */
        xe_host_unlock(h);
        return XE_HOST_SLOW;
    }
    out = send_locked(h, caller, domid, port, &wake);
    xe_host_unlock(h);
    if (wake != NULL)
        futex(wake, FUTEX_WAKE, INT_MAX, NULL);
    return out;
}

/* --- EVTCHNOP_status --------------------------------------------------------------------------------------- */
/* The port's event word as DomainMemory.word and .l2_word read it (the domain's ABI from its header now);
 * 0, or XE_HOST_SLOW where Python's read raises (a header no Xen could hold: Python names the field) */
static int word_of(const xe_host_dom *d, uint32_t port, xe_port_status *out)
{
    uint32_t abi = d->version >= 2 ? __atomic_load_n(&d->hdr[H_ABI], __ATOMIC_ACQUIRE) : ABI_FIFO;
    uint32_t nr_pages;
    const uint32_t *words;

    out->has_word = 0;
    out->word = 0;
    if (abi == ABI_FIFO) {
        out->fifo = 1;
        nr_pages = __atomic_load_n(&d->hdr[H_NR_PAGES], __ATOMIC_RELAXED);
        if (nr_pages > d->max_pages)  /* (dom_setup: max_pages pages fit the image) */
            return XE_HOST_SLOW;
        if (port < nr_pages * XE_WORDS_PER_PAGE) {
            words = (const uint32_t *)(d->image + d->pages_offset);
            out->word = __atomic_load_n(&words[port], __ATOMIC_ACQUIRE);
            out->has_word = 1;
        }
        return 0;
    }
    if (abi != ABI_2L || d->l2.pending == NULL)
        return XE_HOST_SLOW;
    out->fifo = 0;
    if (port < XE_EVTCHN_2L_NR_CHANNELS) {
        uint64_t bit = 1ull << (port % XE_L2_WORDS);
        if (__atomic_load_n(&d->l2.pending[port / XE_L2_WORDS], __ATOMIC_ACQUIRE) & bit)
            out->word |= XE_W_PENDING;
        if (__atomic_load_n(&d->l2.mask[port / XE_L2_WORDS], __ATOMIC_ACQUIRE) & bit)
            out->word |= XE_W_MASKED;
        out->has_word = 1;
    }
    return 0;
}

/* Reader.status's checks in its order, each failure left to it: the domain (ESRCH), port_is_valid (EINVAL),
 * the record, a port Xen consumes (Xen 4.17's EACCES: decided there for either version), the caller (ESRCH,
 * EPERM: XSM_TARGET) */
static int status_locked(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port, xe_port_status *out)
{
    xe_host_dom *d, *me, *r;
    uint32_t di, ci, ri, valid;
    xe_chan c;

    d = dom_of(h, domid, &di);
    if (d == NULL || port >= d->nr_chans)
        return XE_HOST_SLOW;
    valid = d->version >= 2 ? __atomic_load_n(&d->hdr[H_VALID], __ATOMIC_RELAXED) : d->nr_chans;
    if (port >= valid)
        return XE_HOST_SLOW;
    c = d->fifo.chans[port];  /* one copy: the fields checked are the fields answered */
    if (!chan_plain(h, d, &c) || (c.flags & XE_CHAN_XEN))
        return XE_HOST_SLOW;
    if (c.state == ECS_INTERDOMAIN && ((r = dom_of(h, c.remote_dom, &ri)) == NULL || c.remote_port >= r->nr_chans))
        return XE_HOST_SLOW;  /* (a peer gone since the open: Python's view of the host decides) */
    me = dom_of(h, caller, &ci);
    if (me == NULL || (caller != domid && !(__atomic_load_n(&me->entry[1], __ATOMIC_RELAXED) & DOM_PRIVILEGED)))
        return XE_HOST_SLOW;
    out->domid = domid;
    out->state = c.state;
    out->notify_vcpu = c.notify_vcpu;
    out->remote_dom = c.remote_dom;
    out->remote_port = c.remote_port;
    out->aux = c.aux;
    out->priority = c.priority;
    return word_of(d, port, out);
}

int xe_host_status(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port, xe_port_status *out)
{
    int rc;

    if (domid == DOMID_FIRST_RESERVED)  /* DOMID_SELF */
        domid = caller;
    if (!size_unchanged(h))
        return XE_HOST_SLOW;
    rc = xe_host_lock(h);
    if (rc < 0)
        return XE_HOST_SLOW;  /* (EDEADLK: this thread holds it, in a Python update: the Python way nests) */
    if (rc != XE_LOCK_OK) {
        xe_host_unlock(h);
        return XE_HOST_SLOW;
    }
    rc = status_locked(h, caller, domid, port, out);
    xe_host_unlock(h);
    return rc;
}

/* --- get_free_port() ------------------------------------------------------------------------------------------ */
int xe_host_free_port(xe_host *h, uint32_t domid, uint32_t start, uint32_t nr, uint32_t *first_free)
{
    uint32_t di, p, nr_pages, nr_words = 0, words_read = 0;
    const uint32_t *words;
    const xe_chan *chans;
    xe_host_dom *d = dom_of(h, domid, &di);

    *first_free = nr;
    if (d == NULL || nr > d->nr_chans || start == 0 || start > nr)
        return XE_HOST_SLOW;  /* (nr_chans: the table's size, checked against the image by dom_setup) */
    chans = d->fifo.chans;
    words = (const uint32_t *)(d->image + d->pages_offset);
    for (p = start; p < nr; p++) {
        if (__atomic_load_n(&chans[p].state, __ATOMIC_RELAXED) != ECS_FREE)
            continue;
        if (*first_free == nr)
            *first_free = p;
        if (!words_read) {  /* the array's size read as DomainMemory.word reads it, once a free port asks */
            nr_pages = __atomic_load_n(&d->hdr[H_NR_PAGES], __ATOMIC_RELAXED);
            if (nr_pages > d->max_pages)
                return XE_HOST_SLOW;
            nr_words = nr_pages * XE_WORDS_PER_PAGE;
            words_read = 1;
        }
        if (p >= nr_words || !(__atomic_load_n(&words[p], __ATOMIC_ACQUIRE) & XE_W_LINKED))
            return (int)p;
    }
    return 0;
}

/* --- the guest's upcall handler ------------------------------------------------------------------------------ */
static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int xe_host_consume(xe_host *h, uint32_t domid, uint32_t vcpu, uint32_t flags, uint32_t *out,
                    uint32_t max_events, int64_t timeout_ns, xe_error *err)
{
    int64_t deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0, left;
    uint32_t di, seq, abi, n, i;
    uint32_t *word;
    xe_host_dom *d = dom_of(h, domid, &di);

    flags &= XE_CONSUME_ACK | XE_CONSUME_MASK;
    if (d == NULL || vcpu >= d->nr_vcpus || !size_unchanged(h))
        return XE_HOST_SLOW;
    word = &d->hdr[H_UPCALL + vcpu];
    for (;;) {
        seq = __atomic_load_n(word, __ATOMIC_ACQUIRE) & XE_UPCALL_COUNT;
        /* no upcall handler runs on a vCPU that is down or was never up: the Python path says so (a vCPU taken
         * down while its consumer slept wakes it, VCPUOP_down's kick) */
        if (__atomic_load_n(d->image + H_VCPU_STATE + vcpu, __ATOMIC_ACQUIRE) != 0)
            return XE_HOST_SLOW;
        abi = __atomic_load_n(&d->hdr[H_ABI], __ATOMIC_ACQUIRE);
        memset(err, 0, sizeof(*err));
        if (abi == ABI_FIFO) {
            if (fifo_of(h, d) == NULL)
                return XE_HOST_SLOW;
            n = xe_guest_consume(&d->fifo, vcpu, &d->guests[vcpu], flags, out, max_events, 1u << 30,
                                 err);
        } else if (abi == ABI_2L && d->version >= 2) {
            n = xe_l2_consume(&d->l2, vcpu, flags, out, max_events, 1u << 30, err);
        } else {
            return XE_HOST_SLOW;
        }
        for (i = 0; d->stats != NULL && i < n; i++)
            count(d, out[i], 1);
        if (err->code != 0)
            return -1;  /* (what it delivered first is counted, as the Python loop counts it) */
        if (n)
            return (int)n;
        if (abi == ABI_FIFO
            && (__atomic_load_n(&d->guests[vcpu].ready, __ATOMIC_ACQUIRE) & XE_QUEUE_MASK))
            continue;  /* local READY bits left: more to take without sleeping */
        if (timeout_ns == 0)
            return 0;
        left = -1;
        if (timeout_ns > 0) {
            left = deadline - now_ns();
            if (left <= 0)
                return 0;
        }
        if (xe_upcall_sleep(word, seq, left) == -EINTR)
            return XE_HOST_INTR;
    }
}

int xe_host_vcpu_online(xe_host *h, uint32_t domid, uint32_t vcpu)
{
    uint32_t di;
    xe_host_dom *d = dom_of(h, domid, &di);

    if (d == NULL || vcpu >= d->nr_vcpus)
        return -1;
    return __atomic_load_n(d->image + H_VCPU_STATE + vcpu, __ATOMIC_ACQUIRE) == 0;
}

/* --- the guest kernel's mask and unmask (Linux's, on the ABI it chose) ------------------------------------------- */
/* What both need (GuestKernel._own_word): the caller's own domain, a bound port with a plain record, its word (FIFO)
 * or a port inside the 2-level bitmaps; NULL: the Python path says what is wrong. */
static xe_host_dom *own_word(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port, uint32_t *index,
                             uint32_t *abi)
{
    xe_host_dom *d;
    xe_chan *c;
    xe_domain *f;

    if (caller != domid || (d = dom_of(h, domid, index)) == NULL || port == 0 || port >= d->nr_chans)
        return NULL;
    if (d->version < 2 || port >= __atomic_load_n(&d->hdr[H_VALID], __ATOMIC_RELAXED))
        return NULL;
    c = &d->fifo.chans[port];
    if (!chan_plain(h, d, c) || c->state < ECS_UNBOUND)
        return NULL;
    *abi = __atomic_load_n(&d->hdr[H_ABI], __ATOMIC_ACQUIRE);
    if (*abi == ABI_FIFO) {
        if ((f = fifo_of(h, d)) == NULL || xe_word(f, port) == NULL)
            return NULL;
        return d;
    }
    return *abi == ABI_2L && port < XE_EVTCHN_2L_NR_CHANNELS ? d : NULL;
}

int xe_host_guest_mask(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port)
{
    uint32_t di, abi;
    xe_host_dom *d;

    if (!size_unchanged(h) || (d = own_word(h, caller, domid, port, &di, &abi)) == NULL)
        return XE_HOST_SLOW;
    return abi == ABI_FIFO ? xe_guest_mask(&d->fifo, port) : xe_l2_guest_mask(&d->l2, port);
}

int xe_host_guest_unmask(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port)
{
    uint32_t di, abi, *wake = NULL;
    xe_host_dom *d;
    int rc;

    if (!size_unchanged(h) || (d = own_word(h, caller, domid, port, &di, &abi)) == NULL)
        return XE_HOST_SLOW;
    rc = abi == ABI_FIFO ? xe_guest_unmask(&d->fifo, port) : xe_l2_guest_unmask(&d->l2, port, XE_L2_OWN_VCPU, 0);
    if (rc < 0)
        return XE_HOST_SLOW;  /* (nothing changed: the Python path meets it again and says so) */
    if (rc > 0) {  /* unmasked locally (2-level: Linux set the upcall itself, the vCPU is kicked) */
        if (abi != ABI_FIFO && (rc & XE_SP_UPCALL))
            xe_host_kick(h, di, d->fifo.chans[port].notify_vcpu);
        return 0;
    }
    /* pending: EVTCHNOP_unmask, Xen relinks it (a redo of the guest's part above changes nothing) */
    rc = xe_host_lock(h);
    if (rc < 0)
        return XE_HOST_SLOW;
    if (rc != XE_LOCK_OK || !chan_plain(h, d, &d->fifo.chans[port])) {
        xe_host_unlock(h);
        return XE_HOST_SLOW;
    }
    rc = raise_locked(h, d, di, port, 1, &wake);
    xe_host_unlock(h);
    if (wake != NULL)
        futex(wake, FUTEX_WAKE, INT_MAX, NULL);
    return rc < 0 ? XE_HOST_SLOW : 0;
}
