/* ICMP too big (icmp.c): the answers, the packets no ICMP error may answer,
 * and the rate limit. */
#include "selftest.h"

static void test_icmp_share(void);

/* PROTECT (reqid 1) for any source and destination of one family, as policy id */
static void protect_any(ts_dp *dp, uint32_t id, int family) {
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.action = TS_ACT_PROTECT;
    pol.reqid = 1;
    pol.priority = 20;
    pol.id = id;
    sel_net(&pol.sel, family, family == 4 ? A4 : A6, family == 4 ? B4 : B6, 0);
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
}

/* ---- 7. ICMP too big --------------------------------------------------------------- */
void test_icmp(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    ts_dp_set_tunnel_mtu(pr.tx, 1400);
    int drop;
    size_t icmp;
    size_t len = make_inner(4, 1472, true, bufA);
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_TOO_BIG);
    CHECK(icmp >= 28 && icmp <= 576 && bufB[20] == 3 && bufB[21] == 4 && get16(bufB + 26) == 1400);
    CHECK(csum(bufB, 20) == 0 && csum(bufB + 20, icmp - 20) == 0);
    CHECK(memcmp(bufB + 12, B4, 4) == 0 && memcmp(bufB + 16, A4, 4) == 0);
    len = make_inner(4, 1472, false, bufA);
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE && icmp == 0);
    len = make_inner(6, 1452, false, bufA);
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_TOO_BIG);
    CHECK(icmp > 48 && icmp <= 1280 && bufB[6] == 58 && bufB[40] == 2 && get32(bufB + 44) == 1400);
    /* ICMPv6 checksum over the pseudo-header */
    uint8_t ph[40 + 1280];
    memcpy(ph, bufB + 8, 32);
    put32(ph + 32, (uint32_t)(icmp - 40));
    memset(ph + 36, 0, 3);
    ph[39] = 58;
    memcpy(ph + 40, bufB + 40, icmp - 40);
    CHECK(csum(ph, 40 + icmp - 40) == 0);
    pair_free(&pr);
}

/* Packets no ICMP error may answer (ICMP errors, non-unicast sources, later
 * fragments) and the rate limit: each withheld answer is counted. */
void test_icmp_limits(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    ts_dp_set_tunnel_mtu(pr.tx, 1400);
    protect_any(pr.tx, 3, 4);           /* any source, so odd ones reach the MTU check */
    protect_any(pr.tx, 4, 6);
    int drop;
    size_t icmp;
    struct { int family; uint8_t proto, type; uint8_t src0, src_last; bool later_frag; bool answer; } cases[] = {
        {4, 17, 0, 10, 1, false, true},      /* ordinary UDP from a host */
        {4, 1, 8, 10, 1, false, true},       /* echo request */
        {4, 1, 3, 10, 1, false, false},      /* destination unreachable: an error */
        {4, 1, 11, 10, 1, false, false},     /* time exceeded */
        {4, 17, 0, 224, 1, false, false},    /* multicast source */
        {4, 17, 0, 255, 255, false, false},  /* broadcast source */
        {4, 17, 0, 127, 1, false, false},    /* loopback source */
        {4, 17, 0, 0, 0, false, false},      /* unspecified source */
        {4, 17, 0, 10, 1, true, false},      /* a later fragment */
        {6, 17, 0, 0xfd, 1, false, true},
        {6, 58, 128, 0xfd, 1, false, true},  /* echo request */
        {6, 58, 1, 0xfd, 1, false, false},   /* destination unreachable */
        {6, 58, 2, 0xfd, 1, false, false},   /* packet too big itself */
        {6, 17, 0, 0xff, 1, false, false},   /* multicast source */
        {6, 17, 0, 0, 0, false, false},      /* :: */
        {6, 17, 0, 0, 1, false, false},      /* ::1 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int fam = cases[i].family;
        size_t hl = fam == 4 ? 20 : 40;
        size_t len = make_inner(fam, 1452, true, bufA);
        if (fam == 4) {
            bufA[9] = cases[i].proto;
            memset(bufA + 12, cases[i].src_last, 4);
            bufA[12] = cases[i].src0;
            if (cases[i].later_frag)
                put16(bufA + 6, 0x4000 | 100);
            bufA[10] = bufA[11] = 0;
            put16(bufA + 10, csum(bufA, 20));
        } else {
            bufA[6] = cases[i].proto;
            memset(bufA + 8, 0, 16);
            bufA[8] = cases[i].src0;
            bufA[23] = cases[i].src_last;
        }
        if (cases[i].proto != 17)
            bufA[hl] = cases[i].type, bufA[hl + 1] = 0;
        uint64_t before = drop_count(pr.tx, TS_DROP_ICMP_SUPPRESSED);
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_TOO_BIG);
        CHECK((icmp > 0) == cases[i].answer);
        CHECK(drop_count(pr.tx, TS_DROP_ICMP_SUPPRESSED) == before + !cases[i].answer);
        if ((icmp > 0) != cases[i].answer)
            fprintf(stderr, "icmp case %zu: answer %zu\n", i, icmp);
    }
    pair_free(&pr);

    /* a flood from one sender: the first answers go out (its share's burst of 10), then its
     * bucket runs dry (it refills at 10/s, far slower than this loop), and every withheld one is
     * counted */
    pair_new(&pr, 20, false, 64, 0);
    ts_dp_set_tunnel_mtu(pr.tx, 1400);
    size_t len = make_inner(4, 1472, true, bufA);
    int answered = 0, n = 500;
    for (int i = 0; i < n; i++) {
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_TOO_BIG);
        answered += icmp > 0;
    }
    CHECK(answered >= 10 && answered < n);
    CHECK(drop_count(pr.tx, TS_DROP_ICMP_SUPPRESSED) == (uint64_t)(n - answered));
    CHECK(drop_count(pr.tx, TS_DROP_TOO_BIG) == (uint64_t)n);
    pair_free(&pr);
    test_icmp_share();
}

/* One sender's flood leaves the others their answers (review revpeerdos F2), with the limiters'
 * clock stopped: the flooding sender gets its burst of 10; another sender is still answered; then
 * senders one packet each until all of them together used the shared burst of 50; a sender the
 * shared budget refused 15 times keeps its share (each refusal gives its turn back), so once the
 * shared bucket has answers again (10 ms, too short to refill a share) it is answered. */
static void test_icmp_share(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    ts_dp_set_tunnel_mtu(pr.tx, 1400);
    protect_any(pr.tx, 3, 4);           /* any IPv4 source */
    uint64_t t0 = 1ull << 62;
    ts_test_set_clock(pr.tx, t0);
    int drop;
    size_t icmp;
    int answered = 0;
    size_t len = make_inner(4, 1472, true, bufA);
    for (int i = 0; i < 40; i++) {
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_TOO_BIG);
        answered += icmp > 0;
    }
    CHECK(answered == 10);
    ts_addr flooder = {.family = 4};
    memcpy(flooder.addr, bufA + 12, 4);
    unsigned flooders = ts_test_icmp_source_slot(pr.tx, &flooder);
    int sources = 0;
    for (int n = 0;; sources++) {       /* 10.9.x.y: one packet each, till the shared burst is spent */
        ts_addr next = {.family = 4};
        do {                            /* not one in the flooder's slot (1 in 256: its share is spent) */
            next.addr[0] = 10, next.addr[1] = 9, next.addr[2] = (uint8_t)(n / 200), next.addr[3] = (uint8_t)(1 + n % 200);
            n++;
        } while (ts_test_icmp_source_slot(pr.tx, &next) == flooders);
        memcpy(bufA + 12, next.addr, 4);
        bufA[10] = bufA[11] = 0;
        put16(bufA + 10, csum(bufA, 20));
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_TOO_BIG);
        if (!icmp || sources > 100)
            break;
    }
    CHECK(sources == 40);               /* 50 in all: 10 of the flooding sender's, 40 others */
    for (int i = 0; i < 14; i++) {      /* the sender refused: more while the shared budget is spent */
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && icmp == 0);
    }
    ts_test_set_clock(pr.tx, t0 + 10000000ull);   /* 10 shared answers more, a tenth of a share's */
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && icmp > 0);
    CHECK(drop_count(pr.tx, TS_DROP_ICMP_SUPPRESSED) == 30 + 1 + 14);
    ts_test_set_clock(pr.tx, 0);
    pair_free(&pr);
}
