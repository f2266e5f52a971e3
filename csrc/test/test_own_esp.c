/* Our own ESP read back from the TUN (ownesp.c, review revmobfix F2): any UDP from one of our ESP
 * ends is dropped as esp_loop whatever SA it would enter, so two SAs whose peers lie in each other's
 * selectors no longer seal each other's ESP round after round; the ends are learnt from the SAs'
 * local ends (add, migrate), a specific address or the wildcard, at most TS_OWN_ENDS of them. */
#include "selftest.h"

static ts_flow udp_flow(uint8_t family, const uint8_t *src, uint16_t sport) {
    ts_flow f;
    memset(&f, 0, sizeof(f));
    f.family = family;
    f.proto = 17;
    memcpy(f.src, src, family == 4 ? 4 : 16);
    f.sport = sport;
    f.dport = 4500;
    return f;
}

void test_own_esp_ends(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    const uint8_t ours[4] = {192, 0, 2, 1}, lan[4] = {10, 9, 0, 7};
    ts_addr end, none = {0}, wild6 = {.family = 6, .port = 4600}, v4;
    addr4(&end, 1, 4500);
    CHECK(!ts_own_end_from(dp, &(ts_flow){0}));   /* nothing learnt: nothing is ours */
    ts_own_end_note(dp, NULL);
    ts_own_end_note(dp, &none);                   /* port 0: no end */
    CHECK(dp->n_own_ends == 0);
    ts_own_end_note(dp, &end);
    ts_own_end_note(dp, &end);                    /* once */
    CHECK(dp->n_own_ends == 1);
    ts_flow f = udp_flow(4, ours, 4500);
    CHECK(ts_own_end_from(dp, &f));
    f.dport = 4501;                               /* whatever its destination */
    CHECK(ts_own_end_from(dp, &f));
    f = udp_flow(4, lan, 4500);                   /* a LAN host's own NAT-T */
    CHECK(!ts_own_end_from(dp, &f));
    f = udp_flow(4, ours, 4501);                  /* another port of ours */
    CHECK(!ts_own_end_from(dp, &f));
    f = udp_flow(4, ours, 4500);
    f.proto = 6;                                  /* TCP from our port */
    CHECK(!ts_own_end_from(dp, &f));
    f.proto = 17;
    f.opaque = 1;                                 /* a later fragment shows no ports */
    f.sport = 0;
    CHECK(!ts_own_end_from(dp, &f));
    /* the wildcard of a family: any of our addresses of it, with our port; not the other family */
    ts_own_end_note(dp, &wild6);
    uint8_t some6[16] = {0x20, 0x01, 0x0d, 0xb8};
    some6[15] = 5;
    f = udp_flow(6, some6, 4600);
    CHECK(ts_own_end_from(dp, &f));
    f = udp_flow(4, lan, 4600);
    CHECK(!ts_own_end_from(dp, &f));
    /* bounded: past TS_OWN_ENDS nothing more is learnt (own_esp still guards each SA's own) */
    for (int i = 0; i < TS_OWN_ENDS + 4; i++) {
        addr4(&v4, (uint8_t)(100 + i), 4500);
        ts_own_end_note(dp, &v4);
    }
    CHECK(dp->n_own_ends == TS_OWN_ENDS);
    ts_dp_free(dp);
}

/* UDP from src:sport to dst:dport with len bytes of payload */
static size_t udp4(uint8_t *out, const uint8_t *src, const uint8_t *dst, uint16_t sport, uint16_t dport, size_t len) {
    memset(out, 0, 28 + len);
    out[0] = 0x45;
    put16(out + 2, (uint16_t)(28 + len));
    out[8] = 64;
    out[9] = 17;
    memcpy(out + 12, src, 4);
    memcpy(out + 16, dst, 4);
    put16(out + 10, csum(out, 20));
    put16(out + 20, sport);
    put16(out + 22, dport);
    put16(out + 24, (uint16_t)(8 + len));
    return 28 + len;
}

void test_own_esp_pair(void) {
    /* SA A (reqid 1) to PA, protecting PB; SA B (reqid 2) to PB, protecting PA: both peers routed
     * into the TUN, A's ESP to PA would be sealed by B, B's by A, and so on */
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    const uint8_t gw[4] = {192, 0, 2, 1}, any[4] = {0};
    for (uint8_t k = 0; k < 2; k++) {
        ts_sa_params p;
        params(&p, 0x1001u + k, TS_DIR_OUT, key, 20, false, 0, 0);
        p.reqid = 1u + k;
        addr4(&p.remote, (uint8_t)(20 + k), 4500);                 /* PA = .20, PB = .21 */
        const uint8_t protects[4] = {192, 0, 2, (uint8_t)(21 - k)};
        p.n_sel = 1;
        sel_net(&p.sel[0], 4, any, protects, 0);
        memcpy(p.sel[0].dst_lo, protects, 4);
        memcpy(p.sel[0].dst_hi, protects, 4);
        CHECK(ts_sad_add(dp, &p) == TS_OK);
        ts_policy pol;
        memset(&pol, 0, sizeof(pol));
        pol.action = TS_ACT_PROTECT;
        pol.reqid = p.reqid;
        pol.priority = 10;
        pol.id = 1u + k;
        pol.sel = p.sel[0];
        CHECK(ts_spd_add(dp, &pol) == TS_OK);
    }
    const uint8_t pa[4] = {192, 0, 2, 20}, lan[4] = {10, 9, 0, 7};
    int drop;
    size_t icmp, len = udp4(bufA, gw, pa, 4500, 4500, 64);          /* A's ESP to PA, back from the TUN */
    CHECK(out1(dp, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_ESP_LOOP);
    CHECK(drop_count(dp, TS_DROP_ESP_LOOP) == 1);
    len = udp4(bufA, lan, pa, 4500, 4500, 64);                       /* a LAN host's NAT-T to PA: sealed by B */
    CHECK(out1(dp, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE);
    /* our end moved (MOBIKE): the new one is ours too */
    ts_addr pb, here;
    addr4(&pb, 21, 4500);
    addr4(&here, 77, 4500);
    CHECK(ts_sad_migrate(dp, 0x1002u, TS_DIR_OUT, &pb, &pb, &here) == TS_OK);
    const uint8_t there[4] = {192, 0, 2, 77};
    len = udp4(bufA, there, pa, 4500, 4500, 64);
    CHECK(out1(dp, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_ESP_LOOP);
    ts_dp_free(dp);
}
