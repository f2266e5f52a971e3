/* What range policies cost the SPD (csrc/spdrange.c): a flow-cache miss (a random-port packet to
 * a random spoke) through the index and through the ordered scan, and the installs, deletes and
 * the index's rebuild at N.  A hub's policies: one destination subnet per spoke (10.a.b.0/24, or
 * fd00:0:ab::/64 with `6`), priorities equal, installed in order.  CPU time, not wall time,
 * because the machine is shared.
 *
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Icsrc -o build/spd_range_cost bench/spd_range_cost.c \
 *       $(ls csrc/[a-z]*.c | grep -v bench.c) -lcrypto -lpthread
 *   build/spd_range_cost [N, default 10000] [6]
 */
#include "internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool six;

static void spoke(uint8_t *a, uint32_t i) {
    memset(a, 0, 16);
    if (six) {
        a[0] = 0xfd;
        a[4] = (uint8_t)(i >> 8);
        a[5] = (uint8_t)i;
    } else {
        a[0] = 10;
        a[1] = (uint8_t)(i >> 8);
        a[2] = (uint8_t)i;
    }
}

static void policy(ts_policy *p, uint32_t i, uint32_t priority) {
    memset(p, 0, sizeof(*p));
    p->id = i + 1;
    p->priority = priority;
    p->action = TS_ACT_BYPASS;
    p->sel.family = six ? 6 : 4;
    memset(p->sel.src_hi, 0xff, six ? 16 : 4);
    p->sel.sport_hi = p->sel.dport_hi = 0xffff;
    spoke(p->sel.dst_lo, i);
    spoke(p->sel.dst_hi, i);
    memset(p->sel.dst_hi + (six ? 8 : 3), 0xff, six ? 8 : 1);
}

static ts_dp *hub(uint32_t n) {
    ts_dp *dp = ts_dp_new();
    if (!dp)
        exit(2);
    ts_policy p;
    for (uint32_t i = 0; i < n; i++) {
        policy(&p, i, 100);
        if (ts_spd_add(dp, &p) != TS_OK)
            exit(2);
    }
    return dp;
}

int main(int argc, char **argv) {
    uint32_t n = argc > 1 ? (uint32_t)atoi(argv[1]) : 10000;
    six = argc > 2 && argv[2][0] == '6';
    if (n < 2 || n > 65536)
        return 2;
    double t = cpu();
    ts_dp *dp = hub(n);
    printf("%u range policies (%s): installed in %.3f s (%.1f us each)\n", n, six ? "IPv6 /64" : "IPv4 /24",
           cpu() - t, (cpu() - t) / n * 1e6);

    uint64_t x = 88172645463325252ull;
    unsigned long hits = 0;
    for (int how = 0; how < 2; how++) {
        uint32_t rounds = how ? 1000000 : 20000000 / n;
        t = cpu();
        for (uint32_t k = 0; k < rounds; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ts_flow f = {.family = six ? 6 : 4, .proto = 17, .sport = (uint16_t)(x >> 20), .dport = (uint16_t)(x >> 40)};
            spoke(f.dst, (uint32_t)(x % n));
            f.dst[six ? 15 : 3] = 7;
            hits += (how ? ts_spd_find(&dp->spd, &f) : ts_spd_lookup(&dp->spd, &f)) != NULL;
        }
        printf("  a miss through the %s: %.0f ns\n", how ? "index" : "ordered scan", (cpu() - t) / rounds * 1e9);
    }

    ts_policy p;
    policy(&p, n, 1);   /* ahead of all: every position moves */
    t = cpu();
    ts_spd_add(dp, &p);
    printf("  an add at the front: %.0f us\n", (cpu() - t) * 1e6);
    t = cpu();
    for (uint32_t k = 0; k < 50; k++)
        ts_spd_delete(dp, k * 97 % n + 1);
    printf("  a delete: %.0f us\n", (cpu() - t) / 50 * 1e6);
    t = cpu();
    for (int k = 0; k < 20; k++) {
        ts_rindex_reset(&dp->spd.range);
        for (size_t i = 0; i < dp->spd.used; i++)
            if (!dp->spd.v[i].dead && !dp->spd.v[i].hashed)
                ts_rindex_add(&dp->spd.range, dp->spd.v, (uint32_t)i);
    }
    printf("  the range index rebuilt: %.2f ms (%zu nodes, %zu links)\n", (cpu() - t) / 20 * 1e3,
           dp->spd.range.nnode, dp->spd.range.nlink);
    ts_dp_free(dp);

    dp = hub(n);
    t = cpu();
    for (uint32_t i = 0; i < n; i++)   /* oldest first: the most entries move each time */
        if (ts_spd_delete(dp, i + 1) != TS_OK)
            return 2;
    printf("  all deleted one by one, oldest first: %.3f s\n", cpu() - t);
    ts_dp_free(dp);
    return hits ? 0 : 1;
}
