/* SAs dead at a hard byte/packet limit (dp.c kill_sa, sad.c ts_sad_remove): the hard EXPIRE
 * goes up once (again with the next packet if the event queue lost it), the dead SA drops and
 * counts what comes for it, and removed as the worker removes it when it takes that EXPIRE,
 * its entry and cipher context are freed (ts_live_counts back where they were), its final
 * counters are those it died with, and its SPI is free again. */
#include "selftest.h"

static int64_t live_sas(void) {
    int64_t sas, ctxs;
    ts_live_counts(&sas, &ctxs);
    return sas;
}

static int64_t live_ctxs(void) {
    int64_t sas, ctxs;
    ts_live_counts(&sas, &ctxs);
    return ctxs;
}

/* the one hard EXPIRE queued, if any (1), after draining everything else */
static int hard_expire(ts_dp *dp, ts_event *out) {
    ts_event ev;
    int n = 0;
    while (ts_dp_next_event(dp, &ev, bufC, sizeof(bufC)) == 1)
        if (ev.type == TS_EV_EXPIRE && ev.hard) {
            *out = ev;
            n++;
        }
    return n;
}

/* an outbound SA with a hard byte limit, bound to the PROTECT policies of protect() */
static void outbound_byte_limit(void) {
    int64_t sas0 = live_sas(), ctx0 = live_ctxs();
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    size_t len = make_inner(4, 40, false, bufA), icmp;
    ts_sa_params p;
    params(&p, 0x8100, TS_DIR_OUT, key, 20, false, 0, 0);
    p.hard_bytes = 3 * len;   /* three packets fit, the fourth is past it */
    CHECK(ts_sad_add(dp, &p) == TS_OK);
    protect(dp, 1);
    CHECK(live_sas() == sas0 + 1 && live_ctxs() > ctx0);
    int drop;
    for (int i = 1; i <= 3; i++)
        CHECK(out1(dp, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE);
    uint64_t lifetime0 = drop_count(dp, TS_DROP_LIFETIME);
    CHECK(out1(dp, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_LIFETIME);
    CHECK(out1(dp, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_LIFETIME);   /* dead: nothing sealed */
    CHECK(drop_count(dp, TS_DROP_LIFETIME) == lifetime0 + 2);
    ts_event ev;
    CHECK(hard_expire(dp, &ev) == 1 && ev.spi == 0x8100 && ev.dir == TS_DIR_OUT && ev.reason == TS_EXP_BYTES &&
          ev.addr.port == PEER.port && memcmp(ev.addr.addr, PEER.addr, 4) == 0);
    /* the worker's removal: the counters it died with, then entry and contexts freed */
    ts_sa_info final;
    CHECK(ts_sad_remove(dp, 0x8100, TS_DIR_OUT, &PEER, &final) == TS_OK && final.state == TS_SA_DEAD &&
          final.counters[TS_CTR_PACKETS] == 3 && final.counters[TS_CTR_BYTES] == 3 * len && final.hard_fired);
    CHECK(live_sas() == sas0 && live_ctxs() == ctx0);
    /* the policy has no SA now: its packets ask for one (ACQUIRE), nothing is sealed with the old key */
    CHECK(out1(dp, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_NO_SA);
    CHECK(count_events(dp, TS_EV_ACQUIRE, NULL) == 1);
    /* the control side's DELETE after that: ENOENT, nothing else changes */
    CHECK(ts_sad_delete(dp, 0x8100, TS_DIR_OUT, &PEER) == TS_ENOENT);
    CHECK(live_sas() == sas0 && live_ctxs() == ctx0);
    ts_dp_free(dp);
}

/* an inbound SA with a hard packet limit; its hard EXPIRE lost to a full event queue first */
static void inbound_packet_limit(void) {
    int64_t sas0 = live_sas(), ctx0 = live_ctxs();
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    uint32_t spi;
    CHECK(ts_sad_getspi(dp, 0x8200, 0x8200, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, key, 20, false, 64, 0);
    p.hard_packets = 2;
    CHECK(ts_sad_update(dp, &p) == TS_OK);
    CHECK(live_sas() == sas0 + 1 && live_ctxs() > ctx0);
    size_t len = make_inner(4, 30, false, bufA);
    int drop;
    for (uint64_t seq = 1; seq <= 2; seq++) {
        size_t el = ref_seal(key, 20, spi, seq, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
        CHECK(in1(dp, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    }
    ts_event filler = {.type = TS_EV_ACQUIRE};
    while (ts_events_push(&dp->events, &filler, NULL, 0))
        ;
    uint64_t full0 = drop_count(dp, TS_DROP_QUEUE_FULL), lifetime0 = drop_count(dp, TS_DROP_LIFETIME);
    size_t el = ref_seal(key, 20, spi, 3, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(dp, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_LIFETIME);   /* past the limit: dropped */
    CHECK(drop_count(dp, TS_DROP_QUEUE_FULL) == full0 + 1);
    ts_event ev;
    CHECK(hard_expire(dp, &ev) == 0);   /* lost with the full queue */
    ts_sa_info info;
    CHECK(ts_sad_get(dp, spi, TS_DIR_IN, NULL, &info) == TS_OK && info.state == TS_SA_DEAD && !info.hard_fired);
    /* the next packet for the dead SA: dropped and counted, and the EXPIRE goes up again, once */
    el = ref_seal(key, 20, spi, 4, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(dp, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_LIFETIME);
    el = ref_seal(key, 20, spi, 5, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(dp, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_LIFETIME);
    CHECK(drop_count(dp, TS_DROP_LIFETIME) == lifetime0 + 3);
    CHECK(hard_expire(dp, &ev) == 1 && ev.spi == spi && ev.dir == TS_DIR_IN && ev.reason == TS_EXP_PACKETS);
    CHECK(ts_sad_get(dp, spi, TS_DIR_IN, NULL, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 2);
    ts_sa_info final;
    CHECK(ts_sad_remove(dp, spi, TS_DIR_IN, NULL, &final) == TS_OK && final.counters[TS_CTR_PACKETS] == 2 &&
          final.counters[TS_CTR_BYTES] == 2 * len);
    CHECK(live_sas() == sas0 && live_ctxs() == ctx0);
    /* gone: its packets are unknown SPIs (counted), and the SPI can be handed out again */
    uint64_t nosa0 = drop_count(dp, TS_DROP_NO_SA);
    CHECK(in1(dp, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_NO_SA);
    CHECK(drop_count(dp, TS_DROP_NO_SA) == nosa0 + 1);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 1);
    uint32_t again;
    CHECK(ts_sad_getspi(dp, 0x8200, 0x8200, &again) == TS_OK && again == spi);
    CHECK(ts_sad_delete(dp, spi, TS_DIR_IN, NULL) == TS_OK);
    CHECK(live_sas() == sas0 && live_ctxs() == ctx0);
    ts_dp_free(dp);
}

void test_dead_sa(void) {
    outbound_byte_limit();
    inbound_packet_limit();
}
