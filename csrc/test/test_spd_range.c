/* The SPD's range index (spdrange.c) against the ordered scan: seeded random SPDs of
 * overlapping ranges (subnets of every length, ranges of a few prefixes, ranges straddling
 * wide boundaries, catch-alls, hosts), both families, protocols, ports, sources, priorities
 * with ties, additions anywhere in the order, deletions and flushes, with flows on and
 * next to every range's bounds; a hub's 10,000 spoke subnets, where a miss must compare a
 * handful of policies; and the scan it falls back to when it cannot allocate. */
#include "selftest.h"

/* a PRNG per seed (xorshift64), so that a failure names the seed that shows it */
static uint64_t x;
static uint32_t below(uint32_t n) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return n ? (uint32_t)(x % n) : 0;
}

static size_t alen(uint8_t family) { return family == 4 ? 4 : 16; }

/* a += d (d may be negative), wrapping at the family's width */
static void addr_add(uint8_t family, uint8_t *a, long d) {
    for (size_t i = alen(family); i-- > 0 && d != 0;) {
        long v = (long)a[i] + d % 256;
        d /= 256;
        if (v < 0) {
            v += 256;
            d--;
        } else if (v > 255) {
            v -= 256;
            d++;
        }
        a[i] = (uint8_t)v;
    }
}

/* a few bases per family that the ranges and flows gather around, so that they overlap */
struct bases {
    uint8_t a[2][4][16];
};

static void near_base(const struct bases *b, uint8_t family, uint8_t *a) {
    memset(a, 0, 16);
    if (below(12) == 0) {   /* now and then anywhere */
        for (size_t i = 0; i < alen(family); i++)
            a[i] = (uint8_t)below(256);
        return;
    }
    memcpy(a, b->a[family == 4 ? 0 : 1][below(4)], 16);
    addr_add(family, a, (long)below(1024) - 512);
}

static void prefix_around(uint8_t family, const uint8_t *a, unsigned len, uint8_t *lo, uint8_t *hi) {
    memcpy(lo, a, 16);
    memcpy(hi, a, 16);
    for (unsigned d = len; d < alen(family) * 8; d++) {
        lo[d / 8] &= (uint8_t)~(0x80u >> d % 8);
        hi[d / 8] |= (uint8_t)(0x80u >> d % 8);
    }
}

static void rand_dst(const struct bases *b, uint8_t family, uint8_t *lo, uint8_t *hi) {
    unsigned bits = (unsigned)alen(family) * 8;
    uint8_t a[16];
    near_base(b, family, a);
    switch (below(10)) {
    case 0: case 1: case 2:   /* a subnet, mostly a long prefix */
        prefix_around(family, a, bits - below(below(2) ? 12 : bits + 1), lo, hi);
        break;
    case 3: case 4: case 5: {  /* from a to somewhere near: a few prefixes, or more */
        memcpy(lo, a, 16);
        memcpy(hi, a, 16);
        addr_add(family, hi, (long)below(below(2) ? 40 : 1500));
        if (memcmp(lo, hi, alen(family)) > 0)   /* wrapped past the top */
            memset(hi, 0xff, alen(family));
        break;
    }
    case 6: {                  /* between two far addresses: straddles a wide boundary */
        uint8_t c[16];
        near_base(b, family, c);
        int o = memcmp(a, c, alen(family));
        memcpy(lo, o <= 0 ? a : c, 16);
        memcpy(hi, o <= 0 ? c : a, 16);
        break;
    }
    case 7:                    /* everything */
        memset(lo, 0, 16);
        memset(hi, 0, 16);
        memset(hi, 0xff, alen(family));
        break;
    default:                   /* one address: the hash's, next to the ranges */
        memcpy(lo, a, 16);
        memcpy(hi, a, 16);
    }
}

static void rand_ports(uint16_t *lo, uint16_t *hi) {
    uint32_t k = below(5);
    *lo = k == 0 ? (uint16_t)(1000 + below(4)) : 0;
    *hi = k == 0 ? (uint16_t)(*lo + below(3)) : 0xffff;
}

static void rand_policy(const struct bases *b, ts_policy *p, uint32_t id, uint32_t priorities) {
    static const uint8_t protos[] = {0, 0, 0, 6, 17, 1};
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->priority = below(priorities);
    p->action = (uint8_t)below(3);
    ts_selector *s = &p->sel;
    s->family = below(2) ? 4 : 6;
    s->proto = protos[below(sizeof(protos))];
    rand_dst(b, s->family, s->dst_lo, s->dst_hi);
    if (below(3) == 0) {
        rand_dst(b, s->family, s->src_lo, s->src_hi);
    } else {
        memset(s->src_hi, 0xff, alen(s->family));
    }
    rand_ports(&s->sport_lo, &s->sport_hi);
    rand_ports(&s->dport_lo, &s->dport_hi);
}

/* a flow on or next to a bound of a policy in the SPD, or near a base */
static void rand_flow(const struct bases *b, const ts_spd *spd, ts_flow *f) {
    static const uint8_t protos[] = {6, 17, 1, 50};
    memset(f, 0, sizeof(*f));
    if (spd->used && below(4)) {   /* a dead slot's selector is as good a base */
        const ts_selector *s = &spd->v[below((uint32_t)spd->used)].pol.sel;
        f->family = s->family;
        memcpy(f->dst, below(2) ? s->dst_lo : s->dst_hi, 16);
        addr_add(f->family, f->dst, (long)below(5) - 2);
        memcpy(f->src, below(2) ? s->src_lo : s->src_hi, 16);
        addr_add(f->family, f->src, (long)below(3) - 1);
    } else {
        f->family = below(2) ? 4 : 6;
        near_base(b, f->family, f->dst);
        near_base(b, f->family, f->src);
    }
    f->proto = protos[below(sizeof(protos))];
    f->sport = (uint16_t)(below(2) ? 999 + below(8) : below(65536));
    f->dport = (uint16_t)(below(2) ? 999 + below(8) : below(65536));
    if (below(8) == 0) {   /* a later fragment: it shows no ports */
        f->sport = f->dport = 0;
        f->opaque = 1;
    }
}

/* what the index may keep beyond what is live (spdrange.c ts_rindex_close) */
static bool index_bounded(const ts_rindex *r) {
    return r->nlink - r->nlive <= r->nlive + 64 + 8 && r->nnode <= 4 * r->nlive + 64 + 16;
}

void test_spd_range_diff(void) {
    enum { SEEDS = 200, OPS = 120, FLOWS = 12 };
    static ts_flow_cache cache;
    unsigned long differ = 0, hits = 0, lookups = 0, unbounded = 0;
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        x = seed * 0x9E3779B97F4A7C15ull;
        /* a new context's generations start again at 0: a slot of the last seed's would match */
        memset(&cache, 0, sizeof(cache));
        ts_dp *dp = ts_dp_new();
        FATAL_IF(!dp);
        struct bases b;
        for (int fam = 0; fam < 2; fam++)
            for (int k = 0; k < 4; k++) {
                memset(b.a[fam][k], 0, 16);
                for (size_t i = 0; i < (fam ? 16u : 4u); i++)
                    b.a[fam][k][i] = (uint8_t)below(256);
            }
        uint32_t ids[OPS], nids = 0, next = 0;
        uint32_t priorities = (uint32_t[]){1, 3, 40}[seed % 3];   /* ties, some, mostly apart */
        unsigned long before = differ;
        for (int op = 0; op < OPS; op++) {
            uint32_t r = below(20);
            if (r == 0 && below(10) == 0) {
                ts_spd_flush(dp);
                nids = 0;
            } else if (r < 5 && nids) {
                uint32_t k = below(nids);
                CHECK(ts_spd_delete(dp, ids[k]) == TS_OK);
                ids[k] = ids[--nids];
            } else {
                ts_policy p;
                rand_policy(&b, &p, ++next, priorities);
                CHECK(ts_spd_add(dp, &p) == TS_OK);
                ids[nids++] = p.id;
            }
            unbounded += !index_bounded(&dp->spd.range);
            for (int k = 0; k < FLOWS; k++) {
                ts_flow f;
                rand_flow(&b, &dp->spd, &f);
                ts_spd_entry *want = ts_spd_lookup(&dp->spd, &f);
                differ += ts_spd_find(&dp->spd, &f) != want;
                differ += ts_spd_lookup_cached(&dp->spd, &cache, &f) != want;
                differ += ts_spd_lookup_cached(&dp->spd, &cache, &f) != want;
                hits += want != NULL;
                lookups++;
            }
        }
        if (differ != before)
            fprintf(stderr, "test_spd_range_diff: seed %llu: the index and the scan differ\n",
                    (unsigned long long)seed);
        CHECK(dp->spd.range.whole);
        ts_dp_free(dp);
    }
    CHECK(differ == 0);
    CHECK(unbounded == 0);
    CHECK(hits > lookups / 4 && hits < lookups);
}

/* ---- a hub: one subnet per spoke, a covering range now and then, a catch-all ----------------- */
void test_spd_range_10k(void) {
    enum { N = 10000, FLOWS = 20000 };
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_policy p;
    memset(&p, 0, sizeof(p));
    p.action = TS_ACT_PROTECT;
    p.sel.family = 4;
    p.sel.src_lo[0] = p.sel.src_hi[0] = 172;
    p.sel.src_lo[1] = p.sel.src_hi[1] = 16;
    p.sel.src_hi[2] = p.sel.src_hi[3] = 0xff;   /* 172.16.0.0/16 behind the hub */
    p.sel.sport_hi = p.sel.dport_hi = 0xffff;
    for (uint32_t i = 0; i < N; i++) {   /* 10.0.0.0/24 .. 10.39.15.0/24 */
        p.id = p.reqid = i + 1;
        p.priority = 100;
        uint8_t net[4] = {10, (uint8_t)(i >> 8), (uint8_t)i, 0};
        memcpy(p.sel.dst_lo, net, 4);
        memcpy(p.sel.dst_hi, net, 4);
        p.sel.dst_hi[3] = 0xff;
        FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    }
    /* 10.0.0.0/8 for the hub's own traffic but only to port 22, ahead of every spoke, and
     * the catch-all behind them */
    p.id = N + 1;
    p.priority = 50;
    p.action = TS_ACT_BYPASS;
    p.sel.dst_lo[1] = p.sel.dst_lo[2] = 0;
    p.sel.dst_hi[1] = p.sel.dst_hi[2] = 0xff;
    p.sel.dport_lo = p.sel.dport_hi = 22;
    FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    p.id = N + 2;
    p.priority = 200;
    p.action = TS_ACT_DISCARD;
    memset(p.sel.dst_lo, 0, 4);
    memset(p.sel.dst_hi, 0xff, 4);
    p.sel.dport_lo = 0;
    p.sel.dport_hi = 0xffff;
    FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    CHECK(dp->spd.range.whole && dp->spd.nhashed == 0);

    static ts_flow_cache cache;
    unsigned long right = 0;
    uint64_t before = ts_spd_examined;
    for (int k = 0; k < FLOWS; k++) {
        uint32_t c = rnd_below(N + N / 100);   /* some to no spoke: the catch-all */
        ts_flow f = {.family = 4, .proto = 6, .src = {172, 16, 1, 2},
                     .dst = {10, (uint8_t)(c >> 8), (uint8_t)c, (uint8_t)rnd()}};
        f.sport = (uint16_t)rnd();
        f.dport = (uint16_t)(rnd_below(20) ? rnd() : 22);
        ts_spd_entry *e = ts_spd_lookup_cached(&dp->spd, &cache, &f);
        uint32_t want = f.dport == 22 ? N + 1 : c < N ? c + 1 : N + 2;
        right += e && e->pol.id == want;
    }
    uint64_t examined = ts_spd_examined - before;
    CHECK(right == FLOWS);
    /* the /8, the flow's spoke and the catch-all, where the scan compares ~5,000 */
    CHECK(examined <= 3ull * FLOWS);

    /* three in four of the top 1,200 spokes go (from the top, which moves the fewest entries:
     * the sanitizers' memmove is slow): the rest still answers as the scan */
    enum { KEEP = N - 1200 };
    for (uint32_t i = N; i-- > KEEP;)
        if (i % 4 != 3)
            FATAL_IF(ts_spd_delete(dp, i + 1) != TS_OK);
    unsigned long differ = 0;
    for (int k = 0; k < 2000; k++) {
        uint32_t c = rnd_below(N);
        ts_flow f = {.family = 4, .proto = 17, .src = {172, 16, 0, 9},
                     .dst = {10, (uint8_t)(c >> 8), (uint8_t)c, (uint8_t)rnd()}, .sport = 1, .dport = 2};
        ts_spd_entry *e = ts_spd_find(&dp->spd, &f);
        differ += !e || e->pol.id != (c < KEEP || c % 4 == 3 ? c + 1 : N + 2);
        differ += k % 10 == 0 && e != ts_spd_lookup(&dp->spd, &f);   /* the scan is slow here */
    }
    CHECK(differ == 0);
    ts_dp_free(dp);
}

/* ---- churn: what is deleted leaves the index in time ------------------------------------------ */
void test_spd_range_churn(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    x = 0x2545F4914F6CDD1Dull;
    struct bases b;
    for (int fam = 0; fam < 2; fam++)
        for (int k = 0; k < 4; k++)
            for (size_t i = 0; i < 16; i++)
                b.a[fam][k][i] = i < (fam ? 16u : 4u) ? (uint8_t)below(256) : 0;
    unsigned long unbounded = 0, differ = 0;
    size_t peak = 0;
    uint32_t id = 0;
    for (int cycle = 0; cycle < 4; cycle++) {
        uint32_t first = id + 1;
        ts_policy p;
        for (int k = 0; k < 800; k++) {
            rand_policy(&b, &p, ++id, 3);
            FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
        }
        peak = dp->spd.range.nnode > peak ? dp->spd.range.nnode : peak;
        for (uint32_t k = first; k <= id - 10; k++) {   /* ten of each cycle stay */
            FATAL_IF(ts_spd_delete(dp, k) != TS_OK);
            unbounded += !index_bounded(&dp->spd.range);
        }
        for (int k = 0; k < 500; k++) {
            ts_flow f;
            rand_flow(&b, &dp->spd, &f);
            differ += ts_spd_find(&dp->spd, &f) != ts_spd_lookup(&dp->spd, &f);
        }
    }
    CHECK(differ == 0 && unbounded == 0);
    /* 40 entries left of 3,200: the index holds about what they need, not what it once held */
    CHECK(dp->spd.n == 40 && dp->spd.range.nnode < peak / 4);
    ts_dp_free(dp);
}

/* ---- without memory for the index, the lookups scan the ranges in order -------------------- */
void test_spd_range_fallback(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    x = 0x5DEECE66Dull;
    struct bases b;
    for (int fam = 0; fam < 2; fam++)
        for (int k = 0; k < 4; k++)
            for (size_t i = 0; i < 16; i++)
                b.a[fam][k][i] = i < (fam ? 16u : 4u) ? (uint8_t)below(256) : 0;
    ts_policy p;
    for (uint32_t id = 1; id <= 200; id++) {
        rand_policy(&b, &p, id, 5);
        FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    }
    /* as a failed allocation leaves it (spdrange.c ts_rindex_add): entries missing, not whole */
    ts_rindex_reset(&dp->spd.range);
    dp->spd.range.whole = false;
    unsigned long differ = 0, hits = 0;
    for (int round = 0; round < 2; round++) {
        for (int k = 0; k < 3000; k++) {
            ts_flow f;
            rand_flow(&b, &dp->spd, &f);
            ts_spd_entry *want = ts_spd_lookup(&dp->spd, &f);
            differ += ts_spd_find(&dp->spd, &f) != want;
            hits += want != NULL;
        }
        if (round == 0) {   /* the next change rebuilds it */
            rand_policy(&b, &p, 201, 5);
            FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
            CHECK(dp->spd.range.whole);
        }
    }
    CHECK(differ == 0 && hits > 0);
    ts_dp_free(dp);
}
