/* Packets that show no ports (a later fragment, or a first one too short to hold them) and the
 * port selectors (spd.c ts_selector_match, RFC 4301 §7): they match only a selector that
 * allows any port, never one whose range holds 0.  Peer A holds the remote side's UDP port
 * 5060, peer B (another identity) ports 0-5059 of the same networks: a fragmented datagram to
 * port 5060 must not have its later fragments sealed to B, nor B's SA admit later fragments
 * from A's hosts.  Draws nothing from the shared PRNG (fixed keys and packets). */
#include "selftest.h"

static const uint8_t KEY[20] = "0123456789abcdefSALT";
/* our side 172.16.0.0/16 and fd00:1::/32, the peers' side 10.2.0.0/16 and fd00:b::/32 */
static const uint8_t LOCAL4[4] = {172, 16, 0, 5}, REMOTE4[4] = {10, 2, 1, 7};
static const uint8_t LOCAL6[16] = {0xfd, 0, 0, 0x01, [15] = 5}, REMOTE6[16] = {0xfd, 0, 0, 0x0b, [15] = 7};

enum { SPI_A = 0xA000, SPI_B = 0xB000, SPI_C = 0xC000 };

/* proto from src to dst, the ports in [lo, hi] on the destination's side (dst_ports) or the
 * source's, any port on the other */
static void port_sel(ts_selector *s, int family, uint8_t proto, const uint8_t *src, const uint8_t *dst,
                     bool dst_ports, uint16_t lo, uint16_t hi) {
    sel_net(s, family, src, dst, family == 4 ? 2 : 4);
    s->proto = proto;
    if (dst_ports) {
        s->dport_lo = lo;
        s->dport_hi = hi;
    } else {
        s->sport_lo = lo;
        s->sport_hi = hi;
    }
}

/* an outbound SA to 192.0.2.peer and its PROTECT policies, one per family */
static void out_child(ts_dp *dp, uint32_t spi, uint32_t reqid, uint8_t peer, uint8_t proto, uint16_t lo,
                      uint16_t hi, uint32_t priority) {
    ts_sa_params p;
    params(&p, spi, TS_DIR_OUT, KEY, 20, false, 0, 0);
    p.reqid = reqid;
    addr4(&p.remote, peer, 4500);
    CHECK(ts_sad_add(dp, &p) == TS_OK);
    for (int fam = 4; fam <= 6; fam += 2) {
        ts_policy pol = {.id = reqid * 10 + (uint32_t)fam, .priority = priority, .action = TS_ACT_PROTECT,
                         .reqid = reqid};
        port_sel(&pol.sel, fam, proto, fam == 4 ? LOCAL4 : LOCAL6, fam == 4 ? REMOTE4 : REMOTE6, true, lo, hi);
        CHECK(ts_spd_add(dp, &pol) == TS_OK);
    }
}

/* IPv4, proto from src to dst: fragment offset off8 (8-byte units), more fragments mf, l4len
 * bytes after the header; the first 4 of them the ports if there is room */
static size_t frag4(uint8_t *b, uint8_t proto, const uint8_t *src, const uint8_t *dst, uint16_t off8, bool mf,
                    size_t l4len, uint16_t sport, uint16_t dport) {
    memset(b, 0, 20 + l4len);
    b[0] = 0x45;
    put16(b + 2, (uint16_t)(20 + l4len));
    put16(b + 4, 0x1234);
    put16(b + 6, (uint16_t)(off8 | (mf ? 0x2000 : 0)));
    b[8] = 64;
    b[9] = proto;
    memcpy(b + 12, src, 4);
    memcpy(b + 16, dst, 4);
    put16(b + 10, csum(b, 20));
    if (off8 == 0 && l4len >= 4) {
        put16(b + 20, sport);
        put16(b + 22, dport);
    }
    return 20 + l4len;
}

/* IPv6 with a Fragment header (RFC 8200 §4.5), otherwise as frag4 */
static size_t frag6(uint8_t *b, uint8_t proto, const uint8_t *src, const uint8_t *dst, uint16_t off8, bool mf,
                    size_t l4len, uint16_t sport, uint16_t dport) {
    memset(b, 0, 48 + l4len);
    b[0] = 0x60;
    put16(b + 4, (uint16_t)(8 + l4len));
    b[6] = 44;
    b[7] = 64;
    memcpy(b + 8, src, 16);
    memcpy(b + 24, dst, 16);
    b[40] = proto;
    put16(b + 42, (uint16_t)(off8 << 3 | (mf ? 1 : 0)));
    put32(b + 44, 0x1234);
    if (off8 == 0 && l4len >= 4) {
        put16(b + 48, sport);
        put16(b + 50, dport);
    }
    return 48 + l4len;
}

static size_t frag(int family, uint8_t *b, uint8_t proto, bool outbound, uint16_t off8, bool mf, size_t l4len,
                   uint16_t sport, uint16_t dport) {
    const uint8_t *l = family == 4 ? LOCAL4 : LOCAL6, *r = family == 4 ? REMOTE4 : REMOTE6;
    return (family == 4 ? frag4 : frag6)(b, proto, outbound ? l : r, outbound ? r : l, off8, mf, l4len, sport,
                                         dport);
}

/* the SPI the packet leaves under, 0 if dropped (*drop says why) */
static uint32_t sealed_under(ts_dp *dp, const uint8_t *pkt, size_t len, int *drop) {
    size_t icmp;
    int n = out1(dp, pkt, len, bufB, drop, &icmp);
    return n > 0 ? get32(bufB) : 0;
}

/* a SIP datagram to A's port 5060 in three fragments, and a first fragment too short for its
 * ports: only the first goes to A; the others to no port-restricted policy, so not to B */
void test_frag_ports_outbound(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    out_child(dp, SPI_A, 1, 10, 17, 5060, 5060, 10);
    out_child(dp, SPI_B, 2, 20, 17, 0, 5059, 10);
    int drop;
    for (int fam = 4; fam <= 6; fam += 2) {
        for (int round = 0; round < 2; round++) {   /* the second from the flow cache */
            size_t n = frag(fam, bufA, 17, true, 0, true, 1376, 5060, 5060);
            CHECK(sealed_under(dp, bufA, n, &drop) == SPI_A);
            n = frag(fam, bufA, 17, true, 1376 / 8, true, 1376, 0, 0);
            CHECK(sealed_under(dp, bufA, n, &drop) == 0 && drop == TS_DROP_FRAGMENT_NO_POLICY);
            n = frag(fam, bufA, 17, true, 2752 / 8, false, 300, 0, 0);
            CHECK(sealed_under(dp, bufA, n, &drop) == 0 && drop == TS_DROP_FRAGMENT_NO_POLICY);
            n = frag(fam, bufA, 17, true, 0, true, 3, 0, 0);   /* no room for the destination port */
            CHECK(sealed_under(dp, bufA, n, &drop) == 0 && drop == TS_DROP_FRAGMENT_NO_POLICY);
            n = frag(fam, bufA, 17, true, 0, false, 200, 4000, 5000);   /* B's own flow */
            CHECK(sealed_under(dp, bufA, n, &drop) == SPI_B);
        }
    }
    CHECK(drop_count(dp, TS_DROP_FRAGMENT_NO_POLICY) == 12 && drop_count(dp, TS_DROP_NO_POLICY) == 0);
    /* a child for any port takes what shows none (after the others: priority 20) */
    out_child(dp, SPI_C, 3, 30, 17, 0, 0xffff, 20);
    for (int fam = 4; fam <= 6; fam += 2) {
        size_t n = frag(fam, bufA, 17, true, 1376 / 8, true, 1376, 0, 0);
        CHECK(sealed_under(dp, bufA, n, &drop) == SPI_C);
        n = frag(fam, bufA, 17, true, 0, true, 3, 0, 0);
        CHECK(sealed_under(dp, bufA, n, &drop) == SPI_C);
        n = frag(fam, bufA, 17, true, 0, true, 1376, 5060, 5060);
        CHECK(sealed_under(dp, bufA, n, &drop) == SPI_A);
    }
    ts_dp_free(dp);
}

/* a trap policy (no SA yet) hit by a later fragment asks for any port, not for port 0 */
void test_frag_ports_acquire(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_policy pol = {.id = 1, .priority = 10, .action = TS_ACT_PROTECT, .reqid = 9};
    port_sel(&pol.sel, 4, 17, LOCAL4, REMOTE4, true, 0, 0xffff);
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
    int drop;
    size_t n = frag(4, bufA, 17, true, 1376 / 8, true, 1376, 0, 0);
    CHECK(sealed_under(dp, bufA, n, &drop) == 0 && drop == TS_DROP_NO_SA);
    ts_event ev;
    CHECK(count_events(dp, TS_EV_ACQUIRE, &ev) == 1 && ev.policy_id == 1);
    CHECK(ev.sel.proto == 17 && ev.sel.sport_lo == 0 && ev.sel.sport_hi == 0xffff && ev.sel.dport_lo == 0 &&
          ev.sel.dport_hi == 0xffff && memcmp(ev.sel.dst_lo, REMOTE4, 4) == 0);
    ts_dp_free(dp);
}

/* DCCP (33) has ports where TCP and UDP have them (RFC 4340 §5.1): read, not taken for 0 */
void test_frag_ports_dccp(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    out_child(dp, SPI_B, 2, 20, 33, 0, 5059, 10);
    int drop;
    for (int fam = 4; fam <= 6; fam += 2) {
        size_t n = frag(fam, bufA, 33, true, 0, false, 16, 4000, 5060);
        CHECK(sealed_under(dp, bufA, n, &drop) == 0 && drop == TS_DROP_NO_POLICY);
        n = frag(fam, bufA, 33, true, 0, false, 16, 4000, 5000);
        CHECK(sealed_under(dp, bufA, n, &drop) == SPI_B);
        n = frag(fam, bufA, 33, true, 1376 / 8, false, 16, 0, 0);
        CHECK(sealed_under(dp, bufA, n, &drop) == 0 && drop == TS_DROP_FRAGMENT_NO_POLICY);
    }
    ts_flow f;
    CHECK(ts_flow_parse(bufA, frag4(bufA, 33, LOCAL4, REMOTE4, 0, false, 16, 4000, 5060), &f) && !f.opaque &&
          f.sport == 4000 && f.dport == 5060);
    /* a protocol without ports shows none, and is no fragment for that */
    CHECK(ts_flow_parse(bufA, frag4(bufA, 47, LOCAL4, REMOTE4, 0, false, 16, 4000, 5060), &f) && !f.opaque &&
          f.sport == 0 && f.dport == 0);
    ts_dp_free(dp);
}

/* an inbound SA from the peers' side to ours, source ports [lo, hi] */
static uint32_t in_child(ts_dp *dp, uint16_t lo, uint16_t hi) {
    uint32_t spi = 0;
    CHECK(ts_sad_getspi(dp, 256, 0xffffffffu, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, KEY, 20, false, 64, 0);
    port_sel(&p.sel[0], 4, 17, REMOTE4, LOCAL4, false, lo, hi);
    port_sel(&p.sel[1], 6, 17, REMOTE6, LOCAL6, false, lo, hi);
    CHECK(ts_sad_update(dp, &p) == TS_OK);
    return spi;
}

/* the inner packet sealed under spi (sequence seq) and opened by dp: its length, 0 if dropped */
static int through(ts_dp *dp, uint32_t spi, uint64_t seq, const uint8_t *pkt, size_t len, int *drop) {
    size_t el = ref_seal(KEY, 20, spi, seq, false, NULL, pkt, len, min_pad(len), NULL, pkt[0] >> 4 == 4 ? 4 : 41,
                         bufB);
    return in1(dp, bufB, el, bufC, drop);
}

/* B's SA (source ports 0-5059) admits neither later fragments nor short first ones: they
 * could be A's hosts' (port 5060); an SA for any port admits them */
void test_frag_ports_inbound(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint32_t b = in_child(dp, 0, 5059), c = in_child(dp, 0, 0xffff);
    uint64_t seq = 0;
    int drop;
    for (int fam = 4; fam <= 6; fam += 2) {
        size_t n = frag(fam, bufA, 17, false, 1376 / 8, true, 1376, 0, 0);
        CHECK(through(dp, b, ++seq, bufA, n, &drop) == 0 && drop == TS_DROP_POLICY);
        CHECK(through(dp, c, seq, bufA, n, &drop) == (int)n);
        n = frag(fam, bufA, 17, false, 0, true, 3, 0, 0);
        CHECK(through(dp, b, ++seq, bufA, n, &drop) == 0 && drop == TS_DROP_POLICY);
        CHECK(through(dp, c, seq, bufA, n, &drop) == (int)n);
        n = frag(fam, bufA, 17, false, 0, true, 1376, 5060, 5060);   /* A's first fragment */
        CHECK(through(dp, b, ++seq, bufA, n, &drop) == 0 && drop == TS_DROP_POLICY);
        n = frag(fam, bufA, 17, false, 0, true, 1376, 5000, 5060);   /* B's own */
        CHECK(through(dp, b, ++seq, bufA, n, &drop) == (int)n);
    }
    CHECK(drop_count(dp, TS_DROP_POLICY) == 6);
    ts_dp_free(dp);
}
