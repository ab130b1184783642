/*
 * The C API of Xen's tool libraries as xenevt uses it, declared once: the names,
 * signatures and struct layouts of Xen 4.17's xenevtchn.h, the event-channel part
 * of xenctrl.h, xencall.h, xenforeignmemory.h and xentoollog.h, and struct
 * evtchn_status from xen/include/public/event_channel.h.
 *
 * Read by both sides:
 * - the real binding (xenevt/backend/xen/libs.py) gives all of it to cffi's cdef
 *   and dlopens the libraries at run time;
 * - the simulator's libxenevtchn-sim.so (xenevt/sim/simlib.py) compiles
 *   csrc/xenevtchn_sim.c, which includes this file, and gives cffi's
 *   embedding_api the part above the "implemented in C" line: those functions
 *   are written in Python (xenevt/sim/libglue.py); the ones below it are C.
 * cffi reads no preprocessor lines, so xenevt drops every line starting with '#'
 * before handing this text to cffi; they are here for the C compiler only.
 */
#ifndef XENEVT_XEN_API_H
#define XENEVT_XEN_API_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;
typedef unsigned long xen_pfn_t;
typedef int xenevtchn_port_or_error_t;
struct xentoollog_logger;
typedef struct xentoollog_logger_stdiostream xentoollog_logger_stdiostream;
typedef struct xenevtchn_handle xenevtchn_handle;
typedef struct xc_interface_core xc_interface;
typedef struct xencall_handle xencall_handle;
typedef struct xenforeignmemory_handle xenforeignmemory_handle;
struct xs_handle;
typedef uint32_t xs_transaction_t;

/* EVTCHNOP_status's argument: dom and port IN, the rest OUT (xen/include/public/event_channel.h) */
struct evtchn_status {
    domid_t dom;
    evtchn_port_t port;
    uint32_t status;  /* EVTCHNSTAT_* */
    uint32_t vcpu;
    union {
        struct { domid_t dom; } unbound;
        struct { domid_t dom; evtchn_port_t port; } interdomain;
        uint32_t pirq;
        uint32_t virq;
    } u;
};

/* xenevtchn.h */
xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid);
xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                     evtchn_port_t remote_port);
xenevtchn_port_or_error_t xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
int xenevtchn_restrict(xenevtchn_handle *xce, domid_t domid);

/* xenctrl.h (xc_evtchn_status_t is struct evtchn_status) */
xc_interface *xc_interface_open(struct xentoollog_logger *logger, struct xentoollog_logger *dombuild_logger,
                                unsigned open_flags);
int xc_interface_close(xc_interface *xch);
int xc_evtchn_alloc_unbound(xc_interface *xch, uint32_t dom, uint32_t remote_dom);
int xc_evtchn_reset(xc_interface *xch, uint32_t dom);
int xc_evtchn_status(xc_interface *xch, struct evtchn_status *status);
int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms, void *info);  /* to 4.17 */
/* info: xc_domaininfo_t[max_domains] (its size is the hypervisor interface's; its first field is the domid) */
int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain, unsigned int max_domains, void *info);
int xc_send_debug_keys(xc_interface *xch, const char *keys);
int xc_readconsolering(xc_interface *xch, char *buffer, unsigned int *pnr_chars, int clear, int incremental,
                       uint32_t *pindex);

/* xenforeignmemory.h */
xenforeignmemory_handle *xenforeignmemory_open(struct xentoollog_logger *logger, unsigned open_flags);
int xenforeignmemory_close(xenforeignmemory_handle *fmem);
void *xenforeignmemory_map(xenforeignmemory_handle *fmem, uint32_t dom, int prot, size_t pages,
                           const xen_pfn_t arr[], int err[]);
int xenforeignmemory_unmap(xenforeignmemory_handle *fmem, void *addr, size_t pages);

/* xencall.h */
xencall_handle *xencall_open(struct xentoollog_logger *logger, unsigned open_flags);
int xencall_close(xencall_handle *xcall);
int xencall2(xencall_handle *xcall, unsigned int op, uint64_t arg1, uint64_t arg2);

/* ---- implemented in C: the simulator's versions of what follows need no simulator, or run over its mapped
 * state file in C (xenevtchn_sim.c) ---- */

/* xencall.h: hypercall buffers */
void *xencall_alloc_buffer(xencall_handle *xcall, size_t size);
void xencall_free_buffer(xencall_handle *xcall, void *p);

/* xentoollog.h (min_level is an enum xentoollog_level) */
xentoollog_logger_stdiostream *xtl_createlogger_stdiostream(FILE *f, int min_level, unsigned flags);
void xtl_logger_destroy(struct xentoollog_logger *logger);

/* xenevtchn.h */
xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *logger, int fd, unsigned open_flags);
/* the event round trip, C over the mapped state file (falling back to the Python half for the rest) */
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);

/* xenctrl.h: the frame behind a guest's virtual address, walking vCPU vcpu's page tables (an MFN on PV, a GFN
 * on HVM); 0 with errno set on failure (EADDRNOTAVAIL: not mapped).  The simulator runs no guest kernel. */
unsigned long xc_translate_foreign_address(xc_interface *xch, uint32_t dom, int vcpu, unsigned long long virt);

/* xenstore.h (libxenstore): what names ports; xs_directory's and xs_read's results are one malloc'd block each
 * (free()); the simulator's library has no xenstored (its xenstore is the sim backend's, see sim/xenstore.py) */
struct xs_handle *xs_open(unsigned long flags);
void xs_close(struct xs_handle *xsh);
char **xs_directory(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *num);
void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len);

#endif
