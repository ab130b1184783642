/*
 * The xen backend's hot path (csrc/evtchn_loop.c): what a libxenevtchn
 * program does per event (poll the evtchn fd, read a port, unmask it) and
 * per send, in C, so that a Python caller pays one call per batch instead of
 * four library calls through libffi and a poll object.  The functions it calls
 * are libxenevtchn's own, dlopened by xenevt/backend/xen/libs.py (cffi ABI
 * mode) and handed over as addresses: this file links against no Xen library.
 * Declared once: the C sources and xenevt/_build_native.py read this file.
 * Plain #defines only (cffi parses it).
 */

/* the ports a handle may own: EVTCHN_FIFO_NR_CHANNELS (2-level has fewer) */
#define XE_EVTCHN_MAX_PORTS 131072

/* xe_evtchn_consume's and xe_evtchn_notify's failures (events already taken are in out[] and counted in
 * ->taken; the failed call and its errno in ->failed_call, ->err and ->failed_port) */
#define XE_EVTCHN_FAILED -1
#define XE_EVTCHN_INTR -2   /* a signal came while polling: handle it, then call again with ->left_ms */

#define XE_CALL_POLL 1
#define XE_CALL_PENDING 2
#define XE_CALL_UNMASK 3
#define XE_CALL_NOTIFY 4

typedef struct xe_evtchn {
    void *handle;               /* xenevtchn_handle * */
    int fd;                     /* xenevtchn_fd(handle) */
    int err;                    /* errno of the failed call */
    int failed_call;            /* XE_CALL_* */
    int taken;                  /* events taken before a failure */
    int left_ms;                /* after XE_EVTCHN_INTR: what is left of the timeout (-1: none) */
    int64_t failed_port;        /* the port the failed call was about (-1: none) */
    uint64_t stale;             /* events read on ports this handle no longer owns, dropped */
    void *notify_fn;            /* int xenevtchn_notify(xenevtchn_handle *, evtchn_port_t) */
    void *pending_fn;           /* xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *) */
    void *unmask_fn;            /* int xenevtchn_unmask(xenevtchn_handle *, evtchn_port_t) */
    uint8_t *own;               /* bitmap of the ports this handle bound, XE_EVTCHN_MAX_PORTS bits */
} xe_evtchn;

/* EVTCHNOP_send on a port of the handle: 0, or XE_EVTCHN_FAILED (errno in ->err). */
int xe_evtchn_notify(xe_evtchn *e, uint32_t port);

/* Up to max events on owned ports into out[]: poll waits at most timeout_ms for the first (-1: no limit, 0: do
 * not wait), later ones are taken only if already there.  Each port read is unmasked; a port not owned (raised
 * before its unbind) is dropped, not unmasked, and counted in ->stale.  Returns the count (0: none came in
 * time), XE_EVTCHN_INTR or XE_EVTCHN_FAILED. */
int xe_evtchn_consume(xe_evtchn *e, uint32_t *out, int max, int timeout_ms);

/* A round trip's one call: xe_evtchn_notify on port, then xe_evtchn_consume.  A send that fails returns
 * XE_EVTCHN_FAILED (->failed_call XE_CALL_NOTIFY, nothing taken); after XE_EVTCHN_INTR the send has been made:
 * call xe_evtchn_consume with ->left_ms. */
int xe_evtchn_notify_consume(xe_evtchn *e, uint32_t port, uint32_t *out, int max, int timeout_ms);
