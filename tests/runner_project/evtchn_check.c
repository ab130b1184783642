/* A project that is not xenevt: a libxenevtchn program whose test runs in dom0 through `xenevt runner run`.
 * dom0 offers itself an unbound port, binds the other end of it (an interdomain pair inside dom0), notifies
 * through that end and consumes the event on the first, ROUNDS times.  Each check prints PASS or FAIL and its
 * name; --break expects the wrong port (the failing variant: the run must fail naming the check). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <xenevtchn.h>

#define ROUNDS 100

static int failed;

static void check(int ok, const char *name, const char *detail)
{
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name, detail[0] ? ": " : "", detail);
    failed |= !ok;
}

/* the next port the evtchn device delivers within ms milliseconds, unmasked again; -1 if none */
static int next_event(xenevtchn_handle *xce, int ms)
{
    struct pollfd p = { .fd = xenevtchn_fd(xce), .events = POLLIN };
    xenevtchn_port_or_error_t port;

    if (poll(&p, 1, ms) != 1)
        return -1;
    port = xenevtchn_pending(xce);
    if (port < 0)
        return -1;
    xenevtchn_unmask(xce, (evtchn_port_t)port);
    return port;
}

int main(int argc, char **argv)
{
    int breaking = argc > 1 && strcmp(argv[1], "--break") == 0;
    char detail[128] = "";
    xenevtchn_handle *xce = xenevtchn_open(NULL, 0);
    xenevtchn_port_or_error_t unbound, peer;
    int round, got = -1;

    if (!xce) {
        snprintf(detail, sizeof(detail), "%s", strerror(errno));
        check(0, "open", detail);
        return 1;
    }
    unbound = xenevtchn_bind_unbound_port(xce, 0);
    snprintf(detail, sizeof(detail), "port %d", unbound);
    check(unbound > 0, "bind-unbound", detail);
    peer = xenevtchn_bind_interdomain(xce, 0, (evtchn_port_t)unbound);
    snprintf(detail, sizeof(detail), "port %d <-> %d", peer, unbound);
    check(peer > 0, "bind-interdomain", detail);
    if (failed)
        return 1;
    while (next_event(xce, 200) >= 0)  /* Xen leaves the newly bound end pending once */
        ;
    for (round = 0; round < ROUNDS; round++) {
        if (xenevtchn_notify(xce, (evtchn_port_t)peer) < 0)
            break;
        got = next_event(xce, 2000);
        if (got != unbound)
            break;
    }
    snprintf(detail, sizeof(detail), "%d of %d round trips", round, ROUNDS);
    check(round == ROUNDS, "notify", detail);
    snprintf(detail, sizeof(detail), "last event on port %d, expected %d", got, unbound + breaking);
    check(got == unbound + breaking, "consume", detail);
    check(xenevtchn_unbind(xce, (evtchn_port_t)peer) == 0 && xenevtchn_unbind(xce, (evtchn_port_t)unbound) == 0,
          "unbind", "");
    xenevtchn_close(xce);
    printf("%s\n", failed ? "evtchn_check: FAILED" : "evtchn_check: all checks passed");
    return failed;
}
