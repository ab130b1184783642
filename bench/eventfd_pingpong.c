/*
 * The reference for a C program's event round trip: two processes playing
 * ping-pong over a pair of eventfds, each waiting in poll() then read(), as
 * tests/c/evtchn_pingpong.c waits on its xenevtchn fd.  Prints the mean
 * and the median round trip in nanoseconds.  Compiled in the same run as
 * the bench.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void wait_read(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    uint64_t v;

    if (poll(&p, 1, 5000) != 1 || read(fd, &v, sizeof(v)) != sizeof(v))
        exit(1);
}

static void post(int fd)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != sizeof(one))
        exit(1);
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 10000, i;
    int a = eventfd(0, 0), b = eventfd(0, 0);
    int64_t *rtt = calloc((size_t)rounds, sizeof(*rtt)), sum = 0;
    struct timespec t0, t1;
    pid_t pid;

    if (a < 0 || b < 0 || rtt == NULL || rounds < 1)
        return 2;
    pid = fork();
    if (pid == 0) {
        for (i = 0; i < rounds; i++) {
            wait_read(a);
            post(b);
        }
        _exit(0);
    }
    for (i = 0; i < rounds; i++) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        post(a);
        wait_read(b);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        rtt[i] = (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
        sum += rtt[i];
    }
    waitpid(pid, NULL, 0);
    qsort(rtt, (size_t)rounds, sizeof(*rtt), cmp);
    printf("%lld %lld\n", (long long)(sum / rounds), (long long)rtt[rounds / 2]);
    return 0;
}
