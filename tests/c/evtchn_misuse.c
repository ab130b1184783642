/*
 * libxenevtchn misused, as Linux's /dev/xen/evtchn driver answers it (the table
 * in xenevt/sim/libxen.py): each check prints "ok <what>" or "FAIL <what>: ...".
 * Built against the real xenevtchn.h; run on the simulator with
 * LD_LIBRARY_PATH=$(xenevt sim libpath), as dom0 of a fresh host.
 *   evtchn_misuse all    every case, then exit() holding a bound handle
 *   evtchn_misuse hold   bind, receive, print "holding", sleep (to be killed)
 * Exit 0 only if every check passed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xenevtchn.h>

static int failed;

static void check(int ok, const char *what, long got, int err)
{
    if (ok) {
        printf("ok %s\n", what);
    } else {
        printf("FAIL %s: got %ld (errno %s)\n", what, got, strerror(err));
        failed = 1;
    }
}

/* -1 with errno `want` */
#define EXPECT_ERR(call, want, what) do { \
        errno = 0; \
        long rc_ = (long)(call); \
        check(rc_ == -1 && errno == (want), what, rc_, errno); \
    } while (0)
#define EXPECT_OK(call, what) do { \
        errno = 0; \
        long rc_ = (long)(call); \
        check(rc_ >= 0, what, rc_, errno); \
    } while (0)

static xenevtchn_handle *must_open(void)
{
    xenevtchn_handle *h = xenevtchn_open(NULL, 0);

    if (h == NULL) {
        printf("FAIL open: %s\n", strerror(errno));
        exit(2);
    }
    return h;
}

/* The next event on h within 5 s, unmasked again; -1 if none. */
static int next_event(xenevtchn_handle *h)
{
    struct pollfd pfd = { .fd = xenevtchn_fd(h), .events = POLLIN };
    int port;

    if (pfd.fd < 0 || poll(&pfd, 1, 5000) != 1)
        return -1;
    port = xenevtchn_pending(h);
    if (port >= 0)
        xenevtchn_unmask(h, (evtchn_port_t)port);
    return port;
}

/* A loopback channel on h: (*a) waits for dom0, (*b) is bound to it. */
static int loopback(xenevtchn_handle *h, int *a, int *b)
{
    *a = xenevtchn_bind_unbound_port(h, 0);
    *b = *a < 0 ? -1 : xenevtchn_bind_interdomain(h, 0, (evtchn_port_t)*a);
    return *b < 0 ? -1 : 0;
}

/* Each loopback's round trip: the event Xen raises on the new end, then a notify of b arriving on a. */
static int round_trip(xenevtchn_handle *h, int a, int b)
{
    return next_event(h) == b && xenevtchn_notify(h, (evtchn_port_t)b) == 0 && next_event(h) == a ? 0 : -1;
}

static void cycles(void)
{
    xenevtchn_handle *h;
    int i, a = -1, b = -1;

    for (i = 0; i < 5000; i++) {
        h = must_open();
        if (xenevtchn_close(h) != 0)
            break;
    }
    check(i == 5000, "5000 open/close cycles", i, errno);
    h = must_open();
    check(loopback(h, &a, &b) == 0 && round_trip(h, a, b) == 0, "an event delivered after 5000 cycles", a, errno);
    EXPECT_OK(xenevtchn_close(h), "close with bound ports");
}

static void ports_of_others(void)
{
    xenevtchn_handle *h = must_open(), *other = must_open();
    int a, b;

    if (loopback(other, &a, &b) < 0 || next_event(other) != b) {
        printf("FAIL loopback on the other handle: %s\n", strerror(errno));
        failed = 1;
        return;
    }
    EXPECT_ERR(xenevtchn_notify(h, (evtchn_port_t)a), ENOTCONN, "notify of another handle's port: ENOTCONN");
    EXPECT_ERR(xenevtchn_notify(h, 99999), ENOTCONN, "notify of a port never bound: ENOTCONN");
    EXPECT_ERR(xenevtchn_notify(h, 0xFFFFFFFFu), ENOTCONN, "notify of port 0xFFFFFFFF: ENOTCONN");
    check(xenevtchn_unmask(h, (evtchn_port_t)a) == 0, "unmask of another handle's port: ignored, 0", 0, errno);
    check(xenevtchn_unmask(h, 0xFFFFFFFFu) == 0, "unmask of port 0xFFFFFFFF: ignored, 0", 0, errno);
    check(xenevtchn_unmask(other, (evtchn_port_t)a) == 0, "unmask of an unmasked port of its own: 0", 0, errno);
    EXPECT_ERR(xenevtchn_unbind(h, (evtchn_port_t)a), ENOTCONN, "unbind of another handle's port: ENOTCONN");
    EXPECT_ERR(xenevtchn_unbind(h, 0x7FFFFFFFu), EINVAL, "unbind past the kernel's channels: EINVAL");
    EXPECT_ERR(xenevtchn_unbind(h, 1u << 17), EINVAL, "unbind of port 2^17 (FIFO's limit): EINVAL");
    /* the other handle's channel still works after all that */
    check(xenevtchn_notify(other, (evtchn_port_t)b) == 0 && next_event(other) == a,
          "the other handle's events untouched", a, errno);
    xenevtchn_close(h);
    xenevtchn_close(other);
}

static void bad_values(void)
{
    xenevtchn_handle *h = must_open(), *stale;
    int fl, p;

    errno = 0;
    check(xenevtchn_open(NULL, 1u << 5) == NULL && errno == EINVAL, "open with an unknown flag: EINVAL", 0, errno);
    p = xenevtchn_bind_unbound_port(h, 0xFFFFFFFFu);
    check(p > 0, "bind_unbound_port(0xFFFFFFFF): a port for domain 0xFFFF, as the driver's domid_t makes it", p,
          errno);
    if (p > 0)
        EXPECT_OK(xenevtchn_unbind(h, (evtchn_port_t)p), "and it unbinds");
    EXPECT_ERR(xenevtchn_bind_interdomain(h, 0, 0xFFFFFFFFu), EINVAL, "bind_interdomain to port 0xFFFFFFFF: EINVAL");
    EXPECT_ERR(xenevtchn_bind_interdomain(h, 77, 1), ESRCH, "bind_interdomain to a missing domain: ESRCH");
    EXPECT_ERR(xenevtchn_bind_virq(h, 0xFFFFFFFFu), EINVAL, "bind_virq(0xFFFFFFFF): EINVAL");
    fl = fcntl(xenevtchn_fd(h), F_GETFL);
    fcntl(xenevtchn_fd(h), F_SETFL, fl | O_NONBLOCK);
    EXPECT_ERR(xenevtchn_pending(h), EAGAIN, "pending with nothing pending, non-blocking: EAGAIN");

    EXPECT_ERR(xenevtchn_restrict(h, 0), EINVAL, "restrict to domain 0: EINVAL");
    EXPECT_ERR(xenevtchn_restrict(h, 0x7FF0), EINVAL, "restrict to DOMID_SELF: EINVAL");
    EXPECT_OK(xenevtchn_restrict(h, 1), "restrict to domain 1");
    EXPECT_ERR(xenevtchn_restrict(h, 1), EACCES, "restrict again, same domain: EACCES");
    EXPECT_ERR(xenevtchn_bind_unbound_port(h, 1), EACCES, "restricted: bind_unbound_port: EACCES");
    EXPECT_ERR(xenevtchn_bind_virq(h, 0), EACCES, "restricted: bind_virq: EACCES");
    EXPECT_ERR(xenevtchn_bind_interdomain(h, 0, 1), EACCES, "restricted to 1: bind_interdomain to 0: EACCES");
    xenevtchn_close(h);

    /* a closed handle: libxenevtchn frees it (undefined behaviour there); the simulator's ids are never reused */
    stale = must_open();
    xenevtchn_close(stale);
    h = must_open();
    check(h != stale, "a new handle is not the closed one", 0, 0);
    EXPECT_ERR(xenevtchn_notify(stale, 1), EBADF, "notify on a closed handle: EBADF");
    EXPECT_ERR(xenevtchn_unmask(stale, 1), EBADF, "unmask on a closed handle: EBADF");
    EXPECT_ERR(xenevtchn_pending(stale), EBADF, "pending on a closed handle: EBADF");
    EXPECT_ERR(xenevtchn_fd(stale), EBADF, "fd of a closed handle: EBADF");
    EXPECT_ERR(xenevtchn_bind_unbound_port(stale, 0), EBADF, "bind on a closed handle: EBADF");
    EXPECT_ERR(xenevtchn_close(stale), EBADF, "close of a closed handle: EBADF");
    check(xenevtchn_close(NULL) == 0, "close(NULL): 0", 0, 0);
    xenevtchn_close(h);
}

static void exhaustion(void)
{
    static xenevtchn_handle *hs[5000];
    int n = 0, err, a = -1, b = -1;
    xenevtchn_handle *h;

    while (n < 5000 && (hs[n] = xenevtchn_open(NULL, 0)) != NULL)
        n++;
    err = errno;
    check(n < 5000 && err == EMFILE, "opening until none is left: EMFILE", n, err);
    while (n > 0)
        xenevtchn_close(hs[--n]);
    h = must_open();
    check(loopback(h, &a, &b) == 0 && round_trip(h, a, b) == 0, "an event delivered after exhaustion", a, errno);
    xenevtchn_close(h);
}

/* fork(): the child shares the parent's handle (its ports, its pipe) and has its own; its exit releases only its
 * own.  Left bound for the exit() at the end: the parent's loopback on `h`. */
static xenevtchn_handle *forked(void)
{
    xenevtchn_handle *h = must_open();
    int a, b, status = 0;
    pid_t pid;

    if (loopback(h, &a, &b) < 0) {
        printf("FAIL loopback before fork: %s\n", strerror(errno));
        exit(2);
    }
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        xenevtchn_handle *own = must_open();
        int c = -1, d = -1;

        /* the event Xen raised on b at its bind waits in the shared handle: the child's kernel delivers it */
        check(next_event(h) == b, "child: the inherited handle's pending event", b, errno);
        check(xenevtchn_notify(h, (evtchn_port_t)b) == 0 && next_event(h) == a,
              "child: notify and receive on the inherited handle", a, errno);
        check(loopback(own, &c, &d) == 0 && round_trip(own, c, d) == 0, "child: binds and gets events", c, errno);
        fflush(stdout);
        exit(failed);  /* holding `own` with its ports: exit releases them */
    }
    waitpid(pid, &status, 0);
    failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    /* the child's exit left the shared handle open: the parent receives on it (the child gave its vCPUs back) */
    check(xenevtchn_notify(h, (evtchn_port_t)a) == 0 && next_event(h) == b,
          "parent: the shared handle works after the child's exit", b, errno);
    return h;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "all";
    xenevtchn_handle *h;
    int a, b;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "hold") == 0) {
        h = must_open();
        if (loopback(h, &a, &b) < 0 || round_trip(h, a, b) < 0)
            return 1;
        printf("holding %d %d\n", a, b);
        pause();
        return 0;
    }
    h = forked();  /* first: the parent receives only once its child has exited (one receiver per domain) */
    cycles();
    ports_of_others();
    bad_values();
    exhaustion();
    (void)h;  /* still open, its ports bound: exit() releases them */
    printf(failed ? "FAILED\n" : "all passed\n");
    return failed;
}
