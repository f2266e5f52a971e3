/* The secrets the C code holds besides the SAs' keys (test_sad.c test_key_wipe) are wiped when
 * what holds them goes: the SipHash keys of the SAD, the SPD index and the established IKE SPIs'
 * table (each by its own destroy), and the whole context at free (the per-source limits' key,
 * the IKE tag keys).  Each is observed where the caller still owns the memory: a table on the
 * stack after its destroy, the context after ts_dp_wipe (ts_dp_free's wipe, before its free). */
#include "selftest.h"

static bool all_zero(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

void test_table_keys_wiped(void) {
    ts_sad sad;
    memset(&sad, 0, sizeof(sad));
    CHECK(ts_sad_init(&sad) == TS_OK);
    CHECK(!all_zero(sad.key, sizeof(sad.key)));   /* a random key: zero once in 2^128 */
    ts_sad_destroy(&sad);
    CHECK(all_zero(sad.key, sizeof(sad.key)));

    ts_spd spd;
    memset(&spd, 0, sizeof(spd));
    CHECK(ts_spd_init(&spd) == TS_OK);
    CHECK(!all_zero(spd.key, sizeof(spd.key)));
    ts_spd_destroy(&spd);
    CHECK(all_zero(spd.key, sizeof(spd.key)));

    ts_ike_spis spis;
    CHECK(ts_ike_spis_init(&spis) == TS_OK);
    CHECK(ts_ike_spis_add(&spis, 0x1122334455667788ull, 7) == TS_OK);
    CHECK(!all_zero(spis.key, sizeof(spis.key)));
    ts_ike_spis_destroy(&spis);
    CHECK(all_zero(spis.key, sizeof(spis.key)));
}

void test_context_wiped(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t tag_key[16];
    rnd_fill(tag_key, sizeof(tag_key));
    CHECK(ts_dp_ike_spi_key(dp, tag_key) == TS_OK);
    CHECK(ts_dp_ike_spi_key(dp, tag_key) == TS_OK);   /* the one before is kept too */
    CHECK(!all_zero(dp->source_key, sizeof(dp->source_key)));
    CHECK(!all_zero(dp->ike_tag_key, sizeof(dp->ike_tag_key)));
    ts_dp_wipe(dp);
    CHECK(all_zero(dp, sizeof(*dp)));
    free(dp);
}
