/* The SPD under churn (review revpeerdos R1): entries keep their slots, a delete leaves a dead
 * one, compactions and growth come now and then, and a flow cache kept across every change is
 * trusted on a destination's generation.  Checked against a model of its own (a plain list in
 * insertion order, the best match the one of lowest (priority, insertion)), not against the
 * ordered scan, which reads the same slots, with outbound SAs coming and going (the policies
 * of their reqid bound to them); and that a change forgets no more of the flow caches than it
 * can affect. */
#include "selftest.h"

#define MODEL_MAX 200
#define SA_MAX 8

struct model {
    ts_policy p[MODEL_MAX];
    uint64_t seq[MODEL_MAX];
    size_t n;
    uint64_t next;
    uint32_t sa_spi[SA_MAX], sa_reqid[SA_MAX];   /* the outbound SAs (reqids 1 and 2) */
    size_t nsa;
    uint32_t next_spi;
};

static bool model_before(const struct model *m, size_t a, size_t b) {
    return m->p[a].priority < m->p[b].priority || (m->p[a].priority == m->p[b].priority && m->seq[a] < m->seq[b]);
}

/* the id of the model's best match for f, 0 if none (the test's ids start at 1) */
static uint32_t model_best(const struct model *m, const ts_flow *f) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < m->n; i++)
        if ((best == SIZE_MAX || model_before(m, i, best)) && ts_selector_match(&m->p[i].sel, f))
            best = i;
    return best == SIZE_MAX ? 0 : m->p[best].id;
}

static size_t model_find(const struct model *m, uint32_t id) {
    for (size_t i = 0; i < m->n; i++)
        if (m->p[i].id == id)
            return i;
    return SIZE_MAX;
}

/* one random change to both, with the same outcome: an add (now and then of an id in use), a
 * delete (now and then of one that is not), rarely a flush */
static void model_change(ts_dp *dp, struct model *m, uint32_t *next_id, uint32_t priorities) {
    uint32_t op = rnd_below(200);
    if (op == 0) {
        ts_spd_flush(dp);
        m->n = 0;
        return;
    }
    if (op < 100 && m->n < MODEL_MAX) {
        ts_policy p;
        bool taken = m->n && rnd_below(16) == 0;
        spd_rand_policy(&p, taken ? m->p[rnd_below((uint32_t)m->n)].id : ++*next_id, priorities);
        int rc = ts_spd_add(dp, &p);
        CHECK(rc == (taken ? TS_EEXIST : TS_OK));
        if (rc == TS_OK) {
            m->p[m->n] = p;
            m->seq[m->n++] = m->next++;
        }
        return;
    }
    uint32_t id = m->n && rnd_below(16) ? m->p[rnd_below((uint32_t)m->n)].id : *next_id + 1 + rnd_below(4);
    size_t at = model_find(m, id);
    CHECK(ts_spd_delete(dp, id) == (at == SIZE_MAX ? TS_ENOENT : TS_OK));
    if (at != SIZE_MAX) {
        m->p[at] = m->p[m->n - 1];
        m->seq[at] = m->seq[--m->n];
    }
}

/* now and then an outbound SA of reqid 1 or 2 comes or goes: the policies of its reqid bind
 * to it or to another (spd.c's reqid chains) */
static void sa_change(ts_dp *dp, struct model *m) {
    if (m->nsa < SA_MAX && rnd_below(2)) {
        uint8_t key[20];
        rnd_fill(key, sizeof(key));
        ts_sa_params p;
        params(&p, 0x1000 + ++m->next_spi, TS_DIR_OUT, key, 20, false, 0, 0);
        p.reqid = 1 + rnd_below(2);
        CHECK(ts_sad_add(dp, &p) == TS_OK);
        m->sa_spi[m->nsa] = p.spi;
        m->sa_reqid[m->nsa++] = p.reqid;
    } else if (m->nsa) {
        size_t k = rnd_below((uint32_t)m->nsa);
        CHECK(ts_sad_remove(dp, m->sa_spi[k], TS_DIR_OUT, &PEER, NULL) == TS_OK);
        m->sa_spi[k] = m->sa_spi[--m->nsa];
        m->sa_reqid[k] = m->sa_reqid[m->nsa];
    }
}

/* a PROTECT policy is bound to an SA of its reqid while there is one, else to none */
static void check_bound(const struct model *m, const ts_policy_info *info) {
    if (info->action != TS_ACT_PROTECT)
        return;
    bool any = false, theirs = false;
    for (size_t k = 0; k < m->nsa; k++)
        if (m->sa_reqid[k] == info->reqid) {
            any = true;
            theirs = theirs || m->sa_spi[k] == info->out_spi;
        }
    CHECK(any ? theirs : info->out_spi == 0);
}

/* every chain holds live entries only, each once, both ways where it links both ways: a dead
 * one left behind would be bound, compared or walked until the next compaction */
static void check_chains(const ts_spd *spd) {
    size_t ids = 0, reqids = 0, hashed = 0, with_reqid = 0;
    for (size_t b = 0; b < spd->cap; b++) {
        for (uint32_t i = spd->by_id[b]; i != TS_SPD_NONE && ids <= spd->used; i = spd->v[i].id_next, ids++)
            CHECK(i < spd->used && !spd->v[i].dead);
        uint32_t prev = TS_SPD_NONE;
        for (uint32_t i = spd->by_reqid[b]; i != TS_SPD_NONE && reqids <= spd->used;
             prev = i, i = spd->v[i].rq_next, reqids++)
            CHECK(i < spd->used && !spd->v[i].dead && spd->v[i].pol.reqid && spd->v[i].rq_prev == prev);
        for (uint32_t i = spd->head[b]; i != TS_SPD_NONE && hashed <= spd->used; i = spd->v[i].next, hashed++)
            CHECK(i < spd->used && !spd->v[i].dead && spd->v[i].hashed);
    }
    for (size_t i = 0; i < spd->used; i++)
        with_reqid += !spd->v[i].dead && spd->v[i].pol.reqid;
    CHECK(ids == spd->n && reqids == with_reqid && hashed == spd->nhashed);
}

/* the list in the model's order */
static void check_list(ts_dp *dp, const struct model *m) {
    static ts_policy_info out[MODEL_MAX];
    size_t got = ts_spd_list(dp, out, MODEL_MAX);
    CHECK(got == m->n && ts_spd_count(dp) == m->n);
    for (size_t k = 0; k < got; k++) {
        size_t at = model_find(m, out[k].id);
        CHECK(at != SIZE_MAX);
        check_bound(m, &out[k]);
        if (at == SIZE_MAX || k == 0)
            continue;
        size_t prev = model_find(m, out[k - 1].id);
        CHECK(prev != SIZE_MAX && model_before(m, prev, at));
    }
}

void test_spd_churn_model(void) {
    ts_flow_cache *cache = calloc(1, sizeof(*cache));
    FATAL_IF(!cache);
    static const uint32_t priorities[] = {1, 3, 1000};
    for (int seed = 0; seed < 6; seed++) {
        ts_dp *dp = ts_dp_new();
        FATAL_IF(!dp);
        memset(cache, 0, sizeof(*cache));   /* a new context's generations start at 0 again */
        struct model m = {.n = 0};
        uint32_t next_id = 0;
        ts_flow flows[48];   /* the same flows again and again: the cache answers most of them */
        for (size_t i = 0; i < 48; i++)
            spd_rand_flow(&flows[i]);
        for (int step = 0; step < 3000; step++) {
            model_change(dp, &m, &next_id, priorities[seed % 3]);
            if (rnd_below(16) == 0)
                sa_change(dp, &m);
            for (int k = 0; k < 6; k++) {
                const ts_flow *f = &flows[rnd_below(48)];
                uint32_t want = model_best(&m, f);
                pthread_rwlock_rdlock(&dp->lock);
                ts_spd_entry *c = ts_spd_lookup_cached(&dp->spd, cache, f), *e = ts_spd_find(&dp->spd, f);
                CHECK((c ? c->pol.id : 0) == want);
                CHECK((e ? e->pol.id : 0) == want);
                pthread_rwlock_unlock(&dp->lock);
            }
            if (step % 20 == 0) {
                check_list(dp, &m);
                pthread_rwlock_rdlock(&dp->lock);
                check_chains(&dp->spd);
                pthread_rwlock_unlock(&dp->lock);
            }
        }
        check_list(dp, &m);
        ts_dp_free(dp);
    }
    free(cache);
}

static ts_policy host(uint32_t id, uint32_t priority, uint8_t last) {
    ts_policy p = {.id = id, .priority = priority, .action = TS_ACT_BYPASS};
    p.sel.family = 4;
    memset(p.sel.src_hi, 0xff, 4);
    p.sel.sport_hi = p.sel.dport_hi = 0xffff;
    uint8_t a[4] = {10, 0, 0, last};
    memcpy(p.sel.dst_lo, a, 4);
    memcpy(p.sel.dst_hi, a, 4);
    return p;
}

static ts_flow flow_to(uint8_t last) {
    ts_flow f = {.family = 4, .proto = 17, .sport = 4000, .dport = 53};
    uint8_t src[4] = {192, 0, 2, 1}, dst[4] = {10, 0, 0, last};
    memcpy(f.src, src, 4);
    memcpy(f.dst, dst, 4);
    return f;
}

/* the destination's slot in spd->dgen, as spd.c's addr_hash keys it */
static uint32_t dgen_slot(const ts_dp *dp, uint8_t last) {
    uint8_t in[5] = {4, 10, 0, 0, last};
    return (uint32_t)(ts_siphash24(dp->spd.key, in, sizeof(in)) & (TS_SPD_DGEN - 1));
}

/* the cached answer for f, and whether it came from the cache (nothing compared) */
static uint32_t cached(ts_dp *dp, ts_flow_cache *cache, const ts_flow *f, bool *hit) {
    uint64_t before = ts_spd_examined;
    ts_spd_entry *e = ts_spd_lookup_cached(&dp->spd, cache, f);
    *hit = ts_spd_examined == before;
    return e ? e->pol.id : 0;
}

/* A client's flow stays in the flow cache while another client's policy comes and goes (only a
 * policy for its destination, or a range, can take it over; a delete only loses its own flows),
 * and no entry moves; what a change can affect, it forgets. */
void test_spd_churn_keeps_cache(void) {
    ts_flow_cache *cache = calloc(1, sizeof(*cache));
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!cache || !dp);
    ts_policy trap = host(3, 300, 0);
    trap.sel.dst_hi[1] = trap.sel.dst_hi[2] = trap.sel.dst_hi[3] = 0xff;   /* 10.0.0.0/8, behind */
    ts_policy a = host(1, 200, 1), b = host(2, 200, 2);
    CHECK(ts_spd_add(dp, &trap) == TS_OK && ts_spd_add(dp, &a) == TS_OK && ts_spd_add(dp, &b) == TS_OK);
    uint8_t other = 9;   /* a destination whose generation is not client 1's */
    while (dgen_slot(dp, other) == dgen_slot(dp, 1))
        other++;
    ts_flow fa = flow_to(1), fo = flow_to(other);
    bool hit;
    pthread_rwlock_rdlock(&dp->lock);
    CHECK(cached(dp, cache, &fa, &hit) == 1 && !hit);
    CHECK(cached(dp, cache, &fa, &hit) == 1 && hit);
    CHECK(cached(dp, cache, &fo, &hit) == 3 && !hit);
    ts_spd_entry *ea = ts_spd_lookup_cached(&dp->spd, cache, &fa);
    pthread_rwlock_unlock(&dp->lock);

    ts_policy o = host(4, 200, other);   /* a new client: its destination's flows only */
    CHECK(ts_spd_add(dp, &o) == TS_OK);
    pthread_rwlock_rdlock(&dp->lock);
    CHECK(cached(dp, cache, &fa, &hit) == 1 && hit);
    CHECK(cached(dp, cache, &fo, &hit) == 4 && !hit);   /* taken over from the trap */
    pthread_rwlock_unlock(&dp->lock);

    CHECK(ts_spd_delete(dp, 2) == TS_OK);   /* another client leaves: nothing moves */
    pthread_rwlock_rdlock(&dp->lock);
    CHECK(cached(dp, cache, &fa, &hit) == 1 && hit);
    CHECK(ts_spd_lookup_cached(&dp->spd, cache, &fa) == ea);
    CHECK(cached(dp, cache, &fo, &hit) == 4 && hit);
    pthread_rwlock_unlock(&dp->lock);

    CHECK(ts_spd_delete(dp, 4) == TS_OK);   /* its own policy leaves: back to the trap */
    pthread_rwlock_rdlock(&dp->lock);
    CHECK(cached(dp, cache, &fo, &hit) == 3 && !hit);
    CHECK(cached(dp, cache, &fa, &hit) == 1 && hit);
    pthread_rwlock_unlock(&dp->lock);

    ts_policy net = host(5, 100, 0);   /* a range ahead of all: any flow may be its */
    net.sel.dst_hi[3] = 0xff;
    CHECK(ts_spd_add(dp, &net) == TS_OK);
    pthread_rwlock_rdlock(&dp->lock);
    CHECK(cached(dp, cache, &fa, &hit) == 5 && !hit);
    CHECK(cached(dp, cache, &fo, &hit) == 5 && !hit);
    pthread_rwlock_unlock(&dp->lock);
    ts_dp_free(dp);
    free(cache);
}

/* the SPD's count of waiting packets follows the holds: an addition asks it, not every hold */
void test_spd_churn_held(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_policy p = host(1, 10, 1);
    p.action = TS_ACT_PROTECT;
    p.reqid = 7;
    CHECK(ts_spd_add(dp, &p) == TS_OK);
    uint8_t pkt[64] = {0x45};
    ts_hold *h = dp->spd.v[0].hold;
    FATAL_IF(!h);
    CHECK(ts_hold_push(dp, h, pkt, sizeof(pkt), 1) && ts_hold_push(dp, h, pkt, sizeof(pkt), 2));
    CHECK(atomic_load(&dp->spd.held) == 2);
    uint8_t out[64];
    CHECK(ts_hold_pop(dp, h, out, sizeof(out), 3, NULL) == sizeof(pkt));
    CHECK(atomic_load(&dp->spd.held) == 1);
    CHECK(ts_spd_delete(dp, 1) == TS_OK);   /* what it still held goes with it */
    CHECK(atomic_load(&dp->spd.held) == 0);
    ts_dp_free(dp);
}
