/* Source routes (srcroute.c, review revesp F1) and TFC dummies in an SA's lifetime (review revesp
 * R2).  An inner packet with an IPv4 LSRR/SSRR option that has hops to go, or an IPv6 Routing header
 * with segments left (or with none left and an IP header straight behind it, or behind AH: review
 * revesp2), is dropped as TS_DROP_SOURCE_ROUTE both ways: its later destinations are no
 * selector's.  Spent routes, other options and extension headers pass; options cut short are
 * malformed.  A dummy (next header 59) counts in the SA's packets, bytes and limits.  Draws from the
 * shared PRNG only through pair_new (its key). */
#include "selftest.h"
#include "../srcroute.h"

/* ---- the option walk, byte by byte ------------------------------------------- */
void test_srcroute_options(void) {
    static const struct {
        const char *opt;
        size_t len;
        int want;
    } cases[] = {
        {"", 0, TS_SRCROUTE_NONE},
        {"\x01\x01\x01\x00", 4, TS_SRCROUTE_NONE},                             /* NOPs, EOL */
        {"\x94\x04\x00\x00", 4, TS_SRCROUTE_NONE},                             /* router alert */
        {"\x07\x07\x04\x00\x00\x00\x00\x00", 8, TS_SRCROUTE_NONE},             /* record route */
        {"\x44\x08\x05\x00\x00\x00\x00\x00", 8, TS_SRCROUTE_NONE},             /* timestamp */
        {"\x83\x07\x04\xc0\x00\x02\x63\x00", 8, TS_SRCROUTE_LIVE},             /* LSRR, one hop to go */
        {"\x89\x07\x04\xc0\x00\x02\x63\x00", 8, TS_SRCROUTE_LIVE},             /* SSRR */
        {"\x83\x07\x07\xc0\x00\x02\x63\x00", 8, TS_SRCROUTE_LIVE},             /* pointer = length: Linux routes on */
        {"\x83\x07\x08\xc0\x00\x02\x63\x00", 8, TS_SRCROUTE_NONE},             /* pointer past it: spent */
        {"\x01\x94\x04\x00\x00\x83\x07\x04\xc0\x00\x02\x63", 12, TS_SRCROUTE_LIVE},   /* after others */
        {"\x00\x83\x07\x04\xc0\x00\x02\x63", 8, TS_SRCROUTE_NONE},             /* after EOL: padding */
        {"\x03\x07\x04\xc0\x00\x02\x63\x00", 8, TS_SRCROUTE_NONE},             /* number 3 without its class bits */
        {"\x83\x07\x04\xc0\x00\x02\x63\x44\x01", 9, TS_SRCROUTE_BAD},         /* a live one, then one cut */
        {"\x83\x09\x04\x00", 4, TS_SRCROUTE_BAD},                              /* length past the options */
        {"\x44\x01\x00\x00", 4, TS_SRCROUTE_BAD},                              /* length 1 */
        {"\x07\x00\x00\x00", 4, TS_SRCROUTE_BAD},                              /* length 0 */
        {"\x01\x01\x01\x83", 4, TS_SRCROUTE_BAD},                              /* no length byte */
        {"\x83\x02\x00\x00", 4, TS_SRCROUTE_BAD},                              /* LSRR without a pointer */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* in a buffer of its own size: a read past the options is ASan's */
        uint8_t *opt = malloc(cases[i].len ? cases[i].len : 1);
        FATAL_IF(!opt);
        memcpy(opt, cases[i].opt, cases[i].len);
        int got = ts_ip4_source_route(opt, cases[i].len);
        if (got != cases[i].want)
            fprintf(stderr, "srcroute case %zu: %d, want %d\n", i, got, cases[i].want);
        CHECK(got == cases[i].want);
        free(opt);
    }
}

/* IPv4 UDP from A4 to B4 with these options (a multiple of 4 bytes) */
static size_t v4_with(uint8_t *b, const char *opt, size_t olen) {
    size_t hl = 20 + olen, total = hl + 12;
    memset(b, 0, total);
    b[0] = (uint8_t)(0x40 | hl / 4);
    put16(b + 2, (uint16_t)total);
    b[8] = 64;
    b[9] = 17;
    memcpy(b + 12, A4, 4);
    memcpy(b + 16, B4, 4);
    memcpy(b + 20, opt, olen);
    put16(b + 10, csum(b, hl));
    put16(b + hl, 1234);
    put16(b + hl + 2, 5678);
    put16(b + hl + 4, 12);
    return total;
}

/* IPv6 UDP from A6 to B6 behind a segment routing header (type 4) of one address, a hop-by-hop
 * header first if hbh */
static size_t v6_with_rh(uint8_t *b, uint8_t segleft, bool hbh) {
    size_t off = 40, total = 40 + (hbh ? 8 : 0) + 24 + 12;
    memset(b, 0, total);
    b[0] = 0x60;
    put16(b + 4, (uint16_t)(total - 40));
    b[6] = hbh ? 0 : 43;
    b[7] = 64;
    memcpy(b + 8, A6, 16);
    memcpy(b + 24, B6, 16);
    if (hbh) {
        b[off] = 43;   /* next header; length 0 (8 bytes), PadN */
        b[off + 2] = 1;
        b[off + 3] = 4;
        off += 8;
    }
    b[off] = 17;
    b[off + 1] = 2;   /* 24 bytes */
    b[off + 2] = 4;   /* segment routing */
    b[off + 3] = segleft;
    memcpy(b + off + 8, B6, 16);
    off += 24;
    put16(b + off, 1234);
    put16(b + off + 2, 5678);
    put16(b + off + 4, 12);
    return total;
}

/* An IPv6 packet from A6 to B6 whose extension header chain the letters spell: h hop-by-hop, d
 * destination options, r / R a segment routing header (type 4) with 0 / 1 segments left, p RPL
 * (type 3) with 0 left, a AH (24 bytes), f / F a first / later fragment header; then what ends it:
 * u UDP, 6 an IPv6 header, 4 an IPv4 header, e ESP (its bytes encrypted), n no next header. */
static size_t v6_chain(uint8_t *b, const char *spec) {
    size_t n = 40, at = 6;   /* at: the next header byte to fill */
    memset(b, 0, 200);
    b[0] = 0x60;
    b[7] = 64;
    memcpy(b + 8, A6, 16);
    memcpy(b + 24, B6, 16);
    for (const char *c = spec; *c; c++) {
        static const char hdr[] = "hdrRpafF", nhs[] = {0, 60, 43, 43, 43, 51, 44, 44};
        static const char end[] = "u64en", ends[] = {17, 41, 4, 50, 59};
        static const uint8_t end_len[] = {8, 40, 20, 16, 0};
        const char *h = strchr(hdr, *c), *e = strchr(end, *c);
        if (h) {
            b[at] = (uint8_t)nhs[h - hdr];
            at = n;
            size_t hl = *c == 'h' || *c == 'd' || *c == 'f' || *c == 'F' ? 8 : 24;
            if (*c == 'a')
                b[n + 1] = 4;                       /* (4 + 2) * 4 bytes */
            else if (hl == 24)
                b[n + 1] = 2;                       /* (2 + 1) * 8 bytes, one address */
            if (hl == 24 && *c != 'a') {
                b[n + 2] = *c == 'p' ? 3 : 4;
                b[n + 3] = *c == 'R';
            }
            if (*c == 'F')
                put16(b + n + 2, 8 << 3);           /* offset 8: a later fragment */
            if (*c == 'f' || *c == 'F')
                b[n + 5] = 1;                       /* M */
            n += hl;
        } else {
            FATAL_IF(!e || c[1]);
            b[at] = (uint8_t)ends[e - end];
            if (*c == '6') {
                b[n] = 0x60;
                b[n + 6] = 59;
            } else if (*c == '4') {
                b[n] = 0x45;
                b[n + 3] = 20;
                b[n + 9] = 17;
            } else if (*c == 'u') {
                put16(b + n, 1234);
                put16(b + n + 2, 5678);
                put16(b + n + 4, 8);
            }
            n += end_len[e - end];
        }
    }
    put16(b + 4, (uint16_t)(n - 40));
    return n;
}

/* ---- the IPv6 walk: a packet behind a spent route, a route behind AH (review revesp2) ---------- */
void test_srcroute_v6_walk(void) {
    static const struct {
        const char *spec;
        int want;        /* ts_flow_parse_own */
        uint8_t proto;   /* the flow's, when not malformed */
    } cases[] = {
        {"Ru", TS_DROP_SOURCE_ROUTE, 17},
        {"ru", TS_DROP_NONE, 17},                     /* spent */
        {"r6", TS_DROP_SOURCE_ROUTE, 41},             /* F1: decapsulated at the last segment */
        {"r4", TS_DROP_SOURCE_ROUTE, 4},
        {"p6", TS_DROP_SOURCE_ROUTE, 41},             /* RPL the same */
        {"hr6", TS_DROP_SOURCE_ROUTE, 41},
        {"rd6", TS_DROP_NONE, 41},                    /* not straight behind: a tunnel device's (revesp R1) */
        {"d6", TS_DROP_NONE, 41},
        {"6", TS_DROP_NONE, 41},
        {"aRu", TS_DROP_SOURCE_ROUTE, 51},            /* F2: behind AH, the flow still AH's */
        {"aadRu", TS_DROP_SOURCE_ROUTE, 51},
        {"ar6", TS_DROP_SOURCE_ROUTE, 51},
        {"faRu", TS_DROP_SOURCE_ROUTE, 51},
        {"aru", TS_DROP_NONE, 51},
        {"au", TS_DROP_NONE, 51},
        {"ae", TS_DROP_NONE, 51},                     /* nested ESP: what it hides is not seen */
        {"afRu", TS_DROP_SOURCE_ROUTE, 51},
        {"aFu", TS_DROP_NONE, 51},                    /* a later fragment's bytes are data */
        {"FRu", TS_DROP_NONE, 43},                    /* a later fragment: the rest is data */
    };
    uint8_t b[200];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = v6_chain(b, cases[i].spec);
        uint8_t *pkt = malloc(len);   /* a buffer of its own size: a read past it is ASan's */
        FATAL_IF(!pkt);
        memcpy(pkt, b, len);
        ts_flow f;
        int got = ts_flow_parse_own(pkt, len, &f);
        if (got != cases[i].want || f.proto != cases[i].proto)
            fprintf(stderr, "v6 walk %s: %d proto %u, want %d proto %u\n", cases[i].spec, got, f.proto,
                    cases[i].want, cases[i].proto);
        CHECK(got == cases[i].want && f.proto == cases[i].proto);
        free(pkt);
    }
    /* an AH past the payload, an AH of 4 bytes, a Routing header cut behind AH: malformed */
    size_t len = v6_chain(b, "an");
    b[41] = 5;
    CHECK(ts_flow_parse_own(b, len, &(ts_flow){0}) == TS_DROP_MALFORMED);
    put16(b + 4, 4);
    CHECK(ts_flow_parse_own(b, 44, &(ts_flow){0}) == TS_DROP_MALFORMED);
    len = v6_chain(b, "aRu");
    put16(b + 4, 24 + 6);
    CHECK(ts_flow_parse_own(b, 40 + 24 + 6, &(ts_flow){0}) == TS_DROP_MALFORMED);
    /* an ICMPv6 error's quote is never walked for routes: its AH and SRH pass (ts_quote_parse) */
    len = v6_chain(b, "ar6");
    ts_flow q;
    CHECK(ts_quote_parse(b, len, &q) == TS_QUOTE_PORTS && q.proto == 41);
}

/* pkt sealed by the peer and opened by pr.rx: the drop reason (and the packet back if through) */
static int opened(struct pair *pr, uint32_t seq, const uint8_t *pkt, size_t len) {
    int drop;
    size_t el = ref_seal(pr->key, 20, pr->spi, seq, false, NULL, pkt, len, min_pad(len), NULL,
                         pkt[0] >> 4 == 4 ? 4 : 41, bufB);
    int n = in1(pr->rx, bufB, el, bufC, &drop);
    CHECK((n > 0) == (drop == TS_DROP_NONE));
    if (n > 0)
        CHECK((size_t)n == len && memcmp(bufC, pkt, len) == 0);
    return drop;
}

static int sealed(struct pair *pr, const uint8_t *pkt, size_t len) {
    int drop;
    size_t icmp;
    int n = out1(pr->tx, pkt, len, bufB, &drop, &icmp);
    CHECK((n > 0) == (drop == TS_DROP_NONE));
    return drop;
}

/* ---- both ways through the data path ----------------------------------------- */
void test_srcroute_path(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    uint32_t seq = 1;
    static const char live4[] = "\x83\x07\x04\xc0\x00\x02\x63\x00", spent4[] = "\x83\x07\x08\xc0\x00\x02\x63\x00";
    static const char ra[] = "\x94\x04\x00\x00", cut[] = "\x83\x09\x04\x00";
    uint8_t pkt[200];
    size_t len = v4_with(pkt, live4, 8);
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_SOURCE_ROUTE);
    CHECK(sealed(&pr, pkt, len) == TS_DROP_SOURCE_ROUTE);
    len = v6_with_rh(pkt, 1, false);
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_SOURCE_ROUTE);
    CHECK(sealed(&pr, pkt, len) == TS_DROP_SOURCE_ROUTE);
    len = v6_with_rh(pkt, 1, true);
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_SOURCE_ROUTE);
    CHECK(sealed(&pr, pkt, len) == TS_DROP_SOURCE_ROUTE);
    CHECK(drop_count(pr.rx, TS_DROP_SOURCE_ROUTE) == 3 && drop_count(pr.tx, TS_DROP_SOURCE_ROUTE) == 3);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.rx, pr.spi, TS_DIR_IN, NULL, &info) == TS_OK && info.counters[TS_CTR_POLICY_DROPS] == 3 &&
          info.counters[TS_CTR_PACKETS] == 0);
    /* dropped before the SPD: no number taken, no ACQUIRE */
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.seq == 0);
    CHECK(count_events(pr.tx, TS_EV_ACQUIRE, NULL) == 0);
    /* what passes: a spent route, other options, a Routing header with no segments left */
    len = v4_with(pkt, spent4, 8);
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_NONE && sealed(&pr, pkt, len) == TS_DROP_NONE);
    len = v4_with(pkt, ra, 4);
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_NONE && sealed(&pr, pkt, len) == TS_DROP_NONE);
    len = v6_with_rh(pkt, 0, true);
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_NONE && sealed(&pr, pkt, len) == TS_DROP_NONE);
    /* a spent SRH with a packet behind it, a Routing header behind AH (review revesp2) */
    len = v6_chain(pkt, "r6");
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_SOURCE_ROUTE && sealed(&pr, pkt, len) == TS_DROP_SOURCE_ROUTE);
    len = v6_chain(pkt, "aRu");
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_SOURCE_ROUTE && sealed(&pr, pkt, len) == TS_DROP_SOURCE_ROUTE);
    len = v6_chain(pkt, "aru");
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_NONE && sealed(&pr, pkt, len) == TS_DROP_NONE);
    /* an option cut short: malformed, as the kernel finds it */
    len = v4_with(pkt, cut, 4);
    CHECK(opened(&pr, seq++, pkt, len) == TS_DROP_MALFORMED && sealed(&pr, pkt, len) == TS_DROP_MALFORMED);
    CHECK(drop_count(pr.rx, TS_DROP_SOURCE_ROUTE) == 5 && drop_count(pr.tx, TS_DROP_SOURCE_ROUTE) == 5);
    pair_free(&pr);
}

/* ---- R2: TFC dummies in the SA's lifetime ------------------------------------- */

/* a dummy of dlen data bytes sealed for pr.rx: the drop reason */
static int dummy(struct pair *pr, uint32_t seq, size_t dlen) {
    int drop;
    memset(bufA, 0, dlen);
    size_t el = ref_seal(pr->key, 20, pr->spi, seq, false, NULL, bufA, dlen, min_pad(dlen), NULL, 59, bufB);
    CHECK(in1(pr->rx, bufB, el, bufC, &drop) == 0);
    return drop;
}

void test_dummy_lifetime(void) {
    for (int bytes = 0; bytes <= 1; bytes++) {
        struct pair pr;
        pair_new(&pr, 20, false, 64, 0);
        /* a second inbound SA with limits: soft at the second dummy, hard past the third */
        uint32_t spi;
        CHECK(ts_sad_getspi(pr.rx, 256, 0xffffffffu, &spi) == TS_OK);
        ts_sa_params p;
        params(&p, spi, TS_DIR_IN, pr.key, 20, false, 64, 0);
        if (bytes) {   /* 40 data bytes + 2 padding + 2 trailer: 44 a dummy */
            p.soft_bytes = 88;
            p.hard_bytes = 3 * 44;
        } else {
            p.soft_packets = 2;
            p.hard_packets = 3;
        }
        CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
        pr.spi = spi;
        int want[] = {TS_DROP_DUMMY, TS_DROP_DUMMY, TS_DROP_DUMMY, TS_DROP_LIFETIME, TS_DROP_LIFETIME};
        int soft = 0, hard = 0;
        ts_event ev;
        for (uint32_t i = 1; i <= 5; i++) {
            CHECK(dummy(&pr, i, 40) == want[i - 1]);
            while (ts_dp_next_event(pr.rx, &ev, bufC, sizeof(bufC)) == 1) {
                if (ev.type != TS_EV_EXPIRE)
                    continue;
                CHECK(ev.spi == spi && ev.reason == (bytes ? TS_EXP_BYTES : TS_EXP_PACKETS));
                CHECK(ev.hard ? i == 4 : i == 2);
                hard += ev.hard;
                soft += !ev.hard;
            }
        }
        CHECK(soft == 1 && hard == 1);
        ts_sa_info info;
        CHECK(ts_sad_get(pr.rx, spi, TS_DIR_IN, NULL, &info) == TS_OK && info.state == TS_SA_DEAD &&
              info.counters[TS_CTR_PACKETS] == 3 && info.counters[TS_CTR_BYTES] == 3 * 44);
        CHECK(drop_count(pr.rx, TS_DROP_DUMMY) == 3 && drop_count(pr.rx, TS_DROP_LIFETIME) == 2);
        pair_free(&pr);
    }
}
