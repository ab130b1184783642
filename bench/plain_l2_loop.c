/*
 * The "physical limit" for the 2-level consume benchmark: Linux's
 * evtchn_2l_handle_events scan with the same atomic operations as the
 * engine, but no bounds checks, no batch limit, and Linux's own per-CPU
 * bitmap of bound ports (cpu_mask) instead of a channel-table lookup per
 * port.  Compiled in the same run as the bench.
 */
#include <stdint.h>

uint32_t plain_l2_consume(uint64_t *pending, uint64_t *mask, const uint64_t *cpu_mask, uint8_t *upcall_pending,
                          uint64_t *sel, uint32_t *scan, uint32_t *out)
{
    uint32_t start_word = scan[0], start_bit = scan[1], word = start_word, bit, i, n = 0;
    uint64_t words_left, words, bits, rest;

    __atomic_store_n(upcall_pending, 0, __ATOMIC_SEQ_CST);
    words_left = __atomic_exchange_n(sel, 0, __ATOMIC_SEQ_CST);
    for (i = 0; words_left; i++) {
        words = words_left & (~(uint64_t)0 << word);
        if (!words) {
            word = 0;
            continue;
        }
        word = (uint32_t)__builtin_ctzll(words);
        bits = __atomic_load_n(&pending[word], __ATOMIC_ACQUIRE) & cpu_mask[word]
               & ~__atomic_load_n(&mask[word], __ATOMIC_ACQUIRE);
        bit = (word == start_word && i == 0) ? start_bit : 0;
        while ((rest = bits & (~(uint64_t)0 << bit)) != 0) {
            bit = (uint32_t)__builtin_ctzll(rest);
            __atomic_fetch_and(&pending[word], ~((uint64_t)1 << bit), __ATOMIC_SEQ_CST);
            out[n++] = word * 64 + bit;
            bit = (bit + 1) % 64;
            scan[0] = bit ? word : (word + 1) % 64;
            scan[1] = bit;
            if (!bit)
                break;
        }
        if (word != start_word || i != 0)
            words_left &= ~((uint64_t)1 << word);
        word = (word + 1) % 64;
    }
    return n;
}
