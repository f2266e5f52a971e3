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
    /* the unrolled SipHash-1-3 of one word is the general one's (whose 2-4 has the paper's vector) */
    for (int i = 0; i < 100; i++) {
        uint64_t k[2] = {rnd(), rnd()}, m = rnd();
        uint8_t le[8];
        for (int b = 0; b < 8; b++)
            le[b] = (uint8_t)(m >> (8 * b));
        CHECK(ts_siphash13_u64(k, m) == ts_siphash(k, le, 8, 1, 3));
    }
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
