/* The SPD's index (spd.c ts_spd_find) against the ordered scan (ts_spd_lookup), its
 * reference: random SPDs under adds, deletes and flushes, random flows; the same with
 * lookups on other threads while the SPD changes (TSan); and a gateway's 10,000 host
 * policies, where a lookup must compare a handful of entries, not thousands. */
#include "selftest.h"

/* addresses from a small pool, so that selectors overlap and flows hit them */
static void pool_addr(uint8_t family, uint8_t *a) {
    size_t n = family == 4 ? 4 : 16;
    memset(a, 0, 16);
    a[0] = family == 4 ? 10 : 0xfd;
    a[n - 2] = (uint8_t)rnd_below(2);
    a[n - 1] = (uint8_t)rnd_below(8);
    if (rnd_below(16) == 0)
        rnd_fill(a, n);   /* now and then anywhere */
}

/* the subnet of a pool address: its first len bits */
static void subnet_of(uint8_t family, unsigned len, uint8_t *lo, uint8_t *hi) {
    size_t n = family == 4 ? 4 : 16;
    pool_addr(family, lo);
    memcpy(hi, lo, 16);
    for (unsigned d = len; d < n * 8; d++) {
        lo[d / 8] &= (uint8_t)~(0x80u >> d % 8);
        hi[d / 8] |= (uint8_t)(0x80u >> d % 8);
    }
}

/* one address, a range of two pool addresses, a subnet, or everything (the range index's
 * cases: a prefix, pieces of a few, and a range straddling a wide boundary) */
static void rand_range(uint8_t family, uint8_t *lo, uint8_t *hi) {
    size_t n = family == 4 ? 4 : 16;
    uint32_t kind = rnd_below(10);
    if (kind < 5) {
        pool_addr(family, lo);
        memcpy(hi, lo, 16);
    } else if (kind < 7) {
        pool_addr(family, lo);
        pool_addr(family, hi);
        if (memcmp(lo, hi, n) > 0) {
            uint8_t t[16];
            memcpy(t, lo, 16);
            memcpy(lo, hi, 16);
            memcpy(hi, t, 16);
        }
    } else if (kind < 9) {
        subnet_of(family, (unsigned)(n * 8 - rnd_below(family == 4 ? 33 : 129)), lo, hi);
    } else {
        memset(lo, 0, 16);
        memset(hi, 0, 16);
        memset(hi, 0xff, n);
    }
}

static void rand_ports(uint16_t *lo, uint16_t *hi) {
    switch (rnd_below(4)) {
    case 0:
        *lo = *hi = (uint16_t)(500 + rnd_below(4));
        break;
    case 1:
        *lo = (uint16_t)(500 + rnd_below(2));
        *hi = (uint16_t)(*lo + rnd_below(3));
        break;
    default:
        *lo = 0;
        *hi = 0xffff;
    }
}

void spd_rand_policy(ts_policy *p, uint32_t id, uint32_t priorities) {
    static const uint8_t protos[] = {0, 0, 6, 17, 1};
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->priority = rnd_below(priorities);   /* ties are common: insertion order must break them */
    p->action = (uint8_t)rnd_below(3);
    p->reqid = rnd_below(3);
    ts_selector *s = &p->sel;
    s->family = rnd_below(2) ? 4 : 6;
    s->proto = protos[rnd_below(sizeof(protos))];
    rand_range(s->family, s->src_lo, s->src_hi);
    rand_range(s->family, s->dst_lo, s->dst_hi);
    rand_ports(&s->sport_lo, &s->sport_hi);
    rand_ports(&s->dport_lo, &s->dport_hi);
}

void spd_rand_flow(ts_flow *f) {
    static const uint8_t protos[] = {6, 17, 1, 50};
    memset(f, 0, sizeof(*f));
    f->family = rnd_below(2) ? 4 : 6;
    f->proto = protos[rnd_below(sizeof(protos))];
    pool_addr(f->family, f->src);
    pool_addr(f->family, f->dst);
    f->sport = (uint16_t)(rnd_below(8) ? 499 + rnd_below(6) : rnd());
    f->dport = (uint16_t)(rnd_below(8) ? 499 + rnd_below(6) : rnd());
    if (rnd_below(8) == 0) {   /* a later fragment: it shows no ports */
        f->sport = f->dport = 0;
        f->opaque = 1;
    }
}

/* the ids in the SPD, so that deletes mostly hit; priorities 1 makes every addition an append
 * of the last rank, deletes (out of 16) how often slots die */
struct live {
    uint32_t id[512];
    size_t n;
    uint32_t next_id;
    uint32_t priorities, deletes;
};

static void random_change(ts_dp *dp, struct live *l) {
    uint32_t op = rnd_below(16);
    if (op == 0 && rnd_below(8) == 0) {
        ts_spd_flush(dp);
        l->n = 0;
    } else if (op <= l->deletes && l->n) {
        size_t k = rnd_below((uint32_t)l->n);
        CHECK(ts_spd_delete(dp, l->id[k]) == TS_OK);
        l->id[k] = l->id[--l->n];
    } else if (op == 15) {
        CHECK(ts_spd_delete(dp, l->next_id + 1000000) == TS_ENOENT);
    } else if (l->n < sizeof(l->id) / sizeof(l->id[0])) {
        ts_policy p;
        spd_rand_policy(&p, ++l->next_id, l->priorities);
        CHECK(ts_spd_add(dp, &p) == TS_OK);
        l->id[l->n++] = p.id;
    }
}

void test_spd_index_diff(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    static ts_flow_cache cache;
    struct live l = {.n = 0};
    unsigned long differ = 0, hits = 0, lookups = 0;
    for (int round = 0; round < 4000; round++) {
        /* in turns: few priorities and many deletes, then one priority and rare deletes */
        l.priorities = round / 500 % 2 ? 1 : 4;
        l.deletes = round / 500 % 2 ? 1 : 5;
        random_change(dp, &l);
        for (int k = 0; k < 40; k++) {
            ts_flow f;
            spd_rand_flow(&f);
            ts_spd_entry *want = ts_spd_lookup(&dp->spd, &f);
            differ += ts_spd_find(&dp->spd, &f) != want;
            differ += ts_spd_lookup_cached(&dp->spd, &cache, &f) != want;
            differ += ts_spd_lookup_cached(&dp->spd, &cache, &f) != want;   /* now from the cache */
            hits += want != NULL;
            lookups++;
        }
    }
    CHECK(differ == 0);
    /* the flows did match something, and not always the same thing */
    CHECK(hits > lookups / 10 && hits < lookups);
    CHECK(ts_spd_count(dp) == l.n);
    ts_dp_free(dp);
}

/* ---- lookups on other threads while the control thread changes the SPD (TSan) ---------------- */
struct reader {
    ts_dp *dp;
    _Atomic bool *stop;
    uint64_t seed;
    unsigned long lookups, differ;
};

static void *reader_run(void *arg) {
    struct reader *r = arg;
    ts_flow_cache *cache = calloc(1, sizeof(*cache));
    FATAL_IF(!cache);
    uint64_t x = r->seed;
    while (!atomic_load(r->stop) || r->lookups < 1000) {
        ts_flow f;
        memset(&f, 0, sizeof(f));
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;   /* the shared PRNG is the control thread's */
        f.family = x & 1 ? 4 : 6;
        f.proto = x & 2 ? 6 : 17;
        f.src[0] = f.dst[0] = f.family == 4 ? 10 : 0xfd;
        f.dst[f.family == 4 ? 3 : 15] = (uint8_t)(x >> 8 & 7);
        f.src[f.family == 4 ? 3 : 15] = (uint8_t)(x >> 16 & 7);
        f.sport = (uint16_t)(499 + (x >> 24) % 6);
        f.dport = (uint16_t)(x >> 32);
        pthread_rwlock_rdlock(&r->dp->lock);
        ts_spd_entry *want = ts_spd_lookup(&r->dp->spd, &f);
        r->differ += ts_spd_find(&r->dp->spd, &f) != want;
        r->differ += ts_spd_lookup_cached(&r->dp->spd, cache, &f) != want;
        if (want)   /* what the packet path touches in the entry it found */
            atomic_fetch_add_explicit(&want->packets, 1, memory_order_relaxed);
        pthread_rwlock_unlock(&r->dp->lock);
        r->lookups++;
    }
    free(cache);
    return NULL;
}

void test_spd_index_threads(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    _Atomic bool stop = false;
    struct reader r[2] = {{dp, &stop, 0x9e3779b97f4a7c15ull, 0, 0}, {dp, &stop, 0xd1b54a32d192ed03ull, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        FATAL_IF(pthread_create(&t[i], NULL, reader_run, &r[i]) != 0);
    struct live l = {.n = 0, .priorities = 4, .deletes = 5};
    for (int i = 0; i < 3000; i++)
        random_change(dp, &l);
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CHECK(r[i].lookups >= 1000 && r[i].differ == 0);
    }
    ts_dp_free(dp);
}

/* ---- a gateway: one policy per client's virtual IP, flows with random ports --------------------- */
void test_spd_index_10k(void) {
    enum { N = 10000, FLOWS = 20000 };
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_policy p;
    memset(&p, 0, sizeof(p));
    p.priority = 100;
    p.action = TS_ACT_PROTECT;
    p.sel.family = 4;
    memset(p.sel.src_hi, 0xff, 4);
    p.sel.sport_hi = p.sel.dport_hi = 0xffff;
    for (uint32_t i = 0; i < N; i++) {
        p.id = p.reqid = i + 1;
        uint8_t vip[4] = {10, 3, (uint8_t)(i >> 8), (uint8_t)i};
        memcpy(p.sel.dst_lo, vip, 4);
        memcpy(p.sel.dst_hi, vip, 4);
        FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    }
    /* and the catch-all behind them, which the index must not hide */
    memset(p.sel.dst_hi, 0xff, 4);
    memset(p.sel.dst_lo, 0, 4);
    p.id = N + 1;
    p.priority = 200;
    p.action = TS_ACT_DISCARD;
    FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    /* the packet path (the flow cache in front, as the loop has it) with every packet a miss */
    static ts_flow_cache cache;
    unsigned long right = 0;
    uint64_t before = ts_spd_examined;
    for (int k = 0; k < FLOWS; k++) {
        uint32_t c = rnd_below(N + 100);   /* some to no client: the catch-all */
        ts_flow f = {.family = 4, .proto = 17, .src = {192, 168, 0, 10}, .dst = {10, 3, (uint8_t)(c >> 8), (uint8_t)c}};
        f.sport = (uint16_t)rnd();
        f.dport = (uint16_t)rnd();
        ts_spd_entry *e = ts_spd_lookup_cached(&dp->spd, &cache, &f);
        right += e && e->pol.id == (c < N ? c + 1 : N + 1);
    }
    uint64_t examined = ts_spd_examined - before;
    CHECK(right == FLOWS);
    /* a bucket or two and the catch-all each, where the scan compares ~5,000 */
    CHECK(examined < 4ull * FLOWS);
    ts_flow last = {.family = 4, .proto = 17, .src = {192, 168, 0, 10}, .dst = {10, 3, (N - 1) >> 8, (N - 1) & 0xff}};
    before = ts_spd_examined;
    CHECK(ts_spd_lookup(&dp->spd, &last) == ts_spd_find(&dp->spd, &last));
    CHECK(ts_spd_examined - before > N);   /* the hook counts the scan too: it would have seen it */
    ts_dp_free(dp);
}
