/* ~200k random and mutated packets through both directions with a fixed seed:
 * nothing changed authenticates, every drop is counted under its reason. */
#include "selftest.h"

/* ---- 8. random and mutated input ---------------------------------------------------- */
static size_t mutate(uint8_t *p, size_t len, size_t cap, uint32_t other_spi) {
    switch (rnd_below(7)) {
    case 0: {   /* bit flips */
        int n = 1 + (int)rnd_below(4);
        for (int i = 0; i < n && len; i++)
            p[rnd_below((uint32_t)len)] ^= (uint8_t)(1u << rnd_below(8));
        return len;
    }
    case 1: return len ? rnd_below((uint32_t)len) : 0;                 /* truncate */
    case 2: {                                                             /* extend */
        size_t add = 1 + rnd_below(64);
        if (len + add > cap)
            add = cap - len;
        rnd_fill(p + len, add);
        return len + add;
    }
    case 3: put32(p, other_spi); return len;                             /* SPI swap */
    case 4: put32(p + 4, (uint32_t)rnd()); return len;                   /* sequence number */
    case 5: rnd_fill(p + 8, 8); return len;                              /* IV */
    default:                                                              /* random byte values */
        for (int i = 0; i < 3 && len; i++)
            p[rnd_below((uint32_t)len)] = (uint8_t)rnd();
        return len;
    }
}

void test_fuzz(long iterations) {
    struct pair pr;
    pair_new(&pr, 20, true, 4096, 0);
    uint32_t larval;
    CHECK(ts_sad_getspi(pr.rx, 256, 0xffffffffu, &larval) == TS_OK);
    ts_dp_set_tunnel_mtu(pr.tx, 1000);
    uint64_t per0_rx[TS_DROP__COUNT], per0_tx[TS_DROP__COUNT];
    uint64_t base_rx = drop_sum(pr.rx, per0_rx), base_tx = drop_sum(pr.tx, per0_tx);
    uint64_t rejected_rx = 0, rejected_tx = 0, ike = 0, ike_seen = 0, accepted = 0, invalid_spi_seen = 0;
    uint64_t why_rx[TS_DROP__COUNT] = {0}, why_tx[TS_DROP__COUNT] = {0};
    uint32_t spis[] = {pr.spi, larval, 0, 0xffffffffu, 255, 256};
    ts_event ev;
    for (long it = 0; it < iterations; it++) {
        int drop = -1;
        size_t icmp = 0;
        uint32_t op = rnd_below(10);
        if (op < 5) {
            /* a genuine packet from the C sender, then mutated */
            size_t len = make_inner(rnd_below(2) ? 4 : 6, rnd_below(200), false, bufA);
            int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
            CHECK(n > 0 && drop == TS_DROP_NONE);
            if (n <= 0)
                continue;
            memcpy(bufC, bufB, (size_t)n);
            size_t ml = mutate(bufB, (size_t)n, CAP, spis[rnd_below(6)]);
            bool same = ml == (size_t)n && memcmp(bufB, bufC, ml) == 0;
            int m = in1(pr.rx, bufB, ml, bufA + 512, &drop);
            if (same) {
                CHECK(m == (int)len && drop == TS_DROP_NONE);
                accepted++;
            } else {
                CHECK(m == 0);   /* never an inner packet out of a changed packet */
                if (drop == TS_DROP_NONE) {
                    CHECK(ml >= 4 && get32(bufB) == 0);
                    ike++;
                }
            }
            if (m == 0 && drop != TS_DROP_NONE) {
                rejected_rx++;
                why_rx[drop]++;
            }
            /* now and then the genuine packet after its mutant: still accepted */
            if (!same && rnd_below(4) == 0) {
                m = in1(pr.rx, bufC, (size_t)n, bufA + 512, &drop);
                CHECK(m > 0 && drop == TS_DROP_NONE);
            }
        } else if (op < 8) {
            /* random bytes, sometimes with a known SPI or the IKE marker in front */
            size_t len = rnd_below(8) == 0 ? rnd_below(4) : rnd_below(op == 7 ? 3000 : 200);
            if (rnd_below(500) == 0)
                len = TS_MAX_PACKET + 1 + rnd_below(100);
            rnd_fill(bufB, len);
            if (len >= 4 && rnd_below(3) == 0)
                put32(bufB, spis[rnd_below(6)]);
            if (len >= 4 + 28 && get32(bufB) == 0 && rnd_below(2))   /* an IKE length field that fits */
                put32(bufB + 4 + 24, (uint32_t)(len - 4));
            if (len == 1 && rnd_below(2))
                bufB[0] = 0xff;
            int m = in1(pr.rx, bufB, len, bufA, &drop);
            CHECK(m == 0 || (m > 0 && drop == TS_DROP_NONE));
            CHECK(m == 0);   /* nothing random authenticates */
            if (drop == TS_DROP_NONE) {
                CHECK(len >= 4 && get32(bufB) == 0);
                ike++;
            } else {
                rejected_rx++;
                why_rx[drop]++;
            }
            if (len == 1 && bufB[0] == 0xff)
                CHECK(drop == TS_DROP_KEEPALIVE);
        } else {
            /* outbound: random bytes or a mutated inner packet */
            size_t len;
            if (op == 8) {
                len = rnd_below(300);
                rnd_fill(bufA, len);
                if (len && rnd_below(2))
                    bufA[0] = (uint8_t)(rnd_below(2) ? 0x45 : 0x60);
            } else {
                len = make_inner(rnd_below(2) ? 4 : 6, rnd_below(1200), rnd_below(2), bufA);
                len = mutate(bufA, len, CAP, 0);
            }
            int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
            CHECK(n >= 0);
            if (n > 0) {
                uint8_t nh = 0;
                ts_sa_info info;
                CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK);
                long pl = ref_open(pr.key, 20, true, (uint32_t)(info.seq >> 32), bufB, (size_t)n, bufC, &nh);
                CHECK(pl == (long)len && memcmp(bufC, bufA, len) == 0);
                CHECK(nh == ((bufA[0] >> 4) == 4 ? 4 : 41));
                /* keep the receiver's window in step so the mutated path keeps being accepted */
                int m = in1(pr.rx, bufB, (size_t)n, bufC, &drop);
                if (m == 0) {
                    rejected_rx++;
                    why_rx[drop]++;
                }
            } else {
                CHECK(drop != TS_DROP_NONE);
                CHECK(icmp == 0 || drop == TS_DROP_TOO_BIG);
                rejected_tx++;
                why_tx[drop]++;
                if (drop == TS_DROP_TOO_BIG && icmp == 0)   /* the answer withheld, counted apart */
                    why_tx[TS_DROP_ICMP_SUPPRESSED]++;
            }
        }
        while (ts_dp_next_event(pr.rx, &ev, bufC, sizeof(bufC)) == 1)
            if (ev.type == TS_EV_IKE)
                ike_seen++;
            else if (ev.type == TS_EV_INVALID_SPI)
                invalid_spi_seen++;
        while (ts_dp_next_event(pr.tx, &ev, bufC, sizeof(bufC)) == 1) {
        }
    }
    uint64_t per_rx[TS_DROP__COUNT], per_tx[TS_DROP__COUNT];
    uint64_t sum_rx = drop_sum(pr.rx, per_rx);
    /* every unknown SPI is an INVALID_SPI event or, rate-limited, counted apart (by which limit
     * depends on the clock: only their sum is known) */
    CHECK(invalid_spi_seen >= 1 && invalid_spi_seen <= why_rx[TS_DROP_NO_SA]);
    const int limits[] = {TS_DROP_INVALID_SPI_SOURCE_LIMIT, TS_DROP_INVALID_SPI_RATE_LIMIT};
    uint64_t withheld = 0;
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        why_rx[limits[i]] = per_rx[limits[i]] - per0_rx[limits[i]];
        withheld += why_rx[limits[i]];
    }
    CHECK(withheld == why_rx[TS_DROP_NO_SA] - invalid_spi_seen);
    CHECK(sum_rx - base_rx == rejected_rx + withheld);
    CHECK(drop_sum(pr.tx, per_tx) - base_tx == rejected_tx + why_tx[TS_DROP_ICMP_SUPPRESSED]);
    for (int i = 0; i < TS_DROP__COUNT; i++) {
        CHECK(per_rx[i] - per0_rx[i] == why_rx[i]);
        CHECK(per_tx[i] - per0_tx[i] == why_tx[i]);
    }
    CHECK(ike == ike_seen && (ike > 0 || iterations < 1000));
    CHECK(accepted > 0 && rejected_rx > 0 && rejected_tx > 0);
    printf("fuzz: %ld iterations, %llu inbound rejected, %llu outbound rejected, %llu IKE, %llu clean\n",
           iterations, (unsigned long long)rejected_rx, (unsigned long long)rejected_tx,
           (unsigned long long)ike, (unsigned long long)accepted);
    pair_free(&pr);
}
