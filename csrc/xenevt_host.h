/* xenevt's simulator hot path: public C header (see xenevt_host_api.h for the API). */
#ifndef XENEVT_HOST_H
#define XENEVT_HOST_H

#include "xenevt_fifo.h"
#include "xenevt_host_api.h"

#endif
