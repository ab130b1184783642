/*
 * The xen backend's per-event loop over libxenevtchn (API in
 * xenevt_evtchn_api.h).  The port a read returns comes from the kernel's
 * ring, which any peer can fill: it is checked against the bitmap's size
 * before the bitmap is read.  The loop is bounded by max; re-waits after a
 * dropped stale event are bounded by the caller's timeout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <time.h>

#include "xenevt_evtchn.h"

typedef int (*notify_fn)(void *h, uint32_t port);
typedef int (*pending_fn)(void *h);
typedef int (*unmask_fn)(void *h, uint32_t port);

static int fail(xe_evtchn *e, int call, int64_t port, int taken)
{
    e->err = errno ? errno : EIO;
    e->failed_call = call;
    e->failed_port = port;
    e->taken = taken;
    return XE_EVTCHN_FAILED;
}

static int owned(const xe_evtchn *e, int port)
{
    return port >= 0 && port < XE_EVTCHN_MAX_PORTS && (e->own[port >> 3] >> (port & 7) & 1);
}

/* milliseconds on the coarse clock: a jiffy's precision, but never a system call (the precise clock is one on
 * a Xen PV guest whose TSC Xen calls unstable, as under QEMU); it times a call's timeout across re-waits */
static int64_t coarse_ms(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) < 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* what is left of timeout_ms since start, into ->left_ms (-1 and 0 stay as they are) */
static void left(xe_evtchn *e, int64_t start, int timeout_ms)
{
    int64_t rest = timeout_ms - (coarse_ms() - start);

    if (timeout_ms > 0)
        e->left_ms = rest > 0 ? (int)rest : 0;
}

int xe_evtchn_notify(xe_evtchn *e, uint32_t port)
{
    errno = 0;
    if (((notify_fn)e->notify_fn)(e->handle, port) < 0)
        return fail(e, XE_CALL_NOTIFY, port, 0);
    return 0;
}

int xe_evtchn_consume(xe_evtchn *e, uint32_t *out, int max, int timeout_ms)
{
    struct pollfd pfd = {.fd = e->fd, .events = POLLIN};
    int64_t start = timeout_ms > 0 ? coarse_ms() : 0;
    int n = 0, port, r;

    e->taken = 0;
    e->left_ms = timeout_ms;
    while (n < max) {
        r = poll(&pfd, 1, n ? 0 : e->left_ms);
        if (r < 0 && errno == EINTR) {
            if (n)
                break;  /* return what was taken; the signal is handled before the next call */
            left(e, start, timeout_ms);
            return XE_EVTCHN_INTR;
        }
        if (r < 0)
            return fail(e, XE_CALL_POLL, -1, n);
        if (r == 0)
            break;
        errno = 0;
        port = ((pending_fn)e->pending_fn)(e->handle);
        if (port < 0)
            return fail(e, XE_CALL_PENDING, -1, n);
        if (!owned(e, port)) {  /* raised before we unbound it (Xen leaves a new interdomain end pending) */
            e->stale++;
            if (!n)
                left(e, start, timeout_ms);  /* wait again, for what is left of the caller's time */
            continue;
        }
        out[n++] = (uint32_t)port;
        errno = 0;
        if (((unmask_fn)e->unmask_fn)(e->handle, (uint32_t)port) < 0)
            return fail(e, XE_CALL_UNMASK, port, n);
    }
    return n;
}

int xe_evtchn_notify_consume(xe_evtchn *e, uint32_t port, uint32_t *out, int max, int timeout_ms)
{
    if (xe_evtchn_notify(e, port) < 0)
        return XE_EVTCHN_FAILED;
    return xe_evtchn_consume(e, out, max, timeout_ms);
}
