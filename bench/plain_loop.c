/*
 * The "physical limit" for the consume benchmark: Linux's FIFO consume loop
 * with the same atomic operations as the engine, but no bounds checks, no
 * error reporting and a flat array.  Compiled in the same run as the bench.
 */
#include <stdint.h>

#define LINKED (1u << 29)
#define PENDING (1u << 31)
#define MASKED (1u << 30)
#define LINK_MASK 0x1ffffu

uint32_t plain_consume(uint32_t *array, uint32_t *cb, uint32_t *local_head, uint32_t *out)
{
    uint32_t ready = __atomic_exchange_n(&cb[0], 0, __ATOMIC_SEQ_CST) & 0xffff;
    uint32_t n = 0;

    while (ready) {
        uint32_t q = (uint32_t)__builtin_ctz(ready);
        uint32_t port = local_head[q];
        uint32_t *word, old, w, link;

        if (port == 0)
            port = __atomic_load_n(&cb[2 + q], __ATOMIC_ACQUIRE);
        word = &array[port];
        w = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        do {
            old = w;
            w = old;
            __atomic_compare_exchange_n(word, &w, old & ~(LINKED | LINK_MASK), 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
        } while (w != old);
        link = old & LINK_MASK;
        if (link == 0)
            ready &= ~(1u << q);
        w = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        if ((w & PENDING) && !(w & MASKED)) {
            __atomic_fetch_and(word, ~PENDING, __ATOMIC_SEQ_CST);
            out[n++] = port;
        }
        local_head[q] = link;
        ready |= __atomic_exchange_n(&cb[0], 0, __ATOMIC_SEQ_CST) & 0xffff;
    }
    return n;
}
