/* The SAD's bucket hash is keyed per context (sad.c): peers choose our outbound SPIs, and under
 * the fixed mix it had, an authenticated peer could put all of its SAs in one bucket at every
 * table size, a chain every inbound packet hashing there (junk with an unknown SPI included) and
 * every control call walked.  The SPIs are built as the reviewer's sadflood.c built them. */
#include "selftest.h"

#define OLD_K 2654435761u
#define FLOOD_C 0x1234u

/* the multiplicative inverse of an odd a mod 2^32 (Newton) */
static uint32_t inverse(uint32_t a) {
    uint32_t x = a;
    for (int i = 0; i < 5; i++)
        x *= 2 - a * x;
    return x;
}

/* the bucket the fixed mix gave (spi, dir) in a table of n */
static size_t old_slot(uint32_t spi, uint8_t dir, size_t n) {
    uint32_t h = spi * OLD_K ^ dir;
    return (h ^ (h >> 16)) & (n - 1);
}

/* the i-th SPI (from 1) whose old OUT bucket is FLOOD_C's at every table size up to 2^16 */
static uint32_t flood_spi(uint32_t x) {
    uint32_t h = (x << 16) | ((FLOOD_C ^ x) & 0xffff);
    return (h ^ TS_DIR_OUT) * inverse(OLD_K);
}

void test_sad_chain_keyed(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    params(&p, 0, TS_DIR_OUT, key, 20, false, 0, 0);
    p.reqid = 0;
    p.n_sel = 0;
    size_t added = 0, same_old_bucket = 0;
    for (uint32_t x = 1; added < 4096; x++) {
        uint32_t spi = flood_spi(x);
        if (spi < 256)
            continue;
        p.spi = spi;
        CHECK(ts_sad_add(dp, &p) == TS_OK);
        added++;
        same_old_bucket += old_slot(spi, TS_DIR_OUT, 1024) == old_slot(flood_spi(1), TS_DIR_OUT, 1024) &&
                           old_slot(spi, TS_DIR_OUT, 4096) == old_slot(flood_spi(1), TS_DIR_OUT, 4096);
        if (added == 1024)   /* 1,024 buckets still: one chain of 1,024 under the fixed mix */
            CHECK(ts_test_sad_longest_chain(dp) <= 16);
    }
    CHECK(same_old_bucket == added);   /* the input is the attack */
    /* 4,096 buckets by now; a chain of 16 has odds of ~1e-10 under a random hash (load 1) */
    CHECK(ts_sad_count(dp) == 4096 && ts_test_sad_longest_chain(dp) <= 16);
    /* every one still found, and removed, by its (SPI, peer) */
    ts_sa_info info;
    CHECK(ts_sad_get(dp, flood_spi(2), TS_DIR_OUT, &p.remote, &info) == TS_OK && info.spi == flood_spi(2));
    CHECK(ts_sad_delete(dp, flood_spi(2), TS_DIR_OUT, &p.remote) == TS_OK);
    CHECK(ts_sad_get(dp, flood_spi(2), TS_DIR_OUT, &p.remote, &info) == TS_ENOENT);
    /* junk ESP aimed at the old shared bucket's inbound side: an unknown SPI, nothing more */
    uint8_t esp[48];
    memset(esp, 0x5a, sizeof(esp));
    uint32_t h = (0x7777u << 16) | ((FLOOD_C ^ 0x7777u) & 0xffff);
    put32(esp, h * inverse(OLD_K));
    ts_addr src;
    addr4(&src, 7, 4500);
    int drop;
    CHECK(ts_dp_inbound(dp, esp, sizeof(esp), &src, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NO_SA);
    /* two contexts, two keys: the same SPIs chain differently (2^-64 odds that every bucket matches) */
    ts_dp *other = ts_dp_new();
    FATAL_IF(!other);
    CHECK(memcmp(dp->sad.key, other->sad.key, sizeof(dp->sad.key)) != 0);
    ts_dp_free(other);
    ts_dp_free(dp);
}

/* The reviewer's case: the SPI alone was the OUT hash's input, so peers choosing one SPI from many
 * endpoints (one host's NAT-T source ports) chained all their SAs; the peer is hashed too now. */
void test_sad_chain_peer(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    params(&p, 0x41414141u, TS_DIR_OUT, key, 20, false, 0, 0);
    p.reqid = 0;
    p.n_sel = 0;
    enum { N = 2000 };
    for (uint16_t port = 1; port <= N; port++) {
        addr4(&p.remote, 7, port);
        CHECK(ts_sad_add(dp, &p) == TS_OK);
    }
    /* 2,048 buckets by now, load ~1: a chain of 16 has odds of ~1e-10 under a random hash */
    CHECK(ts_sad_count(dp) == N && ts_test_sad_longest_chain(dp) <= 16);
    ts_addr at, none;
    addr4(&at, 7, 1234);
    addr4(&none, 7, N + 1);
    ts_sa_info info;
    CHECK(ts_sad_get(dp, p.spi, TS_DIR_OUT, &at, &info) == TS_OK && info.remote.port == 1234);
    CHECK(ts_sad_get(dp, p.spi, TS_DIR_OUT, &none, &info) == TS_ENOENT);
    /* junk in the caller's unused IPv4 address bytes names the same peer, in the same chain */
    at.addr[9] = 0xee;
    CHECK(ts_sad_get(dp, p.spi, TS_DIR_OUT, &at, &info) == TS_OK && info.remote.port == 1234);
    /* an OUT SA named without its peer: refused, not a NULL hashed */
    CHECK(ts_sad_reserve(dp, p.spi, TS_DIR_OUT, NULL, 10, 0) == TS_EINVAL);
    CHECK(ts_sad_get(dp, p.spi, TS_DIR_OUT, NULL, &info) == TS_EINVAL);
    CHECK(ts_sad_find(&dp->sad, p.spi, TS_DIR_OUT) == NULL);
    ts_dp_free(dp);
}

/* An OUT SA's chain follows its peer: migrate moves it to its new remote's chain, the same SA. */
void test_sad_migrate_rehash(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    params(&p, 0x5151u, TS_DIR_OUT, key, 20, false, 0, 0);
    p.reqid = 0;
    p.n_sel = 0;
    ts_addr old_peer, new_peer, v6;
    addr4(&old_peer, 9, 4500);
    addr4(&new_peer, 10, 61000);
    /* enough neighbours with this SPI that old and new peer (most likely) hash to other chains */
    for (uint16_t port = 1; port <= 64; port++) {
        addr4(&p.remote, 200, port);
        CHECK(ts_sad_add(dp, &p) == TS_OK);
    }
    p.remote = old_peer;
    CHECK(ts_sad_add(dp, &p) == TS_OK);
    ts_sa_info info;
    ts_sa *sa = ts_sad_find_sa(&dp->sad, p.spi, TS_DIR_OUT, &old_peer);
    FATAL_IF(!sa);
    CHECK(ts_sad_migrate(dp, p.spi, TS_DIR_OUT, &old_peer, &new_peer, NULL) == TS_OK);
    /* the same SA, which loop threads and policies may hold, at its new peer */
    CHECK(ts_sad_find_sa(&dp->sad, p.spi, TS_DIR_OUT, &new_peer) == sa);
    CHECK(ts_sad_get(dp, p.spi, TS_DIR_OUT, &new_peer, &info) == TS_OK && info.remote.addr[3] == 10 &&
          info.remote.port == 61000);
    CHECK(ts_sad_get(dp, p.spi, TS_DIR_OUT, &old_peer, &info) == TS_ENOENT);
    CHECK(ts_sad_count(dp) == 65);
    /* still at its new peer after the table grows (rehashed by the remote it has now) */
    p.spi = 0x6262u;
    for (uint16_t port = 1; port <= 2100; port++) {
        addr4(&p.remote, 201, port);
        CHECK(ts_sad_add(dp, &p) == TS_OK);
    }
    CHECK(ts_sad_get(dp, 0x5151u, TS_DIR_OUT, &new_peer, &info) == TS_OK);
    /* a migration onto a peer that has this SPI already would make two SAs one */
    addr4(&p.remote, 200, 5);
    CHECK(ts_sad_migrate(dp, 0x5151u, TS_DIR_OUT, &new_peer, &p.remote, NULL) == TS_EEXIST);
    CHECK(ts_sad_get(dp, 0x5151u, TS_DIR_OUT, &new_peer, &info) == TS_OK);
    /* another family needs a new SA: nothing moves */
    memset(&v6, 0, sizeof(v6));
    v6.family = 6;
    v6.addr[15] = 1;
    v6.port = 4500;
    CHECK(ts_sad_migrate(dp, 0x5151u, TS_DIR_OUT, &new_peer, &v6, NULL) == TS_EINVAL);
    CHECK(ts_sad_get(dp, 0x5151u, TS_DIR_OUT, &new_peer, &info) == TS_OK);
    /* back home, then deleted by the peer it has, not the one it had */
    CHECK(ts_sad_migrate(dp, 0x5151u, TS_DIR_OUT, &new_peer, &old_peer, NULL) == TS_OK);
    CHECK(ts_sad_delete(dp, 0x5151u, TS_DIR_OUT, &new_peer) == TS_ENOENT);
    CHECK(ts_sad_delete(dp, 0x5151u, TS_DIR_OUT, &old_peer) == TS_OK);
    CHECK(ts_sad_count(dp) == 64 + 2100);
    ts_dp_free(dp);
}
