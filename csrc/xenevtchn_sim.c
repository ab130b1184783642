/*
 * The parts of libxenevtchn-sim.so that need no simulator: hypercall buffers
 * (plain heap memory here, page-locked memory on Xen), the logger constructor
 * (the simulator's messages go to stderr only when no logger is given, as the
 * real libraries do), xenevtchn_fdopen, which has no simulated device fd, and
 * libxenstore's calls, which have no xenstored (the sim backend reads the
 * simulated nodes itself).
 * Their declarations are csrc/xen_api.h's, below its "implemented in C" line.
 */
#include <errno.h>
#include <stdlib.h>

#include "xen_api.h"

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
