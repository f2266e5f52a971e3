/* The tags in the IKE SPIs the control process makes (ikespi.c, tunsec/ike/spi_tag.py): the same
 * function on both sides (fixed vectors, which tests/ike/test_spi_tag.py checks the Python side
 * against), and what a tag buys in the event queue (events.c): datagrams whose SPI of ours carries
 * the tag for their sender's address have a share per address four times an unknown sender's and a
 * reserve that a spoofed flood cannot take; the same SPI from another address, or any before a key
 * is set, is an unknown datagram like any other. */
#include "selftest.h"

static const uint8_t KEY[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
#define UNKNOWN_ROOM (TS_EVENT_CAP / 2 - TS_IKE_RESERVED - TS_IKE_PROVEN_RESERVED)

void test_ike_spi_tag_vectors(void) {
    ts_addr a4 = {.family = 4, .addr = {192, 0, 2, 1}}, b4 = {.family = 4, .addr = {192, 0, 2, 2}};
    ts_addr a6 = {.family = 6, .addr = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}};
    CHECK(ts_ike_spi_tag(KEY, 0x01020304, &a4) == 0xbac91004u);
    CHECK(ts_ike_spi_tag(KEY, 0x01020304, &b4) == 0xac97d092u);
    CHECK(ts_ike_spi_tag(KEY, 0x01020304, &a6) == 0x520dd960u);
    a4.port = 4500;   /* the address only: a NAT gives its clients one address, many ports */
    CHECK(ts_ike_spi_tag(KEY, 0x01020304, &a4) == 0xbac91004u);
}

/* an IKE message (marker first) whose SPI of ours is `ours`: SPIr from the initiator, else SPIi */
static size_t msg(uint8_t *p, uint64_t ours, bool from_initiator) {
    const size_t len = 84;
    memset(p, 0, len);
    uint8_t *h = p + 4;
    for (int i = 0; i < 8; i++) {
        h[(from_initiator ? 8 : 0) + i] = (uint8_t)(ours >> (56 - 8 * i));
        h[(from_initiator ? 0 : 8) + i] = (uint8_t)(0xc0 + i);
    }
    h[17] = 0x20;
    h[18] = 35;     /* IKE_AUTH */
    h[19] = from_initiator ? 0x08 : 0x20;
    put32(h + 20, 1);
    put32(h + 24, (uint32_t)(len - 4));
    return len;
}

/* our SPI number n made for addr: R || tag(R, addr) */
static uint64_t tagged(uint32_t n, const ts_addr *addr) {
    uint32_t r = 0x10000000u + n;
    return (uint64_t)r << 32 | ts_ike_spi_tag(KEY, r, addr);
}

static int from(ts_dp *dp, const uint8_t *p, size_t len, const ts_addr *src) {
    int drop = -1;
    CHECK(ts_dp_inbound(dp, p, len, src, NULL, bufC, CAP, &drop) == 0);
    return drop;
}

/* pops every event: how many IKE ones, and of those how many flagged proven */
static int drain(ts_dp *dp, int *proven) {
    ts_event ev;
    int n = 0;
    *proven = 0;
    while (ts_dp_next_event(dp, &ev, bufC, CAP) == 1)
        if (ev.type == TS_EV_IKE) {
            n++;
            *proven += ev.proven;
            CHECK(!(ev.proven && ev.known));
        }
    return n;
}

/* n datagrams with tagged SPIs first..first+n-1 made for `made_for`, sent from src: how many queued */
static int burst(ts_dp *dp, uint32_t first, int n, const ts_addr *made_for, const ts_addr *src, bool from_initiator) {
    static uint8_t m[84];
    int queued = 0;
    for (int i = 0; i < n; i++) {
        size_t len = msg(m, tagged(first + (uint32_t)i, made_for), from_initiator);
        int d = from(dp, m, len, src);
        CHECK(d == TS_DROP_NONE || d == TS_DROP_IKE_PROVEN_SOURCE || d == TS_DROP_IKE_PROVEN_FULL
              || d == TS_DROP_IKE_SOURCE_LIMIT || d == TS_DROP_QUEUE_FULL);
        queued += d == TS_DROP_NONE;
    }
    return queued;
}

void test_ike_spi_tag_shares(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_addr nat, other;
    addr4(&nat, 9, 4500);
    nat.addr[0] = 198;
    addr4(&other, 10, 4500);
    other.addr[0] = 198;
    while (ts_test_ike_source_slot(dp, &other) == ts_test_ike_source_slot(dp, &nat))
        other.addr[3]++;
    int proven;
    /* no key yet: a tagged SPI is nobody's, the sender's unknown share holds */
    CHECK(burst(dp, 0, 40, &nat, &nat, true) == TS_IKE_PER_SOURCE);
    CHECK(drop_count(dp, TS_DROP_IKE_SOURCE_LIMIT) == 40 - TS_IKE_PER_SOURCE);
    CHECK(drain(dp, &proven) == TS_IKE_PER_SOURCE && proven == 0);
    CHECK(ts_dp_ike_spi_key(dp, NULL) == TS_EINVAL);
    CHECK(ts_dp_ike_spi_key(dp, KEY) == TS_OK);
    /* road warriors behind one NAT: its share of IKE_SA_INITs (SPIr 0, no tag) is spent, and
     * their IKE_AUTHs still go up, as many as four shares */
    static uint8_t init[84];
    size_t ilen = msg(init, 0, true);
    for (int i = 0; i < 40; i++)
        from(dp, init, ilen, &nat);
    CHECK(drop_count(dp, TS_DROP_IKE_SOURCE_LIMIT) == 2 * (40 - TS_IKE_PER_SOURCE));
    CHECK(burst(dp, 100, 200, &nat, &nat, true) == TS_IKE_PROVEN_PER_SOURCE);
    CHECK(drop_count(dp, TS_DROP_IKE_PROVEN_SOURCE) == 200 - TS_IKE_PROVEN_PER_SOURCE);
    /* ... as do answers to our own IKE_SA_INITs (our SPI is SPIi there), from another address */
    CHECK(burst(dp, 400, 3, &other, &other, false) == 3);
    /* an SPI made for the NAT's address, sent from another one: no tag for that sender */
    CHECK(burst(dp, 500, 3, &nat, &other, true) == 3);
    CHECK(drain(dp, &proven) == TS_IKE_PER_SOURCE + TS_IKE_PROVEN_PER_SOURCE + 3 + 3
          && proven == TS_IKE_PROVEN_PER_SOURCE + 3);
    /* the shares came back */
    CHECK(burst(dp, 600, TS_IKE_PROVEN_PER_SOURCE, &nat, &nat, true) == TS_IKE_PROVEN_PER_SOURCE);
    CHECK(drain(dp, &proven) == TS_IKE_PROVEN_PER_SOURCE && proven == TS_IKE_PROVEN_PER_SOURCE);
    ts_dp_free(dp);
}

static void flood_inits(ts_dp *dp) {
    static uint8_t init[84];
    size_t ilen = msg(init, 0, true);
    int queued = 0;
    for (int i = 0; i < 64 * TS_IKE_PER_SOURCE; i++) {
        ts_addr a;
        addr4(&a, (uint8_t)(1 + i % 250), 4500);
        a.addr[1] = 66;
        a.addr[2] = (uint8_t)(i / 250);
        queued += from(dp, init, ilen, &a) == TS_DROP_NONE;
    }
    CHECK(queued == UNKNOWN_ROOM);
}

/* addresses 192.0.2.<first>.. whose slots differ from each other's */
static void apart(ts_dp *dp, ts_addr *out, int n, uint8_t first) {
    uint8_t last = first;
    for (int i = 0; i < n; i++) {
        bool clash;
        do {
            addr4(&out[i], last++, 4500);
            clash = false;
            for (int j = 0; j < i; j++)
                clash |= ts_test_ike_proven_slot(dp, &out[j]) == ts_test_ike_proven_slot(dp, &out[i]);
        } while (clash);
    }
}

/* A spoofed flood fills what unknown datagrams may; one real address with a tag it earned floods
 * on top: it gets no more than leaves TS_IKE_PROVEN_SMALL to the senders holding less, so other
 * clients' IKE_AUTHs still go up; a guessed tag is no tag */
void test_ike_spi_tag_reserve(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_ike_spi_key(dp, KEY) == TS_OK);
    flood_inits(dp);
    ts_addr s[4];
    apart(dp, s, 4, 21);
    static uint8_t m[84];
    size_t len = msg(m, 0x1234567800000001ull, true);
    CHECK(from(dp, m, len, &s[0]) == TS_DROP_QUEUE_FULL);
    const int room = TS_EVENT_CAP / 2 - TS_IKE_RESERVED - UNKNOWN_ROOM;   /* what is left: the reserve */
    CHECK(burst(dp, 0, 200, &s[0], &s[0], true) == room - TS_IKE_PROVEN_SMALL);
    CHECK(burst(dp, 1000, TS_IKE_PER_SOURCE, &s[1], &s[1], true) == TS_IKE_PER_SOURCE);
    CHECK(burst(dp, 2000, TS_IKE_PER_SOURCE, &s[2], &s[2], true) == TS_IKE_PER_SOURCE);
    CHECK(burst(dp, 3000, 1, &s[3], &s[3], true) == 0 && drop_count(dp, TS_DROP_IKE_PROVEN_FULL) > 0);
    int proven;
    CHECK(drain(dp, &proven) == UNKNOWN_ROOM + room && proven == room);
    ts_dp_free(dp);
}

/* Three real addresses flooding with tags they earned, nothing drained: they take at most
 * TS_IKE_PROVEN_MAX, the last TS_IKE_PROVEN_SMALL of it only by holding less than an unknown
 * sender's share, and a new client's IKE_SA_INIT and another's IKE_AUTH still go up */
void test_ike_spi_tag_floods_of_real_addresses(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_ike_spi_key(dp, KEY) == TS_OK);
    ts_addr s[5];
    apart(dp, s, 5, 31);
    int got[3];
    for (int i = 0; i < 3; i++)
        got[i] = burst(dp, 10000u * (uint32_t)i, 300, &s[i], &s[i], true);
    CHECK(got[0] == TS_IKE_PROVEN_PER_SOURCE);
    CHECK(got[1] == TS_IKE_PROVEN_MAX - TS_IKE_PROVEN_SMALL - TS_IKE_PROVEN_PER_SOURCE);
    CHECK(got[2] == TS_IKE_PER_SOURCE);
    CHECK(burst(dp, 50000, 1, &s[3], &s[3], true) == 1);   /* a client's IKE_AUTH */
    static uint8_t init[84];
    size_t ilen = msg(init, 0, true);
    CHECK(from(dp, init, ilen, &s[4]) == TS_DROP_NONE);   /* a new client's IKE_SA_INIT */
    int proven;
    CHECK(drain(dp, &proven) == got[0] + got[1] + got[2] + 2 && proven == got[0] + got[1] + got[2] + 1);
    ts_dp_free(dp);
}

/* An IPv6 sender's tagged share is its /64's: tags earned by 200 addresses of one /64 share it */
void test_ike_spi_tag_ipv6_prefix(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_ike_spi_key(dp, KEY) == TS_OK);
    int queued = 0;
    for (int i = 0; i < 200; i++) {
        ts_addr a = {.family = 6, .addr = {0x20, 0x01, 0x0d, 0xb8, [8] = (uint8_t)i, [15] = 1}, .port = 4500};
        CHECK(ts_test_ike_proven_slot(dp, &a) == ts_test_ike_proven_slot(dp, &(ts_addr){.family = 6,
              .addr = {0x20, 0x01, 0x0d, 0xb8}}));
        queued += burst(dp, (uint32_t)i, 1, &a, &a, true);
    }
    CHECK(queued == TS_IKE_PROVEN_PER_SOURCE && drop_count(dp, TS_DROP_IKE_PROVEN_SOURCE) == (uint64_t)(200 - queued));
    ts_dp_free(dp);
}

/* The worker holds the key set last and the one before: a tag of two keys ago is no tag */
void test_ike_spi_tag_key_epochs(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_addr a;
    addr4(&a, 9, 4500);
    uint8_t k2[16], k3[16];
    for (int i = 0; i < 16; i++) {
        k2[i] = (uint8_t)(0x20 + i);
        k3[i] = (uint8_t)(0x30 + i);
    }
    static uint8_t m[84];
    uint32_t r = 0x12345678;
    uint64_t old = (uint64_t)r << 32 | ts_ike_spi_tag(KEY, r, &a);
    uint64_t mid = (uint64_t)r << 32 | ts_ike_spi_tag(k2, r, &a);
    int proven;
    CHECK(ts_dp_ike_spi_key(dp, KEY) == TS_OK && ts_dp_ike_spi_key(dp, k2) == TS_OK);
    from(dp, m, msg(m, old, true), &a);
    from(dp, m, msg(m, mid, true), &a);
    CHECK(drain(dp, &proven) == 2 && proven == 2);
    CHECK(ts_dp_ike_spi_key(dp, k3) == TS_OK);
    from(dp, m, msg(m, old, true), &a);
    from(dp, m, msg(m, mid, true), &a);
    CHECK(drain(dp, &proven) == 2 && proven == 1);
    ts_dp_free(dp);
}
