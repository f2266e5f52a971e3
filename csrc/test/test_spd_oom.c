/* The SPD when an allocation fails (spd.c grow, spdrange.c reserve).  A loop thread's flow
 * cache keeps pointers into spd->v between packets, trusted while the generation is unchanged:
 * a failed change must leave v where it was, or move the generation with it.  Each realloc of
 * a change fails in turn; while the hook is armed every block that grows really moves (a block
 * grown in place would hide a stale pointer), so under ASan a cached pointer into the old
 * block is caught when used.  The self-test is linked with -Wl,--wrap=realloc (Makefile): the
 * wrapper passes every call through until armed.  Draws nothing from the shared PRNG. */
#include "selftest.h"
#include <malloc.h>
#include <stdatomic.h>

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static _Atomic long fail_in;   /* > 0: the fail_in-th realloc from now returns NULL */
static _Atomic bool failed;

void *__wrap_realloc(void *p, size_t n) {
    if (atomic_load_explicit(&fail_in, memory_order_relaxed) <= 0)
        return __real_realloc(p, n);
    if (atomic_fetch_sub(&fail_in, 1) == 1) {
        atomic_store(&failed, true);
        return NULL;
    }
    void *q = malloc(n ? n : 1);
    if (q && p) {
        size_t old = malloc_usable_size(p);
        memcpy(q, p, old < n ? old : n);
        free(p);
    }
    return q;
}

static void arm(long k) {
    atomic_store(&failed, false);
    atomic_store(&fail_in, k);
}

/* disarmed; whether the failure came */
static bool disarm(void) {
    atomic_store(&fail_in, 0);
    return atomic_load(&failed);
}

#define HOSTS 16    /* the SPD's first capacity: the 17th policy grows it */
#define FLOWS 48

/* BYPASS for 10.9.<net>.<host>, or 10.9.<net>.0/24 when host is 0, or any destination when
 * net is 255 (range ones go to the range index); priority decides the position */
static ts_policy policy(uint32_t id, uint32_t priority, uint8_t net, uint8_t host) {
    ts_policy p = {.id = id, .priority = priority, .action = TS_ACT_BYPASS};
    p.sel.family = 4;
    p.sel.sport_hi = p.sel.dport_hi = 0xffff;
    memset(p.sel.src_hi, 0xff, 4);
    uint8_t lo[4] = {10, 9, net, host}, hi[4] = {10, 9, net, host ? host : 255};
    if (net == 255) {
        memset(lo, 0, 4);
        memset(hi, 0xff, 4);
    }
    memcpy(p.sel.dst_lo, lo, 4);
    memcpy(p.sel.dst_hi, hi, 4);
    return p;
}

static ts_flow flow(size_t i) {
    ts_flow f = {.family = 4, .proto = 17, .sport = 1000, .dport = 53};
    uint8_t src[4] = {192, 168, 0, 1}, dst[4] = {10, 9, (uint8_t)(i % 4), (uint8_t)(1 + i / 4 % 20)};
    memcpy(f.src, src, 4);
    memcpy(f.dst, dst, 4);
    return f;
}

/* every flow through the cache as a loop thread's next packet: an entry inside v (counted on,
 * as ts_outbound_locked does), the one the ordered scan finds */
static void check_cached(ts_dp *dp, ts_flow_cache *cache) {
    ts_spd *spd = &dp->spd;
    for (size_t i = 0; i < FLOWS; i++) {
        ts_flow f = flow(i);
        ts_spd_entry *e = ts_spd_lookup_cached(spd, cache, &f);
        CHECK(e == ts_spd_lookup(spd, &f));
        CHECK(!e || ((uintptr_t)e >= (uintptr_t)spd->v && (uintptr_t)e < (uintptr_t)(spd->v + spd->used)));
        if (e)
            atomic_fetch_add(&e->packets, 1);
        CHECK(ts_spd_find(spd, &f) == ts_spd_lookup(spd, &f));
    }
}

/* The reviewer's case: a full SPD whose flows are cached; the 17th policy's growth fails at each
 * of its reallocations in turn.  The add fails whole (nothing added), and the next one works. */
void test_spd_grow_oom(void) {
    ts_flow_cache *cache = calloc(1, sizeof(*cache));
    FATAL_IF(!cache);
    long k = 1;
    for (;; k++) {
        ts_dp *dp = ts_dp_new();
        FATAL_IF(!dp);
        memset(cache, 0, sizeof(*cache));
        for (uint32_t i = 1; i <= HOSTS; i++) {
            ts_policy p = i % 4 ? policy(i, 10, (uint8_t)(i % 4), (uint8_t)i) : policy(i, 10, (uint8_t)(i / 4), 0);
            FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
        }
        FATAL_IF(dp->spd.used != dp->spd.cap);
        check_cached(dp, cache);
        ts_policy p = policy(100, 5, 1, 9);   /* a host, in front of the others: they all move */
        arm(k);
        int rc = ts_spd_add(dp, &p);
        bool hit = disarm();
        CHECK(rc == (hit ? TS_ENOMEM : TS_OK));
        CHECK(dp->spd.n == (size_t)HOSTS + !hit);
        check_cached(dp, cache);
        if (hit) {
            CHECK(ts_spd_add(dp, &p) == TS_OK && dp->spd.n == HOSTS + 1);
            check_cached(dp, cache);
        }
        ts_dp_free(dp);
        if (!hit)
            break;
    }
    CHECK(k >= 4);   /* the three bucket arrays and v each failed once, then the add went through */
    free(cache);
}

/* The same across a run of changes with ranges (the range index's reserve too) and deletes
 * (its rebuilds): fail the k-th realloc of the whole run, for each k until none is left.
 * Whatever failed, the cache and the index answer as the ordered scan. */
void test_spd_index_oom(void) {
    ts_flow_cache *cache = calloc(1, sizeof(*cache));
    FATAL_IF(!cache);
    long k = 1;
    unsigned long enomem = 0, partial = 0;
    for (;; k++) {
        ts_dp *dp = ts_dp_new();
        FATAL_IF(!dp);
        memset(cache, 0, sizeof(*cache));
        arm(k);
        for (uint32_t i = 1; i <= 40; i++) {
            /* hosts, subnets and a catch-all, priorities up and down so positions move */
            ts_policy p = i % 3 == 0   ? policy(i, 20 - i % 7, (uint8_t)(i % 4), 0)
                          : i == 31    ? policy(i, 30, 255, 0)
                                       : policy(i, 10 + i % 5, (uint8_t)(i % 4), (uint8_t)(1 + i % 20));
            size_t n = dp->spd.n;
            int rc = ts_spd_add(dp, &p);
            CHECK(rc == TS_OK || (rc == TS_ENOMEM && dp->spd.n == n));
            enomem += rc == TS_ENOMEM;
            partial += rc == TS_OK && !dp->spd.range.whole;
            check_cached(dp, cache);
        }
        for (uint32_t i = 1; i <= 40; i += 2) {
            ts_spd_delete(dp, i);
            check_cached(dp, cache);
        }
        bool hit = disarm();
        ts_dp_free(dp);
        if (!hit)
            break;
    }
    CHECK(k > 8 && enomem > 0 && partial > 0);   /* both kinds of failure were reached */
    free(cache);
}
