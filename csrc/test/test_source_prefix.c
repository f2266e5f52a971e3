/* The IPv6 prefix an unknown or tagged IKE sender and an INVALID_SPI source count under
 * (dos.ipv6_source_prefix, ts_dp_set_ipv6_source_prefix): its mask, the bounds the setter takes,
 * and the shares it gives.  An established IKE SA's sender counts by its whole address whatever
 * the prefix (h/fixknown).  The slots are a keyed hash (a random key per context), so "apart" is
 * checked over many addresses, never two. */
#include "selftest.h"

#define SECOND 1000000000ull
#define T0 (1ull << 62)   /* far ahead of CLOCK_MONOTONIC: the rate limiters' stopped clock */

static unsigned ones(const uint8_t mask[16]) {
    unsigned n = 0;
    for (int i = 0; i < 16; i++)
        for (int b = 0; b < 8; b++)
            n += (mask[i] >> b) & 1;
    return n;
}

void test_source_prefix_mask(void) {
    static const unsigned bits[] = {0, 1, 7, 8, 9, 32, 47, 48, 56, 63, 64, 65, 96, 120, 127, 128};
    for (size_t k = 0; k < sizeof(bits) / sizeof(bits[0]); k++) {
        uint8_t m[16];
        memset(m, 0x5a, sizeof(m));
        ts_ipv6_prefix_mask(m, bits[k]);
        CHECK(ones(m) == bits[k]);
        /* the first bits[k] bits, in network order: each bit set only after set ones */
        for (unsigned i = 0; i < 128; i++)
            CHECK(((m[i / 8] >> (7 - i % 8)) & 1) == (i < bits[k]));
    }
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 0) == TS_EINVAL);
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 129) == TS_EINVAL);
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 1) == TS_OK);
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 128) == TS_OK);
    ts_dp_free(dp);
}

static ts_addr v6(uint16_t w2, uint16_t w3, uint16_t host) {
    ts_addr a = {.family = 6, .port = 4500};
    put16(a.addr, 0x2001);
    put16(a.addr + 2, 0x0db8);
    put16(a.addr + 4, w2);
    put16(a.addr + 6, w3);
    put16(a.addr + 14, host);
    return a;
}

/* how many distinct IKE share slots n addresses have (f: the i-th address) */
static int slots_of(ts_dp *dp, ts_addr (*f)(int), int n, unsigned (*slot)(ts_dp *, const ts_addr *)) {
    bool seen[TS_IKE_SOURCE_SLOTS > TS_INVALID_SPI_SLOTS ? TS_IKE_SOURCE_SLOTS : TS_INVALID_SPI_SLOTS] = {false};
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        ts_addr a = f(i);
        unsigned s = slot(dp, &a);
        distinct += !seen[s];
        seen[s] = true;
    }
    return distinct;
}

static ts_addr one_64(int i) { return v6(1, 2, (uint16_t)(0x100 + i)); }   /* 2001:db8:1:2::/64 */
static ts_addr one_48(int i) { return v6(1, (uint16_t)(0x10 + i), 1); }    /* 2001:db8:1::/48's /64s */

void test_source_prefix_slots(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    /* by default a /64: its addresses one slot, a /48's /64s many (32 in 256 slots all one: 256^-31) */
    CHECK(slots_of(dp, one_64, 32, ts_test_ike_source_slot) == 1);
    CHECK(slots_of(dp, one_64, 32, ts_test_invalid_spi_slot) == 1);
    CHECK(slots_of(dp, one_48, 32, ts_test_ike_source_slot) > 1);
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 128) == TS_OK);   /* per address */
    CHECK(slots_of(dp, one_64, 32, ts_test_ike_source_slot) > 1);
    CHECK(slots_of(dp, one_64, 32, ts_test_ike_proven_slot) > 1);
    CHECK(slots_of(dp, one_64, 32, ts_test_invalid_spi_slot) > 1);
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 48) == TS_OK);    /* a site's /48 */
    CHECK(slots_of(dp, one_48, 32, ts_test_ike_source_slot) == 1);
    CHECK(slots_of(dp, one_48, 32, ts_test_ike_proven_slot) == 1);
    CHECK(slots_of(dp, one_48, 32, ts_test_invalid_spi_slot) == 1);
    /* an established IKE SA's sender: its whole address, whatever the prefix */
    CHECK(slots_of(dp, one_48, 32, ts_test_ike_known_source_slot) > 1);
    CHECK(slots_of(dp, one_64, 32, ts_test_ike_known_source_slot) > 1);
    /* IPv4 is its address, whatever the prefix */
    ts_addr x, y;
    addr4(&x, 9, 4500);
    addr4(&y, 9, 500);
    CHECK(ts_test_ike_source_slot(dp, &x) == ts_test_ike_source_slot(dp, &y));
    ts_dp_free(dp);
}

static int queue_ike(ts_dp *dp, const ts_addr *src) {
    put32(bufA, 0);   /* the non-ESP marker, then a whole IKE_SA_INIT header */
    ike_hdr(bufA + 4, 28, 28);
    int drop = -1;
    CHECK(ts_dp_inbound(dp, bufA, 32, src, NULL, bufC, CAP, &drop) == 0);
    return drop;
}

/* two senders and what each gets queued of 2 * TS_IKE_PER_SOURCE datagrams, one after the other */
static int queued_of_two(ts_dp *dp, const ts_addr *a, const ts_addr *b) {
    int queued = 0;
    for (int i = 0; i < 2 * TS_IKE_PER_SOURCE; i++)
        queued += queue_ike(dp, i < TS_IKE_PER_SOURCE ? a : b) == TS_DROP_NONE;
    return queued;
}

/* the first address of f after a's whose slot differs from a's: 128 of them in one slot never happens */
static ts_addr apart(ts_dp *dp, const ts_addr *a, ts_addr (*f)(int)) {
    for (int i = 1; i < 128; i++) {
        ts_addr b = f(i);
        if (ts_test_ike_source_slot(dp, &b) != ts_test_ike_source_slot(dp, a))
            return b;
    }
    FATAL_IF(true);
    return *a;
}

void test_source_prefix_shares(void) {
    /* 128: two addresses of one /64 (slots apart) each get their own share */
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 128) == TS_OK);
    ts_addr a = one_64(0), b = apart(dp, &a, one_64);
    CHECK(queued_of_two(dp, &a, &b) == 2 * TS_IKE_PER_SOURCE);
    CHECK(drop_count(dp, TS_DROP_IKE_SOURCE_LIMIT) == 0);
    ts_dp_free(dp);
    /* the default: they are one sender */
    dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(queued_of_two(dp, &a, &b) == TS_IKE_PER_SOURCE);
    CHECK(drop_count(dp, TS_DROP_IKE_SOURCE_LIMIT) == TS_IKE_PER_SOURCE);
    ts_dp_free(dp);
    /* 48: two /64s of one /48 are one sender, of IKE and of INVALID_SPI */
    dp = ts_dp_new();
    FATAL_IF(!dp);
    a = one_48(0);
    b = apart(dp, &a, one_48);   /* apart at the default /64 */
    CHECK(ts_dp_set_ipv6_source_prefix(dp, 48) == TS_OK);
    CHECK(queued_of_two(dp, &a, &b) == TS_IKE_PER_SOURCE);
    CHECK(drop_count(dp, TS_DROP_IKE_SOURCE_LIMIT) == TS_IKE_PER_SOURCE);
    ts_test_set_clock(dp, T0);
    memset(bufA, 0x5a, 48);
    put32(bufA, 0x1000);   /* ESP for an SPI nobody has */
    int drop;
    CHECK(ts_dp_inbound(dp, bufA, 48, &a, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NO_SA);
    CHECK(ts_dp_inbound(dp, bufA, 48, &b, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NO_SA);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 1);
    ts_test_set_clock(dp, T0 + SECOND);
    CHECK(ts_dp_inbound(dp, bufA, 48, &b, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NO_SA);
    CHECK(drop_count(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT) == 1);   /* a second later: its turn again */
    ts_dp_free(dp);
}

struct changer {
    ts_dp *dp;
    _Atomic bool done;
    unsigned refused;   /* read after the join: CHECK's counters are the main thread's */
};

static void *change_run(void *arg) {
    struct changer *c = arg;
    for (unsigned i = 0; !atomic_load(&c->done); i++)
        c->refused += ts_dp_set_ipv6_source_prefix(c->dp, 32 + i % 97) != TS_OK;
    return NULL;
}

/* set while packets are hashed (under TSan: no race; the loops hash under the read lock) */
void test_source_prefix_threads(void) {
    struct changer c = {.dp = ts_dp_new()};
    FATAL_IF(!c.dp);
    pthread_t t;
    FATAL_IF(pthread_create(&t, NULL, change_run, &c) != 0);
    for (int i = 0; i < 2000; i++) {
        ts_addr a = one_64(i);
        int drop = queue_ike(c.dp, &a);
        CHECK(drop == TS_DROP_NONE || drop == TS_DROP_IKE_SOURCE_LIMIT || drop == TS_DROP_QUEUE_FULL);
        ts_event ev;
        static uint8_t got[64];
        while (ts_dp_next_event(c.dp, &ev, got, sizeof(got)) == 1) {
        }
    }
    atomic_store(&c.done, true);
    pthread_join(t, NULL);
    CHECK(c.refused == 0);
    ts_dp_free(c.dp);
}
