/*
 * C tests of the engine, run plain and under ASan/UBSan (make test-c,
 * make sanitize).  Each page is its own malloc so that any read past a page
 * is caught by the sanitizer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xenevt_fifo.h"

#define M (1u << 30)
#define P (1u << 31)
#define L (1u << 29)

static int passed, failed;
static const char *cur;

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
    CHECK(t->cb[0].ready == 0 && t->g[0].ready == 0);
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
    /* no control block: dropped, pending kept */
    t->cbs[1] = NULL;
    CHECK(xe_hv_set_pending(&t->d, 4) & XE_SP_NO_CONTROL);
    CHECK(*w(t, 4) == P);
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
