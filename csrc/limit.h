/* The fast path's rate limiters (dp.c, icmp_limit.c): lock-free, one _Atomic each, so that the
 * loop threads share them without the lock's write side. */
#ifndef TUNSEC_LIMIT_H
#define TUNSEC_LIMIT_H

#include "internal.h"

static inline uint64_t limiter_now(ts_dp *dp) {
    uint64_t t = atomic_load_explicit(&dp->test_clock_ns, memory_order_relaxed);
    return t ? t : ts_now_ns();
}

/* *last: when the limiter last said yes (0 = never).  now < last + interval rather than a
 * difference, so a thread with an older now (another thread passed meanwhile) is refused too */
static inline bool rate_ok(_Atomic uint64_t *last, uint64_t now, uint64_t interval_ns) {
    uint64_t prev = atomic_load(last);
    if (prev && now < prev + interval_ns)
        return false;
    return atomic_compare_exchange_strong(last, &prev, now);
}

/* Token bucket as GCRA: one _Atomic holds the theoretical arrival time, so
 * loop threads share it without a lock.  burst answers at once, then one
 * per interval. */
static inline bool bucket_ok(_Atomic uint64_t *tat, uint64_t now, uint64_t interval_ns, uint64_t burst) {
    uint64_t prev = atomic_load(tat);
    for (;;) {
        uint64_t next = (prev > now ? prev : now) + interval_ns;
        if (next - now > burst * interval_ns)
            return false;
        if (atomic_compare_exchange_weak(tat, &prev, next))
            return true;
    }
}

/* gives back the answer bucket_ok just granted, for a caller that did not use it after all.
 * Moving *tat back one interval is bucket_ok undone, even after other threads took or the
 * clock moved: bucket_ok reads at least now from it, so a refund never makes more than a full
 * bucket.  Each refund follows its own take, which raised *tat by an interval or more, so it
 * cannot wrap below 0 (the floor is a guard only). */
static inline void bucket_refund(_Atomic uint64_t *tat, uint64_t interval_ns) {
    uint64_t prev = atomic_load(tat);
    while (!atomic_compare_exchange_weak(tat, &prev, prev > interval_ns ? prev - interval_ns : 0))
        ;
}

#endif
