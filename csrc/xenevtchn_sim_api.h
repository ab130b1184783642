/*
 * The C API that libxenevtchn-sim.so exports: the same names and signatures as
 * Xen 4.17's xenevtchn.h, plus the event-channel subset of xenctrl.h and
 * xencall.h and xenforeignmemory.h (frames of the simulated guests' shared pages)
 * and the one xentoollog constructor callers use.  Implemented by
 * xenevt/sim/libglue.py over the simulated host (cffi embedding), except the
 * pieces in xenevtchn_sim.c.  Also read by cffi as its embedding_api.
 */
typedef int xenevtchn_port_or_error_t;
typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;
typedef struct xenevtchn_handle xenevtchn_handle;
struct xentoollog_logger;

xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid);
xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                     evtchn_port_t remote_port);
xenevtchn_port_or_error_t xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);
int xenevtchn_restrict(xenevtchn_handle *xce, domid_t domid);

typedef struct xc_interface_core xc_interface;
xc_interface *xc_interface_open(struct xentoollog_logger *logger, struct xentoollog_logger *dombuild_logger,
                                unsigned open_flags);
int xc_interface_close(xc_interface *xch);
int xc_evtchn_alloc_unbound(xc_interface *xch, uint32_t dom, uint32_t remote_dom);
int xc_evtchn_reset(xc_interface *xch, uint32_t dom);
int xc_evtchn_status(xc_interface *xch, void *status);
int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms, void *info);
int xc_send_debug_keys(xc_interface *xch, const char *keys);
int xc_readconsolering(xc_interface *xch, char *buffer, unsigned int *pnr_chars, int clear, int incremental,
                       uint32_t *pindex);

typedef struct xenforeignmemory_handle xenforeignmemory_handle;
typedef unsigned long xen_pfn_t;
xenforeignmemory_handle *xenforeignmemory_open(struct xentoollog_logger *logger, unsigned open_flags);
int xenforeignmemory_close(xenforeignmemory_handle *fmem);
void *xenforeignmemory_map(xenforeignmemory_handle *fmem, uint32_t dom, int prot, size_t pages,
                           const xen_pfn_t arr[], int err[]);
int xenforeignmemory_unmap(xenforeignmemory_handle *fmem, void *addr, size_t pages);

typedef struct xencall_handle xencall_handle;
xencall_handle *xencall_open(struct xentoollog_logger *logger, unsigned open_flags);
int xencall_close(xencall_handle *xcall);
int xencall2(xencall_handle *xcall, unsigned int op, uint64_t arg1, uint64_t arg2);
