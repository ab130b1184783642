/* xenevt's xen-backend hot path: public C header (see xenevt_evtchn_api.h for the API). */
#ifndef XENEVT_EVTCHN_H
#define XENEVT_EVTCHN_H

#include <stdint.h>

#include "xenevt_evtchn_api.h"

#endif
