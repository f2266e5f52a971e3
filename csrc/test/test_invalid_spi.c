/* INVALID_SPI events: at most one a second per source address, and from all sources together
 * a burst of ten, then ten a second; a source over its own limit spends none of the shared
 * budget, and a spent shared budget costs a source no turn of its own.
 * The rate limiters' clock is stopped (ts_test_set_clock): the test moves it, never waits. */
#include "selftest.h"

#include <sched.h>

#define SECOND 1000000000ull
#define TICK (SECOND / 10)   /* the shared bucket refills one hint per tick */
#define T0 (1ull << 62)      /* far ahead of CLOCK_MONOTONIC */

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

/* Sources limited apart: the slots are a hash under a random key, so two addresses share one
 * now and then (and with it one limit).  Fills out[0..n) with IPv6 sources (of /64s of their
 * own) whose slots are in no one's use yet, and marks them used. */
struct picker {
    bool used[TS_INVALID_SPI_SLOTS];
    uint16_t next;
};

static void pick_apart(ts_dp *dp, struct picker *pk, ts_addr *out, int n) {
    for (int i = 0; i < n; i++) {
        ts_addr x = {.family = 6, .port = 4500};
        memcpy(x.addr, A6, 16);
        unsigned slot;
        do {
            FATAL_IF(pk->next == UINT16_MAX);
            put16(x.addr + 6, ++pk->next);   /* another /64: a source is its /64 */
            slot = ts_test_invalid_spi_slot(dp, &x);
        } while (pk->used[slot]);
        pk->used[slot] = true;
        out[i] = x;
    }
}

static void mark_used(ts_dp *dp, struct picker *pk, const ts_addr *src) {
    pk->used[ts_test_invalid_spi_slot(dp, src)] = true;
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
    struct picker pk = {0};
    ts_addr a, s[11];
    addr4(&a, 1, 4500);
    mark_used(dp, &pk, &a);
    pick_apart(dp, &pk, s, 11);
    ts_test_set_clock(dp, T0);
    for (int i = 0; i < 50; i++)
        from(dp, &a, 0x1000 + (uint32_t)i);
    ts_event ev;
    CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x1000);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 49 && drop_count(dp, TS_DROP_NO_SA) == 50);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 0);
    /* a crowd at one instant (peers after a restart): a's 49 refused took nothing from the
     * burst, so nine more sources have their hint at once ... */
    for (int i = 0; i < 9; i++) {
        from(dp, &s[i], 0x2000 + (uint32_t)i);
        CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x2000 + (uint32_t)i);
    }
    /* ... and the eleventh is withheld by the shared budget, which costs it no turn of its own */
    from(dp, &s[9], 0x2009);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 1);
    /* one tick refills one hint: a, from another port (a NAT: the same source), is refused by
     * its own limit and spends none of it, so s[9] has it right after; s[10] finds none left */
    ts_test_set_clock(dp, T0 + TICK);
    a.port = 4501;
    for (int i = 0; i < 20; i++)
        from(dp, &a, 0x1100);
    from(dp, &s[9], 0x2109);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x2109 && ev.addr.family == 6 &&
          memcmp(ev.addr.addr, s[9].addr, 16) == 0);
    from(dp, &s[10], 0x210a);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 49 + 20);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 2);
    /* three ticks later, three hints; the fourth is withheld (s[0..2] are still within their second) */
    ts_test_set_clock(dp, T0 + 4 * TICK);
    from(dp, &s[0], 0x2200);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0 && drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 2);
    for (int i = 3; i < 7; i++)
        from(dp, &s[i], 0x2300);   /* slots taken at T0 too */
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    ts_addr fresh[4];
    pick_apart(dp, &pk, fresh, 4);
    for (int i = 0; i < 4; i++)
        from(dp, &fresh[i], 0x2400 + (uint32_t)i);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 3);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 3);
    ts_test_set_clock(dp, T0 + SECOND - 1);   /* a's second is not over ... */
    from(dp, &a, 0x1200);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    ts_test_set_clock(dp, T0 + SECOND);       /* ... now it is */
    from(dp, &a, 0x1300);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, &ev) == 1 && ev.spi == 0x1300);
    /* long after, the bucket is full again: ten at once, the eleventh withheld */
    ts_test_set_clock(dp, T0 + 10 * SECOND);
    for (int i = 0; i < 11; i++)
        from(dp, &s[i], 0x2500);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 10);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 4);
    /* new sources every 50 ms for a second, 200 at a time, from a full bucket: the burst of ten,
     * then one per 100 ms (at 150, 250, ... 950 ms), whatever their number (those whose slot
     * another took within its second count as source-limited) */
    uint64_t sent = 0, withheld0 = withheld_count(dp);
    const uint64_t start = T0 + 20 * SECOND;
    for (int t = 1; t <= 20; t++) {
        ts_test_set_clock(dp, start + (uint64_t)t * SECOND / 20);
        for (int i = 0; i < 200; i++) {
            ts_addr x = {.family = 6, .port = 4500};
            memcpy(x.addr, B6, 16);
            put16(x.addr + 6, (uint16_t)(t * 200 + i));   /* each its own /64 */
            from(dp, &x, 0x3000);
        }
        sent += (uint64_t)count_events(dp, TS_EV_INVALID_SPI, NULL);
    }
    CHECK(sent == 10 + 9 && withheld_count(dp) - withheld0 == 20 * 200 - sent);
    ts_dp_free(dp);
}

/* An IPv6 host holds its whole /64 and may send from any address of it (review revfast F1): ten
 * addresses of one /64 have one source's hint, and the peer after them still has its own; 600 IKE
 * datagrams from as many addresses of it queue one sender's share.  (Other /64s are sources of
 * their own: pick_apart finds them.) */
void test_invalid_spi_ipv6_prefix(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_addr host = {.family = 6, .port = 4500}, peer;
    memcpy(host.addr, B6, 16);
    addr4(&peer, 7, 4500);
    ts_test_set_clock(dp, T0);
    for (int i = 0; i < 10; i++) {
        put16(host.addr + 8, (uint16_t)(0x100 + i));   /* the interface identifier: any */
        from(dp, &host, 0x1000);
    }
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 1);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 9);
    from(dp, &peer, 0x1000);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 1 && drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 0);
    /* IKE (a whole header after the marker), each datagram from another address of the /64 */
    static uint8_t ike[4 + 28];
    memset(ike, 0, sizeof(ike));
    put32(ike + 4 + 24, 28);
    int queued = 0;
    for (int i = 0; i < 600; i++) {
        put16(host.addr + 14, (uint16_t)i);
        int drop = -1;
        CHECK(ts_dp_inbound(dp, ike, sizeof(ike), &host, NULL, bufC, CAP, &drop) == 0);
        queued += drop == TS_DROP_NONE;
    }
    CHECK(queued == TS_IKE_PER_SOURCE);
    CHECK(drop_count(dp, TS_DROP_IKE_SOURCE_LIMIT) == 600 - TS_IKE_PER_SOURCE);
    ts_dp_free(dp);
}

/* the real clock far behind a stopped one: nothing passes (never an underflow), and what the
 * shared budget withheld costs the source no turn once the clock is back */
void test_invalid_spi_clock_behind(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    struct picker pk = {0};
    ts_addr s[2];
    pick_apart(dp, &pk, s, 2);
    ts_test_set_clock(dp, T0);
    from(dp, &s[0], 0x1000);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 1);
    ts_test_set_clock(dp, 0);
    from(dp, &s[0], 0x1001);   /* its own limit: its slot says T0 */
    from(dp, &s[1], 0x2000);   /* a free slot, the shared bucket's time T0 + 100 ms */
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 0);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 1);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 1);
    ts_test_set_clock(dp, T0 + TICK);
    from(dp, &s[1], 0x2001);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 1);
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

/* Loop threads share the limiters without a lock: each packet is either an event or counted */
void test_invalid_spi_threads(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    struct picker pk = {0};
    struct hammer h[2] = {{.dp = dp, .n = 2000}, {.dp = dp, .n = 2000}};
    addr4(&h[0].src, 7, 4500);
    addr4(&h[1].src, 7, 4501);
    mark_used(dp, &pk, &h[0].src);
    ts_test_set_clock(dp, T0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        FATAL_IF(pthread_create(&t[i], NULL, hammer_run, &h[i]) != 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 1);
    CHECK(withheld_count(dp) == 4000 - 1 && drop_count(dp, TS_DROP_NO_SA) == 4000);
    ts_addr s[10];
    pick_apart(dp, &pk, s, 10);
    for (int i = 0; i < 10; i++)
        from(dp, &s[i], 0x5000);
    CHECK(count_events(dp, TS_EV_INVALID_SPI, NULL) == 9);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_RATE_LIMIT) == 1);
    ts_dp_free(dp);
}

#define RACE_ROUNDS 200
#define RACE_SOURCES 10   /* one burst's worth */

/* a spinning barrier for two: both threads leave it within nanoseconds (a futex wakes the
 * sleeper microseconds late, and the race below lasts less) */
struct spin2 {
    _Atomic unsigned arrived;
};

static void spin2_wait(struct spin2 *b, unsigned *generation) {
    unsigned target = 2 * ++*generation;
    atomic_fetch_add(&b->arrived, 1);
    for (unsigned spins = 0; atomic_load(&b->arrived) < target; spins++)
        if (spins % 1024 == 1023)
            sched_yield();   /* the other one is not running: let it (the machine may be busy) */
}

struct racer {
    ts_dp *dp;
    const ts_addr *src;   /* RACE_SOURCES, slots apart */
    uint16_t port;
    int id;
    struct spin2 *step;
    uint64_t events;      /* thread 0: the hints each round gave (the queue drained each round) */
};

/* both threads send for the same source at once, source after source: now and then both pass
 * its check and both take from the shared bucket before one loses the slot */
static void *racer_run(void *arg) {
    struct racer *r = arg;
    uint8_t esp[48], out[64];
    memset(esp, 0x5a, sizeof(esp));
    put32(esp, 0x4000);
    unsigned generation = 0;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        if (r->id == 0) {   /* the other waits at the first step: every slot's second over, the bucket full */
            r->events += (uint64_t)count_events(r->dp, TS_EV_INVALID_SPI, NULL);
            ts_test_set_clock(r->dp, T0 + (uint64_t)round * 10 * SECOND);
        }
        for (int i = 0; i < RACE_SOURCES; i++) {
            spin2_wait(r->step, &generation);
            ts_addr src = r->src[i];
            src.port = r->port;
            int drop;
            ts_dp_inbound(r->dp, esp, sizeof(esp), &src, NULL, out, sizeof(out), &drop);
        }
        spin2_wait(r->step, &generation);
    }
    return NULL;
}

/* The loser of a race for one source's turn gives its shared hint back, so ten sources in one
 * burst get their ten hints whoever wins each race (without it a race costs a later source
 * its hint). */
void test_invalid_spi_race_refund(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    struct picker pk = {0};
    ts_addr src[RACE_SOURCES];
    pick_apart(dp, &pk, src, RACE_SOURCES);
    struct spin2 step = {0};
    struct racer r[2] = {{dp, src, 4500, 0, &step, 0}, {dp, src, 4501, 1, &step, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        FATAL_IF(pthread_create(&t[i], NULL, racer_run, &r[i]) != 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    uint64_t events = r[0].events + (uint64_t)count_events(dp, TS_EV_INVALID_SPI, NULL);
    CHECK(events == RACE_ROUNDS * RACE_SOURCES);
    CHECK(events + withheld_count(dp) == 2 * RACE_ROUNDS * RACE_SOURCES);
    ts_dp_free(dp);
}
