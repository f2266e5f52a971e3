/* ESP (esp.c, dp.c): AES-GCM known answers, outbound -> inbound round trips
 * checked against the test's own ESP in both directions, drops on bad inner
 * content. */
#include "selftest.h"

static size_t unhex(const char *s, uint8_t *out) {
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        FATAL_IF(sscanf(s + 2 * i, "%2x", &v) != 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* ---- 1. AES-GCM known answers (McGrew & Viega, test cases 2-4, 14-16) ------ */
struct kat {
    const char *key, *iv, *aad, *pt, *ct, *tag;
};
#define P64 "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" \
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
#define P60 "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" \
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
#define AADV "feedfacedeadbeeffeedfacedeadbeefabaddad2"
#define K128 "feffe9928665731c6d6a8f9467308308"
#define IVV "cafebabefacedbaddecaf888"
static const struct kat kats[] = {
    {"00000000000000000000000000000000", "000000000000000000000000", "", "", "",
     "58e2fccefa7e3061367f1d57a4e7455a"},
    {"00000000000000000000000000000000", "000000000000000000000000", "",
     "00000000000000000000000000000000", "0388dace60b6a392f328c2b971b2fe78",
     "ab6e47d42cec13bdf53a67b21257bddf"},
    {K128, IVV, "", P64,
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
     "4d5c2af327cd64a62cf35abd2ba6fab4"},
    {K128, IVV, AADV, P60,
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"},
    {"0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "", "00000000000000000000000000000000", "cea7403d4d606b6e074ec5d3baf39d18",
     "d0d1c8a799996bf0265b98b5d48ab919"},
    {K128 K128, IVV, "", P64,
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {K128 K128, IVV, AADV, P60,
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

void test_kat(void) {
    for (size_t k = 0; k < sizeof(kats) / sizeof(kats[0]); k++) {
        uint8_t key[32], iv[12], aad[32], pt[64], ct[64], tag[16], out[65], otag[16];
        size_t kl = unhex(kats[k].key, key), al = unhex(kats[k].aad, aad), pl = unhex(kats[k].pt, pt);
        unhex(kats[k].iv, iv);
        CHECK(unhex(kats[k].ct, ct) == pl);
        unhex(kats[k].tag, tag);
        CHECK(ts_gcm_seal(key, kl, iv, aad, al, pt, pl, out, otag) == TS_OK);
        CHECK(memcmp(out, ct, pl) == 0);
        CHECK(memcmp(otag, tag, 16) == 0);
        memset(out, 0, sizeof(out));
        CHECK(ts_gcm_open(key, kl, iv, aad, al, ct, pl, tag, out) == TS_OK);
        CHECK(memcmp(out, pt, pl) == 0);
        for (size_t i = 0; i < pl + 16; i++) {   /* any flipped bit fails */
            uint8_t c2[64], t2[16];
            memcpy(c2, ct, pl);
            memcpy(t2, tag, 16);
            if (i < pl)
                c2[i] ^= 0x80;
            else
                t2[i - pl] ^= 0x01;
            CHECK(ts_gcm_open(key, kl, iv, aad, al, c2, pl, t2, out) == TS_ECRYPTO);
        }
        if (al) {
            aad[al - 1] ^= 1;
            CHECK(ts_gcm_open(key, kl, iv, aad, al, ct, pl, tag, out) == TS_ECRYPTO);
        }
    }
    uint8_t z[32] = {0}, t[16];
    CHECK(ts_gcm_seal(z, 24, z, NULL, 0, z, 16, z, t) == TS_EINVAL);
}

/* ---- 2. round trips and the reference in both directions ------------------ */
void test_round_trips(void) {
    static const size_t sizes[] = {0, 1, 2, 3, 4, 5, 100, 1000, 1400, 8000, 30000};
    for (int cfg = 0; cfg < 4; cfg++) {
        struct pair pr;
        uint8_t klen = cfg & 1 ? 36 : 20;
        bool esn = cfg & 2;
        pair_new(&pr, klen, esn, 65536, 0);
        uint64_t seq = 0;
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            for (int family = 4; family <= 6; family += 2) {
                size_t len = make_inner(family, sizes[k], false, bufA);
                int drop = -1;
                size_t icmp = 99;
                int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
                seq++;
                CHECK(n == (int)(32 + len + min_pad(len) + 2) && drop == TS_DROP_NONE && icmp == 0);
                if (n <= 0)
                    continue;
                /* the reference opens what the C path sealed */
                uint8_t nh = 0;
                long pl = ref_open(pr.key, klen, esn, 0, bufB, (size_t)n, bufC, &nh);
                CHECK(pl == (long)len && memcmp(bufC, bufA, len) == 0);
                CHECK(nh == (family == 4 ? 4 : 41));
                CHECK(get32(bufB) == pr.spi && get32(bufB + 4) == (uint32_t)seq);
                /* and the C receiver accepts it exactly once */
                int m = in1(pr.rx, bufB, (size_t)n, bufC, &drop);
                CHECK(m == (int)len && drop == TS_DROP_NONE && memcmp(bufC, bufA, len) == 0);
                m = in1(pr.rx, bufB, (size_t)n, bufC, &drop);
                CHECK(m == 0 && drop == TS_DROP_REPLAY);
                /* the reference's packets with a random IV and TFC padding are accepted */
                uint8_t iv[8];
                rnd_fill(iv, 8);
                memcpy(bufC, bufA, len);
                size_t tfc = rnd_below(64);
                rnd_fill(bufC + len, tfc);
                size_t pad = min_pad(len + tfc) + 4 * rnd_below(3);
                size_t el = ref_seal(pr.key, klen, pr.spi, seq + 40000, esn, iv, bufC, len + tfc, pad, NULL,
                                     family == 4 ? 4 : 41, bufB);
                m = in1(pr.rx, bufB, el, bufC, &drop);
                CHECK(m == (int)len && drop == TS_DROP_NONE && memcmp(bufC, bufA, len) == 0);
            }
        }
        ts_sa_info info;
        CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.seq == seq && info.counters[TS_CTR_PACKETS] == seq);
        CHECK(ts_sad_get(pr.rx, pr.spi, TS_DIR_IN, NULL, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 2 * seq);
        pair_free(&pr);
    }
}

/* ---- 3. drops on bad inner content ------------------------------------------ */
void test_bad_inner(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    int drop;
    size_t len = make_inner(4, 21, false, bufA);
    uint32_t seq = 1;
    struct {
        uint8_t nh;
        const uint8_t *pad;
        size_t padlen;
        int want;
    } cases[] = {
        {41, NULL, min_pad(len), TS_DROP_MALFORMED},           /* v4 packet under next header 41 */
        {59, NULL, min_pad(len), TS_DROP_DUMMY},
        {4, (const uint8_t *)"\x01\x03\x03", 3, TS_DROP_MALFORMED},
        {4, NULL, min_pad(len), TS_DROP_NONE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t plen = len;
        memcpy(bufC, bufA, len);
        while ((plen + cases[i].padlen + 2) % 4)
            bufC[plen++] = 0;
        size_t el = ref_seal(pr.key, 20, pr.spi, seq++, false, NULL, bufC, plen, cases[i].padlen, cases[i].pad,
                             cases[i].nh, bufB);
        int m = in1(pr.rx, bufB, el, bufC, &drop);
        CHECK(drop == cases[i].want);
        CHECK((m > 0) == (cases[i].want == TS_DROP_NONE));
    }
    /* outside the SA's selectors */
    len = make_inner(4, 10, false, bufA);
    bufA[12] = 11;
    size_t el = ref_seal(pr.key, 20, pr.spi, seq++, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_POLICY);
    /* wrong key */
    uint8_t other[20];
    memcpy(other, pr.key, 20);
    other[3] ^= 1;
    len = make_inner(6, 10, false, bufA);
    el = ref_seal(other, 20, pr.spi, seq++, false, NULL, bufA, len, min_pad(len), NULL, 41, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_AUTH);
    /* the non-ESP marker with nothing after it is no IKE message: counted, no event */
    memset(bufB, 0, 4);
    CHECK(in1(pr.rx, bufB, 4, bufC, &drop) == 0 && drop == TS_DROP_MALFORMED);
    ts_event ev;
    CHECK(ts_dp_next_event(pr.rx, &ev, bufC, sizeof(bufC)) == 0);
    pair_free(&pr);

    /* an SA without selectors admits nothing, however good the packet */
    pair_new(&pr, 20, false, 64, 0);
    uint32_t bare, one;
    CHECK(ts_sad_getspi(pr.rx, 256, 0xffffffffu, &bare) == TS_OK);
    CHECK(ts_sad_getspi(pr.rx, 256, 0xffffffffu, &one) == TS_OK);
    ts_sa_params p;
    params(&p, bare, TS_DIR_IN, pr.key, 20, false, 64, 0);
    p.n_sel = 0;
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    params(&p, one, TS_DIR_IN, pr.key, 20, false, 64, 0);
    p.n_sel = 1;   /* the IPv4 selector only */
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    uint64_t before[TS_DROP__COUNT], after[TS_DROP__COUNT];
    ts_dp_drops(pr.rx, before);
    for (int family = 4; family <= 6; family += 2) {
        len = make_inner(family, 10, false, bufA);
        el = ref_seal(pr.key, 20, bare, 1 + (uint32_t)family, false, NULL, bufA, len, min_pad(len), NULL,
                      family == 4 ? 4 : 41, bufB);
        CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_POLICY);
    }
    ts_dp_drops(pr.rx, after);
    CHECK(after[TS_DROP_POLICY] == before[TS_DROP_POLICY] + 2);
    /* the same IPv4 packet passes an SA whose one selector covers it; IPv6 does not */
    len = make_inner(4, 10, false, bufA);
    el = ref_seal(pr.key, 20, one, 1, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    len = make_inner(6, 10, false, bufA);
    el = ref_seal(pr.key, 20, one, 2, false, NULL, bufA, len, min_pad(len), NULL, 41, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_POLICY);
    pair_free(&pr);
}
