/*
 * The simulator's hot path (csrc/simhost.c): the host lock kept in the state
 * file and the hypercalls a program makes most (EVTCHNOP_send and _status, the
 * guest's upcall loop, the binds' free-port search), in C over the mapped file.  Declared once: the C sources and
 * both cffi builds (xenevt/_build_native.py, the simulator's libxenevtchn in
 * xenevt/sim/simlib.py) read this file after xenevt_fifo_api.h.  Plain
 * #defines only (cffi parses it).
 *
 * The lock slot: the first 64 bytes of the journal page (statefile.py's
 * table), written only through xe_lock_*:
 *   0x00  48  a glibc pthread mutex, PTHREAD_PROCESS_SHARED and ROBUST: a holder
 *             killed at any instant is seen by the next taker (EOWNERDEAD);
 *   0x30  4   magic XE_LOCK_MAGIC once the mutex is formatted (0: not yet);
 *   0x34  4   pid of the holder (0 when free; reports only);
 *   0x38  8   reserved (0).
 * A take and a give leave these bytes as they were (xe_lock_init takes and
 * gives once: glibc changes one field on a mutex's first use only).
 */

#define XE_LOCK_MAGIC 0x4b434c58        /* "XLCK" */
#define XE_LOCK_SLOT_SIZE 64
#define XE_LOCK_OK 0
#define XE_LOCK_RECOVER 1               /* taken; the journal holds an update to finish, or the holder died */
#define XE_LOCK_OWNER_DIED 2            /* (bit, with XE_LOCK_RECOVER) the previous holder died holding it */

/* xe_host_send: not decided here (an error to report, a record to check
 * more closely, an update to finish first): the caller's Python path runs
 * the hypercall instead, and says why in its own words. */
#define XE_HOST_SLOW -100
/* xe_host_consume: a signal came while it slept (nothing taken): call again once the caller has handled it */
#define XE_HOST_INTR -101

/* The simulator's per-vCPU upcall word (engine/layout.py UPCALL_OFFSET): a
 * count of upcalls in bits 0..30, and a sleeper's flag that makes the next
 * kick wake the futex (a kick with no sleeper makes no system call). */
#define XE_UPCALL_WAITERS 0x80000000
#define XE_UPCALL_COUNT 0x7fffffff

/* One domain of the host as the hot path sees it.  The caller (Python's
 * HostFile) fills the numbers from the file's domain table and the image's
 * geometry; xe_host_dom_setup checks them against the mapping and builds
 * the pointers. */
typedef struct xe_host_dom {
    uint32_t domid;
    uint32_t version;          /* the image's layout version (2-level section from 2) */
    uint64_t entry_offset;     /* the domain table entry, from the file's start */
    uint64_t image_offset;
    uint64_t image_size;
    uint64_t stats_offset;     /* in the counters file (bytes), when it is mapped */
    uint32_t nr_vcpus;
    uint32_t max_pages;
    uint32_t nr_chans;
    uint32_t pages_offset;     /* the rest: from the image's start (Geometry) */
    uint32_t cb_pages_offset;
    uint32_t tails_offset;
    uint32_t guest_offset;
    uint32_t chans_offset;
    uint32_t l2_offset;
    uint32_t l2_extra_offset;
    uint32_t l2_scan_offset;
    /* built by xe_host_dom_setup */
    uint32_t ok;
    uint32_t gen;              /* the image generation the FIFO descriptor was built at */
    uint32_t fifo_ok;
    uint32_t *entry;
    uint32_t *hdr;
    uint8_t *image;
    uint8_t *stats;            /* raised, delivered per port (u64 pairs, unaligned), or NULL */
    xe_guest_vcpu *guests;
    xe_domain fifo;
    xe_control_block *cbs[256];
    xe_l2_domain l2;
} xe_host_dom;

typedef struct xe_host {
    uint8_t *base;             /* the whole state file, mapped shared */
    uint64_t size;
    uint64_t journal_offset;   /* the file's last page */
    uint8_t *stats_base;       /* the counters file, mapped shared, or NULL */
    uint64_t stats_size;
    uint32_t nr_doms;
    uint32_t crash_sleep_us;   /* XENEVT_SIM_CRASH_SLEEP: sleep up to this inside a raise (kill campaigns) */
    int fd;                    /* the state file: its size is checked on each use */
    uint32_t rng;
    uint32_t refreshing;       /* a thread of this process is re-reading a descriptor */
    uint32_t *journal;
    void *slot;                /* the lock slot: the journal page's, unless the caller set its own */
    xe_host_dom *doms;         /* nr_doms of them */
    int map_id;                /* base's xe_map_watch id (0: unwatched: the size is asked of fstat) */
} xe_host;

/* --- the lock (csrc/hostfile.c; any 64-byte, 8-aligned slot in a MAP_SHARED mapping) --- */
int xe_lock_init(void *slot);          /* format: 0, or -errno */
int xe_lock_ready(const void *slot);   /* 1 when formatted */
/* Take it, waiting at most timeout_ns (0: not at all; < 0: no limit):
 * XE_LOCK_OK, XE_LOCK_RECOVER | maybe XE_LOCK_OWNER_DIED (made consistent
 * already: the caller runs the journal recovery), or -errno (EDEADLK: this
 * thread holds it; ETIMEDOUT: someone else still does). */
int xe_lock_take_for(void *slot, int64_t timeout_ns);
/* xe_lock_take_for(slot, XE_LOCK_C_WAIT_NS): the C hot path's take (on
 * ETIMEDOUT it leaves the call to Python, which waits and says who holds it) */
#define XE_LOCK_C_WAIT_NS 1000000000
int xe_lock_take(void *slot);
void xe_lock_give(void *slot);
/* Give it if the calling thread holds it: 1 given, 0 not held here (every
 * error and unmap path calls it: the lock never outlives its page held) */
int xe_lock_give_mine(void *slot);
int xe_lock_mine(const void *slot);    /* 1: the calling thread holds it */
uint32_t xe_lock_holder(const void *slot);  /* the holder's pid, as it wrote it (0: none) */
uint32_t xe_lock_owner(const void *slot);   /* the holding thread's id, as the mutex names it (0: none) */
/* A lock held by a thread that is gone (its robust list could not reach the
 * page: unmapped while held) formatted again, if `owner` still holds it;
 * 0, -EAGAIN (it moved on), or -errno.  The caller has checked that thread
 * is dead, serialises takers-over (flock) and runs the journal's recovery. */
int xe_lock_take_over(void *slot, uint32_t owner);

/* --- the guard over mappings of a file that may shrink (csrc/hostfile.c) --- */
/* Watch a page-aligned mapping: a SIGBUS inside it (its file shrank) maps
 * zero pages from the fault to its end and flags it, instead of killing the
 * process.  Returns an id >= 1, or -errno (ENOSPC: 256 watched already). */
int xe_map_watch(void *base, uint64_t size);
void xe_map_unwatch(int id);           /* before the mapping goes */
int xe_map_faulted(int id);            /* 1: it faulted (the file changed size under it) */
int xe_map_guarded(void);              /* 1: the SIGBUS handler is installed */

/* --- the host --- */
/* base/size/journal_offset/doms/nr_doms set: checks and builds; 0, or -1
 * with *bad the index of the first domain refused (nr_doms: the journal). */
int xe_host_setup(xe_host *h, uint32_t *bad);
/* xe_lock_take on the host's slot, plus XE_LOCK_RECOVER when the journal
 * has an intent record or a raise mark. */
int xe_host_lock(xe_host *h);
void xe_host_unlock(xe_host *h);
/* Re-read a domain's FIFO descriptor (pages, control blocks) from its header,
 * checked; 0, or a negative XE_E_* code (the descriptor then has no page). */
int xe_host_refresh(xe_host *h, xe_host_dom *d);

/* EVTCHNOP_send by `caller` on its port `port` of domain `domid`, whole: the
 * file size, the lock, the checks in Xen's order, the raise (raise mark,
 * the ABI's engine), the raised counter, the vCPU kick, the unlock.  Returns
 * the XE_SP_* bits | target port << 12 | target domain << 32 (a raise), or
 * XE_HOST_SLOW for everything else (errors, unbound, Xen's ports, records to
 * check more closely): the caller runs the Python hypercall. */
int64_t xe_host_send(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port);

/* xe_host_status's answer: the channel record's own fields and the port's event word, raw (Python names the
 * state, picks the fields the state gives meaning to and decodes the word, as ports.chan_status does). */
typedef struct xe_port_status {
    uint32_t domid;            /* the domain asked about (DOMID_SELF: the caller) */
    uint32_t state;            /* ECS_* (Xen's struct evtchn state) */
    uint32_t notify_vcpu;
    uint32_t remote_dom;
    uint32_t remote_port;
    uint32_t aux;              /* the VIRQ or PIRQ */
    uint32_t priority;
    uint32_t word;             /* FIFO: the event word; 2-level: its pending and mask bits in the word's places */
    uint32_t fifo;             /* 1: the domain is on FIFO; 0: 2-level */
    uint32_t has_word;         /* 0: the port has no word (past the array, or past 2-level's 4096 ports) */
} xe_port_status;

/* EVTCHNOP_status by `caller` of port `port` of domain `domid` (DOMID_SELF allowed), under the host lock (Xen's
 * evtchn_read_lock): the checks in Xen's order (the domain, port_is_valid, who may ask), *out filled.  Returns
 * 0, or XE_HOST_SLOW for everything else (an error to report, a port Xen consumes, a record to check more
 * closely, an update to finish): the caller runs the Python hypercall. */
int xe_host_status(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port, xe_port_status *out);

/* Xen's get_free_port() over domain `domid`'s channel table, as Hypercalls._get_free_port scans it: the lowest
 * port in [start, nr) whose channel is free and whose event word, where it has one, is not LINKED (a freed
 * port whose event is still queued: Xen's evtchn_port_is_busy()).  The caller holds the host lock and keeps
 * the lowest-free hint (start).  Returns the port; 0 when there is none (ENOSPC); XE_HOST_SLOW when start or
 * nr do not fit the table, or the header cannot be read as Python reads it (Python says why).  *first_free:
 * the first free port at or after start, busy or not (nr when there is none): the caller's next hint. */
int xe_host_free_port(xe_host *h, uint32_t domid, uint32_t start, uint32_t nr, uint32_t *first_free);

/* The guest kernel's upcall handler on `vcpu` of domain `domid` (its vCPU
 * claimed by the caller): consume a batch (`flags`: XE_CONSUME_ACK clears
 * PENDING as Linux's ack_dynirq does; with XE_CONSUME_MASK the port is
 * masked first, as lateeoi_ack_dynirq does), count deliveries, and
 * sleep on the upcall word until a kick when there is none, at most
 * timeout_ns (< 0: no limit).  Returns the number of ports in out (0: timed
 * out), XE_HOST_SLOW (the caller's Python path decides), XE_HOST_INTR (a
 * signal: call again), or -1 with *err set (an engine error on the queues). */
int xe_host_consume(xe_host *h, uint32_t domid, uint32_t vcpu, uint32_t flags, uint32_t *out,
                    uint32_t max_events, int64_t timeout_ns, xe_error *err);

/* The guest kernel's mask and unmask of its own port (Linux's: locally, or
 * EVTCHNOP_unmask when the port is pending); 0 (mask: the bit's old value),
 * or XE_HOST_SLOW: the Python path decides (and says what is wrong). */
int xe_host_guest_mask(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port);
int xe_host_guest_unmask(xe_host *h, uint32_t caller, uint32_t domid, uint32_t port);

/* Whether vCPU `vcpu` of domain `domid` is up (1), down or never up (0: no upcall handler runs on it), or -1
 * (no such domain or vCPU). */
int xe_host_vcpu_online(xe_host *h, uint32_t domid, uint32_t vcpu);

/* vcpu_mark_events_pending(): vcpu_info's upcall flag, the upcall word
 * bumped, sleepers woken (a futex wake only when one announced itself). */
void xe_host_kick(xe_host *h, uint32_t index, uint32_t vcpu);
/* Wake whoever sleeps on the vCPU's upcall word, changing nothing (a
 * consumer told to stop). */
void xe_host_wake(xe_host *h, uint32_t domid, uint32_t vcpu);
/* The upcall word alone, for callers with their own word pointer. */
void xe_upcall_bump(uint32_t *word);
/* Sleep while the word's count is `seq` (announcing the sleeper), at most
 * timeout_ns (< 0: no limit); 0, or -errno of the futex call (-EINTR: a signal). */
int xe_upcall_sleep(uint32_t *word, uint32_t seq, int64_t timeout_ns);
