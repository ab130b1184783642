/*
 * libxenevtchn-sim.so's own declarations (beside csrc/xen_api.h): read by
 * xenevt/sim/simlib.py, which hands the first part to cffi's embedding_api
 * (functions written in Python, xenevt/sim/libglue.py) and the second to
 * cdef (functions written in C, csrc/xenevtchn_sim.c, that the Python half
 * calls).  Plain declarations only: cffi parses this text.
 */

/* ---- written in Python: the whole call, for what the C fast path leaves ---- */
int xenevt_sim_py_notify(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevt_sim_py_pending(xenevtchn_handle *xce);
int xenevt_sim_py_unmask(xenevtchn_handle *xce, evtchn_port_t port);
/* At exit() (armed): give back what this process held, its handles' ports and its vCPUs' consumer locks. */
void xenevt_sim_py_exit(void);

/* ---- written in C: what the Python half tells the fast path ---- */
/* The host to act on (an xe_host * made by xenevt._native over the open state file, as an integer; 0: none, every
 * call goes to Python) and the domain this process acts as. */
void xenevt_sim_attach(uint64_t host, uint32_t domid);
/* A handle's event pipe (rfd < 0: the handle is gone, its ports forgotten) and the ports it owns.  A handle id is
 * (generation << 12) | slot, slot 1 to 4095: a closed handle's id is never valid again in this process. */
void xenevt_sim_handle(uint64_t hid, int rfd, int wfd);
void xenevt_sim_own(uint64_t hid, uint32_t port, int owned);
/* Around a bind: hold makes the upcall threads wait before routing what they took, release gives the new port
 * (hid 0: none, the bind failed) to its handle, then lets them go on.  The event Xen raises on a new interdomain
 * end is taken at once by an upcall thread; Linux's evtchn driver delivers it (the port stays pending until the
 * driver's irq is set up and unmasks it), so the thread must see the port owned, not drop it. */
void xenevt_sim_hold(void);
void xenevt_sim_release(uint64_t hid, uint32_t port);
/* The guest kernel's upcall handler: one C thread per vCPU (the caller claimed them), stopped and joined. */
int xenevt_sim_kernel_start(uint32_t nr_vcpus);
void xenevt_sim_kernel_stop(void);
/* Events the C kernel had no handle for (or whose pipe was full). */
uint64_t xenevt_sim_dropped(void);
/* Events the C kernel delivered on a port whose EOI was still outstanding (the evtchn driver's WARN, "Interrupt for
 * port %u, but apparently not enabled"): none while the port stays masked until its EOI. */
uint64_t xenevt_sim_not_enabled(void);
/* Whether exit() calls xenevt_sim_py_exit (a Python process gives back at its own exit, before C's handlers). */
void xenevt_sim_arm(int armed);
