/*
 * The two borders every process of the simulator shares over its state file (declarations:
 * xenevt_host_api.h): the host lock in the file, and the guard over a mapping of a file that may change size.
 *
 * The lock is a robust, process-shared pthread mutex in the journal page's first 64 bytes.  A holder killed at
 * any instant is seen by the next taker (EOWNERDEAD, the kernel's robust futex list, walked at the holder's
 * exit while the page is still mapped); the mutex is made consistent and the caller runs the journal's
 * recovery.  Takes are bounded (xe_lock_take_for), so a holder that never gives it back is reported, not
 * waited on in silence, and a lock whose holder's robust list could not reach it (a page unmapped while held:
 * its thread is gone, the mutex still names it) can be taken over (xe_lock_take_over).
 *
 * The guard: a file truncated under a mapping faults (SIGBUS) on any page past its new end, in Python's
 * memoryview reads and the C hot paths alike.  A watched mapping's faulting page and the rest of it are
 * replaced by zero pages and the mapping is flagged; the caller checks the flag after each operation and says
 * in one line that the file changed size.  Any other SIGBUS goes to the handler that was there before.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fifo_internal.h"
#include "xenevt_host.h"

#define PAGE 4096u

typedef struct xe_lock_slot {
    pthread_mutex_t mutex;
    uint8_t _pad[48 - sizeof(pthread_mutex_t)];
    uint32_t magic;
    uint32_t holder;
    uint32_t _rsvd[2];
} xe_lock_slot;

_Static_assert(sizeof(pthread_mutex_t) <= 48, "the mutex fits the lock slot");
_Static_assert(sizeof(xe_lock_slot) == XE_LOCK_SLOT_SIZE, "the lock slot is 64 bytes");

/* This process's pid, for the slot's holder field: getpid() is a system call (glibc caches nothing), so it is
 * asked once per process (a forked child asks again) */
static pid_t self_pid;
static pthread_once_t self_pid_once = PTHREAD_ONCE_INIT;

static void self_pid_forget(void)
{
    self_pid = 0;
}

static void self_pid_hook(void)
{
    pthread_atfork(NULL, NULL, self_pid_forget);
}

static uint32_t my_pid(void)
{
    if (self_pid == 0) {
        pthread_once(&self_pid_once, self_pid_hook);
        self_pid = getpid();
    }
    return (uint32_t)self_pid;
}

/* --- the lock ---------------------------------------------------------------------------------------------- */
int xe_lock_init(void *slot)
{
    xe_lock_slot *s = slot;
    pthread_mutexattr_t a;
    int rc;

    memset(s, 0, sizeof(*s));
    if ((rc = pthread_mutexattr_init(&a)) != 0)
        return -rc;
    rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    if (rc == 0)
        rc = pthread_mutex_init(&s->mutex, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0)
        return -rc;
    /* taken and given once: glibc leaves a field changed by the first use only, so from here a take and a give
     * leave the slot's bytes as they were (a file that was only read stays byte for byte the same) */
    if ((rc = pthread_mutex_lock(&s->mutex)) != 0)
        return -rc;
    pthread_mutex_unlock(&s->mutex);
    __atomic_store_n(&s->magic, XE_LOCK_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

int xe_lock_ready(const void *slot)
{
    return __atomic_load_n(&((const xe_lock_slot *)slot)->magic, __ATOMIC_ACQUIRE) == XE_LOCK_MAGIC;
}

/* The thread the mutex names as its holder: glibc keeps a robust mutex's futex word as the kernel reads it,
 * the owner's thread id in FUTEX_TID_MASK (0: free, or its owner died and the kernel said so) */
uint32_t xe_lock_owner(const void *slot)
{
    const xe_lock_slot *s = slot;

    return (uint32_t)__atomic_load_n(&s->mutex.__data.__lock, __ATOMIC_RELAXED) & FUTEX_TID_MASK;
}

int xe_lock_mine(const void *slot)
{
    return xe_lock_owner(slot) == (uint32_t)gettid();
}

int xe_lock_take_for(void *slot, int64_t timeout_ns)
{
    xe_lock_slot *s = slot;
    struct timespec at;
    int rc, out = XE_LOCK_OK;

    if (!xe_lock_ready(s))
        return -EINVAL;
    rc = pthread_mutex_trylock(&s->mutex);  /* (the common case: free, one atomic exchange as a lock's) */
    if (rc == EBUSY && xe_lock_mine(s))
        return -EDEADLK;  /* (an ERRORCHECK mutex's trylock says EBUSY to its holder too) */
    if (rc == EBUSY && timeout_ns < 0) {
        rc = pthread_mutex_lock(&s->mutex);
    } else if (rc == EBUSY && timeout_ns > 0) {
        clock_gettime(CLOCK_MONOTONIC, &at);
        at.tv_sec += (time_t)(timeout_ns / 1000000000);
        at.tv_nsec += (long)(timeout_ns % 1000000000);
        if (at.tv_nsec >= 1000000000) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000;
        }
        rc = pthread_mutex_clocklock(&s->mutex, CLOCK_MONOTONIC, &at);
    } else if (rc == EBUSY) {
        rc = ETIMEDOUT;
    }
    if (rc == EOWNERDEAD) {
        /* consistent at once: the journal, not the mutex, says what to redo; a taker killed before it has
         * finished leaves the journal as it found it, and the next one redoes it again */
        pthread_mutex_consistent(&s->mutex);
        out = XE_LOCK_RECOVER | XE_LOCK_OWNER_DIED;
    } else if (rc != 0) {
        return -rc;
    }
    __atomic_store_n(&s->holder, my_pid(), __ATOMIC_RELAXED);
    return out;
}

int xe_lock_take(void *slot)
{
    return xe_lock_take_for(slot, XE_LOCK_C_WAIT_NS);
}

void xe_lock_give(void *slot)
{
    xe_lock_slot *s = slot;

    __atomic_store_n(&s->holder, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->mutex);
}

int xe_lock_give_mine(void *slot)
{
    if (!xe_lock_ready(slot) || !xe_lock_mine(slot))
        return 0;
    xe_lock_give(slot);
    return 1;
}

uint32_t xe_lock_holder(const void *slot)
{
    return __atomic_load_n(&((const xe_lock_slot *)slot)->holder, __ATOMIC_RELAXED);
}

int xe_lock_take_over(void *slot, uint32_t owner)
{
    if (owner == 0 || xe_lock_owner(slot) != owner)
        return -EAGAIN;  /* given back, or taken over already, since the caller looked */
    return xe_lock_init(slot);
}

/* --- the guard over mappings of a file that may shrink ------------------------------------------------------- */
#define XE_MAPS 256

static struct {
    uintptr_t base;            /* 0: a free entry; 1: one being filled */
    uintptr_t end;             /* page-rounded */
    uint32_t faulted;
} maps[XE_MAPS];
static struct sigaction bus_prev;
static pthread_mutex_t bus_install_lock = PTHREAD_MUTEX_INITIALIZER;
static int bus_installed;

static void bus_chain(int sig, siginfo_t *si, void *uc)
{
    if (bus_prev.sa_flags & SA_SIGINFO) {
        bus_prev.sa_sigaction(sig, si, uc);
        return;
    }
    if (bus_prev.sa_handler == SIG_IGN)
        return;
    if (bus_prev.sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    bus_prev.sa_handler(sig);
}

/* async-signal-safe: atomic loads, one mmap(2) */
static void bus_handler(int sig, siginfo_t *si, void *uc)
{
    uintptr_t a = (uintptr_t)si->si_addr, base, end, page = a & ~(uintptr_t)(PAGE - 1);
    int i, saved = errno;

    if (si->si_code == BUS_ADRERR) {
        for (i = 0; i < XE_MAPS; i++) {
            base = __atomic_load_n(&maps[i].base, __ATOMIC_ACQUIRE);
            end = __atomic_load_n(&maps[i].end, __ATOMIC_ACQUIRE);
            if (base <= 1 || a < base || a >= end)  /* (1: an entry being filled) */
                continue;
            /* the faulting page to the mapping's end: the file ends before it, the rest is past the end too */
            if (mmap((void *)page, end - page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                     0) == MAP_FAILED)
                break;
            __atomic_store_n(&maps[i].faulted, 1, __ATOMIC_RELEASE);
            errno = saved;
            return;  /* the load or store runs again, on a zero page */
        }
    }
    bus_chain(sig, si, uc);
}

/* Ours, unless someone (faulthandler.enable()) put theirs since: then theirs is chained behind ours */
static int bus_install(void)
{
    struct sigaction sa, cur;
    int ok = 1;

    pthread_mutex_lock(&bus_install_lock);
    if (sigaction(SIGBUS, NULL, &cur) != 0 || !(cur.sa_flags & SA_SIGINFO) || cur.sa_sigaction != bus_handler) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = bus_handler;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        ok = sigaction(SIGBUS, &sa, &bus_prev) == 0;
    }
    __atomic_store_n(&bus_installed, ok, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&bus_install_lock);
    return ok;
}

int xe_map_watch(void *base, uint64_t size)
{
    uintptr_t b = (uintptr_t)base, none;
    int i;

    if (base == NULL || size == 0 || b % PAGE)
        return -EINVAL;
    if (!bus_install())
        return -errno;
    for (i = 0; i < XE_MAPS; i++) {
        none = 0;  /* reserved (base 1 matches no fault: its end is 0 meanwhile), filled, then published */
        if (!__atomic_compare_exchange_n(&maps[i].base, &none, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        __atomic_store_n(&maps[i].end, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&maps[i].faulted, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&maps[i].end, b + ((size + PAGE - 1) & ~(uint64_t)(PAGE - 1)), __ATOMIC_RELEASE);
        __atomic_store_n(&maps[i].base, b, __ATOMIC_RELEASE);
        return i + 1;
    }
    return -ENOSPC;
}

void xe_map_unwatch(int id)
{
    if (id < 1 || id > XE_MAPS)
        return;
    __atomic_store_n(&maps[id - 1].base, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&maps[id - 1].faulted, 0, __ATOMIC_RELEASE);
}

int xe_map_faulted(int id)
{
    return id >= 1 && id <= XE_MAPS && __atomic_load_n(&maps[id - 1].faulted, __ATOMIC_ACQUIRE);
}

int xe_map_guarded(void)
{
    return __atomic_load_n(&bus_installed, __ATOMIC_ACQUIRE);
}
