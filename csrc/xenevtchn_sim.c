/*
 * The C half of libxenevtchn-sim.so.  The event round trip a program makes
 * over and over -- xenevtchn_notify, the fd's readiness (the guest kernel's
 * upcall handler: one thread per vCPU), xenevtchn_pending, xenevtchn_unmask --
 * runs here over the simulator's mapped state file through csrc/simhost.c,
 * with no Python; what it does not decide (an error to report, a port this
 * handle does not own, an update to finish) goes to the Python half
 * (xenevt_sim_py_*, libglue.py), which also binds, closes and tells this
 * half which handle owns which port (csrc/xenevtchn_sim.h).
 *
 * The parts of libxenevtchn-sim.so that need no simulator: hypercall buffers
 * (plain heap memory here, page-locked memory on Xen), the logger constructor
 * (the simulator's messages go to stderr only when no logger is given, as the
 * real libraries do), xenevtchn_fdopen, which has no simulated device fd, and
 * libxenstore's calls, which have no xenstored (the sim backend reads the
 * simulated nodes itself).
 * Their declarations are csrc/xen_api.h's, below its "implemented in C" line.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "xen_api.h"
#include "xenevt_host.h"
#include "xenevtchn_sim.h"

/* --- the event round trip in C ------------------------------------------------------------------------------- */
#define SIM_SLOT_BITS 12
#define SIM_SLOTS (1u << SIM_SLOT_BITS)  /* open handles at once; a handle is (generation << 12) | slot */
#define SIM_PORTS XE_EVTCHN_FIFO_NR_CHANNELS
#define SIM_BATCH 256
#define SIM_POLL_NS 200000000             /* the upcall threads look at their stop flag this often */

static xe_host *sim_host;                 /* (atomic) NULL: every call goes to Python */
static uint32_t sim_domid;
static pthread_mutex_t sim_lock = PTHREAD_MUTEX_INITIALIZER;  /* the owner table against a handle closing */
static struct { uint64_t hid; int rfd, wfd; } sim_handles[SIM_SLOTS];  /* by slot; hid 0: free */
static uint16_t sim_owner[SIM_PORTS];     /* port -> slot of the handle that bound it, 0 none */
static uint8_t sim_enabled[SIM_PORTS];    /* the evtchn driver's user_evtchn.enabled: no EOI outstanding */
static uint64_t sim_not_enabled;          /* events delivered on a port not enabled (the driver's WARN) */
static pthread_t sim_threads[256];
static uint32_t sim_nthreads;
static int sim_stop;
static int sim_kernel;                    /* (atomic) the C upcall threads run */
static int sim_armed;                     /* (atomic) the Python half holds ports and consumers to give back */
static uint64_t sim_dropped;

static uint32_t slot_of(xenevtchn_handle *xce)
{
    uint64_t hid = (uint64_t)(uintptr_t)xce;
    uint32_t slot = (uint32_t)(hid & (SIM_SLOTS - 1));

    return hid != 0 && __atomic_load_n(&sim_handles[slot].hid, __ATOMIC_ACQUIRE) == hid ? slot : 0;
}

static xe_host *owned(xenevtchn_handle *xce, evtchn_port_t port)
{
    xe_host *h = __atomic_load_n(&sim_host, __ATOMIC_ACQUIRE);
    uint32_t slot = slot_of(xce);

    if (h == NULL || slot == 0 || port >= SIM_PORTS || __atomic_load_n(&sim_owner[port], __ATOMIC_ACQUIRE) != slot)
        return NULL;
    return h;
}

void xenevt_sim_attach(uint64_t host, uint32_t domid)
{
    sim_domid = domid;
    __atomic_store_n(&sim_host, (xe_host *)(uintptr_t)host, __ATOMIC_RELEASE);
}

void xenevt_sim_handle(uint64_t hid, int rfd, int wfd)
{
    uint32_t p, slot = (uint32_t)(hid & (SIM_SLOTS - 1));

    if (slot == 0)
        return;
    pthread_mutex_lock(&sim_lock);
    if (rfd < 0) {
        for (p = 0; p < SIM_PORTS; p++) {
            if (sim_owner[p] == slot)
                __atomic_store_n(&sim_owner[p], 0, __ATOMIC_RELEASE);
        }
    }
    sim_handles[slot].rfd = rfd;
    sim_handles[slot].wfd = wfd;
    __atomic_store_n(&sim_handles[slot].hid, rfd < 0 ? 0 : hid, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&sim_lock);
}

static void set_owner(uint64_t hid, uint32_t port, int own)
{
    uint32_t slot = (uint32_t)(hid & (SIM_SLOTS - 1));

    if (slot != 0 && port < SIM_PORTS && sim_handles[slot].hid == hid) {
        sim_enabled[port] = 1;  /* evtchn_bind_to_user: a port starts enabled */
        __atomic_store_n(&sim_owner[port], own ? (uint16_t)slot : 0, __ATOMIC_RELEASE);
    }
}

void xenevt_sim_own(uint64_t hid, uint32_t port, int own)
{
    pthread_mutex_lock(&sim_lock);
    set_owner(hid, port, own);
    pthread_mutex_unlock(&sim_lock);
}

void xenevt_sim_hold(void)
{
    pthread_mutex_lock(&sim_lock);
}

void xenevt_sim_release(uint64_t hid, uint32_t port)
{
    if (hid != 0)
        set_owner(hid, port, 1);
    pthread_mutex_unlock(&sim_lock);
}

uint64_t xenevt_sim_dropped(void)
{
    return __atomic_load_n(&sim_dropped, __ATOMIC_RELAXED);
}

uint64_t xenevt_sim_not_enabled(void)
{
    return __atomic_load_n(&sim_not_enabled, __ATOMIC_RELAXED);
}

/* fork(): the child shares every open handle's pipe (its events, and the holder count close relies on, as it shares
 * the parent's /dev/xen/evtchn file); no upcall thread may hold the owner table across the fork, or the child could
 * never take it. */
static void at_fork_prepare(void)
{
    pthread_mutex_lock(&sim_lock);
}

static void at_fork_parent(void)
{
    pthread_mutex_unlock(&sim_lock);
}

/* The child has no upcall threads (fork copies only the caller): it starts its own when it asks for events. */
static void at_fork_child(void)
{
    __atomic_store_n(&sim_kernel, 0, __ATOMIC_RELEASE);
    sim_nthreads = 0;
    pthread_mutex_unlock(&sim_lock);
}

/* A library process's exit() releases what it held, as the driver's release does when the process's last
 * descriptor of /dev/xen/evtchn closes: its handles' ports and its vCPUs' consumer locks. */
static void at_exit(void)
{
    if (__atomic_exchange_n(&sim_armed, 0, __ATOMIC_ACQ_REL))
        xenevt_sim_py_exit();
}

void xenevt_sim_arm(int armed)
{
    __atomic_store_n(&sim_armed, armed, __ATOMIC_RELEASE);
}

static void sim_load(void) __attribute__((constructor));
static void sim_load(void)
{
    pthread_atfork(at_fork_prepare, at_fork_parent, at_fork_child);
    atexit(at_exit);
}

/* Linux's upcall handler on one vCPU, routing each port as the evtchn driver does since XSA-332 (drivers/xen/evtchn.c
 * binds every port with the lateeoi chip): lateeoi_ack_dynirq masks the port (the EOI-pending reason) and only then
 * clears PENDING (the consume's XE_CONSUME_MASK | XE_CONSUME_ACK, in that order), so an event the peer sends
 * meanwhile stays pending and unlinked behind the mask; evtchn_interrupt marks the port not enabled and writes it to
 * the owning handle's fd; the EOI (xen_irq_lateeoi from the driver's write(), here xenevtchn_unmask) unmasks it.  A
 * port no handle owns (another process's) is dropped and unmasked again, as it was. */
static void route(xe_host *h, uint32_t port)
{
    uint32_t slot;

    pthread_mutex_lock(&sim_lock);
    slot = port < SIM_PORTS ? sim_owner[port] : 0;
    if (slot == 0 || sim_handles[slot].hid == 0) {
        sim_dropped++;
        pthread_mutex_unlock(&sim_lock);
        xe_host_guest_unmask(h, sim_domid, sim_domid, port);
        return;
    }
    if (!sim_enabled[port])
        sim_not_enabled++;  /* evtchn_interrupt's WARN: "Interrupt for port %u, but apparently not enabled" */
    sim_enabled[port] = 0;
    if (write(sim_handles[slot].wfd, &port, sizeof(port)) != (ssize_t)sizeof(port))
        sim_dropped++;
    pthread_mutex_unlock(&sim_lock);
}

static void *upcall_loop(void *arg)
{
    uint32_t vcpu = (uint32_t)(uintptr_t)arg, out[SIM_BATCH], i;
    struct timespec poll = {0, SIM_POLL_NS};
    xe_error err;
    int n;

    while (!__atomic_load_n(&sim_stop, __ATOMIC_ACQUIRE)) {
        xe_host *h = __atomic_load_n(&sim_host, __ATOMIC_ACQUIRE);
        if (h == NULL)
            break;
        n = xe_host_consume(h, sim_domid, vcpu, XE_CONSUME_MASK | XE_CONSUME_ACK, out, SIM_BATCH, SIM_POLL_NS, &err);
        if (n == XE_HOST_INTR)
            continue;
        if (n == XE_HOST_SLOW && xe_host_vcpu_online(h, sim_domid, vcpu) == 0) {
            nanosleep(&poll, NULL);  /* a vCPU down (VCPUOP_down) runs no upcall handler: wait for it to be up */
            continue;
        }
        if (n < 0)
            break;  /* (an engine error on the queues, a domain gone: the Python kernel stops there too) */
        for (i = 0; i < (uint32_t)n; i++)
            route(h, out[i]);
    }
    return NULL;
}

int xenevt_sim_kernel_start(uint32_t nr_vcpus)
{
    uint32_t v;

    if (__atomic_load_n(&sim_kernel, __ATOMIC_ACQUIRE) || nr_vcpus == 0 || nr_vcpus > 256)
        return -1;
    __atomic_store_n(&sim_stop, 0, __ATOMIC_RELEASE);
    for (v = 0; v < nr_vcpus; v++) {
        if (pthread_create(&sim_threads[v], NULL, upcall_loop, (void *)(uintptr_t)v) != 0)
            break;
    }
    sim_nthreads = v;
    __atomic_store_n(&sim_kernel, 1, __ATOMIC_RELEASE);
    return v == nr_vcpus ? 0 : -1;
}

void xenevt_sim_kernel_stop(void)
{
    uint32_t v;

    __atomic_store_n(&sim_stop, 1, __ATOMIC_RELEASE);
    for (v = 0; v < sim_nthreads; v++) {
        xe_host *h = __atomic_load_n(&sim_host, __ATOMIC_ACQUIRE);
        if (h != NULL)
            xe_host_wake(h, sim_domid, v);  /* (a sleeping thread sees its stop flag now, not at its next poll) */
    }
    for (v = 0; v < sim_nthreads; v++)
        pthread_join(sim_threads[v], NULL);
    sim_nthreads = 0;
    __atomic_store_n(&sim_kernel, 0, __ATOMIC_RELEASE);
}

int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port)
{
    xe_host *h = owned(xce, port);

    if (h != NULL && xe_host_send(h, sim_domid, sim_domid, port) >= 0)
        return 0;
    return xenevt_sim_py_notify(xce, port);
}

xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce)
{
    uint32_t slot = slot_of(xce), port;
    ssize_t n;
    int fd;

    if (slot == 0 || !__atomic_load_n(&sim_kernel, __ATOMIC_ACQUIRE)
        || (fd = __atomic_load_n(&sim_handles[slot].rfd, __ATOMIC_ACQUIRE)) < 0)
        return xenevt_sim_py_pending(xce);  /* (it starts the kernel) */
    n = read(fd, &port, sizeof(port));
    if (n == (ssize_t)sizeof(port))
        return (xenevtchn_port_or_error_t)port;
    if (n >= 0)
        errno = EIO;  /* a short read from the event pipe */
    return -1;
}

/* The evtchn driver's write(): a port with an EOI outstanding (not enabled) is enabled again and EOIed
 * (xen_irq_lateeoi(irq, 0): never spurious, so never delayed; the EOI unmasks it); an enabled one is skipped. */
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port)
{
    xe_host *h = owned(xce, port);

    if (h != NULL && __atomic_load_n(&sim_kernel, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&sim_lock);
        if (sim_enabled[port]) {
            pthread_mutex_unlock(&sim_lock);
            return 0;
        }
        sim_enabled[port] = 1;
        pthread_mutex_unlock(&sim_lock);
    }
    if (h != NULL && xe_host_guest_unmask(h, sim_domid, sim_domid, port) == 0)
        return 0;
    return xenevt_sim_py_unmask(xce, port);
}

/* Any non-NULL logger silences the simulator's stderr messages. */
static struct { int magic; } xe_sim_quiet_logger = { 0x5845 };

xentoollog_logger_stdiostream *xtl_createlogger_stdiostream(FILE *f, int min_level, unsigned flags)
{
    (void)f; (void)min_level; (void)flags;
    return (xentoollog_logger_stdiostream *)&xe_sim_quiet_logger;
}

void xtl_logger_destroy(struct xentoollog_logger *logger)
{
    (void)logger;
}

xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *logger, int fd, unsigned open_flags)
{
    (void)logger; (void)fd; (void)open_flags;
    errno = EOPNOTSUPP;  /* there is no /dev/xen/evtchn fd to adopt on the simulator */
    return NULL;
}

void *xencall_alloc_buffer(xencall_handle *xcall, size_t size)
{
    (void)xcall;
    if (size == 0 || size > (1u << 20)) {
        errno = EINVAL;
        return NULL;
    }
    return calloc(1, size);
}

void xencall_free_buffer(xencall_handle *xcall, void *p)
{
    (void)xcall;
    free(p);
}

unsigned long xc_translate_foreign_address(xc_interface *xch, uint32_t dom, int vcpu, unsigned long long virt)
{
    (void)xch; (void)dom; (void)vcpu; (void)virt;
    errno = EOPNOTSUPP;  /* the simulator's domains run no kernel: there are no page tables to walk */
    return 0;
}

/* libxenstore: there is no xenstored to connect to here (the sim backend reads the simulated nodes itself) */
struct xs_handle *xs_open(unsigned long flags)
{
    (void)flags;
    errno = ENOENT;
    return NULL;
}

void xs_close(struct xs_handle *xsh)
{
    (void)xsh;
}

char **xs_directory(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *num)
{
    (void)h; (void)t; (void)path;
    if (num)
        *num = 0;
    errno = ENOENT;
    return NULL;
}

void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len)
{
    (void)h; (void)t; (void)path;
    if (len)
        *len = 0;
    errno = ENOENT;
    return NULL;
}
