/* xenevt-test-guest: a tiny x86-64 PV domU that runs a program of event-channel
 * hypercalls (its PV module) and prints, after every step, what it sees: the
 * result, EVTCHNOP_status of every port it named, its event words, control
 * blocks and queues (FIFO) or shared_info's bits (2-level).
 *
 * Struct layouts and constants are Xen's public ABI (xen/include/public/:
 * xen.h, event_channel.h, sched.h, vcpu.h, version.h, io/console.h), checked
 * below with static asserts.  No libc: everything here is freestanding. */
#include <stddef.h>
#include <stdint.h>

#include "guest.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define PAGE_SIZE 4096UL
#define barrier() __asm__ __volatile__("" ::: "memory")
#define wmb() barrier() /* x86: stores are not reordered with other stores */

/* --- Xen's ABI --------------------------------------------------------------------------- */
enum {
    HC_update_va_mapping = 14, HC_xen_version = 17, HC_vcpu_op = 24,
    HC_sched_op = 29, HC_event_channel_op = 32,
};
enum { SCHEDOP_yield = 0, SCHEDOP_shutdown = 2, SCHEDOP_poll = 3 };
enum { SHUTDOWN_poweroff = 0 };
enum { VCPUOP_is_up = 3 };
enum { XENVER_version = 0 };
#define UVMF_INVLPG 2UL
#define PTE_RW_PRESENT 0x67UL /* present, writable, user, accessed, dirty */
#define DOMID_SELF 0x7ff0U
#define MAX_VCPUS_SEEN 32     /* XEN_LEGACY_MAX_VCPUS: vcpu_info slots in shared_info */

enum {
    EVTCHNOP_bind_interdomain = 0, EVTCHNOP_bind_virq = 1, EVTCHNOP_close = 3,
    EVTCHNOP_send = 4, EVTCHNOP_status = 5, EVTCHNOP_alloc_unbound = 6,
    EVTCHNOP_bind_ipi = 7, EVTCHNOP_bind_vcpu = 8, EVTCHNOP_unmask = 9,
    EVTCHNOP_reset = 10, EVTCHNOP_init_control = 11, EVTCHNOP_expand_array = 12,
    EVTCHNOP_set_priority = 13,
};
enum { STAT_closed = 0, STAT_unbound, STAT_interdomain, STAT_pirq, STAT_virq, STAT_ipi };

#define FIFO_PENDING (1U << 31)
#define FIFO_MASKED (1U << 30)
#define FIFO_LINK_MASK ((1U << 17) - 1)
#define FIFO_QUEUES 16
#define WORDS_PER_PAGE 1024U

struct start_info {
    char magic[32];
    u64 nr_pages;
    u64 shared_info;     /* machine address */
    u32 flags;
    u64 store_mfn;
    u32 store_evtchn;
    struct { u64 mfn; u32 evtchn; } console;
    u64 pt_base, nr_pt_frames, mfn_list, mod_start, mod_len;
    char cmd_line[1024];
};
_Static_assert(offsetof(struct start_info, shared_info) == 40, "start_info");
_Static_assert(offsetof(struct start_info, console) == 72, "start_info");
_Static_assert(offsetof(struct start_info, mfn_list) == 104, "start_info");
_Static_assert(offsetof(struct start_info, mod_start) == 112, "start_info");
_Static_assert(offsetof(struct start_info, mod_len) == 120, "start_info");

struct vcpu_time_info {
    u32 version, pad0;
    u64 tsc_timestamp, system_time;
    u32 tsc_to_system_mul;
    int8_t tsc_shift;
    u8 flags, pad1[2];
};
struct vcpu_info {
    u8 evtchn_upcall_pending, evtchn_upcall_mask;
    u64 evtchn_pending_sel;
    u64 cr2, pad;
    struct vcpu_time_info time;
};
_Static_assert(sizeof(struct vcpu_info) == 64, "vcpu_info");
struct shared_info {
    struct vcpu_info vcpu_info[MAX_VCPUS_SEEN];
    u64 evtchn_pending[64];
    u64 evtchn_mask[64];
};
_Static_assert(offsetof(struct shared_info, evtchn_pending) == 2048, "shared_info");
_Static_assert(offsetof(struct shared_info, evtchn_mask) == 2560, "shared_info");

struct xencons {
    char in[1024], out[2048];
    u32 in_cons, in_prod, out_cons, out_prod;
};
_Static_assert(offsetof(struct xencons, out_prod) == 3084, "xencons_interface");

struct sched_poll { u32 *ports; u32 nr_ports; u64 timeout; };
_Static_assert(offsetof(struct sched_poll, timeout) == 16, "sched_poll");

struct ev_alloc_unbound { u16 dom, remote_dom; u32 port; };
struct ev_bind_interdomain { u16 remote_dom; u32 remote_port, local_port; };
struct ev_bind_virq { u32 virq, vcpu, port; };
struct ev_bind_ipi { u32 vcpu, port; };
struct ev_port { u32 port; };                 /* close, send, unmask */
struct ev_bind_vcpu { u32 port, vcpu; };
struct ev_set_priority { u32 port, priority; };
struct ev_reset { u16 dom; };
struct ev_init_control { u64 control_gfn; u32 offset, vcpu; u8 link_bits, pad[7]; };
struct ev_expand_array { u64 array_gfn; };
struct ev_status {
    u16 dom;
    u32 port, status, vcpu;
    union { struct { u16 dom; } unbound; struct { u16 dom; u32 port; } interdomain; u32 pirq, virq; } u;
};
_Static_assert(offsetof(struct ev_bind_interdomain, remote_port) == 4, "bind_interdomain");
_Static_assert(offsetof(struct ev_status, u) == 16 && sizeof(struct ev_status) == 24, "evtchn_status");
_Static_assert(sizeof(struct ev_init_control) == 24, "init_control");

struct fifo_cb { u32 ready, rsvd, head[FIFO_QUEUES]; };

/* --- memory of our own ------------------------------------------------------------------- */
#define NCB 2   /* control-block pages */
#define NARR 4  /* event-array pages */
#define NSLOTS 32
#define NO_PAGE 0xfffffffffffffULL /* a gfn no domain of this size owns */

static u32 cb_page[NCB][WORDS_PER_PAGE] __attribute__((aligned(4096)));
static u32 arr_page[NARR][WORDS_PER_PAGE] __attribute__((aligned(4096)));
/* VAs whose initial mapping we replace: the console ring and shared_info */
static u8 hole_cons[PAGE_SIZE] __attribute__((aligned(4096)));
static u8 hole_shinfo[PAGE_SIZE] __attribute__((aligned(4096)));

extern char hypercall_page[];

static struct start_info *si;
static volatile struct shared_info *sh;
static volatile struct xencons *cons;
static u32 cons_port, cons_remote_port;
static int cons_known;       /* cons_remote_port learned: the console survives resets */
static u32 my_domid, nr_vcpus;

static int fifo;                   /* the ABI we are on, as far as we know */
static u32 nr_arr;                 /* array pages Xen accepted, in order */
static u32 arr_of[NARR * 4];       /* their page numbers (Xen takes a page twice if asked) */
static int cb_vcpu_page[MAX_VCPUS_SEEN];   /* control-block page per vCPU, -1: none */
static u32 cb_vcpu_off[MAX_VCPUS_SEEN];
static int slot_used[NSLOTS];
static u32 slot_port[NSLOTS];

/* --- hypercalls: the page Xen filled, entry N at +32*N; args rdi, rsi, rdx -------------- */
static long hypercall3(unsigned nr, u64 a1, u64 a2, u64 a3)
{
    register u64 rdi __asm__("rdi") = a1;
    register u64 rsi __asm__("rsi") = a2;
    register u64 rdx __asm__("rdx") = a3;
    long ret;
    /* Xen may clobber the argument registers (debug builds do) and syscall's rcx/r11 */
    __asm__ __volatile__("call *%[entry]"
                         : "=a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx)
                         : [entry] "r"(hypercall_page + nr * 32)
                         : "rcx", "r8", "r9", "r10", "r11", "memory");
    return ret;
}

static long evtchn_op(unsigned cmd, void *arg)
{
    return hypercall3(HC_event_channel_op, cmd, (u64)arg, 0);
}

static long sched_op(unsigned cmd, void *arg)
{
    return hypercall3(HC_sched_op, cmd, (u64)arg, 0);
}

static u64 gfn_of(const void *va)
{
    /* PV: gfn == mfn, and the image's pfns start at VIRT_BASE */
    return ((u64 *)si->mfn_list)[((u64)va - GUEST_VIRT_BASE) >> 12];
}

/* gcc may emit calls to these even freestanding */
void *memset(void *d, int c, size_t n);
void *memset(void *d, int c, size_t n)
{
    volatile u8 *p = d; /* volatile: not turned back into a memset call */
    while (n--)
        *p++ = (u8)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n);
void *memcpy(void *d, const void *s, size_t n)
{
    volatile u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

/* --- time and waiting ---------------------------------------------------------------------- */
static u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static u64 now_ns(void)
{
    volatile struct vcpu_time_info *t = &sh->vcpu_info[0].time;
    u32 ver;
    u64 ts, sys, d, tsc;
    u32 mul;
    int shift;
    do {
        ver = t->version;
        barrier();
        ts = t->tsc_timestamp;
        sys = t->system_time;
        mul = t->tsc_to_system_mul;
        shift = t->tsc_shift;
        barrier();
    } while ((ver & 1) || ver != t->version);
    tsc = rdtsc();
    d = tsc > ts ? tsc - ts : 0;
    d = shift < 0 ? d >> -shift : d << shift;
    return sys + (u64)(((unsigned __int128)d * mul) >> 32);
}

/* Block until an event reaches the domain or `ns` pass (0: no timeout).  SCHEDOP_poll,
 * unlike SCHEDOP_block, leaves evtchn_upcall_mask set: we have no event callback. */
static void wait_ns(u64 ns)
{
    static u32 none;
    struct sched_poll p = { &none, 0, ns ? now_ns() + ns : 0 };
    sched_op(SCHEDOP_poll, &p);
}

/* --- console ------------------------------------------------------------------------------- */
static void cons_write(const char *s, size_t n)
{
    while (n) {
        u32 prod = cons->out_prod;
        barrier();
        if (prod - cons->out_cons >= sizeof(cons->out)) {
            struct ev_port send = { cons_port };
            evtchn_op(EVTCHNOP_send, &send);
            sched_op(SCHEDOP_yield, NULL);
            wait_ns(1000000);
            continue;
        }
        while (n && prod - cons->out_cons < sizeof(cons->out)) {
            cons->out[prod & (sizeof(cons->out) - 1)] = *s++;
            prod++;
            n--;
        }
        wmb();
        cons->out_prod = prod;
    }
}

static void cons_kick(void)
{
    struct ev_port send = { cons_port };
    evtchn_op(EVTCHNOP_send, &send);
}

/* one line is built here, then written and notified as a whole */
static char line[1024];
static size_t line_len;

static void put(const char *s)
{
    while (*s && line_len < sizeof(line) - 1)
        line[line_len++] = *s++;
}

static void put_u(u64 v)
{
    char b[24];
    int i = 0;
    do {
        b[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i && line_len < sizeof(line) - 1)
        line[line_len++] = b[--i];
}

static void put_i(long v)
{
    if (v < 0) {
        put("-");
        put_u((u64)-v);
    } else {
        put_u((u64)v);
    }
}

static void put_x(u64 v)
{
    char b[20];
    int i = 0;
    do {
        b[i++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (i && line_len < sizeof(line) - 1)
        line[line_len++] = b[--i];
}

static void sp(void) { put(" "); }

static void endl(void)
{
    line[line_len++] = '\n';
    cons_write(line, line_len);
    line_len = 0;
    cons_kick();
}

static void say(const char *s)
{
    put(s);
    endl();
}

/* --- state we observe -------------------------------------------------------------------- */
static long status_of(u32 dom, u32 port, struct ev_status *st)
{
    memset(st, 0, sizeof(*st));
    st->dom = (u16)dom;
    st->port = port;
    return evtchn_op(EVTCHNOP_status, st);
}

/* "STATE VCPU X Y" of a status */
static void put_status(const struct ev_status *st)
{
    u32 x = 0, y = 0;
    if (st->status == STAT_interdomain) {
        x = st->u.interdomain.dom;
        y = st->u.interdomain.port;
    } else if (st->status == STAT_unbound) {
        x = st->u.unbound.dom;
    } else if (st->status == STAT_virq) {
        x = st->u.virq;
    }
    put_u(st->status); sp(); put_u(st->vcpu); sp(); put_u(x); sp(); put_u(y);
}

/* port's FIFO event word, or NULL where no accepted page covers it */
static volatile u32 *fifo_word(u32 port)
{
    u32 idx = port / WORDS_PER_PAGE;
    if (idx >= nr_arr)
        return NULL;
    return &arr_page[arr_of[idx]][port % WORDS_PER_PAGE];
}

static int bit_2l(volatile u64 *bits, u32 port)
{
    if (port >= 64 * 64)
        return -1;
    return (int)((bits[port / 64] >> (port % 64)) & 1);
}

static void put_word(u32 port)
{
    if (fifo) {
        volatile u32 *w = fifo_word(port);
        if (w)
            put_x(*w);
        else
            put("-");
        return;
    }
    int p = bit_2l(sh->evtchn_pending, port), m = bit_2l(sh->evtchn_mask, port);
    put("2l ");
    if (p == 1)
        put("P");
    if (m == 1)
        put("M");
    if (p != 1 && m != 1)
        put("-");
}

static volatile struct fifo_cb *cb_of(u32 vcpu)
{
    return (volatile struct fifo_cb *)((volatile u8 *)cb_page[cb_vcpu_page[vcpu]] + cb_vcpu_off[vcpu]);
}

static void observe(void)
{
    for (u32 s = 0; s < NSLOTS; s++) {
        if (!slot_used[s])
            continue;
        struct ev_status st;
        long rc = status_of(DOMID_SELF, slot_port[s], &st);
        put("PORT "); put_u(s); sp(); put_u(slot_port[s]); sp();
        if (rc) {
            put("ERR "); put_i(rc);
        } else {
            put_status(&st);
        }
        put(" W "); put_word(slot_port[s]);
        endl();
    }
    put(fifo ? "ABI fifo" : "ABI 2l");
    endl();
    if (fifo) {
        for (u32 v = 0; v < MAX_VCPUS_SEEN; v++) {
            if (cb_vcpu_page[v] < 0)
                continue;
            volatile struct fifo_cb *cb = cb_of(v);
            put("CB "); put_u(v); sp(); put_x(cb->ready);
            for (int q = 0; q < FIFO_QUEUES; q++) {
                sp(); put_u(cb->head[q]);
            }
            endl();
            for (int q = 0; q < FIFO_QUEUES; q++) {
                u32 p = cb->head[q];
                if (!p)
                    continue;
                put("CHAIN "); put_u(v); sp(); put_u((u64)q);
                for (int n = 0;; n++) {
                    if (n == 64) {
                        put(" ...");
                        break;
                    }
                    sp(); put_u(p);
                    volatile u32 *w = fifo_word(p);
                    if (!w) {
                        put(" !");
                        break;
                    }
                    p = *w & FIFO_LINK_MASK;
                    if (!p)
                        break;
                }
                endl();
            }
        }
    } else {
        for (u32 v = 0; v < nr_vcpus && v < MAX_VCPUS_SEEN; v++) {
            put("V2 "); put_u(v); sp(); put_u(sh->vcpu_info[v].evtchn_upcall_pending); sp();
            put_x(sh->vcpu_info[v].evtchn_pending_sel);
            endl();
        }
    }
}

/* --- resets and the console -------------------------------------------------------------- */
static void forget_fifo(void)
{
    fifo = 0;
    nr_arr = 0;
    for (int v = 0; v < MAX_VCPUS_SEEN; v++)
        cb_vcpu_page[v] = -1;
}

/* After a reset of ourselves: xenconsoled's port went back to unbound, waiting for us. Bind it
 * again before anything is printed, and mask it (2-level) so its notifications stay out of
 * pending_sel and upcall_pending. */
static void after_self_reset(void)
{
    forget_fifo();
    if (!cons_known)
        return;
    struct ev_bind_interdomain b = { 0, cons_remote_port, 0 };
    if (evtchn_op(EVTCHNOP_bind_interdomain, &b) == 0)
        cons_port = b.local_port;
    __atomic_fetch_or(&sh->evtchn_mask[cons_port / 64], 1ULL << (cons_port % 64), __ATOMIC_SEQ_CST);
}

/* A scenario starts from a fresh guest's 2-level bits: bits Xen left in guest-owned memory
 * (the pending bits of ports a reset closed, masks we set, selectors) are cleared. */
static void fresh_2l_bits(void)
{
    for (int i = 0; i < 64; i++) {
        sh->evtchn_mask[i] = i == (int)(cons_port / 64) ? 1ULL << (cons_port % 64) : 0;
        sh->evtchn_pending[i] = 0;
    }
    for (u32 v = 0; v < MAX_VCPUS_SEEN; v++) {
        sh->vcpu_info[v].evtchn_pending_sel = 0;
        sh->vcpu_info[v].evtchn_upcall_pending = 0;
    }
}

static long reset_dom(u32 dom)
{
    struct ev_reset r = { (u16)dom };
    long rc = evtchn_op(EVTCHNOP_reset, &r);
    if (rc == 0 && (dom == DOMID_SELF || dom == my_domid))
        after_self_reset();
    return rc;
}

/* --- the program ----------------------------------------------------------------------------- */
#define MAX_TOKENS 8

struct op {
    const char *name;
    int nargs;
    int binds;
};
static const struct op ops[] = {
    {"alloc_unbound", 2, 1}, {"bind_interdomain", 2, 1}, {"bind_virq", 2, 1}, {"bind_ipi", 1, 1},
    {"send", 1, 0}, {"close", 1, 0}, {"unmask", 1, 0}, {"bind_vcpu", 2, 0}, {"set_priority", 2, 0},
    {"reset", 1, 0}, {"status", 2, 0}, {"init_control", 3, 0}, {"expand_array", 1, 0},
    {"mask", 1, 0}, {"poweroff", 0, 0},
};

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

/* a decimal number up to 2^32-1 */
static int parse_num(const char *s, u64 *out)
{
    u64 v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (u64)(*s - '0');
        if (v > 0xffffffffULL)
            return -1;
    }
    *out = v;
    return 0;
}

enum { ARG_OK = 0, ARG_BAD = -1, ARG_EMPTY_SLOT = -2 };

/* a number, `self`, or `$k` (the port in slot k) */
static int parse_arg(const char *s, u64 *out)
{
    if (streq(s, "self")) {
        *out = DOMID_SELF;
        return ARG_OK;
    }
    if (s[0] == '$') {
        u64 k;
        if (parse_num(s + 1, &k) || k >= NSLOTS)
            return ARG_BAD;
        if (!slot_used[k])
            return ARG_EMPTY_SLOT;
        *out = slot_port[k];
        return ARG_OK;
    }
    return parse_num(s, out) ? ARG_BAD : ARG_OK;
}

/* control or array page argument: 0..n-1, or `bad` (-1) */
static int parse_page(const char *s, int n, int *out)
{
    u64 v;
    if (streq(s, "bad")) {
        *out = -1;
        return 0;
    }
    if (parse_num(s, &v) || v >= (u64)n)
        return -1;
    *out = (int)v;
    return 0;
}

static int arr_in_use(int page)
{
    for (u32 i = 0; i < nr_arr; i++)
        if ((int)arr_of[i] == page)
            return 1;
    return 0;
}

static int cb_in_use(int page)
{
    for (int v = 0; v < MAX_VCPUS_SEEN; v++)
        if (cb_vcpu_page[v] == page)
            return 1;
    return 0;
}

static int in_scenario;
static u32 step_no;

/* One step line, split into tokens.  Returns 0 when done, -1 for a bad line. */
static int run_step(char **tok, int ntok)
{
    int slot = -1;
    u64 a[3] = {0, 0, 0};
    int page = 0;
    const struct op *op = NULL;

    if (!in_scenario || ntok < 2)
        return -1;
    if (!streq(tok[0], "-")) {
        u64 s;
        if (parse_num(tok[0], &s) || s >= NSLOTS)
            return -1;
        slot = (int)s;
    }
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (streq(tok[1], ops[i].name))
            op = &ops[i];
    if (!op || ntok - 2 != op->nargs || (slot >= 0 && !op->binds))
        return -1;

    int empty = 0;
    for (int i = 0; i < op->nargs; i++) {
        const char *t = tok[2 + i];
        if ((streq(op->name, "init_control") && i == 2) || streq(op->name, "expand_array")) {
            if (parse_page(t, streq(op->name, "init_control") ? NCB : NARR, &page))
                return -1;
            continue;
        }
        int r = parse_arg(t, &a[i]);
        if (r == ARG_BAD)
            return -1;
        if (r == ARG_EMPTY_SLOT)
            empty = 1;
    }
    /* domain ids are 16 bits */
    if ((streq(op->name, "alloc_unbound") && (a[0] > 0xffff || a[1] > 0xffff)) ||
        ((streq(op->name, "bind_interdomain") || streq(op->name, "reset") || streq(op->name, "status")) &&
         a[0] > 0xffff))
        return -1;

    step_no++;
    long rc = 0;
    u32 port = 0;
    int show_port = 0;
    struct ev_status st;
    int show_status = 0;

    if (empty) {
        put("STEP "); put_u(step_no); put(" noslot");
        endl();
        observe();
        return 0;
    }
    if (streq(op->name, "alloc_unbound")) {
        struct ev_alloc_unbound x = { (u16)a[0], (u16)a[1], 0 };
        rc = evtchn_op(EVTCHNOP_alloc_unbound, &x);
        port = x.port;
        show_port = 1;
    } else if (streq(op->name, "bind_interdomain")) {
        struct ev_bind_interdomain x = { (u16)a[0], (u32)a[1], 0 };
        rc = evtchn_op(EVTCHNOP_bind_interdomain, &x);
        port = x.local_port;
        show_port = 1;
    } else if (streq(op->name, "bind_virq")) {
        struct ev_bind_virq x = { (u32)a[0], (u32)a[1], 0 };
        rc = evtchn_op(EVTCHNOP_bind_virq, &x);
        port = x.port;
        show_port = 1;
    } else if (streq(op->name, "bind_ipi")) {
        struct ev_bind_ipi x = { (u32)a[0], 0 };
        rc = evtchn_op(EVTCHNOP_bind_ipi, &x);
        port = x.port;
        show_port = 1;
    } else if (streq(op->name, "send") || streq(op->name, "close") || streq(op->name, "unmask")) {
        struct ev_port x = { (u32)a[0] };
        rc = evtchn_op(streq(op->name, "send") ? EVTCHNOP_send
                       : streq(op->name, "close") ? EVTCHNOP_close : EVTCHNOP_unmask, &x);
    } else if (streq(op->name, "bind_vcpu")) {
        struct ev_bind_vcpu x = { (u32)a[0], (u32)a[1] };
        rc = evtchn_op(EVTCHNOP_bind_vcpu, &x);
    } else if (streq(op->name, "set_priority")) {
        struct ev_set_priority x = { (u32)a[0], (u32)a[1] };
        rc = evtchn_op(EVTCHNOP_set_priority, &x);
    } else if (streq(op->name, "reset")) {
        rc = reset_dom((u32)a[0]);
    } else if (streq(op->name, "status")) {
        rc = status_of((u32)a[0], (u32)a[1], &st);
        show_status = 1;
    } else if (streq(op->name, "init_control")) {
        u32 vcpu = (u32)a[0];
        struct ev_init_control x;
        memset(&x, 0, sizeof(x));
        /* a page no control block of ours lives on is zeroed first, as a guest would */
        if (page >= 0 && !cb_in_use(page))
            memset(cb_page[page], 0, PAGE_SIZE);
        x.control_gfn = page >= 0 ? gfn_of(cb_page[page]) : NO_PAGE;
        x.offset = (u32)a[1];
        x.vcpu = vcpu;
        rc = evtchn_op(EVTCHNOP_init_control, &x);
        if (rc == 0) {
            fifo = 1;
            if (vcpu < MAX_VCPUS_SEEN && page >= 0) {
                cb_vcpu_page[vcpu] = page;
                cb_vcpu_off[vcpu] = (u32)a[1];
            }
        }
    } else if (streq(op->name, "expand_array")) {
        struct ev_expand_array x;
        if (page >= 0 && !arr_in_use(page))
            for (u32 i = 0; i < WORDS_PER_PAGE; i++)
                arr_page[page][i] = FIFO_MASKED; /* every event masked, as Linux hands pages over */
        x.array_gfn = page >= 0 ? gfn_of(arr_page[page]) : NO_PAGE;
        rc = evtchn_op(EVTCHNOP_expand_array, &x);
        if (rc == 0 && page >= 0 && nr_arr < sizeof(arr_of) / sizeof(arr_of[0]))
            arr_of[nr_arr++] = (u32)page;
    } else if (streq(op->name, "mask")) {
        u32 p = (u32)a[0];
        if (fifo) {
            volatile u32 *w = fifo_word(p);
            if (w)
                __atomic_fetch_or(w, FIFO_MASKED, __ATOMIC_SEQ_CST);
        } else if (p < 64 * 64) {
            __atomic_fetch_or(&sh->evtchn_mask[p / 64], 1ULL << (p % 64), __ATOMIC_SEQ_CST);
        }
    } else if (streq(op->name, "poweroff")) {
        u32 reason = SHUTDOWN_poweroff;
        rc = sched_op(SCHEDOP_shutdown, &reason);
    }

    if (rc == 0 && show_port && slot >= 0) {
        slot_used[slot] = 1;
        slot_port[slot] = port;
    }
    put("STEP "); put_u(step_no); sp();
    if (rc) {
        put_i(rc);
    } else {
        put("ok");
        if (show_port) {
            sp(); put_u(port);
        }
        if (show_status) {
            sp(); put_status(&st);
        }
    }
    endl();
    observe();
    return 0;
}

static void start_scenario(const char *name)
{
    reset_dom(DOMID_SELF);
    fresh_2l_bits();
    for (int s = 0; s < NSLOTS; s++)
        slot_used[s] = 0;
    in_scenario = 1;
    step_no = 0;
    put("SCEN "); put(name);
    endl();
}

static __attribute__((noreturn)) void idle_forever(void)
{
    for (;;)
        wait_ns(0); /* woken by any event, never spinning */
}

static __attribute__((noreturn)) void finish(void)
{
    say("END");
    idle_forever();
}

static void run_program(const char *prog, u64 len)
{
    static char buf[256];
    u64 pos = 0;
    u32 lineno = 0;
    while (pos < len) {
        u64 n = 0;
        int too_long = 0;
        lineno++;
        while (pos < len && prog[pos] != '\n') {
            if (n < sizeof(buf) - 1)
                buf[n++] = prog[pos];
            else
                too_long = 1;
            pos++;
        }
        pos++; /* the '\n' */
        buf[n] = 0;
        if (n && buf[n - 1] == '\r')
            buf[--n] = 0;
        if (n == 0 || buf[0] == '#')
            continue;

        char *tok[MAX_TOKENS];
        int ntok = 0, bad = too_long;
        char *p = buf;
        while (!bad) {
            if (ntok == MAX_TOKENS || *p == ' ' || *p == 0) {
                bad = 1; /* too many tokens, or an empty one */
                break;
            }
            tok[ntok++] = p;
            while (*p && *p != ' ')
                p++;
            if (!*p)
                break;
            *p++ = 0;
        }
        if (!bad) {
            if (streq(tok[0], "end") && ntok == 1)
                finish();
            if (streq(tok[0], "scenario") && ntok == 2) {
                start_scenario(tok[1]);
                continue;
            }
            bad = run_step(tok, ntok) != 0;
        }
        if (bad) {
            put("BAD LINE "); put_u(lineno);
            endl();
            finish();
        }
    }
    finish();
}

/* --- boot -------------------------------------------------------------------------------------- */
static void map_page(void *va, u64 mfn)
{
    hypercall3(HC_update_va_mapping, (u64)va, (mfn << 12) | PTE_RW_PRESENT, UVMF_INVLPG);
}

void guest_main(struct start_info *start) __attribute__((noreturn));
void guest_main(struct start_info *start)
{
    si = start;
    map_page(hole_shinfo, si->shared_info >> 12);
    sh = (volatile struct shared_info *)hole_shinfo;
    for (int v = 0; v < MAX_VCPUS_SEEN; v++)
        sh->vcpu_info[v].evtchn_upcall_mask = 1; /* no event callback: never an upcall */
    map_page(hole_cons, si->console.mfn);
    cons = (volatile struct xencons *)hole_cons;
    cons_port = si->console.evtchn;
    forget_fifo();

    /* our domid: the remote end of a port we offer to ourselves */
    struct ev_alloc_unbound au = { DOMID_SELF, DOMID_SELF, 0 };
    struct ev_status st;
    if (evtchn_op(EVTCHNOP_alloc_unbound, &au) == 0) {
        if (status_of(DOMID_SELF, au.port, &st) == 0)
            my_domid = st.u.unbound.dom;
        struct ev_port c = { au.port };
        evtchn_op(EVTCHNOP_close, &c);
    }
    nr_vcpus = 0;
    while (nr_vcpus < MAX_VCPUS_SEEN && hypercall3(HC_vcpu_op, VCPUOP_is_up, nr_vcpus, 0) >= 0)
        nr_vcpus++;

    /* xenconsoled's end of the console: wait (about 120 s at most: a dom0 busy under emulation
     * took more than 20 s once) until it has bound it */
    for (int i = 0; i < 12000; i++) {
        if (status_of(DOMID_SELF, cons_port, &st) == 0 && st.status == STAT_interdomain) {
            cons_remote_port = st.u.interdomain.port;
            cons_known = 1;
            break;
        }
        wait_ns(10000000);
    }

    long ver = hypercall3(HC_xen_version, XENVER_version, 0, 0);
    put("XENEVT-GUEST xen "); put_u((u64)ver >> 16); put("."); put_u((u64)ver & 0xffff);
    put(" domid "); put_u(my_domid); put(" vcpus "); put_u(nr_vcpus);
    endl();
    if (!cons_known)
        say("CONSOLE unbound: output stops at the first reset");
    run_program((const char *)si->mod_start, si->mod_len);
    finish();
}
