/*
 * An ordinary libxenevtchn program, as a Xen tool would write it: a loopback
 * channel in its own domain (argv[2], default 0), N notify -> poll -> pending -> unmask round
 * trips, then unbind.  Built against the real xenevtchn.h; run on the
 * simulator with LD_LIBRARY_PATH=$(xenevt sim libpath).  Prints one line;
 * exit 0 only if every notify arrived on the right port.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenevtchn.h>

static int wait_port(xenevtchn_handle *h, int want)
{
    struct pollfd pfd = { .fd = xenevtchn_fd(h), .events = POLLIN };
    int got;

    if (pfd.fd < 0) {
        fprintf(stderr, "xenevtchn_fd: %s\n", strerror(errno));
        return -1;
    }
    if (poll(&pfd, 1, 5000) != 1) {
        fprintf(stderr, "timeout waiting for port %d\n", want);
        return -1;
    }
    got = xenevtchn_pending(h);
    if (got != want) {
        fprintf(stderr, "event on port %d, expected %d\n", got, want);
        return -1;
    }
    return xenevtchn_unmask(h, got);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    uint32_t self = argc > 2 ? (uint32_t)atoi(argv[2]) : 0;  /* this domain's id: loopback peer */
    xenevtchn_handle *h = xenevtchn_open(NULL, 0);
    int a, b, i;

    if (!h) {
        fprintf(stderr, "xenevtchn_open: %s\n", strerror(errno));
        return 2;
    }
    a = xenevtchn_bind_unbound_port(h, self);
    if (a < 0) {
        fprintf(stderr, "bind_unbound_port: %s\n", strerror(errno));
        return 2;
    }
    b = xenevtchn_bind_interdomain(h, self, a);
    if (b < 0) {
        fprintf(stderr, "bind_interdomain: %s\n", strerror(errno));
        return 2;
    }
    /* Xen leaves the new interdomain end pending once */
    if (wait_port(h, b) < 0)
        return 1;
    for (i = 0; i < rounds; i++) {
        if (xenevtchn_notify(h, b) < 0 || wait_port(h, a) < 0)
            return 1;
        if (xenevtchn_notify(h, a) < 0 || wait_port(h, b) < 0)
            return 1;
    }
    if (xenevtchn_notify(h, 4095) == 0 || errno != ENOTCONN) {
        fprintf(stderr, "notify on a port not ours did not fail with ENOTCONN\n");
        return 1;
    }
    if (xenevtchn_unbind(h, a) < 0 || xenevtchn_unbind(h, b) < 0) {
        fprintf(stderr, "unbind: %s\n", strerror(errno));
        return 1;
    }
    xenevtchn_close(h);
    printf("pingpong: %d round trips on ports %d <-> %d\n", rounds, a, b);
    return 0;
}
