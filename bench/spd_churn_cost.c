/* What one peer's policy churn costs the SPD and every other flow (review revpeerdos R1).
 *
 * An SPD of N client policies (one destination address each, the IKE Child SA band) and one
 * trap policy behind them (a range, a later band: a new child's policy lands in the middle of
 * the order, as on a gateway with start_action = trap).  Measured:
 *   1. an add + delete of a policy with a fresh destination (a peer's create/delete loop with
 *      distinct selectors): CPU time per pair, writer alone;
 *   2. other clients' lookups on a "loop thread" (256 flows to 256 clients, round robin, in
 *      batches of 32 through its flow cache under the read lock, as loop.c does): per second
 *      while nothing changes and while another thread churns as in 1 at a fixed rate (the
 *      same for old and new code), the ratio of the two; the entries the loop compared on
 *      cache misses per lookup, idle/churning (a flushed cache refills through the index; the
 *      256 flows collide in the direct-mapped cache now and then, idle too); and the longest a
 *      batch took (on a loaded machine mostly preemption: compare with the idle one).
 * Wall time for 2 (two threads on a shared machine: compare the ratio, not the rates).
 *
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Icsrc -o build/spd_churn_cost bench/spd_churn_cost.c \
 *       $(ls csrc/[a-z]*.c | grep -v bench.c) -lcrypto -lpthread
 *   build/spd_churn_cost [seconds per phase, default 2] [churn pairs per second, default 100]
 */
#include "internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BAND (1u << 20)

static double now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void client(ts_policy *p, uint32_t id, uint32_t i) {
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->priority = 2 * BAND;
    p->action = TS_ACT_BYPASS;
    p->sel.family = 4;
    memset(p->sel.src_hi, 0xff, 4);
    p->sel.sport_hi = p->sel.dport_hi = 0xffff;
    uint8_t a[4] = {10, (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
    memcpy(p->sel.dst_lo, a, 4);
    memcpy(p->sel.dst_hi, a, 4);
}

static ts_dp *gateway(uint32_t n) {
    ts_dp *dp = ts_dp_new();
    if (!dp)
        exit(2);
    ts_policy p;
    client(&p, 1, 0);
    p.priority = 3 * BAND;   /* the trap: 10.0.0.0/8 */
    p.sel.dst_hi[1] = p.sel.dst_hi[2] = p.sel.dst_hi[3] = 0xff;
    if (ts_spd_add(dp, &p) != TS_OK)
        exit(2);
    for (uint32_t i = 0; i < n; i++) {
        client(&p, i + 2, i + 1);
        if (ts_spd_add(dp, &p) != TS_OK)
            exit(2);
    }
    return dp;
}

struct churn {
    ts_dp *dp;
    uint32_t n, rate;                  /* pairs per second */
    _Atomic int stop;
    _Atomic uint64_t pairs;
};

static void *churner(void *arg) {
    struct churn *c = arg;
    ts_policy p;
    double t0 = now(CLOCK_MONOTONIC);
    for (uint32_t k = 0; !atomic_load(&c->stop); k++) {
        client(&p, 0x40000000u + k, c->n + 1 + k % 100000);   /* a fresh destination each time */
        if (ts_spd_add(c->dp, &p) != TS_OK || ts_spd_delete(c->dp, p.id) != TS_OK)
            exit(3);
        atomic_fetch_add(&c->pairs, 1);
        double due = t0 + (double)(k + 1) / c->rate, t = now(CLOCK_MONOTONIC);
        if (due > t) {
            struct timespec d = {(time_t)(due - t), (long)((due - t - (double)(time_t)(due - t)) * 1e9)};
            nanosleep(&d, NULL);
        }
    }
    return NULL;
}

static double pairs_cost_us(ts_dp *dp, uint32_t n) {
    struct churn c = {.dp = dp, .n = n};
    ts_policy p;
    uint32_t rounds = 2000;
    double t = now(CLOCK_THREAD_CPUTIME_ID);
    for (uint32_t k = 0; k < rounds; k++) {
        client(&p, 0x30000000u + k, n + 1 + k);
        if (ts_spd_add(c.dp, &p) != TS_OK || ts_spd_delete(c.dp, p.id) != TS_OK)
            exit(3);
    }
    return (now(CLOCK_THREAD_CPUTIME_ID) - t) / rounds * 1e6;
}

struct loop_result {
    double per_s, worst_us, examined;   /* examined: entries compared on cache misses a lookup */
};

/* lookups per second of 256 clients' flows through a loop's cache, and the longest batch */
static struct loop_result lookups(ts_dp *dp, uint32_t n, double seconds) {
    static ts_flow_cache cache;
    memset(&cache, 0, sizeof(cache));
    ts_flow f[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = 1 + i * (n / 256);
        f[i] = (ts_flow){.family = 4, .proto = 17, .sport = 1234, .dport = 53};
        uint8_t dst[4] = {10, (uint8_t)(c >> 16), (uint8_t)(c >> 8), (uint8_t)c}, src[4] = {192, 0, 2, 1};
        memcpy(f[i].dst, dst, 4);
        memcpy(f[i].src, src, 4);
    }
    uint64_t hits = 0, total = 0, examined = ts_spd_examined;
    double worst = 0, t0 = now(CLOCK_MONOTONIC), t = t0;
    for (uint32_t k = 0; t - t0 < seconds;) {
        pthread_rwlock_rdlock(&dp->lock);
        for (int i = 0; i < 32; i++, k++)
            hits += ts_spd_lookup_cached(&dp->spd, &cache, &f[k % 256]) != NULL;
        pthread_rwlock_unlock(&dp->lock);
        total += 32;
        double t1 = now(CLOCK_MONOTONIC);
        if (t1 - t > worst)
            worst = t1 - t;
        t = t1;
    }
    if (hits != total)
        exit(4);
    return (struct loop_result){(double)total / (t - t0), worst * 1e6,
                                (double)(ts_spd_examined - examined) / (double)total};
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    uint32_t rate = argc > 2 ? (uint32_t)atoi(argv[2]) : 100;
    uint32_t sizes[] = {1000, 10000, 50000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint32_t n = sizes[s];
        ts_dp *dp = gateway(n);
        double pair = pairs_cost_us(dp, n);
        struct loop_result idle = lookups(dp, n, secs);
        struct churn c = {.dp = dp, .n = n, .rate = rate};
        pthread_t th;
        pthread_create(&th, NULL, churner, &c);
        struct loop_result busy = lookups(dp, n, secs);
        atomic_store(&c.stop, 1);
        pthread_join(th, NULL);
        printf("%6u policies: add+delete %7.1f us CPU; 256 other flows %5.1f M lookups/s idle, %5.1f M "
               "with %.0f pairs/s: ratio %.3f; compared on misses %.4f/%.4f a lookup; longest batch %6.0f us idle, "
               "%6.0f us churning\n",
               n, pair, idle.per_s / 1e6, busy.per_s / 1e6, (double)atomic_load(&c.pairs) / secs,
               busy.per_s / idle.per_s, idle.examined, busy.examined, idle.worst_us, busy.worst_us);
        ts_dp_free(dp);
    }
    return 0;
}
