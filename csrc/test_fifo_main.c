/*
 * C tests of the engine, run plain and under ASan/UBSan (make test-c,
 * make sanitize).  Each page is its own malloc so that any read past a page
 * is caught by the sanitizer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "xenevt_host.h"
#include "xenevt_evtchn.h"

#define M (1u << 30)
#define P (1u << 31)
#define L (1u << 29)

static int passed, failed;
static const char *cur;

/* CHECK for functions that return a pointer: NULL on failure */
#define CHECK_RET(c)                                                         \
    do {                                                                     \
        if (!(c)) {                                                          \
            printf("FAIL %s: %s (line %d)\n", cur, #c, __LINE__);          \
            failed++;                                                        \
            return NULL;                                                     \
        }                                                                    \
    } while (0)

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c)) {                                                          \
            printf("FAIL %s: %s (line %d)\n", cur, #c, __LINE__);          \
            failed++;                                                        \
            return;                                                          \
        }                                                                    \
    } while (0)

typedef struct {
    xe_domain d;
    xe_control_block *cbs[4];
    xe_control_block cb[4];
    uint32_t tails[4 * 16];
    xe_chan chans[4096];
    xe_guest_vcpu g[4];
} tdom;

static tdom *mk(uint32_t vcpus, uint32_t pages)
{
    tdom *t = calloc(1, sizeof(*t));
    uint32_t i, j;

    for (i = 0; i < pages; i++) {
        t->d.pages[i] = malloc(4096);
        for (j = 0; j < 1024; j++)
            t->d.pages[i][j] = M;
    }
    t->d.nr_pages = pages;
    t->d.nr_vcpus = vcpus;
    for (i = 0; i < vcpus; i++)
        t->cbs[i] = &t->cb[i];
    t->d.cb = t->cbs;
    t->d.tails = t->tails;
    t->d.chans = t->chans;
    t->d.nr_chans = 4096;
    for (i = 0; i < 4096; i++)
        t->chans[i].priority = 7;
    return t;
}

static void rm(tdom *t)
{
    for (int i = 0; i < 128; i++)
        free(t->d.pages[i]);
    free(t);
}

static uint32_t *w(tdom *t, uint32_t port)
{
    return &t->d.pages[port / 1024][port % 1024];
}

static uint32_t consume(tdom *t, uint32_t v, uint32_t *out, uint32_t len, xe_error *e)
{
    return xe_guest_consume(&t->d, v, &t->g[v], XE_CONSUME_ACK, out, len, 1u << 30, e);
}

static void t_link_order(void)
{
    tdom *t = mk(1, 1);
    uint32_t out[8];
    xe_error e;
    int r;

    *w(t, 3) = *w(t, 4) = *w(t, 5) = 0;
    r = xe_hv_set_pending(&t->d, 3);
    CHECK(r & XE_SP_NEW_HEAD && r & XE_SP_UPCALL);
    CHECK(!(xe_hv_set_pending(&t->d, 4) & XE_SP_NEW_HEAD));
    xe_hv_set_pending(&t->d, 5);
    CHECK(t->cb[0].head[7] == 3 && *w(t, 3) == (P | L | 4) && t->tails[7] == 5);
    CHECK(consume(t, 0, out, 8, &e) == 3 && e.code == XE_OK);
    CHECK(out[0] == 3 && out[1] == 4 && out[2] == 5 && *w(t, 4) == 0);
    /* no READY bit left; the upcall count (above them) even again, one upcall on */
    CHECK(t->cb[0].ready == 0 && t->g[0].ready == 2 * XE_GUEST_UPCALL_ONE);
    /* nothing READY: no upcall, nothing written */
    CHECK(consume(t, 0, out, 8, &e) == 0 && e.code == XE_OK && t->g[0].ready == 2 * XE_GUEST_UPCALL_ONE);
    /* the tail was consumed: the next event is a new head again */
    CHECK(xe_hv_set_pending(&t->d, 4) & XE_SP_NEW_HEAD);
    rm(t);
    passed++;
}

static void t_masked_then_unmask(void)
{
    tdom *t = mk(1, 1);
    uint32_t out[4];
    xe_error e;

    CHECK(xe_hv_set_pending(&t->d, 9) & XE_SP_MASKED);
    CHECK(consume(t, 0, out, 4, &e) == 0);
    CHECK(xe_guest_unmask(&t->d, 9) == 0); /* pending: needs the hypercall */
    CHECK(xe_hv_unmask(&t->d, 9) & XE_SP_LINKED);
    CHECK(consume(t, 0, out, 4, &e) == 1 && out[0] == 9);
    rm(t);
    passed++;
}

static void t_bad_links(void)
{
    tdom *t = mk(1, 2);
    uint32_t out[8];
    xe_error e;

    /* LINK past the array, then to an unmapped page */
    *w(t, 3) = P | L | 4;
    *w(t, 4) = P | L | 5000;
    t->cb[0].head[7] = 3;
    t->cb[0].ready = 1u << 7;
    CHECK(consume(t, 0, out, 8, &e) == 2 && e.code == XE_E_RANGE && e.port == 5000);
    free(t->d.pages[1]);
    t->d.pages[1] = NULL;
    *w(t, 6) = P | L | 1500;
    t->cb[0].head[2] = 6;
    t->cb[0].ready = 1u << 2;
    CHECK(consume(t, 0, out, 8, &e) == 1 && e.code == XE_E_RANGE && e.port == 1500);
    CHECK(consume(t, 0, out, 8, &e) == 0 && e.code == XE_OK);
    /* READY with head 0, head not LINKED */
    t->cb[0].head[1] = 0;
    t->cb[0].ready = 1u << 1;
    CHECK(consume(t, 0, out, 8, &e) == 0 && e.code == XE_E_ZERO_HEAD && e.priority == 1);
    *w(t, 7) = P;
    t->cb[0].head[1] = 7;
    t->cb[0].ready = 1u << 1;
    CHECK(consume(t, 0, out, 8, &e) == 0 && e.code == XE_E_UNLINKED && e.port == 7);
    /* stray READY bits above the 16 queues are ignored, never indexed */
    t->cb[0].ready = 0xffff0000u;
    CHECK(consume(t, 0, out, 8, &e) == 0 && e.code == XE_OK);
    rm(t);
    passed++;
}

static void t_cycle(void)
{
    tdom *t = mk(1, 1);
    uint32_t out[16], chain[16], before[1024];
    uint16_t owner[1024] = {0};
    xe_walk_result res[16];
    xe_error e;

    *w(t, 3) = P | L | 4;
    *w(t, 4) = P | L | 3;
    t->cb[0].head[7] = 3;
    t->cb[0].ready = 1u << 7;
    memcpy(before, t->d.pages[0], sizeof(before));
    CHECK(xe_walk_all(&t->d, NULL, chain, 16, owner, res) == 2);
    CHECK(res[7].status == XE_WALK_CYCLE && res[7].bad_port == 3 && res[7].count == 2);
    CHECK(memcmp(before, t->d.pages[0], sizeof(before)) == 0);
    CHECK(consume(t, 0, out, 16, &e) == 2 && e.code == XE_E_UNLINKED);
    rm(t);
    passed++;
}

static void t_walk_statuses(void)
{
    tdom *t = mk(2, 1);
    uint32_t chain[4];
    uint16_t owner[1024] = {0};
    xe_walk_result res[32];

    *w(t, 3) = L | 5;
    *w(t, 4) = L | 5;
    *w(t, 5) = L | 6;
    *w(t, 6) = 0; /* LINK to a word that is not LINKED */
    t->cb[0].head[0] = 3;
    t->cb[0].head[1] = 4;
    t->cb[0].head[2] = 9; /* stale: not LINKED */
    t->cb[0].head[3] = 2000;
    CHECK(xe_walk_all(&t->d, NULL, chain, 4, owner, res) == 3);
    CHECK(res[0].status == XE_WALK_UNLINKED && res[0].bad_port == 6 && res[0].count == 2);
    CHECK(res[1].status == XE_WALK_SHARED && res[1].bad_port == 5 && res[1].other == 0);
    CHECK(res[2].status == XE_WALK_STALE && res[3].status == XE_WALK_RANGE && res[3].bad_port == 2000);
    t->cbs[1] = NULL;
    memset(owner, 0, sizeof(owner));
    CHECK(xe_walk_all(&t->d, NULL, chain, 1, owner, res) == 1);
    CHECK(res[0].status == XE_WALK_TRUNCATED && res[16].status == XE_WALK_NO_CONTROL);
    rm(t);
    passed++;
}

static void t_moves_and_deferred(void)
{
    tdom *t = mk(2, 1);
    uint32_t out[4];
    xe_error e;
    int r;

    *w(t, 3) = *w(t, 4) = 0;
    xe_hv_set_pending(&t->d, 3);
    t->chans[3].priority = 1;
    CHECK(xe_hv_set_pending(&t->d, 3) & XE_SP_ALREADY_LINKED);
    CHECK(consume(t, 0, out, 4, &e) == 1);
    r = xe_hv_set_pending(&t->d, 3);
    CHECK(r & XE_SP_MOVED && t->tails[7] == 0 && t->cb[0].head[1] == 3);
    CHECK(xe_hv_set_pending(&t->d, 4) & XE_SP_NEW_HEAD);
    CHECK(consume(t, 0, out, 4, &e) == 2 && out[0] == 3 && out[1] == 4);
    t->chans[4].notify_vcpu = 1;
    xe_hv_set_pending(&t->d, 4);
    CHECK(consume(t, 1, out, 4, &e) == 1 && out[0] == 4);
    /* deferred until the page is added */
    CHECK(xe_hv_set_pending(&t->d, 1500) == XE_SP_DEFERRED);
    t->d.pages[1] = calloc(1024, 4);
    t->d.nr_pages = 2;
    CHECK(xe_hv_page_added(&t->d, 1) == 1);
    CHECK(consume(t, 0, out, 4, &e) == 1 && out[0] == 1500);
    /* DEFERRED is Xen's evtchn->pending: never cleared, so the next page
     * covering the port raises it again */
    CHECK(t->chans[1500].flags & XE_CHAN_DEFERRED);
    xe_hv_clear_pending(&t->d, 1500);
    CHECK(t->chans[1500].flags & XE_CHAN_DEFERRED && !(*w(t, 1500) & P));
    /* no control block: dropped before the word is touched (real Xen: PENDING stays clear) */
    t->cbs[1] = NULL;
    *w(t, 4) = 0;
    CHECK(xe_hv_set_pending(&t->d, 4) == XE_SP_NO_CONTROL);
    CHECK(*w(t, 4) == 0);
    rm(t);
    passed++;
}

static void t_bad_args(void)
{
    tdom *t = mk(1, 1);
    uint32_t before[1024];

    CHECK(xe_hv_set_pending(&t->d, 0) == XE_E_PORT);
    CHECK(xe_hv_set_pending(&t->d, 4096) == XE_E_PORT);
    t->chans[3].notify_vcpu = 3;
    CHECK(xe_hv_set_pending(&t->d, 3) == XE_E_VCPU);
    t->chans[3].notify_vcpu = 0;
    t->tails[7] = 99999;
    memcpy(before, t->d.pages[0], sizeof(before));
    CHECK(xe_hv_set_pending(&t->d, 3) == XE_E_STATE);
    CHECK(memcmp(before, t->d.pages[0], sizeof(before)) == 0);
    CHECK(xe_guest_mask(&t->d, 5000) == XE_E_RANGE && xe_guest_unmask(&t->d, 0) == XE_E_RANGE);
    rm(t);
    passed++;
}

/* xe_domain_check: every pointer a descriptor holds must lie in the image it was built from. */
static void t_domain_check(void)
{
    size_t size = 4 * 4096;
    char *img = aligned_alloc(4096, size);
    xe_control_block *cbs[2];
    xe_domain d;
    uint32_t where = 99;

    memset(&d, 0, sizeof(d));
    d.pages[0] = (uint32_t *)img;
    d.nr_pages = 1;
    d.nr_vcpus = 2;
    cbs[0] = (xe_control_block *)(img + 4096);
    cbs[1] = NULL;
    d.cb = cbs;
    d.tails = (uint32_t *)(img + 2 * 4096);
    d.chans = (xe_chan *)(img + 3 * 4096);
    d.nr_chans = 256;
    CHECK(xe_domain_check(&d, img, size, &where) == XE_OK && where == 0);
    cbs[1] = (xe_control_block *)(img + size - 40);          /* runs past the image */
    CHECK(xe_domain_check(&d, img, size, &where) == XE_E_NO_CONTROL && where == 1);
    cbs[1] = (xe_control_block *)(img + 4096 + 4);           /* not 8-byte aligned */
    CHECK(xe_domain_check(&d, img, size, &where) == XE_E_NO_CONTROL && where == 1);
    cbs[1] = (xe_control_block *)(img - 4096);               /* before the image */
    CHECK(xe_domain_check(&d, img, size, &where) == XE_E_NO_CONTROL && where == 1);
    cbs[1] = NULL;
    d.pages[1] = (uint32_t *)(img + size - 4096 + 8);         /* a page running off the end */
    d.nr_pages = 2;
    CHECK(xe_domain_check(&d, img, size, &where) == XE_E_RANGE && where == 1);
    d.pages[1] = NULL;                                         /* an unmapped page is fine */
    CHECK(xe_domain_check(&d, img, size, &where) == XE_OK);
    d.nr_pages = 129;
    CHECK(xe_domain_check(&d, img, size, &where) == XE_E_STATE);
    d.nr_pages = 1;
    d.nr_chans = 1000;                                         /* channel table past the end */
    CHECK(xe_domain_check(&d, img, size, &where) == XE_E_STATE);
    d.nr_chans = 256;
    d.nr_vcpus = 0;
    CHECK(xe_domain_check(&d, img, size, &where) == XE_E_STATE);
    free(img);
    passed++;
}

/* --- 2-level ABI ---------------------------------------------------------------------------------- */

/* Each piece its own malloc, sized exactly, so the sanitizer catches any index past it. */
typedef struct {
    xe_l2_domain d;
} l2dom;

static l2dom *l2_mk(uint32_t vcpus, uint32_t chans)
{
    l2dom *t = calloc(1, sizeof(*t));
    uint32_t low = vcpus < 32 ? vcpus : 32;

    t->d.pending = calloc(64, sizeof(uint64_t));
    t->d.mask = calloc(64, sizeof(uint64_t));
    t->d.vcpu_info = calloc(low, sizeof(xe_vcpu_info));
    t->d.vcpu_info_extra = vcpus > 32 ? calloc(vcpus - 32, sizeof(xe_vcpu_info)) : NULL;
    t->d.scan = calloc(vcpus, sizeof(xe_l2_scan));
    t->d.chans = calloc(chans, sizeof(xe_chan));
    t->d.nr_vcpus = vcpus;
    t->d.nr_chans = chans;
    return t;
}

static void l2_rm(l2dom *t)
{
    free(t->d.pending);
    free(t->d.mask);
    free(t->d.vcpu_info);
    free(t->d.vcpu_info_extra);
    free(t->d.scan);
    free(t->d.chans);
    free(t);
}

static uint32_t l2_consume(l2dom *t, uint32_t v, uint32_t *out, uint32_t len, uint32_t steps, xe_error *e)
{
    return xe_l2_consume(&t->d, v, XE_CONSUME_ACK, out, len, steps, e);
}

#define BIT(p) ((uint64_t)1 << ((p) % 64))

static void t_l2_raise_unmask(void)
{
    l2dom *t = l2_mk(2, 4096);
    xe_vcpu_info *v0 = &t->d.vcpu_info[0], *v1 = &t->d.vcpu_info[1];

    t->d.mask[0] = BIT(9);
    CHECK(xe_l2_set_pending(&t->d, 9) == XE_SP_MASKED);          /* pending bit only */
    CHECK(t->d.pending[0] == BIT(9) && v0->evtchn_pending_sel == 0 && v0->evtchn_upcall_pending == 0);
    CHECK(xe_l2_unmask(&t->d, 9) == (XE_SP_WAS_PENDING | XE_SP_UPCALL));
    CHECK(v0->evtchn_pending_sel == 1 && v0->evtchn_upcall_pending == 1 && t->d.mask[0] == 0);
    CHECK(xe_l2_unmask(&t->d, 9) == 0);                          /* not masked: nothing */
    CHECK(xe_l2_set_pending(&t->d, 9) == XE_SP_WAS_PENDING);     /* coalesced */
    CHECK(xe_l2_set_pending(&t->d, 10) == 0);                    /* selector bit already set */
    t->d.chans[130].notify_vcpu = 1;
    CHECK(xe_l2_set_pending(&t->d, 130) == XE_SP_UPCALL);        /* vCPU 1's selector only */
    CHECK(v1->evtchn_pending_sel == 4 && v1->evtchn_upcall_pending == 1 && v0->evtchn_pending_sel == 1);
    t->d.mask[1] = BIT(70);
    CHECK(xe_l2_unmask(&t->d, 70) == XE_SP_NOT_PENDING);
    CHECK(xe_l2_is_pending(&t->d, 9) == 1 && xe_l2_is_masked(&t->d, 9) == 0);
    CHECK(xe_l2_clear_pending(&t->d, 9) == XE_OK && xe_l2_is_pending(&t->d, 9) == 0);
    /* Linux's unmask: own vCPU resends, another vCPU's port or HVM-and-pending need the hypercall */
    CHECK(xe_l2_guest_mask(&t->d, 130) == 0 && xe_l2_guest_mask(&t->d, 130) == 1);
    CHECK(xe_l2_guest_unmask(&t->d, 130, 0, 0) == 0 && xe_l2_is_masked(&t->d, 130) == 1);
    CHECK(xe_l2_guest_unmask(&t->d, 130, 1, XE_L2_UNMASK_HVM) == 0 && xe_l2_is_masked(&t->d, 130) == 1);
    v1->evtchn_pending_sel = 0;
    v1->evtchn_upcall_pending = 0;
    CHECK(xe_l2_guest_unmask(&t->d, 130, XE_L2_OWN_VCPU, 0) == (1 | XE_SP_UPCALL));
    CHECK(v1->evtchn_pending_sel == 4 && v1->evtchn_upcall_pending == 1);
    CHECK(xe_l2_guest_clear_pending(&t->d, 130) == XE_OK && xe_l2_is_pending(&t->d, 130) == 0);
    l2_rm(t);
    passed++;
}

static void t_l2_consume_order(void)
{
    l2dom *t = l2_mk(2, 4096);
    uint32_t out[16], i, got = 0;
    xe_error e;

    xe_l2_set_pending(&t->d, 1);
    xe_l2_set_pending(&t->d, 2);
    xe_l2_set_pending(&t->d, 65);
    xe_l2_set_pending(&t->d, 130);
    CHECK(l2_consume(t, 0, out, 2, 1u << 30, &e) == 2 && out[0] == 1 && out[1] == 2 && e.code == XE_OK);
    CHECK(t->d.scan[0].current_word_idx == 0 && t->d.scan[0].current_bit_idx == 3);
    /* stopped: the words left go back into the selector, the upcall is pending again */
    CHECK(t->d.vcpu_info[0].evtchn_pending_sel == 0x7 && t->d.vcpu_info[0].evtchn_upcall_pending == 1);
    xe_l2_set_pending(&t->d, 1);
    xe_l2_set_pending(&t->d, 5);
    CHECK(l2_consume(t, 0, out, 16, 1u << 30, &e) == 4);
    CHECK(out[0] == 5 && out[1] == 65 && out[2] == 130 && out[3] == 1);
    CHECK(t->d.vcpu_info[0].evtchn_pending_sel == 0 && t->d.vcpu_info[0].evtchn_upcall_pending == 0);
    CHECK(t->d.pending[0] == 0 && t->d.pending[1] == 0 && t->d.pending[2] == 0);
    /* a port bound to vCPU 1 is not vCPU 0's to deliver */
    t->d.chans[7].notify_vcpu = 1;
    t->d.pending[0] = BIT(7);
    t->d.vcpu_info[0].evtchn_pending_sel = 1;
    CHECK(l2_consume(t, 0, out, 16, 1u << 30, &e) == 0 && t->d.pending[0] == BIT(7));
    /* every batch size and a small step budget lose nothing */
    t->d.pending[0] = 0;
    for (i = 0; i < 64; i++)
        CHECK(xe_l2_set_pending(&t->d, i * 64 + i) >= 0);
    while (t->d.vcpu_info[0].evtchn_pending_sel) {
        uint32_t n = l2_consume(t, 0, out, 3, 4, &e);
        CHECK(e.code == XE_OK && n <= 3);
        got += n;
        CHECK(got <= 64);
    }
    CHECK(got == 64);
    l2_rm(t);
    passed++;
}

static void t_l2_bounds(void)
{
    l2dom *t = l2_mk(40, 100);
    uint32_t out[4];
    xe_error e;

    CHECK(xe_l2_set_pending(&t->d, 100) == XE_E_PORT && xe_l2_set_pending(&t->d, 4096) == XE_E_PORT);
    CHECK(xe_l2_unmask(&t->d, 0xffffffffu) == XE_E_PORT && xe_l2_guest_mask(&t->d, 4096) == XE_E_PORT);
    CHECK(xe_l2_guest_unmask(&t->d, 100, 0, 0) == XE_E_PORT && xe_l2_is_masked(&t->d, 5000) == XE_E_PORT);
    CHECK(xe_l2_is_pending(&t->d, 100) == XE_E_PORT && xe_l2_clear_pending(&t->d, 100) == XE_E_PORT);
    CHECK(xe_l2_guest_clear_pending(&t->d, 4096) == XE_E_PORT);
    t->d.chans[5].notify_vcpu = 40;
    CHECK(xe_l2_set_pending(&t->d, 5) == XE_E_VCPU && xe_l2_unmask(&t->d, 5) == XE_E_VCPU);
    CHECK(xe_l2_guest_unmask(&t->d, 5, XE_L2_OWN_VCPU, 0) == XE_E_VCPU && t->d.pending[0] == 0);
    CHECK(xe_l2_guest_unmask(&t->d, 6, 41, 0) == XE_E_VCPU);
    CHECK(l2_consume(t, 40, out, 4, 100, &e) == 0 && e.code == XE_E_VCPU && e.vcpu == 40);
    /* vCPUs >= 32 live in the second vcpu_info array */
    t->d.chans[6].notify_vcpu = 39;
    CHECK(xe_l2_set_pending(&t->d, 6) == XE_SP_UPCALL && t->d.vcpu_info_extra[7].evtchn_pending_sel == 1);
    CHECK(l2_consume(t, 39, out, 4, 100, &e) == 1 && out[0] == 6);
    /* a scan position from guest memory is checked, reset, never used as a shift or index */
    t->d.scan[39].current_word_idx = 64;
    xe_l2_set_pending(&t->d, 6);
    CHECK(l2_consume(t, 39, out, 4, 100, &e) == 0 && e.code == XE_E_SCAN);
    CHECK(t->d.scan[39].current_word_idx == 0 && t->d.vcpu_info_extra[7].evtchn_pending_sel == 1);
    t->d.scan[39].current_bit_idx = 0xffffffffu;
    CHECK(l2_consume(t, 39, out, 4, 100, &e) == 0 && e.code == XE_E_SCAN);
    CHECK(l2_consume(t, 39, out, 4, 100, &e) == 1 && out[0] == 6 && e.code == XE_OK);
    /* ports past the channel table are in no vCPU's mask, even with their bits set */
    t->d.pending[1] = ~(uint64_t)0 << 36; /* ports 100..127 */
    t->d.vcpu_info[0].evtchn_pending_sel = ~(uint64_t)0;
    CHECK(l2_consume(t, 0, out, 4, 1u << 30, &e) == 0 && e.code == XE_OK);
    /* no vcpu_info array for vCPUs >= 32: refused, not followed */
    free(t->d.vcpu_info_extra);
    t->d.vcpu_info_extra = NULL;
    CHECK(xe_l2_set_pending(&t->d, 6) == XE_E_VCPU);
    l2_rm(t);
    passed++;
}

static void t_l2_check(void)
{
    size_t size = 4 * 4096;
    char *img = aligned_alloc(4096, size);
    xe_l2_domain d;
    uint32_t where = 99;

    memset(&d, 0, sizeof(d));
    d.vcpu_info = (xe_vcpu_info *)img;
    d.pending = (uint64_t *)(img + 2048);
    d.mask = (uint64_t *)(img + 2560);
    d.vcpu_info_extra = (xe_vcpu_info *)(img + 4096);
    d.scan = (xe_l2_scan *)(img + 8192);
    d.chans = (xe_chan *)(img + 8192 + 2048);
    d.nr_vcpus = 40;
    d.nr_chans = 64;
    CHECK(xe_l2_check(&d, img, size, &where) == XE_OK && where == 0);
    d.mask = (uint64_t *)(img + size - 256);                     /* runs past the image */
    CHECK(xe_l2_check(&d, img, size, &where) == XE_E_RANGE && where == XE_L2_AT_MASK);
    d.mask = (uint64_t *)(img + 2564);                           /* misaligned */
    CHECK(xe_l2_check(&d, img, size, &where) == XE_E_RANGE && where == XE_L2_AT_MASK);
    d.mask = (uint64_t *)(img + 2560);
    d.vcpu_info_extra = NULL;                                    /* 40 vCPUs need it */
    CHECK(xe_l2_check(&d, img, size, &where) == XE_E_RANGE && where == XE_L2_AT_VCPU_INFO_EXTRA);
    d.nr_vcpus = 32;                                             /* ...32 do not */
    CHECK(xe_l2_check(&d, img, size, &where) == XE_OK);
    d.scan = (xe_l2_scan *)(img - 8);
    CHECK(xe_l2_check(&d, img, size, &where) == XE_E_RANGE && where == XE_L2_AT_SCAN);
    d.scan = (xe_l2_scan *)(img + 8192);
    d.nr_chans = 4096;                                           /* channel table past the end */
    CHECK(xe_l2_check(&d, img, size, &where) == XE_E_RANGE && where == XE_L2_AT_CHANS);
    d.nr_chans = 1;
    CHECK(xe_l2_check(&d, img, size, &where) == XE_E_STATE && where == 0);
    d.nr_chans = 64;
    d.nr_vcpus = 257;
    CHECK(xe_l2_check(&d, img, size, &where) == XE_E_STATE);
    free(img);
    passed++;
}


/* --- the simulator's hot path (simhost.c) ------------------------------------------------------------------ */
static void t_lock(void)
{
    void *slot = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned char before[64];
    pid_t pid;
    int st;

    CHECK(slot != MAP_FAILED);
    CHECK(!xe_lock_ready(slot) && xe_lock_take(slot) == -EINVAL);  /* not formatted: refused, never followed */
    CHECK(xe_lock_init(slot) == 0 && xe_lock_ready(slot));
    memcpy(before, slot, 64);
    CHECK(xe_lock_take(slot) == XE_LOCK_OK && xe_lock_holder(slot) == (uint32_t)getpid());
    CHECK(xe_lock_take(slot) == -EDEADLK);  /* this thread holds it: an error, not a hang */
    xe_lock_give(slot);
    CHECK(memcmp(before, slot, 64) == 0);  /* a take and a give leave the bytes as they were */
    pid = fork();
    if (pid == 0) {  /* dies holding it */
        xe_lock_take(slot);
        _exit(0);
    }
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
    CHECK(xe_lock_take(slot) == (XE_LOCK_RECOVER | XE_LOCK_OWNER_DIED));
    xe_lock_give(slot);
    CHECK(xe_lock_take(slot) == XE_LOCK_OK);  /* made consistent: an ordinary lock again */
    xe_lock_give(slot);
    munmap(slot, 4096);
    passed++;
}

/* Bounded takes, the give-back of error paths, and taking over a lock whose holder's robust list could not
 * reach it (the page unmapped while held, then the holder gone) */
static void t_lock_bounds(void)
{
    void *slot = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int up[2], down[2], st;  /* (a pipe each way: a child must not read back its own byte) */
    pid_t pid, holder;
    char c = 0;

    CHECK(slot != MAP_FAILED && xe_lock_init(slot) == 0);
    CHECK(xe_lock_give_mine(slot) == 0 && !xe_lock_mine(slot) && xe_lock_owner(slot) == 0);  /* not held: nothing */
    CHECK(xe_lock_take_for(slot, 0) == XE_LOCK_OK && xe_lock_mine(slot));
    CHECK(xe_lock_take_for(slot, 0) == -EDEADLK && xe_lock_take_for(slot, 1000) == -EDEADLK);
    CHECK(xe_lock_give_mine(slot) == 1 && !xe_lock_mine(slot) && xe_lock_holder(slot) == 0);
    CHECK(pipe(up) == 0 && pipe(down) == 0);
    pid = fork();
    if (pid == 0) {  /* holds it until told */
        xe_lock_take(slot);
        if (write(up[1], &c, 1) != 1 || read(down[0], &c, 1) < 0)
            _exit(1);
        xe_lock_give(slot);
        _exit(0);
    }
    CHECK(pid > 0 && read(up[0], &c, 1) == 1);
    CHECK(xe_lock_take_for(slot, 0) == -ETIMEDOUT && xe_lock_take_for(slot, 20000000) == -ETIMEDOUT);
    CHECK(xe_lock_holder(slot) == (uint32_t)pid && xe_lock_owner(slot) == (uint32_t)pid);
    CHECK(xe_lock_give_mine(slot) == 0);  /* someone else's: left alone */
    CHECK(xe_lock_take_over(slot, (uint32_t)pid + 1) == -EAGAIN);  /* not the thread that holds it */
    CHECK(write(down[1], &c, 1) == 1 && waitpid(pid, &st, 0) == pid);
    CHECK(xe_lock_take_for(slot, -1) == XE_LOCK_OK);
    xe_lock_give(slot);
    pid = fork();
    if (pid == 0) {  /* takes it through a second mapping of the page, unmaps that, and dies: no robust list reaches it */
        void *again = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        (void)again;
        xe_lock_take(slot);
        munmap(slot, 4096);
        _exit(0);
    }
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
    holder = (pid_t)xe_lock_owner(slot);
    CHECK(holder == pid && xe_lock_take_for(slot, 20000000) == -ETIMEDOUT);  /* orphaned: no EOWNERDEAD ever */
    CHECK(xe_lock_take_over(slot, (uint32_t)holder) == 0);
    CHECK(xe_lock_take_for(slot, 0) == XE_LOCK_OK);
    xe_lock_give(slot);
    for (int i = 0; i < 2; i++) {
        close(up[i]);
        close(down[i]);
    }
    munmap(slot, 4096);
    passed++;
}

/* The guard: a watched file mapping whose file shrinks reads zero pages and is flagged, never SIGBUS */
static void t_map_guard(void)
{
    char path[] = "/tmp/xenevt_guard_XXXXXX";
    int fd = mkstemp(path), id;
    volatile uint8_t *m;
    uint8_t page[4096];

    CHECK(fd >= 0);
    memset(page, 0xab, sizeof(page));
    for (int i = 0; i < 4; i++)
        CHECK(write(fd, page, sizeof(page)) == (ssize_t)sizeof(page));
    m = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED);
    CHECK(xe_map_watch(NULL, 4096) == -EINVAL && xe_map_watch((void *)(m + 1), 4096) == -EINVAL);
    id = xe_map_watch((void *)m, 4 * 4096);
    CHECK(id >= 1 && xe_map_guarded() && !xe_map_faulted(id));
    CHECK(m[3 * 4096] == 0xab);
    CHECK(ftruncate(fd, 4096) == 0);
    CHECK(m[0] == 0xab && !xe_map_faulted(id));   /* within the new end: the file's bytes */
    CHECK(m[2 * 4096 + 7] == 0 && xe_map_faulted(id));  /* past it: a zero page, flagged */
    m[3 * 4096] = 1;  /* a store too: into the zero page, not the file */
    CHECK(m[3 * 4096] == 1 && m[0] == 0xab);
    xe_map_unwatch(id);
    CHECK(!xe_map_faulted(id));
    munmap((void *)m, 4 * 4096);
    close(fd);
    unlink(path);
    passed++;
}

static void t_upcall_word(void)
{
    uint32_t w = 5;

    CHECK(xe_upcall_sleep(&w, 4, -1) == 0 && w == 5);        /* a kick came since seq 4: no sleep at all */
    CHECK(xe_upcall_sleep(&w, 5, 1000000) == 0 && w == 5);   /* timed out: the sleeper's flag taken back */
    CHECK(xe_upcall_sleep(&w, 5, 0) == 0 && w == 5);
    xe_upcall_bump(&w);
    CHECK(w == 6);
    w = 6 | XE_UPCALL_WAITERS;                                /* a sleeper announced: the kick clears the flag */
    xe_upcall_bump(&w);
    CHECK(w == 7);
    w = XE_UPCALL_COUNT;                                       /* the count wraps below the flag */
    xe_upcall_bump(&w);
    CHECK(w == 0);
    passed++;
}

/* A one-domain state file as statefile.py lays it out: header page, the image of Geometry(1 vCPU, 1 page, 64
 * channels), the journal page. */
enum { IMG = 4096, IMG_SIZE = 24576, JOURNAL = IMG + IMG_SIZE, FILE_SIZE = JOURNAL + 4096 };

static uint8_t *mkfile(xe_host *h, xe_host_dom *d)
{
    uint8_t *f = aligned_alloc(4096, FILE_SIZE);
    uint32_t *hdr, *entry;
    xe_chan *ch;

    memset(f, 0, FILE_SIZE);
    entry = (uint32_t *)(f + 64);
    entry[0] = 0;
    entry[1] = 1;                             /* dom0, privileged */
    hdr = (uint32_t *)(f + IMG);
    hdr[2] = 1; hdr[3] = 1; hdr[4] = 1; hdr[5] = 64; hdr[6] = 1;  /* vCPUs, max pages, pages, chans, generation */
    hdr[8] = 1;                               /* FIFO */
    hdr[9] = 64;                              /* valid ports */
    hdr[16] = 1;                              /* vCPU 0's control block at offset 0 of its page */
    ch = (xe_chan *)(f + IMG + 12480);
    ch[0].state = 1;                          /* reserved */
    ch[1].state = 6;                          /* an IPI on vCPU 0 */
    ch[1].priority = 7;
    memset(h, 0, sizeof(*h));
    memset(d, 0, sizeof(*d));
    h->base = f;
    h->size = FILE_SIZE;
    h->journal_offset = JOURNAL;
    h->fd = -1;
    h->nr_doms = 1;
    h->doms = d;
    d->version = 2;
    d->entry_offset = 64;
    d->image_offset = IMG;
    d->image_size = IMG_SIZE;
    d->stats_offset = 1ull << 62;
    d->nr_vcpus = 1; d->max_pages = 1; d->nr_chans = 64;
    d->pages_offset = 4096; d->cb_pages_offset = 8192; d->tails_offset = 12288; d->guest_offset = 12352;
    d->chans_offset = 12480; d->l2_offset = 16384; d->l2_extra_offset = 20480; d->l2_scan_offset = 20480;
    CHECK_RET(xe_lock_init(f + JOURNAL) == 0);
    return f;
}

static void t_host_send_consume(void)
{
    xe_host h;
    xe_host_dom d;
    uint8_t *f;
    uint32_t bad, out[8], *word, *journal;
    xe_error err;
    int64_t r;

    f = mkfile(&h, &d);
    CHECK(f != NULL);
    CHECK(xe_host_setup(&h, &bad) == 0 && d.ok && d.fifo_ok);
    word = (uint32_t *)(f + IMG + 4096) + 1;
    journal = (uint32_t *)(f + JOURNAL);
    r = xe_host_send(&h, 0, 0, 1);
    CHECK(r >= 0 && (r & 0xfff & ~XE_SP_MOVED) == (XE_SP_LINKED | XE_SP_NEW_HEAD | XE_SP_UPCALL) && (r >> 12 & 0xfffff) == 1
          && r >> 32 == 0);
    CHECK((*word & (1u << 31)) && (*word & (1u << 29)) && journal[0x60 / 4] == 0);
    CHECK(((uint32_t *)(f + IMG + 2048))[0] == 1);              /* the upcall word bumped */
    CHECK(f[IMG + 16384] == 1);                                /* vcpu_info's evtchn_upcall_pending */
    CHECK(xe_host_consume(&h, 0, 0, XE_CONSUME_ACK, out, 8, 0, &err) == 1 && out[0] == 1 && *word == 0);
    CHECK(xe_host_consume(&h, 0, 0, XE_CONSUME_ACK, out, 8, 1000, &err) == 0);  /* nothing: slept 1 us, timed out */
    /* the cases the Python path decides: another caller, ports out of range or free, a record no Xen holds,
     * an update to finish, a domain gone */
    CHECK(xe_host_send(&h, 1, 0, 1) == XE_HOST_SLOW);
    CHECK(xe_host_send(&h, 0, 0, 0) == XE_HOST_SLOW && xe_host_send(&h, 0, 0, 64) == XE_HOST_SLOW);
    CHECK(xe_host_send(&h, 0, 0, 2) == XE_HOST_SLOW && xe_host_send(&h, 0, 5, 1) == XE_HOST_SLOW);
    d.fifo.chans[1].notify_vcpu = 3;
    CHECK(xe_host_send(&h, 0, 0, 1) == XE_HOST_SLOW);
    d.fifo.chans[1].notify_vcpu = 0;
    journal[0x40 / 4] = 0x544E4958;
    CHECK(xe_host_send(&h, 0, 0, 1) == XE_HOST_SLOW);
    CHECK(xe_host_lock(&h) == XE_LOCK_RECOVER);                 /* the lock is free again, and says why */
    xe_host_unlock(&h);
    journal[0x40 / 4] = 0;
    ((uint32_t *)(f + IMG))[16] = 4093;                       /* a control block past its page, a new generation */
    ((uint32_t *)(f + IMG))[6]++;
    CHECK(xe_host_send(&h, 0, 0, 1) == XE_HOST_SLOW && !d.fifo_ok);
    ((uint32_t *)(f + IMG))[16] = 1;
    ((uint32_t *)(f + IMG))[6]++;
    CHECK(xe_host_send(&h, 0, 0, 1) >= 0 && d.fifo_ok);
    CHECK(xe_host_guest_mask(&h, 0, 0, 1) == 0 && xe_host_guest_mask(&h, 0, 0, 1) == 1);  /* the old MASKED bit */
    ((uint32_t *)(f + 64))[1] |= 32;                          /* dom0 gone */
    CHECK(xe_host_send(&h, 0, 0, 1) == XE_HOST_SLOW);
    ((uint32_t *)(f + 64))[1] &= ~32u;
    d.image_offset = JOURNAL;                                 /* an image over the journal page: refused */
    CHECK(xe_host_setup(&h, &bad) == -1 && bad == 0);
    free(f);
    passed++;
}

/* --- the xen backend's loop over libxenevtchn, against a fake library: a pipe carries the ports "raised" --- */
typedef struct {
    int rfd, wfd;
    uint32_t unmasked[16];
    int nr_unmasked;
    int fail_pending;      /* pending fails with EIO */
    uint32_t fail_unmask;  /* unmask of this port fails with EINVAL (0: never) */
} fake_lib;

static int fake_notify(void *h, uint32_t port)
{
    fake_lib *f = h;

    if (port == 4095) {
        errno = ENOTCONN;
        return -1;
    }
    return write(f->wfd, &port, sizeof(port)) == (ssize_t)sizeof(port) ? 0 : -1;
}

static int fake_pending(void *h)
{
    fake_lib *f = h;
    uint32_t port;

    if (f->fail_pending) {
        errno = EIO;
        return -1;
    }
    if (read(f->rfd, &port, sizeof(port)) != (ssize_t)sizeof(port))
        return -1;
    return (int)port;  /* as the kernel's ring holds it: any value */
}

static int fake_unmask(void *h, uint32_t port)
{
    fake_lib *f = h;

    if (f->fail_unmask && port == f->fail_unmask) {
        errno = EINVAL;
        return -1;
    }
    if (f->nr_unmasked < 16)
        f->unmasked[f->nr_unmasked++] = port;
    return 0;
}

static void raise_port(fake_lib *f, uint32_t port)
{
    if (write(f->wfd, &port, sizeof(port)) != (ssize_t)sizeof(port))
        abort();
}

static void on_alarm(int sig)
{
    (void)sig;
}

static void t_evtchn_loop(void)
{
    fake_lib f = {0};
    int fds[2];
    uint8_t *own = calloc(XE_EVTCHN_MAX_PORTS / 8, 1);  /* exactly the bitmap: a read past it is ASan's */
    xe_evtchn e = {0};
    uint32_t out[4];
    struct sigaction sa = {0};
    struct itimerval it = {{0, 0}, {0, 20000}};

    CHECK(own && pipe(fds) == 0);
    f.rfd = fds[0];
    f.wfd = fds[1];
    e.handle = &f;
    e.fd = f.rfd;
    e.notify_fn = (void *)fake_notify;
    e.pending_fn = (void *)fake_pending;
    e.unmask_fn = (void *)fake_unmask;
    e.own = own;
    own[5 >> 3] |= 1 << (5 & 7);
    own[9 >> 3] |= 1 << (9 & 7);
    own[(XE_EVTCHN_MAX_PORTS - 1) >> 3] |= 0x80;

    /* sent on two owned ports: both taken, in order, each unmasked */
    CHECK(xe_evtchn_notify(&e, 5) == 0 && xe_evtchn_notify(&e, 9) == 0);
    CHECK(xe_evtchn_consume(&e, out, 4, 0) == 2 && out[0] == 5 && out[1] == 9);
    CHECK(f.nr_unmasked == 2 && f.unmasked[0] == 5 && f.unmasked[1] == 9);
    passed++;
    /* the round trip's one call: the send (the fake library loops it back), then its event taken */
    CHECK(xe_evtchn_notify_consume(&e, 9, out, 4, 0) == 1 && out[0] == 9 && f.unmasked[2] == 9);
    f.nr_unmasked = 2;
    passed++;
    /* a send the library refuses: its errno, the call and the port; nothing waited for */
    CHECK(xe_evtchn_notify_consume(&e, 4095, out, 4, 5000) == XE_EVTCHN_FAILED && e.err == ENOTCONN &&
          e.failed_call == XE_CALL_NOTIFY && e.failed_port == 4095 && e.taken == 0);
    CHECK(xe_evtchn_notify(&e, 4095) == XE_EVTCHN_FAILED && e.err == ENOTCONN && e.failed_call == XE_CALL_NOTIFY &&
          e.failed_port == 4095);
    passed++;
    /* ports not owned, and values no port has (past the bitmap, negative as int): dropped, never unmasked */
    raise_port(&f, 6);
    raise_port(&f, XE_EVTCHN_MAX_PORTS);
    raise_port(&f, 0x7fffffffu);
    raise_port(&f, XE_EVTCHN_MAX_PORTS - 1);
    CHECK(xe_evtchn_consume(&e, out, 4, 0) == 1 && out[0] == XE_EVTCHN_MAX_PORTS - 1 && e.stale == 3);
    CHECK(f.nr_unmasked == 3);
    passed++;
    /* max bounds a batch: the rest stays for the next call */
    raise_port(&f, 5);
    raise_port(&f, 9);
    raise_port(&f, 5);
    CHECK(xe_evtchn_consume(&e, out, 2, 0) == 2 && xe_evtchn_consume(&e, out, 4, 0) == 1 && out[0] == 5);
    passed++;
    /* nothing raised: 0 after the timeout */
    CHECK(xe_evtchn_consume(&e, out, 4, 0) == 0 && xe_evtchn_consume(&e, out, 4, 5) == 0);
    passed++;
    /* a stale event, then nothing: the re-wait ends within the caller's time */
    raise_port(&f, 7);
    CHECK(xe_evtchn_consume(&e, out, 4, 30) == 0 && e.stale == 4 && e.left_ms <= 30);
    passed++;
    /* an unmask that fails after one event was taken: FAILED, the event counted in ->taken and out[] */
    f.fail_unmask = 9;
    raise_port(&f, 5);
    raise_port(&f, 9);
    CHECK(xe_evtchn_consume(&e, out, 4, 0) == XE_EVTCHN_FAILED && e.failed_call == XE_CALL_UNMASK &&
          e.failed_port == 9 && e.err == EINVAL && e.taken == 2 && out[0] == 5 && out[1] == 9);
    f.fail_unmask = 0;
    passed++;
    /* a read that fails */
    f.fail_pending = 1;
    raise_port(&f, 5);
    CHECK(xe_evtchn_consume(&e, out, 4, 0) == XE_EVTCHN_FAILED && e.failed_call == XE_CALL_PENDING &&
          e.err == EIO && e.taken == 0);
    f.fail_pending = 0;
    CHECK(xe_evtchn_consume(&e, out, 4, 0) == 1 && out[0] == 5);
    passed++;
    /* a signal while waiting: INTR, with what is left of the time to wait again */
    sa.sa_handler = on_alarm;
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0 && setitimer(ITIMER_REAL, &it, NULL) == 0);
    CHECK(xe_evtchn_consume(&e, out, 4, 5000) == XE_EVTCHN_INTR && e.left_ms > 0 && e.left_ms <= 5000);
    signal(SIGALRM, SIG_DFL);
    passed++;
    close(fds[0]);
    close(fds[1]);
    free(own);
}

/* ASan: the bytes after mkfile's channel table (up to the 2-level page) are no one's: any read there is a bug */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define FENCE(f, on) ((on) ? __asan_poison_memory_region : __asan_unpoison_memory_region)((f) + IMG + 12480 + 64 * 16, \
                                                                                 16384 - 12480 - 64 * 16)
#else
#define FENCE(f, on) ((void)(f), (void)(on))
#endif

static void t_host_status(void)
{
    xe_host h;
    xe_host_dom d;
    xe_port_status st;
    uint8_t *f;
    uint32_t bad, *hdr, *journal, *entry;
    uint64_t *pending;

    f = mkfile(&h, &d);
    CHECK(f != NULL);
    CHECK(xe_host_setup(&h, &bad) == 0);
    FENCE(f, 1);
    hdr = (uint32_t *)(f + IMG);
    journal = (uint32_t *)(f + JOURNAL);
    entry = (uint32_t *)(f + 64);
    ((uint32_t *)(f + IMG + 4096))[1] = P | L;                 /* port 1's word: pending, linked */
    memset(&st, 0xee, sizeof(st));
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == 0 && st.domid == 0 && st.state == 6 && st.notify_vcpu == 0
          && st.priority == 7 && st.fifo == 1 && st.has_word == 1 && st.word == (P | L));
    CHECK(xe_host_status(&h, 0, 0x7ff0, 1, &st) == 0 && st.domid == 0);  /* DOMID_SELF: the caller */
    CHECK(xe_host_status(&h, 0, 0, 0, &st) == 0 && st.state == 1);       /* port 0: reserved, valid */
    CHECK(xe_host_status(&h, 0, 0, 5, &st) == 0 && st.state == 0 && st.word == 0);
    /* the Python path's: no such domain or caller, ports out of the table or not yet valid */
    CHECK(xe_host_status(&h, 0, 3, 1, &st) == XE_HOST_SLOW && xe_host_status(&h, 3, 0, 1, &st) == XE_HOST_SLOW);
    CHECK(xe_host_status(&h, 0, 0, 64, &st) == XE_HOST_SLOW && xe_host_status(&h, 0, 0, 0xffffffffu, &st)
          == XE_HOST_SLOW);
    hdr[9] = 2;
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == 0 && xe_host_status(&h, 0, 0, 2, &st) == XE_HOST_SLOW);
    hdr[9] = 0xffffffffu;                                      /* valid_evtchns past the table: the table decides */
    CHECK(xe_host_status(&h, 0, 0, 64, &st) == XE_HOST_SLOW);
    hdr[9] = 64;
    /* records no Xen holds, and Xen's own port */
    d.fifo.chans[2].state = 7;
    CHECK(xe_host_status(&h, 0, 0, 2, &st) == XE_HOST_SLOW);
    d.fifo.chans[2].state = 3;                                 /* interdomain, to a domain not on the host */
    d.fifo.chans[2].remote_dom = 9;
    d.fifo.chans[2].remote_port = 1;
    CHECK(xe_host_status(&h, 0, 0, 2, &st) == XE_HOST_SLOW);
    d.fifo.chans[2].remote_dom = 0;                            /* to itself, port past the table */
    d.fifo.chans[2].remote_port = 0xffffffffu;
    CHECK(xe_host_status(&h, 0, 0, 2, &st) == XE_HOST_SLOW);
    d.fifo.chans[2].remote_port = 1;
    CHECK(xe_host_status(&h, 0, 0, 2, &st) == 0 && st.state == 3 && st.remote_dom == 0 && st.remote_port == 1);
    d.fifo.chans[2].notify_vcpu = 0xffff;
    CHECK(xe_host_status(&h, 0, 0, 2, &st) == XE_HOST_SLOW);
    memset(&d.fifo.chans[2], 0, sizeof(xe_chan));
    d.fifo.chans[1].flags = XE_CHAN_XEN;
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == XE_HOST_SLOW);
    d.fifo.chans[1].flags = 0;
    /* a header no Xen holds: the array past its capacity, an unknown ABI */
    hdr[4] = 0xffffffffu;
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == XE_HOST_SLOW);
    hdr[4] = 0;                                                /* no array: no word */
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == 0 && st.has_word == 0 && st.word == 0);
    hdr[4] = 1;
    hdr[8] = 9;
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == XE_HOST_SLOW);
    hdr[8] = 0;                                                /* 2-level: the bits in the word's places */
    pending = (uint64_t *)(f + IMG + 16384 + 2048);
    pending[0] = 2;
    pending[64] = 2 | 4;                                       /* (the mask bitmap follows the pending one) */
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == 0 && st.fifo == 0 && st.has_word == 1 && st.word == (P | M));
    CHECK(xe_host_status(&h, 0, 0, 2, &st) == 0 && st.word == M);
    pending[0] = pending[64] = 0;
    hdr[8] = 1;
    /* not now: an update to finish, this thread holding the lock, the domain gone */
    journal[0x60 / 4] = 1;
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == XE_HOST_SLOW);
    journal[0x60 / 4] = 0;
    CHECK(xe_host_lock(&h) == XE_LOCK_OK);
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == XE_HOST_SLOW);
    xe_host_unlock(&h);
    entry[1] |= 32;
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == XE_HOST_SLOW);
    entry[1] &= ~32u;
    CHECK(xe_host_status(&h, 0, 0, 1, &st) == 0);
    FENCE(f, 0);
    free(f);
    passed++;
}

/* The lowest free port not LINKED in [start, nr), and the first free one: the scan the simulator's Python path
 * makes (Hypercalls._free_port_scan), written plainly */
static int ref_free_port(const xe_chan *chans, const uint32_t *words, uint32_t nr_words, uint32_t start,
                         uint32_t nr, uint32_t *first)
{
    uint32_t p;

    *first = nr;
    for (p = start; p < nr; p++) {
        if (chans[p].state != 0)
            continue;
        if (*first == nr)
            *first = p;
        if (p >= nr_words || !(words[p] & L))
            return (int)p;
    }
    return 0;
}

static void t_host_free_port(void)
{
    xe_host h;
    xe_host_dom d;
    uint8_t *f;
    uint32_t bad, first, want_first, start, nr, i, trial, rng = 15, *hdr, *words;
    int got, want;

    f = mkfile(&h, &d);
    CHECK(f != NULL);
    CHECK(xe_host_setup(&h, &bad) == 0);
    FENCE(f, 1);
    hdr = (uint32_t *)(f + IMG);
    words = (uint32_t *)(f + IMG + 4096);
    CHECK(xe_host_free_port(&h, 0, 1, 64, &first) == 2 && first == 2);
    words[2] = L;                                              /* freed, its event still queued: busy, skipped */
    CHECK(xe_host_free_port(&h, 0, 1, 64, &first) == 3 && first == 2);
    CHECK(xe_host_free_port(&h, 0, 4, 64, &first) == 4 && first == 4);  /* the hint: from there */
    CHECK(xe_host_free_port(&h, 0, 64, 64, &first) == 0 && first == 64); /* nothing left: ENOSPC */
    for (i = 1; i < 64; i++)
        d.fifo.chans[i].state = 6;
    CHECK(xe_host_free_port(&h, 0, 1, 64, &first) == 0 && first == 64);
    d.fifo.chans[63].state = 0;
    CHECK(xe_host_free_port(&h, 0, 1, 64, &first) == 63 && first == 63);
    CHECK(xe_host_free_port(&h, 0, 1, 63, &first) == 0 && first == 63); /* (2-level's limit below the table) */
    /* refused: no such domain, start 0 or past nr, nr past the table */
    CHECK(xe_host_free_port(&h, 7, 1, 64, &first) == XE_HOST_SLOW);
    CHECK(xe_host_free_port(&h, 0, 0, 64, &first) == XE_HOST_SLOW);
    CHECK(xe_host_free_port(&h, 0, 9, 8, &first) == XE_HOST_SLOW);
    CHECK(xe_host_free_port(&h, 0, 1, 65, &first) == XE_HOST_SLOW && xe_host_free_port(&h, 0, 1, 0xffffffffu,
                                                                                        &first) == XE_HOST_SLOW);
    /* the array past its capacity: refused once a free port asks for its word, not before */
    hdr[4] = 0x80000000u;
    CHECK(xe_host_free_port(&h, 0, 1, 63, &first) == 0);
    CHECK(xe_host_free_port(&h, 0, 1, 64, &first) == XE_HOST_SLOW);
    hdr[4] = 1;
    /* hostile tables: every byte of every record and word at random, the answers the plain scan's */
    for (trial = 0; trial < 20000; trial++) {
        for (i = 0; i < 64; i++) {
            rng = rng * 1103515245u + 12345u;
            if ((rng >> 16) % 4 == 0)
                memset(&d.fifo.chans[i], (int)(rng >> 24), sizeof(xe_chan));
            else
                d.fifo.chans[i].state = (uint8_t)((rng >> 16) % 3 ? 0 : (rng >> 20) % 8);
            words[i] = (rng >> 8) % 3 ? rng & (P | M | L) : 0xffffffffu;
        }
        rng = rng * 1103515245u + 12345u;
        hdr[4] = (rng >> 28) % 2;                              /* with and without the array */
        start = 1 + (rng >> 8) % 64;
        nr = start + (rng >> 16) % (65 - start);
        got = xe_host_free_port(&h, 0, start, nr, &first);
        want = ref_free_port(d.fifo.chans, words, hdr[4] * 1024, start, nr, &want_first);
        CHECK(got == want && first == want_first);
    }
    FENCE(f, 0);
    free(f);
    passed++;
}

/* The replays' fault switches (xenevt/engine/faults.py): each puts one old
 * order back, and off, the engine is as fixed. */
static void t_faults(void)
{
    tdom *t = mk(2, 1), *f = mk(2, 1);
    uint32_t out[8];
    xe_error e;
    int r;

    /* Xen before e33d4257fc: a moved old tail stays its old queue's tail */
    *w(t, 3) = *w(t, 4) = *w(t, 5) = *w(f, 3) = *w(f, 4) = 0;
    xe_faults_set(XE_FAULT_OLD_TAIL_LINKED, NULL);
    CHECK(xe_faults_get() == XE_FAULT_OLD_TAIL_LINKED);
    xe_hv_set_pending(&t->d, 3);
    CHECK(consume(t, 0, out, 8, &e) == 1 && out[0] == 3 && t->tails[7] == 3);
    t->chans[3].notify_vcpu = t->chans[5].notify_vcpu = 1;
    r = xe_hv_set_pending(&t->d, 3);
    CHECK(r & XE_SP_MOVED && r & XE_SP_NEW_HEAD && t->cb[1].head[7] == 3 && t->tails[7] == 3);
    r = xe_hv_set_pending(&t->d, 4);
    CHECK(!(r & XE_SP_NEW_HEAD) && (*w(t, 3) & 0x1ffff) == 4 && !(t->cb[0].ready & (1u << 7)));
    xe_hv_set_pending(&t->d, 5);
    CHECK((*w(t, 3) & 0x1ffff) == 5 && *w(t, 4) == (P | L));  /* 4: LINKED, reached from no head */
    xe_faults_set(0, NULL);
    xe_hv_set_pending(&f->d, 3);
    CHECK(consume(f, 0, out, 8, &e) == 1);
    f->chans[3].notify_vcpu = 1;
    xe_hv_set_pending(&f->d, 3);
    r = xe_hv_set_pending(&f->d, 4);
    CHECK(r & XE_SP_NEW_HEAD && f->cb[0].head[7] == 4 && f->tails[7] == 4);

    /* Xen before 8aa0e9d2d1: PENDING set on an event dropped for want of a control block */
    t->cbs[1] = f->cbs[1] = NULL;
    *w(t, 6) = *w(f, 6) = 0;
    t->chans[6].notify_vcpu = f->chans[6].notify_vcpu = 1;
    xe_faults_set(XE_FAULT_PENDING_UNQUEUED, NULL);
    CHECK(xe_hv_set_pending(&t->d, 6) == XE_SP_NO_CONTROL && *w(t, 6) == P);
    xe_faults_set(0, NULL);
    CHECK(xe_hv_set_pending(&f->d, 6) == XE_SP_NO_CONTROL && *w(f, 6) == 0);

    /* Xen before 917c123029: an event for a port without an array page dropped */
    xe_faults_set(XE_FAULT_NO_PAGE_DROPPED, NULL);
    CHECK(xe_hv_set_pending(&t->d, 2000) == XE_OK && !(t->chans[2000].flags & XE_CHAN_DEFERRED));
    xe_faults_set(0, NULL);
    CHECK(xe_hv_set_pending(&f->d, 2000) == XE_SP_DEFERRED && f->chans[2000].flags & XE_CHAN_DEFERRED);
    CHECK(xe_faults_get() == 0);
    rm(t);
    rm(f);
    passed++;
}

int main(void)
{
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"link_order", t_link_order},         {"masked_then_unmask", t_masked_then_unmask},
        {"bad_links", t_bad_links},           {"cycle", t_cycle},
        {"walk_statuses", t_walk_statuses},   {"moves_and_deferred", t_moves_and_deferred},
        {"bad_args", t_bad_args},             {"domain_check", t_domain_check},
        {"l2_raise_unmask", t_l2_raise_unmask}, {"l2_consume_order", t_l2_consume_order},
        {"l2_bounds", t_l2_bounds},           {"l2_check", t_l2_check},
        {"lock", t_lock},                     {"lock_bounds", t_lock_bounds},
        {"map_guard", t_map_guard},           {"upcall_word", t_upcall_word},
        {"host_send_consume", t_host_send_consume}, {"evtchn_loop", t_evtchn_loop},
        {"host_status", t_host_status},       {"host_free_port", t_host_free_port},
        {"faults", t_faults},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        int before = failed;
        cur = tests[i].name;
        tests[i].fn();
        if (failed == before)
            printf("ok %s\n", cur);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
