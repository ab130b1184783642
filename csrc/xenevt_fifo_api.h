/*
 * xenevt FIFO event-channel engine: the declarations shared by the C sources
 * and the cffi binding (xenevt/_build_native.py feeds this file to cdef()).
 *
 * Keep this file free of preprocessor logic other than plain integer
 * #defines: cffi parses it.  Constants come from Xen's public header
 * xen/include/public/event_channel.h and keep Xen's names recognisable.
 */

/* --- Xen ABI (event_channel.h, FIFO section) --- */
#define XE_EVTCHN_FIFO_PENDING 31
#define XE_EVTCHN_FIFO_MASKED 30
#define XE_EVTCHN_FIFO_LINKED 29
#define XE_EVTCHN_FIFO_BUSY 28
#define XE_EVTCHN_FIFO_LINK_BITS 17
#define XE_EVTCHN_FIFO_LINK_MASK 0x1ffff
#define XE_EVTCHN_FIFO_NR_CHANNELS 131072
#define XE_EVTCHN_FIFO_MAX_QUEUES 16
#define XE_EVTCHN_FIFO_PRIORITY_MAX 0
#define XE_EVTCHN_FIFO_PRIORITY_DEFAULT 7
#define XE_EVTCHN_FIFO_PRIORITY_MIN 15
#define XE_WORDS_PER_PAGE 1024
#define XE_MAX_PAGES 128

/* struct evtchn_fifo_control_block: 72 bytes, one per vCPU. */
typedef struct xe_control_block {
    uint32_t ready;
    uint32_t _rsvd;
    uint32_t head[16];
} xe_control_block;

/*
 * Hypervisor-private per-port state (Xen's struct evtchn, reduced to what the
 * FIFO code and the simulator's channel table need).  16 bytes.  The engine
 * reads priority/notify_vcpu and maintains last_priority/last_vcpu (Xen's
 * fifo_lastq) and the DEFERRED flag; the other fields belong to the caller.
 */
typedef struct xe_chan {
    uint8_t state;
    uint8_t priority;
    uint8_t last_priority;
    uint8_t flags;
    uint16_t notify_vcpu;
    uint16_t last_vcpu;
    uint16_t remote_dom;
    uint16_t aux;
    uint32_t remote_port;
} xe_chan;

/* xe_chan.flags */
/* Xen's evtchn->pending, never cleared: raised with no array page (or 2-level
 * pending at init_control); every later page covering the port raises it again */
#define XE_CHAN_DEFERRED 1
#define XE_CHAN_XEN 2         /* consumed by Xen itself (alloc_unbound_xen_event_channel); never raised here */

/*
 * A domain's FIFO memory as the engine sees it.  pages[i] may be NULL (not
 * mapped): such ports have no event word.  Ports >= nr_pages * 1024 have no
 * word either.  cb[v] NULL means vCPU v has no control block.  tails is
 * Xen's per-queue tail, indexed vcpu * 16 + priority.
 */
typedef struct xe_domain {
    uint32_t *pages[128];
    uint32_t nr_pages;
    uint32_t nr_vcpus;
    xe_control_block **cb;
    uint32_t *tails;
    xe_chan *chans;
    uint32_t nr_chans;
} xe_domain;

/* Linux's per-CPU cpu_queue plus the handler's local copy of READY, kept
 * across calls so that a batch may stop early without losing a READY bit.
 * ready's low 16 bits are the READY bits; its high 16 count upcalls, odd
 * while one runs (a reader copying the domain without the consumer's
 * cooperation compares the count before and after its copy: a seqcount). */
typedef struct xe_guest_vcpu {
    uint32_t ready;
    uint32_t head[16];
} xe_guest_vcpu;

#define XE_GUEST_UPCALL_ONE 0x10000   /* one step of the upcall count in ready */

typedef struct xe_error {
    int32_t code;      /* XE_OK or an XE_E_* code */
    uint32_t port;     /* the port the error is about */
    uint32_t vcpu;
    uint32_t priority;
} xe_error;

/* Error codes (negative returns, or xe_error.code). */
#define XE_OK 0
#define XE_E_PORT -1        /* port 0 or beyond the channel table */
#define XE_E_VCPU -2        /* vCPU beyond the domain's vCPUs */
#define XE_E_RANGE -3       /* port/head/LINK/tail with no event word (past the array or unmapped page) */
#define XE_E_NO_CONTROL -4  /* vCPU has no control block */
#define XE_E_ZERO_HEAD -5   /* READY bit set but the queue's head is 0 */
#define XE_E_UNLINKED -6    /* head/LINK points at a word that is not LINKED (cycle or corruption) */
#define XE_E_BUSY -7        /* word stayed BUSY past the spin bound */
#define XE_E_STATE -8       /* corrupt hypervisor state (lastq, priority) */

/* Result bits of xe_hv_set_pending / xe_hv_unmask. */
#define XE_SP_WAS_PENDING 1
#define XE_SP_LINKED 2        /* newly linked onto a queue */
#define XE_SP_NEW_HEAD 4      /* the queue was empty: head written */
#define XE_SP_UPCALL 8        /* READY bit was clear: vCPU must be kicked */
#define XE_SP_DEFERRED 16     /* no array page yet: remembered until expand */
#define XE_SP_NO_CONTROL 32   /* vCPU has no control block: event dropped */
#define XE_SP_LINK_GAVE_UP 64 /* tail stayed contended: Xen's "not linked" */
#define XE_SP_MASKED 128      /* pending but masked: not linked */
#define XE_SP_ALREADY_LINKED 256
#define XE_SP_NOT_PENDING 512 /* (unmask) not pending: nothing raised */
#define XE_SP_MOVED 1024      /* linked on a different queue than last time */

/* Flags of xe_guest_consume. */
#define XE_CONSUME_ACK 1      /* clear PENDING on delivery (Linux's ack) */
#define XE_CONSUME_MASK 2     /* set MASKED on delivery (the evtchn device / lateeoi) */

/* Status of a walked queue (xe_walk_result.status). */
#define XE_WALK_EMPTY 0       /* head is 0 */
#define XE_WALK_END 1         /* chain ended with LINK 0 */
#define XE_WALK_STALE 2       /* head word is not LINKED: queue consumed, head stale */
#define XE_WALK_RANGE 3       /* a head/LINK with no event word (bad_port) */
#define XE_WALK_UNLINKED 4    /* a LINK to a word that is not LINKED (bad_port) */
#define XE_WALK_CYCLE 5       /* the chain comes back to bad_port */
#define XE_WALK_SHARED 6      /* bad_port is also on queue `other` */
#define XE_WALK_TRUNCATED 7   /* chain buffer full */
#define XE_WALK_NO_CONTROL 8  /* vCPU has no control block */

typedef struct xe_walk_result {
    uint32_t head;     /* where the walk started */
    uint32_t start;    /* index of the chain's first port in the chain buffer */
    uint32_t count;    /* ports in the chain */
    int32_t status;
    uint32_t bad_port;
    int32_t other;     /* for XE_WALK_SHARED: vcpu * 16 + priority of the other queue */
} xe_walk_result;

/* --- the descriptor itself --- */
/* Check a descriptor built from shared memory before the engine uses it:
 * nr_pages <= 128, 1 <= nr_vcpus <= 256, 2 <= nr_chans <= 131072, and every
 * mapped page, control block, the tails and the channel table inside
 * [base, base + size) and aligned.  Returns XE_OK, or a negative XE_E_* code
 * with *where set to the page index (XE_E_RANGE), the vCPU (XE_E_NO_CONTROL),
 * or 0 (counts, tails, channels: XE_E_STATE). */
int xe_domain_check(const xe_domain *d, const void *base, size_t size, uint32_t *where);

/* --- event words --- */
int xe_word_get(const xe_domain *d, uint32_t port, uint32_t *value);
int xe_word_set(xe_domain *d, uint32_t port, uint32_t value);

/* --- hypervisor side (xen/common/event_fifo.c); caller holds the domain's event lock --- */
int xe_hv_set_pending(xe_domain *d, uint32_t port);
int xe_hv_unmask(xe_domain *d, uint32_t port);
int xe_hv_clear_pending(xe_domain *d, uint32_t port);
int xe_hv_page_added(xe_domain *d, uint32_t page_index);

/* --- guest side (Linux drivers/xen/events/events_fifo.c) --- */
uint32_t xe_guest_consume(xe_domain *d, uint32_t vcpu, xe_guest_vcpu *g, uint32_t flags,
                          uint32_t *out, uint32_t out_len, uint32_t max_steps, xe_error *err);
int xe_guest_mask(xe_domain *d, uint32_t port);
int xe_guest_unmask(xe_domain *d, uint32_t port);
int xe_guest_clear_pending(xe_domain *d, uint32_t port);

/* --- non-destructive walker (dumps) --- */
int xe_walk_queue(const xe_domain *d, uint32_t queue_id, uint32_t head, uint32_t *chain,
                  uint32_t chain_len, uint16_t *owner, xe_walk_result *res);
int xe_walk_all(const xe_domain *d, const uint32_t *starts, uint32_t *chain, uint32_t chain_len,
                uint16_t *owner, xe_walk_result *results);

/* --- 2-level ABI (xen/common/event_2l.c, Linux events_2l.c) --- */
#define XE_EVTCHN_2L_NR_CHANNELS 4096   /* 64 * 64: a 64-bit guest's xen_ulong_t */
#define XE_L2_WORDS 64                  /* words per bitmap, bits per word */
#define XE_L2_SHARED_VCPUS 32           /* XEN_LEGACY_MAX_VCPUS: vcpu_info slots in shared_info */
#define XE_L2_OWN_VCPU 0xffffffff       /* xe_l2_guest_unmask: unmask on the port's own vCPU */
#define XE_L2_UNMASK_HVM 1              /* xe_l2_guest_unmask: the guest is HVM (Linux re-masks and asks Xen) */

/* Error code of the 2-level consume loop (xe_error.code). */
#define XE_E_SCAN -9        /* Linux's saved scan position is out of range (reset to 0) */

/* struct vcpu_info (public/xen.h, x86_64): the event fields, then 48 bytes
 * (arch_vcpu_info, vcpu_time_info) the engine never touches.  64 bytes. */
typedef struct xe_vcpu_info {
    uint8_t evtchn_upcall_pending;
    uint8_t evtchn_upcall_mask;
    uint8_t _pad[6];
    uint64_t evtchn_pending_sel;
    uint8_t _rest[48];
} xe_vcpu_info;

/* Linux's per-CPU current_word_idx/current_bit_idx: where its 2-level
 * upcall resumes.  Guest memory: checked before use. */
typedef struct xe_l2_scan {
    uint32_t current_word_idx;
    uint32_t current_bit_idx;
} xe_l2_scan;

/*
 * A domain's 2-level memory as the engine sees it: shared_info's two
 * bitmaps, vcpu_info of vCPUs < 32 (inside shared_info) and >= 32 (NULL
 * when nr_vcpus <= 32), Linux's scan positions and the channel table
 * (notify_vcpu says which vCPU an event goes to, and which vCPU's upcall
 * delivers it: Linux's cpu_evtchn_mask).
 */
typedef struct xe_l2_domain {
    uint64_t *pending;
    uint64_t *mask;
    xe_vcpu_info *vcpu_info;
    xe_vcpu_info *vcpu_info_extra;
    xe_l2_scan *scan;
    xe_chan *chans;
    uint32_t nr_vcpus;
    uint32_t nr_chans;
    xe_guest_vcpu *guests;  /* each vCPU's upcall count (xe_guest_vcpu.ready); NULL: not kept */
} xe_l2_domain;

/* Where xe_l2_check found a pointer out of the image (*where). */
#define XE_L2_AT_PENDING 1
#define XE_L2_AT_MASK 2
#define XE_L2_AT_VCPU_INFO 3
#define XE_L2_AT_VCPU_INFO_EXTRA 4
#define XE_L2_AT_SCAN 5
#define XE_L2_AT_CHANS 6

/* Check a 2-level descriptor built from shared memory: 1 <= nr_vcpus <= 256,
 * 2 <= nr_chans <= 131072 (XE_E_STATE, *where 0), and every pointer it holds
 * inside [base, base + size) and aligned (XE_E_RANGE, *where XE_L2_AT_*). */
int xe_l2_check(const xe_l2_domain *d, const void *base, size_t size, uint32_t *where);

/* Hypervisor side (event_2l.c); ports >= min(4096, nr_chans): XE_E_PORT.
 * set_pending/unmask return XE_SP_* bits (see twolevel.c). */
int xe_l2_set_pending(xe_l2_domain *d, uint32_t port);
int xe_l2_unmask(xe_l2_domain *d, uint32_t port);
int xe_l2_clear_pending(xe_l2_domain *d, uint32_t port);
int xe_l2_is_pending(const xe_l2_domain *d, uint32_t port);
int xe_l2_is_masked(const xe_l2_domain *d, uint32_t port);

/* Guest side (Linux events_2l.c). */
uint32_t xe_l2_consume(xe_l2_domain *d, uint32_t vcpu, uint32_t flags, uint32_t *out, uint32_t out_len,
                       uint32_t max_steps, xe_error *err);
int xe_l2_guest_mask(xe_l2_domain *d, uint32_t port);
int xe_l2_guest_unmask(xe_l2_domain *d, uint32_t port, uint32_t vcpu, uint32_t flags);
int xe_l2_guest_clear_pending(xe_l2_domain *d, uint32_t port);

/*
 * Fault switches: a historical bug's order of operations put back, for the
 * replays (xenevt/engine/faults.py names them; off unless a replay turns one
 * on, and only the simulator's engine reads them).  With a fault on, the
 * engine calls the hook at that bug's racy point, so a replay runs the other
 * side's step there: the interleaving forced, not hoped for.
 */
#define XE_FAULT_READY_EVERY_ADD 1   /* Xen before 70ccddb14a: READY set for every event added to a queue */
#define XE_FAULT_OLD_TAIL_LINKED 2   /* Xen before e33d4257fc: a moved port stays its old queue's tail */
#define XE_FAULT_PENDING_UNQUEUED 4  /* Xen before 8aa0e9d2d1: PENDING set for a vCPU without a control block */
#define XE_FAULT_NO_PAGE_DROPPED 8   /* Xen before 917c123029: an event for a port without an array page dropped */
#define XE_FAULT_L2_CPU_MASK_UNSET 16  /* Linux before b0097adeec27: a port in no CPU's cpu_evtchn_mask (2-level) */
#define XE_FAULT_L2_UNMASK_HERE 32   /* Linux before Xen's 3e61615263: unmask resends on its own vCPU, any port's */

/* Hook points (the hook's first argument). */
#define XE_POINT_BEFORE_READY 1      /* set_pending: the event linked at a tail, READY not yet set */
#define XE_POINT_L2_CPU_MASK 2       /* 2-level upcall, a pending unmasked port of this vCPU: the hook's answer,
                                        nonzero where Linux's cpu_evtchn_mask has the port on no CPU */

/* The hook's answer matters only at a point that asks (XE_POINT_L2_CPU_MASK); elsewhere it is ignored. */
typedef uint32_t (*xe_fault_hook_fn)(uint32_t point, uint32_t port);
void xe_faults_set(uint32_t mask, xe_fault_hook_fn hook);
uint32_t xe_faults_get(void);
