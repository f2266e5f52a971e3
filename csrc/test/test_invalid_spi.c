/* INVALID_SPI events: at most one a second per source address, ten a second from all
 * sources together, and a source over its own limit spends none of the shared budget.
 * The rate limiters' clock is stopped (ts_test_set_clock): the test moves it, never waits. */
#include "selftest.h"

#define SECOND 1000000000ull
#define T0 (1ull << 62)   /* far ahead of CLOCK_MONOTONIC */

/* ESP-shaped junk for an SPI nobody has (the SPI is all the fast path reads of it) */
static size_t junk_esp(uint32_t spi) {
    size_t len = 8 + 8 + 16 + 16;
    memset(bufA, 0x5a, len);
    put32(bufA, spi);
    return len;
}

static void from(ts_dp *dp, const ts_addr *src, uint32_t spi) {
    int drop;
    size_t len = junk_esp(spi);
    CHECK(ts_dp_inbound(dp, bufA, len, src, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NO_SA);
}

static uint64_t withheld_count(ts_dp *dp) {
    return drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) + drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT);
}

void test_siphash_vector(void) {
    /* the SipHash paper's appendix A: key 00..0f, message 00..0e */
    uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
    uint8_t msg[15];
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    CHECK(ts_siphash24(key, msg, sizeof(msg)) == 0xa129ca6149be45e5ull);
    CHECK(ts_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ull);
    CHECK(ts_siphash24(key, msg, 8) == 0x93f5f5799a932462ull);
}

void test_invalid_spi_per_source(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_addr a, b, v6 = {.family = 6, .port = 4500};
    addr4(&a, 1, 4500);
    memcpy(v6.addr, A6, 16);
    /* three sources limited apart: slots are a keyed hash, so two addresses share one now and then */
    unsigned sa = ts_test_invalid_spi_slot(dp, &a);
    for (uint8_t last = 2;; last++) {
        addr4(&b, last, 4500);
        if (ts_test_invalid_spi_slot(dp, &b) != sa)
            break;
    }
    while (ts_test_invalid_spi_slot(dp, &v6) == sa || ts_test_invalid_spi_slot(dp, &v6) == ts_test_invalid_spi_slot(dp, &b))
        v6.addr[15]++;
    ts_test_set_clock(dp, T0);
    for (int i = 0; i < 50; i++)
        from(dp, &a, 0x1000 + (uint32_t)i);
    ts_event ev;
    CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x1000);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 49 && drop_count(dp, TS_DROP_NO_SA) == 50);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 0);
    /* past the shared limiter's spacing, another source has its own turn; a's port changing
     * (a NAT) does not make it another source */
    ts_test_set_clock(dp, T0 + SECOND / 10);
    from(dp, &b, 0x2000);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x2000 && ev.addr.addr[3] == b.addr[3]);
    /* the shared limiter refuses (too soon after b), and that costs v6 no turn of its own; a,
     * refused by its own limit, takes nothing from the shared budget, so v6 has it right after */
    ts_test_set_clock(dp, T0 + SECOND * 15 / 100);
    from(dp, &v6, 0x6000);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    ts_test_set_clock(dp, T0 + SECOND * 2 / 10);
    a.port = 4501;
    from(dp, &a, 0x1100);
    from(dp, &v6, 0x6001);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x6001 && ev.addr.family == 6);
    ts_test_set_clock(dp, T0 + SECOND - 1);   /* a's second is not over ... */
    from(dp, &a, 0x1200);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    ts_test_set_clock(dp, T0 + SECOND);       /* ... now it is */
    from(dp, &a, 0x1300);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x1300);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 49 + 2);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 1);
    /* many sources in one second, 50 ms apart: ten events at most, whatever their number (those
     * whose slot another took within its second count as source-limited) */
    uint64_t sent = 0, withheld0 = withheld_count(dp);
    for (int t = 1; t <= 20; t++) {
        ts_test_set_clock(dp, T0 + SECOND + (uint64_t)t * SECOND / 20);
        for (int s = 0; s < 200; s++) {
            ts_addr x = {.family = 6, .port = 4500};
            memcpy(x.addr, A6, 16);
            put16(x.addr + 14, (uint16_t)(t * 200 + s));
            from(dp, &x, 0x3000);
        }
        sent += (uint64_t)count_events(dp, TS_EV_INVALID_SPI, NULL);
    }
    CHECK(sent == 10 && withheld_count(dp) - withheld0 == 20 * 200 - 10);
    /* back on the real clock: far behind the stopped one, so nothing passes (never an underflow) */
    ts_test_set_clock(dp, 0);
    from(dp, &b, 0x2100);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    ts_dp_free(dp);
}

struct hammer {
    ts_dp *dp;
    ts_addr src;
    int n;
};

static void *hammer_run(void *arg) {
    struct hammer *h = arg;
    uint8_t esp[48], out[64];
    memset(esp, 0x5a, sizeof(esp));
    put32(esp, 0x4000);
    for (int i = 0; i < h->n; i++) {
        int drop;
        ts_dp_inbound(h->dp, esp, sizeof(esp), &h->src, NULL, out, sizeof(out), &drop);
    }
    return NULL;
}

/* loop threads share the limiters without a lock: each packet is either an event or counted */
void test_invalid_spi_threads(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    struct hammer h[2] = {{.dp = dp, .n = 2000}, {.dp = dp, .n = 2000}};
    addr4(&h[0].src, 7, 4500);
    addr4(&h[1].src, 7, 4500);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        FATAL_IF(pthread_create(&t[i], NULL, hammer_run, &h[i]) != 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    uint64_t events = (uint64_t)count_events(dp, TS_EV_INVALID_SPI, NULL);
    CHECK(events >= 1);
    CHECK(events + withheld_count(dp) == 4000);
    CHECK(drop_count(dp, TS_DROP_NO_SA) == 4000);
    ts_dp_free(dp);
}
