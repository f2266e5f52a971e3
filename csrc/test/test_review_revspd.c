/* Review revspd (of h/spdchurn): what a range policy's delete costs under the write lock.
 *
 * h/spdchurn made a delete unlink its entry and leave a dead slot, O(1); for a policy whose
 * destination is a range, ts_spd_delete (spd.c) still calls range_rebuild when
 * ts_rindex_close (spdrange.c) finds the index's unlinked links or its nodes past what is live
 * (nlink - nlive > nlive + 64, nnode > 4 * nlive + 64).  Those bounds count the range index's
 * links alone, but range_rebuild walks every slot of v (spd->used: each client's hashed policy
 * and every dead slot too) and rebuilds the index from scratch.  On a gateway (thousands of
 * clients' hashed policies, one trap range), a peer whose children have range selectors (a
 * site-to-site child's /24; a narrowed range the peer picks) makes every ~34th delete of a /24
 * child a pass over all slots, every ~5th of a range of eight prefixes: the O(n)-per-change
 * cost under the write lock that review revpeerdos R1 was about, for this kind of policy. */
#include "selftest.h"

/* a client's policy: its virtual IP, one address (hashed), 100.64.0.0/10 */
static ts_policy client(uint32_t id, uint32_t n) { return client_policy(id, n); }

/* a child's destination range in 172.16.k.0/24: lo .1, hi .30 takes eight prefixes (/32, /31,
 * /30, /29, /29, /30, /31, /32); lo .0, hi .255 is the subnet, one */
static ts_policy ranged(uint32_t id, uint32_t k, uint8_t lo_last, uint8_t hi_last) {
    ts_policy p = client(id, 0);
    p.priority = 100;
    uint8_t lo[4] = {172, 16, (uint8_t)k, lo_last}, hi[4] = {172, 16, (uint8_t)k, hi_last};
    memcpy(p.sel.dst_lo, lo, 4);
    memcpy(p.sel.dst_hi, hi, 4);
    return p;
}

#define CLIENTS 20000u
#define CYCLES 128u

/* One peer adds and deletes a child with a range selector, CYCLES times, next to CLIENTS
 * clients' policies and a trap range.  A rebuild of the range index shows as its links
 * dropping on a delete (a plain unlink leaves them); each is a pass over spd->used slots
 * (range_rebuild), so that is what it costs here.  Returns the slots those passes visited. */
static unsigned long range_churn(uint8_t lo_last, uint8_t hi_last) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    for (uint32_t n = 0; n < CLIENTS; n++) {
        ts_policy p = client(1 + n, n);
        FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    }
    ts_policy trap = client(CLIENTS + 1, 0);
    trap.priority = 300;
    uint8_t lo[4] = {172, 16, 0, 0}, hi[4] = {172, 31, 255, 255};
    memcpy(trap.sel.dst_lo, lo, 4);
    memcpy(trap.sel.dst_hi, hi, 4);
    FATAL_IF(ts_spd_add(dp, &trap) != TS_OK);
    unsigned long rebuilds = 0, visited = 0;
    for (uint32_t c = 0; c < CYCLES; c++) {
        ts_policy p = ranged(CLIENTS + 2 + c, c, lo_last, hi_last);
        CHECK(ts_spd_add(dp, &p) == TS_OK);
        size_t links = dp->spd.range.nlink;
        CHECK(ts_spd_delete(dp, p.id) == TS_OK);
        if (dp->spd.range.nlink < links) {
            rebuilds++;
            /* range_rebuild's pass: since h/fixspd2 the live range policies' chain (on main it
             * was every slot, spd->used: the check below failed with 60,213 and 501,650) */
            visited += dp->spd.nrange;
        }
    }
    CHECK(ts_spd_count(dp) == CLIENTS + 1);
    if (visited > 256ul * CYCLES)
        fprintf(stderr, "review revspd: %u deletes of 172.16.k.%u-%u next to %u clients: %lu rebuilds, %lu slots visited\n",
                CYCLES, lo_last, hi_last, CLIENTS, rebuilds, visited);
    ts_dp_free(dp);
    return visited;
}

/* A delete O(1) amortized passes over a bounded number of slots a delete whatever the
 * clients' count: 256 is generous (the range index holds two policies here).  h/fixspd2
 * rebuilds from the live unhashed entries' chain alone: range_churn counts those. */
void test_review_revspd_range_delete_cost(void) {
    CHECK(range_churn(0, 255) <= 256ul * CYCLES);   /* a site-to-site child's /24 */
    CHECK(range_churn(1, 30) <= 256ul * CYCLES);    /* a range the peer picked: eight prefixes */
}

/* ---- what the flow cache trusts (passes on main: coverage the review asked for) ---------------- */

static ts_flow flow_to(const uint8_t dst[4]) {
    ts_flow f = {.family = 4, .proto = 17, .sport = 4000, .dport = 53, .src = {192, 0, 2, 1}};
    memcpy(f.dst, dst, 4);
    return f;
}

static uint32_t dgen_slot(const ts_dp *dp, const uint8_t dst[4]) {
    uint8_t in[5] = {4, dst[0], dst[1], dst[2], dst[3]};
    return (uint32_t)(ts_siphash24(dp->spd.key, in, sizeof(in)) & (TS_SPD_DGEN - 1));
}

static uint32_t answer(ts_dp *dp, ts_flow_cache *cache, const ts_flow *f) {
    pthread_rwlock_rdlock(&dp->lock);
    ts_spd_entry *c = ts_spd_lookup_cached(&dp->spd, cache, f), *r = ts_spd_lookup(&dp->spd, f);
    CHECK(c == r);   /* the cache's answer is the ordered scan's */
    pthread_rwlock_unlock(&dp->lock);
    return c ? c->pol.id : 0;
}

/* Two destinations sharing a counter of spd.dgen, both generations about to wrap: a flow to one
 * cached on the trap range keeps the right answer while the other's policy comes and goes, and
 * moves to its own destination's policy when that one is added ahead of the trap, through the
 * counters' wraparound (the cache compares them for equality only). */
void test_review_revspd_shared_dgen_wrap(void) {
    ts_dp *dp = ts_dp_new();
    ts_flow_cache *cache = calloc(1, sizeof(*cache));
    FATAL_IF(!dp || !cache);
    ts_policy trap = client(1, 0);
    trap.priority = 300;
    uint8_t lo[4] = {100, 64, 0, 0}, hi[4] = {100, 127, 255, 255};
    memcpy(trap.sel.dst_lo, lo, 4);
    memcpy(trap.sel.dst_hi, hi, 4);
    FATAL_IF(ts_spd_add(dp, &trap) != TS_OK);
    uint8_t d1[4] = {100, 64, 0, 1}, d2[4] = {100, 64, 0, 2};
    uint32_t slot = dgen_slot(dp, d1);
    for (uint32_t n = 2; dgen_slot(dp, d2) != slot; n++) {   /* another destination, same counter */
        d2[2] = (uint8_t)(n >> 8);
        d2[3] = (uint8_t)n;
    }
    pthread_rwlock_wrlock(&dp->lock);
    dp->spd.generation = UINT64_MAX;
    dp->spd.dgen[slot] = UINT64_MAX - 1;
    pthread_rwlock_unlock(&dp->lock);
    ts_flow f1 = flow_to(d1), f2 = flow_to(d2);
    CHECK(answer(dp, cache, &f1) == 1 && answer(dp, cache, &f2) == 1);
    for (uint32_t round = 0; round < 4; round++) {   /* the shared counter wraps on the way */
        ts_policy p2 = client(10 + round, 0);
        memcpy(p2.sel.dst_lo, d2, 4);
        memcpy(p2.sel.dst_hi, d2, 4);
        CHECK(ts_spd_add(dp, &p2) == TS_OK);
        CHECK(answer(dp, cache, &f1) == 1 && answer(dp, cache, &f2) == p2.id);
        CHECK(ts_spd_delete(dp, p2.id) == TS_OK);
        CHECK(answer(dp, cache, &f1) == 1 && answer(dp, cache, &f2) == 1);
    }
    ts_policy p1 = client(20, 0);
    memcpy(p1.sel.dst_lo, d1, 4);
    memcpy(p1.sel.dst_hi, d1, 4);
    CHECK(ts_spd_add(dp, &p1) == TS_OK);
    CHECK(answer(dp, cache, &f1) == 20 && answer(dp, cache, &f2) == 1);
    ts_policy net = trap;   /* a range ahead of all: the SPD's generation wraps too */
    net.id = 21;
    net.priority = 50;
    CHECK(ts_spd_add(dp, &net) == TS_OK);
    CHECK(dp->spd.generation < 4);
    CHECK(answer(dp, cache, &f1) == 21 && answer(dp, cache, &f2) == 21);
    CHECK(ts_spd_delete(dp, 21) == TS_OK);
    CHECK(answer(dp, cache, &f1) == 20 && answer(dp, cache, &f2) == 1);
    ts_dp_free(dp);
    free(cache);
}
