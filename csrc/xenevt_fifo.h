/* xenevt FIFO engine: public C header (see xenevt_fifo_api.h for the API). */
#ifndef XENEVT_FIFO_H
#define XENEVT_FIFO_H

#include <stddef.h>
#include <stdint.h>

#include "xenevt_fifo_api.h"

/* Layout checks: these structures are shared with Python (struct module)
 * and, for the control block, with Xen itself. */
_Static_assert(sizeof(xe_control_block) == 72, "evtchn_fifo_control_block is 72 bytes");
_Static_assert(sizeof(xe_chan) == 16, "xe_chan is 16 bytes");
_Static_assert(sizeof(xe_guest_vcpu) == 68, "xe_guest_vcpu is 68 bytes");

#endif
