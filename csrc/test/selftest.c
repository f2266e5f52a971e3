/* Standalone self-test of the C fast path, meant to run under
 * -fsanitize=address,undefined -fno-sanitize-recover=all (make sanitize).
 *
 * Exercises the public API (tunsec_dp.h) end to end: AES-GCM known answers,
 * outbound -> inbound round trips, packets from an ESP implementation of its
 * own (OpenSSL EVP used directly, not csrc/esp.c) in both directions,
 * anti-replay, sequence overflow, SAD/SPD errors, ICMP too-big, ~200k random
 * and mutated packets with a fixed seed, and the batch loop over real
 * sockets.  Exits non-zero on any failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../tunsec_dp.h"
#include "../internal.h"   /* the hold (hold.c) is tested on its own too */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned long checks, failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            if (failures <= 50)                                                      \
                fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, \
                        __func__, #cond);                                            \
        }                                                                            \
    } while (0)

#define FATAL_IF(cond)                                                        \
    do {                                                                      \
        if (cond) {                                                           \
            fprintf(stderr, "%s:%d: fatal: %s\n", __FILE__, __LINE__, #cond); \
            exit(2);                                                          \
        }                                                                     \
    } while (0)

/* ---- a fixed-seed PRNG (xorshift64*) ---------------------------------------- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static uint32_t rnd_below(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }
static void rnd_fill(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

static size_t unhex(const char *s, uint8_t *out) {
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        FATAL_IF(sscanf(s + 2 * i, "%2x", &v) != 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

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

static void test_kat(void) {
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

/* ---- an ESP implementation of the test's own (RFC 4303 / RFC 4106) -------- */
static const EVP_CIPHER *gcm(size_t keymat_len) {
    return keymat_len == 20 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
}

/* payload (inner packet + any TFC) sealed with `padlen` bytes of padding
 * (pad bytes from `pad`, or 1, 2, 3, ... if NULL); returns the ESP length */
static size_t ref_seal(const uint8_t *keymat, size_t klen, uint32_t spi, uint64_t seq, bool esn,
                       const uint8_t *iv8, const uint8_t *payload, size_t plen, size_t padlen,
                       const uint8_t *pad, uint8_t nh, uint8_t *out) {
    uint8_t *pt = out + 16;
    memmove(pt, payload, plen);
    for (size_t i = 0; i < padlen; i++)
        pt[plen + i] = pad ? pad[i] : (uint8_t)(i + 1);
    pt[plen + padlen] = (uint8_t)padlen;
    pt[plen + padlen + 1] = nh;
    size_t ctl = plen + padlen + 2;
    put32(out, spi);
    put32(out + 4, (uint32_t)seq);
    if (iv8)
        memcpy(out + 8, iv8, 8);
    else {
        put32(out + 8, (uint32_t)(seq >> 32));
        put32(out + 12, (uint32_t)seq);
    }
    uint8_t nonce[12], aad[12];
    memcpy(nonce, keymat + klen - 4, 4);
    memcpy(nonce + 4, out + 8, 8);
    put32(aad, spi);
    size_t al = 8;
    if (esn) {
        put32(aad + 4, (uint32_t)(seq >> 32));
        put32(aad + 8, (uint32_t)seq);
        al = 12;
    } else {
        put32(aad + 4, (uint32_t)seq);
    }
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0;
    FATAL_IF(!c);
    FATAL_IF(!EVP_EncryptInit_ex(c, gcm(klen), NULL, keymat, nonce));
    FATAL_IF(!EVP_EncryptUpdate(c, NULL, &n, aad, (int)al));
    FATAL_IF(!EVP_EncryptUpdate(c, pt, &n, pt, (int)ctl));
    FATAL_IF(!EVP_EncryptFinal_ex(c, pt + ctl, &n));
    FATAL_IF(!EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, pt + ctl));
    EVP_CIPHER_CTX_free(c);
    return 16 + ctl + 16;
}

static size_t min_pad(size_t plen) { return (4 - ((plen + 2) & 3)) & 3; }

/* opens and checks the trailer; returns the payload length or -1 */
static long ref_open(const uint8_t *keymat, size_t klen, bool esn, uint32_t seq_hi,
                     const uint8_t *esp, size_t len, uint8_t *pt, uint8_t *nh) {
    if (len < 36 || (len - 32) % 4)
        return -1;
    size_t ctl = len - 32;
    uint8_t nonce[12], aad[12], tag[16];
    memcpy(nonce, keymat + klen - 4, 4);
    memcpy(nonce + 4, esp + 8, 8);
    memcpy(aad, esp, 4);
    size_t al = 8;
    if (esn) {
        put32(aad + 4, seq_hi);
        memcpy(aad + 8, esp + 4, 4);
        al = 12;
    } else {
        memcpy(aad + 4, esp + 4, 4);
    }
    memcpy(tag, esp + 16 + ctl, 16);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0;
    FATAL_IF(!c);
    int ok = EVP_DecryptInit_ex(c, gcm(klen), NULL, keymat, nonce) &&
             EVP_DecryptUpdate(c, NULL, &n, aad, (int)al) &&
             EVP_DecryptUpdate(c, pt, &n, esp + 16, (int)ctl) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) &&
             EVP_DecryptFinal_ex(c, pt + ctl, &n) > 0;
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        return -1;
    size_t padlen = pt[ctl - 2];
    if (padlen + 2 > ctl)
        return -1;
    for (size_t i = 0; i < padlen; i++)
        if (pt[ctl - 2 - padlen + i] != (uint8_t)(i + 1))
            return -1;
    *nh = pt[ctl - 1];
    return (long)(ctl - 2 - padlen);
}

/* ---- inner packets and SA set-up ----------------------------------------- */
static const uint8_t A4[4] = {10, 1, 0, 1}, B4[4] = {10, 2, 0, 1};
static const uint8_t A6[16] = {0xfd, 0, 0, 0x0a, [15] = 1}, B6[16] = {0xfd, 0, 0, 0x0b, [15] = 1};

static uint16_t csum(const uint8_t *p, size_t n) {
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += get16(p + i);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* a UDP packet of `family` from A's side to B's with `dlen` random payload bytes */
static size_t make_inner(int family, size_t dlen, bool df, uint8_t *out) {
    size_t hl = family == 4 ? 20 : 40, total = hl + 8 + dlen;
    memset(out, 0, hl + 8);
    if (family == 4) {
        out[0] = 0x45;
        put16(out + 2, (uint16_t)total);
        put16(out + 4, (uint16_t)rnd());
        put16(out + 6, df ? 0x4000 : 0);
        out[8] = 64;
        out[9] = 17;
        memcpy(out + 12, A4, 4);
        memcpy(out + 16, B4, 4);
        put16(out + 10, csum(out, 20));
    } else {
        out[0] = 0x60;
        put16(out + 4, (uint16_t)(8 + dlen));
        out[6] = 17;
        out[7] = 64;
        memcpy(out + 8, A6, 16);
        memcpy(out + 24, B6, 16);
    }
    put16(out + hl, 1234);
    put16(out + hl + 2, 5678);
    put16(out + hl + 4, (uint16_t)(8 + dlen));
    rnd_fill(out + hl + 8, dlen);
    return total;
}

static void sel_net(ts_selector *s, int family, const uint8_t *src, const uint8_t *dst, int plen_bytes) {
    memset(s, 0, sizeof(*s));
    s->family = (uint8_t)family;
    size_t n = family == 4 ? 4 : 16;
    memcpy(s->src_lo, src, n);
    memcpy(s->src_hi, src, n);
    memcpy(s->dst_lo, dst, n);
    memcpy(s->dst_hi, dst, n);
    for (size_t i = (size_t)plen_bytes; i < n; i++) {
        s->src_lo[i] = s->dst_lo[i] = 0;
        s->src_hi[i] = s->dst_hi[i] = 0xff;
    }
    s->sport_hi = s->dport_hi = 0xffff;
}

static void addr4(ts_addr *a, uint8_t last, uint16_t port) {
    memset(a, 0, sizeof(*a));
    a->family = 4;
    a->addr[0] = 192; a->addr[1] = 0; a->addr[2] = 2; a->addr[3] = last;
    a->port = port;
}

/* the peer of params()'s outbound SAs */
static const ts_addr PEER = {.family = 4, .addr = {192, 0, 2, 2}, .port = 4500};

static void params(ts_sa_params *p, uint32_t spi, uint8_t dir, const uint8_t *key, uint8_t klen, bool esn,
                   uint32_t window, uint64_t seq_start) {
    memset(p, 0, sizeof(*p));
    p->spi = spi;
    p->dir = dir;
    p->keylen = klen;
    memcpy(p->key, key, klen);
    p->esn = esn;
    p->replay_window = window;
    p->reqid = 1;
    addr4(&p->local, dir == TS_DIR_OUT ? 1 : 2, 4500);
    addr4(&p->remote, dir == TS_DIR_OUT ? 2 : 1, 4500);
    p->seq_start = seq_start;
    p->n_sel = 2;
    sel_net(&p->sel[0], 4, A4, B4, 3);
    sel_net(&p->sel[1], 6, A6, B6, 8);
}

static void protect(ts_dp *dp, uint32_t reqid) {
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.action = TS_ACT_PROTECT;
    pol.reqid = reqid;
    pol.priority = 10;
    pol.id = 1;
    sel_net(&pol.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
    pol.id = 2;
    sel_net(&pol.sel, 6, A6, B6, 8);
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
}

struct pair {
    ts_dp *tx, *rx;
    uint32_t spi;
    uint8_t key[36], klen;
    bool esn;
};

static void pair_new(struct pair *pr, uint8_t klen, bool esn, uint32_t window, uint64_t seq_start) {
    pr->tx = ts_dp_new();
    pr->rx = ts_dp_new();
    FATAL_IF(!pr->tx || !pr->rx);
    pr->klen = klen;
    pr->esn = esn;
    rnd_fill(pr->key, klen);
    CHECK(ts_sad_getspi(pr->rx, 256, 0xffffffffu, &pr->spi) == TS_OK);
    ts_sa_params p;
    params(&p, pr->spi, TS_DIR_IN, pr->key, klen, esn, window, 0);
    CHECK(ts_sad_update(pr->rx, &p) == TS_OK);
    params(&p, pr->spi, TS_DIR_OUT, pr->key, klen, esn, 0, seq_start);
    CHECK(ts_sad_add(pr->tx, &p) == TS_OK);
    protect(pr->tx, 1);
}

static void pair_free(struct pair *pr) {
    ts_dp_free(pr->tx);
    ts_dp_free(pr->rx);
}

static uint8_t bufA[TS_MAX_PACKET + 512], bufB[TS_MAX_PACKET + 512], bufC[TS_MAX_PACKET + 512];
#define CAP (TS_MAX_PACKET + 256)

static int out1(ts_dp *dp, const uint8_t *pkt, size_t len, uint8_t *out, int *drop, size_t *icmp) {
    ts_addr dst;
    return ts_dp_outbound(dp, pkt, len, out, CAP, &dst, drop, icmp);
}
static int in1(ts_dp *dp, const uint8_t *esp, size_t len, uint8_t *out, int *drop) {
    ts_addr src;
    addr4(&src, 1, 4500);
    return ts_dp_inbound(dp, esp, len, &src, NULL, out, CAP, drop);
}

/* ---- 2. round trips and the reference in both directions ------------------ */
static void test_round_trips(void) {
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
static void test_bad_inner(void) {
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

/* ---- 4. anti-replay against a reference model -------------------------------- */
struct model {
    uint64_t top;
    uint32_t w;
    uint8_t *seen;    /* bitmap over the numbers the test uses (< 1 << 22) */
};

static int model_recv(struct model *m, uint64_t seq) {
    if (seq == 0)
        return TS_DROP_REPLAY;
    if (m->w && seq <= m->top && (m->top - seq >= m->w || (m->seen[seq >> 3] >> (seq & 7) & 1)))
        return TS_DROP_REPLAY;
    m->seen[seq >> 3] |= (uint8_t)(1 << (seq & 7));
    if (seq > m->top)
        m->top = seq;
    return TS_DROP_NONE;
}

static void test_replay(void) {
    static const uint32_t windows[] = {0, 32, 33, 64, 100, 128, 1000, 1024, 4095, 4096, 65536};
    const uint64_t space = 1u << 22;
    uint8_t *seen = calloc(space / 8, 1);
    FATAL_IF(!seen);
    for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++) {
        struct pair pr;
        pair_new(&pr, 20, false, windows[wi], 0);
        struct model m = {0, windows[wi], seen};
        memset(seen, 0, space / 8);
        size_t len = make_inner(4, 16, false, bufA);
        uint32_t w = windows[wi] ? windows[wi] : 64;
        for (int i = 0; i < 4000; i++) {
            uint64_t seq;
            switch (rnd_below(4)) {
            case 0: seq = m.top + 1 + rnd_below(3 * w); break;
            case 1: seq = m.top > w + 8 ? m.top - rnd_below(w + 8) : rnd_below((uint32_t)m.top + 1); break;
            case 2: seq = m.top + 1 + rnd_below(2); break;
            default: seq = m.top - (m.top > w ? w - 1 + rnd_below(3) : 0); break;
            }
            if (seq >= space)
                break;
            bool forged = rnd_below(8) == 0;
            size_t el = ref_seal(pr.key, 20, pr.spi, seq, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
            if (forged)
                bufB[el - 1] ^= 0x20;
            int drop;
            int n = in1(pr.rx, bufB, el, bufC, &drop);
            int want;
            if (forged) {
                struct model probe = m;   /* a forgery never changes the model */
                bool fresh = seq != 0 && (!m.w || seq > m.top ||
                                          (m.top - seq < m.w && !(m.seen[seq >> 3] >> (seq & 7) & 1)));
                (void)probe;
                want = fresh ? TS_DROP_AUTH : TS_DROP_REPLAY;
            } else {
                want = model_recv(&m, seq);
            }
            CHECK(drop == want);
            CHECK((n > 0) == (want == TS_DROP_NONE));
        }
        ts_sa_info info;
        CHECK(ts_sad_get(pr.rx, pr.spi, TS_DIR_IN, NULL, &info) == TS_OK && info.seq == m.top);
        pair_free(&pr);
    }
    free(seen);

    /* ESN: crossing 2^32 and a late packet from the previous epoch */
    struct pair pr;
    pair_new(&pr, 36, true, 64, 0);
    size_t len = make_inner(6, 5, false, bufA);
    const uint64_t seqs[] = {(1ull << 32) - 1000, (1ull << 32) - 1, 1ull << 32, (1ull << 32) + 3, (1ull << 32) - 5};
    int drop;
    for (size_t i = 0; i < 5; i++) {
        size_t el = ref_seal(pr.key, 36, pr.spi, seqs[i], true, NULL, bufA, len, min_pad(len), NULL, 41, bufB);
        CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    }
    size_t el = ref_seal(pr.key, 36, pr.spi, (1ull << 32) - 5, true, NULL, bufA, len, min_pad(len), NULL, 41, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_REPLAY);
    pair_free(&pr);
}

/* The ring is ceil(W/64) + 1 words, not a power of two (replay.c): for windows
 * that are and are not multiples of 64, from every starting offset in a word
 * and after every slide from 1 to past a whole ring, exactly the W numbers
 * top-W+1..top are remembered: each seen one is refused, each unseen one in
 * the window accepted once, top-W and below refused.  ASan watches the slots. */
static void test_replay_ring(void) {
    static const uint32_t windows[] = {32, 33, 63, 64, 65, 100, 127, 128, 129, 1000, 1024};
    for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++) {
        uint32_t w = windows[wi];
        ts_replay r;
        CHECK(ts_replay_init(&r, w) == TS_OK);
        CHECK(r.nwords == (w + 63) / 64 + 1);
        for (uint64_t start = 1; start <= 64; start += 7) {
            for (uint64_t slide = 1; slide <= (uint64_t)r.nwords * 64 + 65; slide += (slide < 130 ? 1 : 17)) {
                ts_replay_set_floor(&r, 0);
                r.top = 0;
                for (uint32_t i = 0; i < r.nwords; i++)
                    r.bits[i] = 0;
                /* every other number of a first window seen, then a slide */
                uint64_t top = start + w;
                for (uint64_t s = top; s + w > top && s > 0; s -= 2)
                    CHECK(ts_replay_update(&r, s));
                uint64_t nt = top + slide;
                CHECK(ts_replay_update(&r, nt));
                for (uint64_t s = nt > w + 70 ? nt - w - 70 : 1; s <= nt; s++) {
                    bool in_window = nt - s < w;
                    bool was_seen = s == nt || (s <= top && s + w > top && (top - s) % 2 == 0);
                    CHECK(ts_replay_check(&r, s) == (in_window && !was_seen));
                }
                for (uint64_t s = nt - w + 1; s < nt; s++)
                    if (ts_replay_check(&r, s)) {
                        CHECK(ts_replay_update(&r, s));
                        CHECK(!ts_replay_check(&r, s));
                    }
                CHECK(!ts_replay_check(&r, nt - w));
                CHECK(!ts_replay_update(&r, nt - w));
            }
        }
        ts_replay_free(&r);
    }
    ts_replay r;
    CHECK(ts_replay_init(&r, 31) == TS_EINVAL && ts_replay_init(&r, TS_REPLAY_MAX + 1) == TS_EINVAL);
}

/* ---- 5. sequence number overflow ----------------------------------------------- */
static int count_events(ts_dp *dp, int type, ts_event *last) {
    ts_event ev;
    int n = 0;
    while (ts_dp_next_event(dp, &ev, bufC, sizeof(bufC)) == 1)
        if (ev.type == type) {
            n++;
            if (last)
                *last = ev;
        }
    return n;
}

static void test_overflow(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0xfffffffeull);
    size_t len = make_inner(4, 3, false, bufA), icmp;
    int drop;
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE);
    CHECK(get32(bufB + 4) == 0xffffffffu);
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_SEQ_OVERFLOW);
    ts_event ev;
    CHECK(count_events(pr.tx, TS_EV_EXPIRE, &ev) == 1 && ev.hard == 1 && ev.reason == TS_EXP_SEQ &&
          ev.spi == pr.spi && ev.dir == TS_DIR_OUT);
    CHECK(ev.addr.family == 4 && ev.addr.port == PEER.port && memcmp(ev.addr.addr, PEER.addr, 4) == 0);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.state == TS_SA_DEAD);
    CHECK(info.seq == 0xffffffffull && info.counters[TS_CTR_PACKETS] == 1);   /* the last number sent */
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_SEQ_OVERFLOW);
    CHECK(count_events(pr.tx, TS_EV_EXPIRE, NULL) == 0);
    pair_free(&pr);

    pair_new(&pr, 20, true, 64, 0xfffffffeull);
    for (uint64_t seq = 0xffffffffull; seq < 0x100000003ull; seq++) {
        int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
        CHECK(n > 0 && drop == TS_DROP_NONE);
        uint8_t nh;
        CHECK(ref_open(pr.key, 20, true, (uint32_t)(seq >> 32), bufB, (size_t)n, bufC, &nh) == (long)len);
        CHECK(get32(bufB + 8) == (uint32_t)(seq >> 32) && get32(bufB + 12) == (uint32_t)seq);
    }
    pair_free(&pr);
}

/* ---- 5b. reservations (manual keys: sequence state that survives restarts) ---- */
static void test_reservation(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    /* OUT: resumes after seq_start, never passes seq_limit, asks once at seq_notify */
    ts_sa_params p;
    params(&p, pr.spi + 1, TS_DIR_OUT, pr.key, 20, false, 0, 100);
    p.reqid = 2;
    p.seq_limit = 110;
    p.seq_notify = 105;
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);
    CHECK(ts_sad_delete(pr.tx, pr.spi, TS_DIR_OUT, &PEER) == TS_OK);
    ts_spd_flush(pr.tx);
    protect(pr.tx, 2);
    size_t len = make_inner(4, 10, false, bufA), icmp;
    int drop;
    for (uint32_t seq = 101; seq <= 110; seq++) {
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE);
        CHECK(get32(bufB + 4) == seq);
    }
    ts_event ev;
    CHECK(count_events(pr.tx, TS_EV_RESERVE, &ev) == 1 && ev.spi == pr.spi + 1 && ev.dir == TS_DIR_OUT);
    CHECK(ev.addr.family == PEER.family && ev.addr.port == PEER.port && memcmp(ev.addr.addr, PEER.addr, 4) == 0);
    /* another peer's SA with the same SPI is not this one */
    ts_addr other = PEER;
    other.port = 4501;
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &other, 200, 0) == TS_ENOENT);
    for (int i = 0; i < 3; i++)
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_UNRESERVED);
    uint64_t drops[TS_DROP__COUNT];
    ts_dp_drops(pr.tx, drops);
    CHECK(drops[TS_DROP_UNRESERVED] == 3);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, &info) == TS_OK && info.seq == 110 &&
          info.state == TS_SA_MATURE && info.seq_limit == 110);
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, 109, 0) == TS_EINVAL);   /* never lower */
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, 1ull << 32, 0) == TS_EINVAL);   /* no ESN */
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 7, TS_DIR_OUT, &PEER, 200, 0) == TS_ENOENT);
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, 120, 115) == TS_OK);
    for (uint32_t seq = 111; seq <= 120; seq++) {
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && get32(bufB + 4) == seq);
    }
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_UNRESERVED);
    CHECK(count_events(pr.tx, TS_EV_RESERVE, NULL) == 1);
    /* a limit below seq_start is refused at install */
    params(&p, pr.spi + 2, TS_DIR_OUT, pr.key, 20, false, 0, 100);
    p.seq_limit = 99;
    CHECK(ts_sad_add(pr.tx, &p) == TS_EINVAL);

    /* IN: a restarted receiver treats everything <= seq_start as seen and
     * accepts nothing past seq_limit */
    uint32_t spi_in;
    CHECK(ts_sad_getspi(pr.rx, 0x5000, 0x5000, &spi_in) == TS_OK);
    params(&p, spi_in, TS_DIR_IN, pr.key, 20, false, 64, 1000);
    p.seq_limit = 2000;
    p.seq_notify = 1500;
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    static const uint64_t old[] = {1000, 999, 990, 960, 1};
    for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++) {
        size_t el = ref_seal(pr.key, 20, spi_in, old[i], false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
        CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_REPLAY);
    }
    /* 1001..1023 share the floor's bitmap word: still acceptable, in any order */
    static const uint64_t fresh[] = {1003, 1001, 1002, 1499, 1500, 1600, 2000};
    for (size_t i = 0; i < sizeof(fresh) / sizeof(fresh[0]); i++) {
        size_t el = ref_seal(pr.key, 20, spi_in, fresh[i], false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
        CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    }
    CHECK(count_events(pr.rx, TS_EV_RESERVE, &ev) == 1 && ev.spi == spi_in && ev.dir == TS_DIR_IN);
    /* above the limit: refused, and once authenticated it asks for a reservation past it */
    size_t el = ref_seal(pr.key, 20, spi_in, 2001, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    bufB[el - 1] ^= 1;
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_AUTH);
    CHECK(count_events(pr.rx, TS_EV_RESERVE, NULL) == 0);   /* a forgery moves nothing */
    bufB[el - 1] ^= 1;
    CHECK(ts_sad_reserve(pr.rx, spi_in, TS_DIR_IN, NULL, 2000, 0) == TS_OK);   /* re-arm, as a refill does */
    size_t el9 = ref_seal(pr.key, 20, spi_in, 90000, false, NULL, bufA, len, min_pad(len), NULL, 4, bufC);
    memcpy(bufA + 4096, bufC, el9);
    CHECK(in1(pr.rx, bufA + 4096, el9, bufC, &drop) == 0 && drop == TS_DROP_UNRESERVED);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_UNRESERVED);
    CHECK(count_events(pr.rx, TS_EV_RESERVE, &ev) == 1 && ev.seq == 90000 && ev.dir == TS_DIR_IN);
    CHECK(ts_sad_get(pr.rx, spi_in, TS_DIR_IN, NULL, &info) == TS_OK && info.seq == 2000 && info.counters[TS_CTR_REPLAY_DROPS] == 5);
    CHECK(ts_sad_reserve(pr.rx, spi_in, TS_DIR_IN, NULL, 3000, 2500) == TS_OK);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_REPLAY);
    pair_free(&pr);
}

/* several threads taking numbers from one reserved SA: each number once, none past the limit */
struct res_thread {
    ts_dp *dp;
    const uint8_t *in;
    size_t len;
    uint32_t got[3000];
    size_t n;
};
static void *res_worker(void *arg) {
    struct res_thread *t = arg;
    static _Thread_local uint8_t out[512];
    for (int i = 0; i < 3000; i++) {
        ts_addr dst;
        int drop;
        size_t icmp;
        int n = ts_dp_outbound(t->dp, t->in, t->len, out, sizeof(out), &dst, &drop, &icmp);
        if (n > 0)
            t->got[t->n++] = get32(out + 4);
    }
    return NULL;
}

static void test_reservation_threads(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    CHECK(ts_sad_delete(pr.tx, pr.spi, TS_DIR_OUT, &PEER) == TS_OK);
    ts_sa_params p;
    params(&p, pr.spi, TS_DIR_OUT, pr.key, 20, false, 0, 1000);
    p.seq_limit = 6000;
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);
    static struct res_thread th[4];
    static uint8_t inner[256];
    size_t len = make_inner(4, 10, false, inner);
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) {
        th[i].dp = pr.tx;
        th[i].in = inner;
        th[i].len = len;
        th[i].n = 0;
        FATAL_IF(pthread_create(&tid[i], NULL, res_worker, &th[i]) != 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(tid[i], NULL);
    static uint8_t seen[6001];
    memset(seen, 0, sizeof(seen));
    size_t total = 0, dup = 0, out_of_range = 0;
    for (int i = 0; i < 4; i++)
        for (size_t k = 0; k < th[i].n; k++, total++) {
            uint32_t s = th[i].got[k];
            if (s <= 1000 || s > 6000)
                out_of_range++;
            else if (seen[s]++)
                dup++;
        }
    CHECK(total == 5000 && dup == 0 && out_of_range == 0);
    uint64_t drops[TS_DROP__COUNT];
    ts_dp_drops(pr.tx, drops);
    CHECK(drops[TS_DROP_UNRESERVED] == 12000 - 5000);
    pair_free(&pr);
}

/* ---- 5c. FIRST_USE: the first authenticated packet on an armed inbound SA ---- */
static uint64_t drop_count(ts_dp *dp, int reason);

static void test_first_use(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);   /* its IN SA is not armed: never reports */
    size_t len = make_inner(4, 10, false, bufA), icmp;
    int drop;
    int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
    CHECK(n > 0 && in1(pr.rx, bufB, (size_t)n, bufC, &drop) == (int)len);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);

    uint32_t spi;
    CHECK(ts_sad_getspi(pr.rx, 0x6000, 0x6000, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, pr.key, 20, false, 64, 0);
    p.report_first_use = 2;
    CHECK(ts_sad_update(pr.rx, &p) == TS_EINVAL);
    p.report_first_use = 1;
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    params(&p, spi, TS_DIR_OUT, pr.key, 20, false, 0, 0);
    p.report_first_use = 1;
    CHECK(ts_sad_add(pr.tx, &p) == TS_EINVAL);   /* what we send proves nothing */
    /* a forgery raises nothing */
    size_t el = ref_seal(pr.key, 20, spi, 1, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    bufB[el - 1] ^= 1;
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_AUTH);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);
    /* the first authentic packet raises it once, with the SA's SPI */
    el = ref_seal(pr.key, 20, spi, 1, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    ts_event ev;
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, &ev) == 1 && ev.spi == spi && ev.dir == TS_DIR_IN);
    el = ref_seal(pr.key, 20, spi, 2, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);

    /* a full event queue loses the report: the next packet makes it again */
    CHECK(ts_sad_getspi(pr.rx, 0x6001, 0x6001, &spi) == TS_OK);
    params(&p, spi, TS_DIR_IN, pr.key, 20, false, 64, 0);
    p.report_first_use = 1;
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    ts_event filler = {.type = TS_EV_ACQUIRE};
    while (ts_events_push(&pr.rx->events, &filler, NULL, 0))
        ;
    uint64_t full_before = drop_count(pr.rx, TS_DROP_QUEUE_FULL);
    el = ref_seal(pr.key, 20, spi, 1, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len);   /* the packet itself goes through */
    CHECK(drop_count(pr.rx, TS_DROP_QUEUE_FULL) == full_before + 1);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);
    el = ref_seal(pr.key, 20, spi, 2, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, &ev) == 1 && ev.spi == spi);
    pair_free(&pr);
}

/* several threads open the first packets of many armed SAs at once: one report per SA */
#define FU_SAS 32
#define FU_THREADS 4
#define FU_PKTS 6
#define FU_LEN 128
struct fu_thread {
    ts_dp *dp;
    unsigned slot;
    uint8_t pkt[FU_SAS][FU_PKTS][FU_LEN];
    size_t len[FU_SAS][FU_PKTS];
    int accepted;
};
static void *fu_worker(void *arg) {
    struct fu_thread *t = arg;
    static _Thread_local uint8_t out[512];
    ts_set_thread_slot(t->slot);   /* a loop thread's own cipher contexts, as in ts_dp_run_queue */
    ts_addr src;
    addr4(&src, 1, 4500);
    for (int k = 0; k < FU_PKTS; k++)
        for (int i = 0; i < FU_SAS; i++) {
            int drop;
            if (ts_dp_inbound(t->dp, t->pkt[i][k], t->len[i][k], &src, NULL, out, sizeof(out), &drop) > 0)
                t->accepted++;
        }
    ts_set_thread_slot(0);
    return NULL;
}

static void test_first_use_threads(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    uint32_t spis[FU_SAS];
    for (int i = 0; i < FU_SAS; i++) {
        ts_sa_params p;
        CHECK(ts_sad_getspi(dp, 0x7000, 0x7fff, &spis[i]) == TS_OK);
        params(&p, spis[i], TS_DIR_IN, key, 20, false, 1024, 0);
        p.report_first_use = 1;
        CHECK(ts_sad_update(dp, &p) == TS_OK);
    }
    static struct fu_thread th[FU_THREADS];
    static uint8_t inner[FU_LEN];
    size_t len = make_inner(4, 10, false, inner);
    for (int t = 0; t < FU_THREADS; t++) {
        th[t].dp = dp;
        th[t].slot = (unsigned)t + 1;
        th[t].accepted = 0;
        for (int i = 0; i < FU_SAS; i++)
            for (int k = 0; k < FU_PKTS; k++) {   /* every thread its own sequence numbers */
                uint64_t seq = (uint64_t)t * FU_PKTS + (uint64_t)k + 1;
                th[t].len[i][k] = ref_seal(key, 20, spis[i], seq, false, NULL, inner, len, min_pad(len), NULL,
                                           4, th[t].pkt[i][k]);
                FATAL_IF(th[t].len[i][k] > FU_LEN);
            }
    }
    pthread_t tid[FU_THREADS];
    for (int t = 0; t < FU_THREADS; t++)
        FATAL_IF(pthread_create(&tid[t], NULL, fu_worker, &th[t]) != 0);
    int accepted = 0;
    for (int t = 0; t < FU_THREADS; t++) {
        pthread_join(tid[t], NULL);
        accepted += th[t].accepted;
    }
    CHECK(accepted == FU_SAS * FU_THREADS * FU_PKTS);
    int reports[FU_SAS] = {0}, events = 0, stray = 0;
    ts_event ev;
    while (ts_dp_next_event(dp, &ev, bufC, sizeof(bufC)) == 1) {
        if (ev.type != TS_EV_FIRST_USE) {
            stray++;
            continue;
        }
        events++;
        for (int i = 0; i < FU_SAS; i++)
            if (spis[i] == ev.spi)
                reports[i]++;
    }
    CHECK(events == FU_SAS && stray == 0);
    for (int i = 0; i < FU_SAS; i++)
        CHECK(reports[i] == 1);
    ts_dp_free(dp);
}

/* ---- 6. SAD / SPD API errors ------------------------------------------------------ */
static void test_sad_errors(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint32_t spi = 0, s2;
    uint8_t key[20] = {1};
    ts_sa_params p;
    CHECK(ts_sad_getspi(dp, 0x1000, 0x1000, &spi) == TS_OK && spi == 0x1000);
    CHECK(ts_sad_getspi(dp, 0x1000, 0x1000, &s2) == TS_ENOSPC);
    CHECK(ts_sad_getspi(dp, 10, 5, &s2) == TS_EINVAL);
    params(&p, 0x1000, TS_DIR_IN, key, 20, false, 31, 0);
    CHECK(ts_sad_update(dp, &p) == TS_EINVAL);
    params(&p, 0x1000, TS_DIR_IN, key, 20, false, 64, 0);
    p.n_sel = TS_MAX_SELECTORS + 1;
    CHECK(ts_sad_update(dp, &p) == TS_EINVAL);
    params(&p, 0x1000, TS_DIR_IN, key, 20, false, 64, 0);
    CHECK(ts_sad_update(dp, &p) == TS_OK);
    CHECK(ts_sad_update(dp, &p) == TS_ESTATE);
    p.spi = 0x2000;
    CHECK(ts_sad_update(dp, &p) == TS_ENOENT);
    params(&p, 0x3000, TS_DIR_OUT, key, 20, false, 0, 0);
    CHECK(ts_sad_add(dp, &p) == TS_OK);
    CHECK(ts_sad_add(dp, &p) == TS_EEXIST);
    p.keylen = 21;
    CHECK(ts_sad_add(dp, &p) == TS_EINVAL);
    CHECK(ts_sad_count(dp) == 2);
    ts_sa_info infos[4];
    CHECK(ts_sad_list(dp, infos, 4) == 2);
    CHECK(ts_sad_list(dp, infos, 1) == 1);
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, NULL) == TS_EINVAL);    /* an OUT SA needs its peer */
    CHECK(ts_sad_delete(dp, 0x1000, TS_DIR_IN, &PEER) == TS_EINVAL);   /* an IN SA is named by SPI alone */
    CHECK(ts_sad_get(dp, 0x3000, TS_DIR_OUT, NULL, infos) == TS_EINVAL);
    ts_addr other = PEER;
    other.port = 4501;
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, &other) == TS_ENOENT);   /* same SPI, another peer */
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, &PEER) == TS_OK);
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, &PEER) == TS_ENOENT);
    CHECK(ts_sad_delete(dp, 0x1000, 7, NULL) == TS_EINVAL);
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.action = 9;
    sel_net(&pol.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(dp, &pol) == TS_EINVAL);
    pol.action = TS_ACT_BYPASS;
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
    CHECK(ts_spd_add(dp, &pol) == TS_EEXIST);
    for (uint32_t i = 1; i < 100; i++) {   /* grow the SPD past its first allocation */
        pol.id = i;
        pol.priority = (uint32_t)rnd_below(5);
        CHECK(ts_spd_add(dp, &pol) == TS_OK);
    }
    ts_policy_info pinfo[128];
    size_t np = ts_spd_list(dp, pinfo, 128);
    CHECK(np == 100);
    for (size_t i = 1; i < np; i++)
        CHECK(pinfo[i - 1].priority <= pinfo[i].priority);
    CHECK(ts_spd_delete(dp, 50) == TS_OK && ts_spd_delete(dp, 50) == TS_ENOENT);
    ts_sad_flush(dp);
    ts_spd_flush(dp);
    CHECK(ts_sad_count(dp) == 0 && ts_spd_list(dp, pinfo, 128) == 0);
    /* many SAs: the hash table grows */
    for (int i = 0; i < 5000; i++)
        CHECK(ts_sad_getspi(dp, 256, 0xffffffffu, &spi) == TS_OK);
    CHECK(ts_sad_count(dp) == 5000);
    ts_dp_free(dp);
}

/* ---- 6a. two peers chose the same outbound SPI ------------------------------------
 * Each has its own SA (own key, own reqid and policy); each SA seals for its own
 * peer only, and deleting one leaves the other working. */
static void test_shared_out_spi(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    static const uint8_t C4[4] = {10, 3, 0, 1};
    const uint32_t spi = 0xc0ffee01;
    uint8_t key[2][20];
    ts_addr peer[2] = {PEER, PEER};
    peer[1].addr[3] = 3;
    for (int i = 0; i < 2; i++) {
        rnd_fill(key[i], 20);
        ts_sa_params p;
        params(&p, spi, TS_DIR_OUT, key[i], 20, false, 0, 0);
        p.remote = peer[i];
        p.reqid = 10 + (uint32_t)i;
        p.n_sel = 1;
        sel_net(&p.sel[0], 4, A4, i == 0 ? B4 : C4, 3);
        CHECK(ts_sad_add(dp, &p) == TS_OK);
        CHECK(ts_sad_add(dp, &p) == TS_EEXIST);   /* the same (SPI, peer) twice */
        ts_policy pol;
        memset(&pol, 0, sizeof(pol));
        pol.id = 100 + (uint32_t)i;
        pol.action = TS_ACT_PROTECT;
        pol.reqid = p.reqid;
        sel_net(&pol.sel, 4, A4, i == 0 ? B4 : C4, 3);
        CHECK(ts_spd_add(dp, &pol) == TS_OK);
    }
    CHECK(ts_sad_count(dp) == 2);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2; i++) {
            size_t len = make_inner(4, 20, false, bufA), icmp;
            if (i == 1)
                memcpy(bufA + 16, C4, 4);   /* to site C; the checksum does not matter here */
            ts_addr dst;
            int drop;
            int n = ts_dp_outbound(dp, bufA, len, bufB, CAP, &dst, &drop, &icmp);
            if (round == 1 && i == 1) {   /* its SA is gone: nothing goes anywhere */
                CHECK(n == 0 && drop == TS_DROP_NO_SA);
                continue;
            }
            CHECK(n > 0 && drop == TS_DROP_NONE && get32(bufB) == spi);
            CHECK(dst.family == 4 && memcmp(dst.addr, peer[i].addr, 4) == 0);
            uint8_t nh;
            CHECK(ref_open(key[i], 20, false, 0, bufB, (size_t)n, bufC, &nh) == (long)len);
            CHECK(ref_open(key[1 - i], 20, false, 0, bufB, (size_t)n, bufC, &nh) < 0);
        }
        if (round == 0)
            CHECK(ts_sad_delete(dp, spi, TS_DIR_OUT, &peer[1]) == TS_OK);
    }
    ts_sa_info info;
    CHECK(ts_sad_get(dp, spi, TS_DIR_OUT, &peer[0], &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 2 && info.reqid == 10);
    CHECK(ts_sad_get(dp, spi, TS_DIR_OUT, &peer[1], &info) == TS_ENOENT);
    ts_dp_free(dp);
}

/* ---- 6a. migrate: NAT rebinding / MOBIKE move a mature SA, keys and numbers kept ---- */
static void test_migrate(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    size_t len = make_inner(4, 20, false, bufA), icmp;
    int drop;
    ts_addr dst;
    CHECK(ts_dp_outbound(pr.tx, bufA, len, bufB, CAP, &dst, &drop, &icmp) > 0 && dst.port == PEER.port);
    ts_addr moved = PEER;
    moved.addr[3] = 9;
    moved.port = 40001;
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &moved) == TS_OK);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_ENOENT);   /* known by its new peer */
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &moved, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 1);
    CHECK(info.remote.port == 40001 && info.remote.addr[3] == 9);
    int n = ts_dp_outbound(pr.tx, bufA, len, bufB, CAP, &dst, &drop, &icmp);
    CHECK(n > 0 && drop == TS_DROP_NONE && get32(bufB + 4) == 2);   /* the sequence goes on */
    CHECK(dst.family == 4 && dst.port == 40001 && memcmp(dst.addr, moved.addr, 4) == 0);
    uint8_t nh;
    CHECK(ref_open(pr.key, 20, false, 0, bufB, (size_t)n, bufC, &nh) == (long)len);   /* same keys */
    /* refused: the old name, a NULL or other-family target, IN named with a peer */
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &moved) == TS_ENOENT);
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, NULL) == TS_EINVAL);
    ts_addr v6 = {.family = 6, .port = 4500};
    v6.addr[15] = 1;
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &v6) == TS_EINVAL);
    ts_addr bad = moved;
    bad.family = 5;
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &bad) == TS_EINVAL);
    CHECK(ts_sad_migrate(pr.rx, pr.spi, TS_DIR_IN, &PEER, &moved) == TS_EINVAL);
    /* two peers' SAs with one SPI must stay two: no move onto the other */
    ts_sa_params p;
    params(&p, pr.spi, TS_DIR_OUT, pr.key, 20, false, 0, 0);
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);   /* (spi, PEER) again, a second SA */
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &PEER) == TS_EEXIST);
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &moved) == TS_OK);   /* no-op */
    /* IN keeps the peer for NAT-T checks: it moves too; larval SAs do not */
    CHECK(ts_sad_migrate(pr.rx, pr.spi, TS_DIR_IN, NULL, &moved) == TS_OK);
    CHECK(ts_sad_get(pr.rx, pr.spi, TS_DIR_IN, NULL, &info) == TS_OK && info.remote.port == 40001);
    uint32_t larval;
    CHECK(ts_sad_getspi(pr.rx, 0x6000, 0x6000, &larval) == TS_OK);
    CHECK(ts_sad_migrate(pr.rx, larval, TS_DIR_IN, NULL, &moved) == TS_ESTATE);
    CHECK(ts_sad_migrate(pr.rx, 0x6001, TS_DIR_IN, NULL, &moved) == TS_ENOENT);
    pair_free(&pr);
}

/* ---- 6b. lifetimes and the event queue ------------------------------------------- */
static void test_lifetimes(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    ts_sa_params p;
    params(&p, 0x7777, TS_DIR_OUT, pr.key, 20, false, 0, 0);
    p.reqid = 2;
    p.soft_packets = 3;
    p.hard_packets = 5;
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.id = 10;
    pol.action = TS_ACT_PROTECT;
    pol.reqid = 2;
    sel_net(&pol.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(pr.tx, &pol) == TS_OK);   /* same priority as policy 1, later: never chosen */
    CHECK(ts_spd_delete(pr.tx, 1) == TS_OK);   /* now it is */
    size_t len = make_inner(4, 12, false, bufA), icmp;
    int drop, soft = 0, hard = 0;
    ts_event ev;
    for (int i = 1; i <= 8; i++) {
        int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
        CHECK((n > 0) == (i <= 5));
        CHECK(drop == (i <= 5 ? TS_DROP_NONE : TS_DROP_LIFETIME));
        while (ts_dp_next_event(pr.tx, &ev, bufC, sizeof(bufC)) == 1) {
            CHECK(ev.type == TS_EV_EXPIRE && ev.spi == 0x7777 && ev.reason == TS_EXP_PACKETS);
            if (ev.hard) {
                hard++;
                CHECK(i == 6);
            } else {
                soft++;
                CHECK(i == 3);
            }
        }
    }
    CHECK(soft == 1 && hard == 1);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, 0x7777, TS_DIR_OUT, &PEER, &info) == TS_OK && info.state == TS_SA_DEAD &&
          info.counters[TS_CTR_PACKETS] == 5 && info.counters[TS_CTR_BYTES] == 5 * len);

    /* the event queue is bounded: IKE packets beyond it are counted, not queued */
    uint64_t d0[TS_DROP__COUNT], d1[TS_DROP__COUNT];
    ts_dp_drops(pr.rx, d0);
    int queued = 0;
    for (int i = 0; i < 1100; i++) {
        uint8_t ike[8] = {0, 0, 0, 0, 1, 2, 3, (uint8_t)i};
        CHECK(in1(pr.rx, ike, sizeof(ike), bufC, &drop) == 0);
        CHECK(drop == TS_DROP_NONE || drop == TS_DROP_QUEUE_FULL);
        queued += drop == TS_DROP_NONE;
    }
    ts_dp_drops(pr.rx, d1);
    CHECK(queued > 0 && queued < 1100 && d1[TS_DROP_QUEUE_FULL] - d0[TS_DROP_QUEUE_FULL] == (uint64_t)(1100 - queued));
    int popped = 0;
    uint8_t small[2];
    while (ts_dp_next_event(pr.rx, &ev, small, sizeof(small)) == 1) {
        CHECK(ev.type == TS_EV_IKE && ev.data_len == 2 && small[0] == 1 && small[1] == 2);   /* truncated copy */
        popped++;
    }
    CHECK(popped == queued);
    pair_free(&pr);
}

/* ---- 8a. IKE from port 500 on the NAT-T port (no marker), ESP from anywhere else ----- */
/* an IKE header of `len` bytes (length field = `hlen`), IKE_SA_INIT request */
static void ike_hdr(uint8_t *p, size_t len, uint32_t hlen) {
    memset(p, 0, len);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(0xa0 + i);   /* initiator SPI; the responder's is zero */
    p[16] = 33;                       /* SA payload */
    p[17] = 0x20;                     /* IKEv2 */
    p[18] = 34;                       /* IKE_SA_INIT */
    p[19] = 0x08;                     /* initiator */
    put32(p + 24, hlen);
}

static void test_ike_port500(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    /* SPIs whose first bytes look like a marker, an IKE SPI or anything */
    static const uint32_t spis[] = {0x100, 0xa0a1a2a3u, 0x20222008u};
    for (size_t i = 0; i < 3; i++) {
        uint32_t spi;
        CHECK(ts_sad_getspi(dp, spis[i], spis[i], &spi) == TS_OK && spi == spis[i]);
        params(&p, spi, TS_DIR_IN, key, 20, false, 64, 0);
        CHECK(ts_sad_update(dp, &p) == TS_OK);
    }
    ts_addr from500, other;
    addr4(&from500, 7, 500);
    int drop;
    uint64_t d0[TS_DROP__COUNT], d1[TS_DROP__COUNT];
    ts_event ev;
    uint8_t got[512];

    /* an unmarked IKE_SA_INIT from port 500: the whole datagram up, sender's port kept */
    ike_hdr(bufA, 300, 300);
    CHECK(ts_dp_inbound(dp, bufA, 300, &from500, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 300 &&
          memcmp(got, bufA, 300) == 0 && ev.addr.port == 500 && ev.addr.addr[3] == 7);
    /* from port 500 the marker is not one: four zero bytes are the start of the message */
    ike_hdr(bufA, 40, 40);
    memset(bufA, 0, 4);
    CHECK(ts_dp_inbound(dp, bufA, 40, &from500, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 40 &&
          memcmp(got, bufA, 40) == 0);
    /* no whole header, or a length field that is not the datagram's: counted, nothing up */
    ts_dp_drops(dp, d0);
    static const size_t lens[][2] = {{0, 0}, {27, 27}, {28, 29}, {29, 28}, {300, 0}, {300, 0xffffffffu}};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        if (lens[i][0] >= 28)
            ike_hdr(bufA, lens[i][0], (uint32_t)lens[i][1]);
        else
            rnd_fill(bufA, lens[i][0]);
        CHECK(ts_dp_inbound(dp, bufA, lens[i][0], &from500, NULL, bufC, CAP, &drop) == 0 &&
              drop == TS_DROP_MALFORMED);
    }
    /* a keepalive from port 500 is still a keepalive */
    CHECK(ts_dp_inbound(dp, (const uint8_t *)"\xff", 1, &from500, NULL, bufC, CAP, &drop) == 0 &&
          drop == TS_DROP_KEEPALIVE);
    ts_dp_drops(dp, d1);
    CHECK(d1[TS_DROP_MALFORMED] - d0[TS_DROP_MALFORMED] == sizeof(lens) / sizeof(lens[0]));
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 0);

    /* from any other port: the same IKE-looking datagram is ESP (its initiator SPI starts with
     * one of our ESP SPIs: it fails authentication), and genuine ESP, whatever its SPI looks
     * like, is decrypted */
    static const uint16_t ports[] = {4500, 501, 1, 5000, 65535};
    uint32_t seq = 1;
    for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
        addr4(&other, 7, ports[i]);
        ike_hdr(bufA, 300, 300);
        CHECK(ts_dp_inbound(dp, bufA, 300, &other, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_AUTH);
        CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 0);
        for (size_t k = 0; k < 3; k++) {
            size_t len = make_inner(4, 10, false, bufA);
            size_t el = ref_seal(key, 20, spis[k], seq++, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
            int m = ts_dp_inbound(dp, bufB, el, &other, NULL, bufC, CAP, &drop);
            CHECK(m == (int)len && drop == TS_DROP_NONE && memcmp(bufC, bufA, len) == 0);
        }
    }
    /* without a sender (single packets in benchmarks) nothing is from port 500 */
    ike_hdr(bufA, 300, 300);
    CHECK(ts_dp_inbound(dp, bufA, 300, NULL, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_AUTH);
    ts_dp_free(dp);
}

/* ---- 8b. offload parsers (TUN super-packets, GRO) on random input ------------------ */
/* found by fuzz/tun_vnet.c: a 64 KiB TSO read whose gso_size covers it all
 * made one 65536-byte segment, its 16-bit length wrapped to 0 */
static void test_segment_64k(void) {
    static uint8_t in[TS_VNET_HDR_LEN + TS_MAX_PACKET], seg[TS_MAX_PACKET + 1024];
    uint16_t seg_len[4];
    memset(in, 0, sizeof(in));
    in[0] = 1;                                 /* NEEDS_CSUM */
    in[1] = 1;                                 /* TCPV4 */
    in[4] = 0xff; in[5] = 0xff;                /* gso_size 65535 */
    uint8_t *ip = in + TS_VNET_HDR_LEN;
    ip[0] = 0x45; ip[9] = 6; ip[20 + 12] = 0x50; ip[20 + 13] = 0x10;
    CHECK(ts_vnet_segment(in, sizeof(in), seg, sizeof(seg), seg_len, 4) == -1);
    int n = ts_vnet_segment(in, sizeof(in) - 1, seg, sizeof(seg), seg_len, 4);   /* 65535 bytes: fits */
    CHECK(n == 1 && seg_len[0] == 65535);
}

static void test_offload_fuzz(long iterations) {
    static uint8_t in[TS_VNET_HDR_LEN + TS_MAX_PACKET + 64], seg[2 * TS_MAX_PACKET + 8192];
    static uint16_t seg_len[128];
    static uint32_t lens[64], out_lens[64];
    long produced = 0;
    for (long it = 0; it < iterations; it++) {
        size_t len;
        uint8_t *pkt = in + TS_VNET_HDR_LEN;
        rnd_fill(in, TS_VNET_HDR_LEN);
        in[1] = (uint8_t)(rnd_below(2) ? rnd_below(6) : in[1]);   /* mostly known GSO types */
        if (rnd_below(2)) {
            /* a plausible TCP or UDP super-packet, then damaged a little */
            int family = rnd_below(2) ? 4 : 6;
            size_t dlen = rnd_below(rnd_below(8) ? 3000 : 66000);
            len = make_inner(family, dlen > 65000 ? 65000 : dlen, false, pkt);
            if (rnd_below(2)) {
                size_t hl = family == 4 ? 20 : 40;
                pkt[family == 4 ? 9 : 6] = 6;
                pkt[hl + 12] = (uint8_t)((5 + rnd_below(11)) << 4);
            }
            for (uint32_t k = rnd_below(4); k > 0; k--)
                pkt[rnd_below(len < 64 ? (uint32_t)len : 64)] = (uint8_t)rnd();
            uint16_t gs = (uint16_t)(rnd_below(3) ? 500 + rnd_below(1500) : rnd());
            in[4] = (uint8_t)gs;
            in[5] = (uint8_t)(gs >> 8);
        } else {
            len = rnd_below(400);
            rnd_fill(pkt, len);
        }
        size_t total = TS_VNET_HDR_LEN + len;
        if (rnd_below(4) == 0)
            total = rnd_below((uint32_t)total + 1);
        size_t cap = rnd_below(2) ? sizeof(seg) : rnd_below(70000);
        size_t max_segs = 1 + rnd_below(128);
        int n = ts_vnet_segment(in, total, seg, cap, seg_len, max_segs);
        CHECK(n >= -1 && n <= (int)max_segs);
        size_t sum = 0;
        for (int i = 0; i < n; i++)
            sum += seg_len[i];
        CHECK(n <= 0 || sum <= cap);
        produced += n > 0 ? n : 0;

        /* GRO over a run of random or TCP-like packets */
        size_t cnt = 1 + rnd_below(64), off = 0;
        for (size_t i = 0; i < cnt && off + 2000 < sizeof(seg); i++) {
            lens[i] = (uint32_t)make_inner(rnd_below(2) ? 4 : 6, rnd_below(1500), false, seg + off);
            if (rnd_below(2)) {
                size_t hl = seg[off] >> 4 == 4 ? 20 : 40;
                seg[off + (hl == 20 ? 9 : 6)] = 6;
                seg[off + hl + 12] = 0x50;
                seg[off + hl + 13] = rnd_below(2) ? 0x10 : (uint8_t)rnd();
            }
            if (rnd_below(4) == 0)
                seg[off + rnd_below(lens[i])] ^= (uint8_t)rnd();
            off += lens[i];
            cnt = i + 1;
        }
        size_t ocap = rnd_below(2) ? 70000 : rnd_below(5000);
        static uint8_t gout[70000 + 64];
        size_t max_out = 1 + rnd_below(64);
        int m = ts_gro_run(seg, lens, cnt, gout, ocap, out_lens, max_out);
        CHECK(m >= 0 && m <= (int)max_out);
        size_t gsum = 0;
        for (int i = 0; i < m; i++)
            gsum += out_lens[i];
        CHECK(gsum <= ocap);
    }
    CHECK(produced > 0);
}

/* ---- 7. ICMP too big --------------------------------------------------------------- */
static void test_icmp(void) {
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

static uint64_t drop_count(ts_dp *dp, int reason) {
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(dp, d);
    return d[reason];
}

/* Packets no ICMP error may answer (ICMP errors, non-unicast sources, later
 * fragments) and the rate limit: each withheld answer is counted. */
static void test_icmp_limits(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    ts_dp_set_tunnel_mtu(pr.tx, 1400);
    ts_policy pol;                      /* any source, so odd ones reach the MTU check */
    memset(&pol, 0, sizeof(pol));
    pol.action = TS_ACT_PROTECT;
    pol.reqid = 1;
    pol.priority = 20;
    pol.id = 3;
    sel_net(&pol.sel, 4, A4, B4, 0);
    CHECK(ts_spd_add(pr.tx, &pol) == TS_OK);
    pol.id = 4;
    sel_net(&pol.sel, 6, A6, B6, 0);
    CHECK(ts_spd_add(pr.tx, &pol) == TS_OK);
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

    /* a flood: the first answers go out, then the bucket runs dry (it refills
     * at 100/s, far slower than this loop), and every withheld one is counted */
    pair_new(&pr, 20, false, 64, 0);
    ts_dp_set_tunnel_mtu(pr.tx, 1400);
    size_t len = make_inner(4, 1472, true, bufA);
    int answered = 0, n = 500;
    for (int i = 0; i < n; i++) {
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_TOO_BIG);
        answered += icmp > 0;
    }
    CHECK(answered >= 20 && answered < n);
    CHECK(drop_count(pr.tx, TS_DROP_ICMP_SUPPRESSED) == (uint64_t)(n - answered));
    CHECK(drop_count(pr.tx, TS_DROP_TOO_BIG) == (uint64_t)n);
    pair_free(&pr);
}

/* The wipe every freed SA goes through leaves no key behind: keyed in a
 * buffer of ours, the key is there; after the wipe the buffer is all zero. */
static void test_key_wipe(void) {
    size_t sz = ts_test_sa_size();
    uint8_t *buf = aligned_alloc(16, (sz + 15) / 16 * 16);
    FATAL_IF(!buf);
    uint8_t key[36];
    rnd_fill(key, sizeof(key));
    for (int k = 0; k < 2; k++) {
        uint8_t klen = k ? 36 : 20;
        ts_sa_params p;
        params(&p, 0x1234, k ? TS_DIR_OUT : TS_DIR_IN, key, klen, false, 64, 0);
        memset(buf, 0xa5, sz);
        int seen = 0;
        CHECK(ts_test_sa_wipe(&p, buf, sz, &seen) == TS_OK);
        CHECK(seen == 1);
        size_t nonzero = 0;
        for (size_t i = 0; i < sz; i++)
            nonzero += buf[i] != 0;
        CHECK(nonzero == 0);
    }
    int seen = 1;
    ts_sa_params p;
    params(&p, 0x1234, TS_DIR_IN, key, 20, false, 64, 0);
    CHECK(ts_test_sa_wipe(&p, buf, sz - 1, &seen) == TS_EINVAL && seen == 0);
    free(buf);
}

/* ---- 8. random and mutated input ---------------------------------------------------- */
static uint64_t drop_sum(ts_dp *dp, uint64_t *per) {
    uint64_t d[TS_DROP__COUNT], s = 0;
    ts_dp_drops(dp, d);
    for (int i = 0; i < TS_DROP__COUNT; i++) {
        s += d[i];
        if (per)
            per[i] = d[i];
    }
    return s;
}

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

static void test_fuzz(long iterations) {
    struct pair pr;
    pair_new(&pr, 20, true, 4096, 0);
    uint32_t larval;
    CHECK(ts_sad_getspi(pr.rx, 256, 0xffffffffu, &larval) == TS_OK);
    ts_dp_set_tunnel_mtu(pr.tx, 1000);
    uint64_t per0_rx[TS_DROP__COUNT], per0_tx[TS_DROP__COUNT];
    uint64_t base_rx = drop_sum(pr.rx, per0_rx), base_tx = drop_sum(pr.tx, per0_tx);
    uint64_t rejected_rx = 0, rejected_tx = 0, ike = 0, ike_seen = 0, accepted = 0;
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
        while (ts_dp_next_event(pr.tx, &ev, bufC, sizeof(bufC)) == 1) {
        }
    }
    uint64_t per_rx[TS_DROP__COUNT], per_tx[TS_DROP__COUNT];
    CHECK(drop_sum(pr.rx, per_rx) - base_rx == rejected_rx);
    CHECK(drop_sum(pr.tx, per_tx) - base_tx == rejected_tx + why_tx[TS_DROP_ICMP_SUPPRESSED]);
    for (int i = 0; i < TS_DROP__COUNT; i++) {
        CHECK(per_rx[i] - per0_rx[i] == why_rx[i]);
        CHECK(per_tx[i] - per0_tx[i] == why_tx[i]);
    }
    CHECK(ike == ike_seen);
    CHECK(accepted > 0 && rejected_rx > 0 && rejected_tx > 0);
    printf("fuzz: %ld iterations, %llu inbound rejected, %llu outbound rejected, %llu IKE, %llu clean\n",
           iterations, (unsigned long long)rejected_rx, (unsigned long long)rejected_tx,
           (unsigned long long)ike, (unsigned long long)accepted);
    pair_free(&pr);
}

/* ---- 9. the batch loop over real sockets ---------------------------------------------- */
static void *run_thread(void *arg) {
    int rc = ts_dp_run((ts_dp *)arg);
    return (void *)(intptr_t)rc;
}

static int udp_bound(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FATAL_IF(fd < 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    FATAL_IF(bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0);
    socklen_t l = sizeof(a);
    FATAL_IF(getsockname(fd, (struct sockaddr *)&a, &l) != 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static ssize_t recv_wait(int fd, uint8_t *buf, size_t cap) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10000) != 1)   /* only a hang fails here, never slowness */
        return -1;
    return recv(fd, buf, cap, 0);
}

/* keys A -> B over loopback: B's inbound SA (from port_a), A's outbound SA
 * (to port_b) and A's PROTECT policy; returns the SPI, the key in key[20] */
static uint32_t loopback_sa_pair(ts_dp *A, ts_dp *B, uint16_t port_a, uint16_t port_b, uint32_t window,
                                 uint8_t key[20]) {
    rnd_fill(key, 20);
    uint32_t spi = 0;
    CHECK(ts_sad_getspi(B, 256, 0xffffffffu, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, key, 20, false, window, 0);
    p.remote.addr[0] = 127; p.remote.addr[1] = 0; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    p.remote.port = port_a;
    CHECK(ts_sad_update(B, &p) == TS_OK);
    params(&p, spi, TS_DIR_OUT, key, 20, false, 0, 0);
    p.remote.addr[0] = 127; p.remote.addr[1] = 0; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    p.remote.port = port_b;
    CHECK(ts_sad_add(A, &p) == TS_OK);
    protect(A, 1);
    return spi;
}

static void test_loop(void) {
    /* two dataplanes, each with a fake TUN (a datagram socketpair) and a UDP socket on loopback */
    int tunA[2], tunB[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunB) != 0);
    uint16_t pa, pb;
    int ua = udp_bound(&pa), ub = udp_bound(&pb);
    ts_dp *A = ts_dp_new(), *B = ts_dp_new();
    FATAL_IF(!A || !B);
    uint8_t key[20];
    uint32_t spi = loopback_sa_pair(A, B, pa, pb, 1024, key);
    ts_sa_params p;
    ts_dp_set_tunnel_mtu(A, 1400);
    CHECK(ts_dp_set_fds(A, tunA[0], ua, -1) == TS_OK);
    CHECK(ts_dp_set_fds(B, tunB[0], ub, -1) == TS_OK);
    pthread_t ta, tb;
    FATAL_IF(pthread_create(&ta, NULL, run_thread, A) != 0);
    FATAL_IF(pthread_create(&tb, NULL, run_thread, B) != 0);
    for (int i = 0; i < 300; i++) {
        size_t len = make_inner(i % 2 ? 4 : 6, rnd_below(1300), i % 3 == 0, bufA);
        FATAL_IF(send(tunA[1], bufA, len, 0) != (ssize_t)len);
        ssize_t r = recv_wait(tunB[1], bufC, sizeof(bufC));
        CHECK(r == (ssize_t)len && memcmp(bufC, bufA, len) == 0);
    }
    /* too big: the ICMP comes back into A's TUN */
    size_t len = make_inner(4, 1472, true, bufA);
    FATAL_IF(send(tunA[1], bufA, len, 0) != (ssize_t)len);
    ssize_t r = recv_wait(tunA[1], bufC, sizeof(bufC));
    CHECK(r >= 28 && bufC[9] == 1 && bufC[20] == 3 && bufC[21] == 4);
    /* garbage and a keepalive at B's UDP port are dropped and counted, IKE becomes an event */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(pb)};
    uint64_t before = drop_sum(B, NULL);
    FATAL_IF(sendto(ua, "\xff", 1, 0, (struct sockaddr *)&to, sizeof(to)) != 1);
    FATAL_IF(sendto(ua, "\0\0\0\0ike", 7, 0, (struct sockaddr *)&to, sizeof(to)) != 7);
    rnd_fill(bufA, 100);
    FATAL_IF(sendto(ua, bufA, 100, 0, (struct sockaddr *)&to, sizeof(to)) != 100);
    struct pollfd pf = {.fd = ts_dp_event_fd(B), .events = POLLIN};
    CHECK(poll(&pf, 1, 10000) == 1);
    ts_event ev;
    uint8_t data[16];
    CHECK(ts_dp_next_event(B, &ev, data, sizeof(data)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 3 &&
          memcmp(data, "ike", 3) == 0 && ev.addr.family == 4 && ev.addr.port == pa);
    /* a control change while the loop runs, then one more packet through */
    ts_addr to_b = {.family = 4, .addr = {127, 0, 0, 1}, .port = pb};
    CHECK(ts_sad_delete(A, spi, TS_DIR_OUT, &to_b) == TS_OK);
    params(&p, spi, TS_DIR_OUT, key, 20, false, 0, 1000);
    p.remote.addr[0] = 127; p.remote.addr[1] = 0; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    p.remote.port = pb;
    CHECK(ts_sad_add(A, &p) == TS_OK);
    len = make_inner(4, 50, false, bufA);
    FATAL_IF(send(tunA[1], bufA, len, 0) != (ssize_t)len);
    r = recv_wait(tunB[1], bufC, sizeof(bufC));
    CHECK(r == (ssize_t)len && memcmp(bufC, bufA, len) == 0);
    ts_dp_stop(A);
    ts_dp_stop(B);
    void *ra, *rb;
    pthread_join(ta, &ra);
    pthread_join(tb, &rb);
    CHECK((intptr_t)ra == TS_OK && (intptr_t)rb == TS_OK);
    /* the keepalive and the garbage were processed before the IKE event's successor packet */
    CHECK(drop_sum(B, NULL) - before == 2);
    ts_sa_info info;
    CHECK(ts_sad_get(B, spi, TS_DIR_IN, NULL, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 301);
    ts_dp_free(A);
    ts_dp_free(B);
    close(tunA[0]); close(tunA[1]); close(tunB[0]); close(tunB[1]);
    close(ua);
    close(ub);
}

/* ---- 10. two loop threads sharing one SA ---------------------------------------------- */
typedef struct queue_run {
    ts_dp *dp;
    int queue;
} queue_run;

static void *run_queue_thread(void *arg) {
    queue_run *q = arg;
    return (void *)(intptr_t)ts_dp_run_queue(q->dp, q->queue);
}

static void test_loop_two_queues(void) {
    /* A: two queues (two fake TUN queues, two UDP sockets) sealing with one SA's
     * sequence numbers from two threads; B: one queue opening all of them */
    int tunA0[2], tunA1[2], tunB[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA0) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA1) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunB) != 0);
    uint16_t pa0, pa1, pb;
    int ua0 = udp_bound(&pa0), ua1 = udp_bound(&pa1), ub = udp_bound(&pb);
    int big = 4 << 20;
    setsockopt(ub, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    ts_dp *A = ts_dp_new(), *B = ts_dp_new();
    FATAL_IF(!A || !B);
    uint8_t key[20];
    uint32_t spi = loopback_sa_pair(A, B, pa0, pb, 4096, key);
    CHECK(ts_dp_set_fds(A, tunA0[0], ua0, -1) == TS_OK);
    CHECK(ts_dp_add_queue(A, tunA1[0], ua1, -1) == 1);
    CHECK(ts_dp_set_fds(B, tunB[0], ub, -1) == TS_OK);
    queue_run qa0 = {A, 0}, qa1 = {A, 1}, qb = {B, 0};
    pthread_t t0, t1, tb;
    FATAL_IF(pthread_create(&t0, NULL, run_queue_thread, &qa0) != 0);
    FATAL_IF(pthread_create(&t1, NULL, run_queue_thread, &qa1) != 0);
    FATAL_IF(pthread_create(&tb, NULL, run_queue_thread, &qb) != 0);
    /* bursts of 8 (a unix datagram socket queues only ~10): both threads busy at once */
    enum { N = 400, BURST = 8 };
    int got = 0;
    for (int i = 0; i < N; i += BURST) {
        for (int k = 0; k < BURST; k++) {
            size_t len = make_inner(4, 200 + (size_t)(i + k), false, bufA);
            FATAL_IF(send(k % 2 ? tunA1[1] : tunA0[1], bufA, len, 0) != (ssize_t)len);
        }
        for (int k = 0; k < BURST && recv_wait(tunB[1], bufC, sizeof(bufC)) > 0; k++)
            got++;
    }
    CHECK(got == N);   /* every packet through, whatever order the two threads sent them in */
    ts_dp_stop(A);
    ts_dp_stop(B);
    void *r0, *r1, *rb;
    pthread_join(t0, &r0);
    pthread_join(t1, &r1);
    pthread_join(tb, &rb);
    CHECK((intptr_t)r0 == TS_OK && (intptr_t)r1 == TS_OK && (intptr_t)rb == TS_OK);
    ts_sa_info info;
    ts_addr to_b = {.family = 4, .addr = {127, 0, 0, 1}, .port = pb};
    CHECK(ts_sad_get(A, spi, TS_DIR_OUT, &to_b, &info) == TS_OK && info.seq == N && info.counters[TS_CTR_PACKETS] == N);
    CHECK(ts_sad_get(B, spi, TS_DIR_IN, NULL, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == N && info.counters[TS_CTR_REPLAY_DROPS] == 0);
    ts_dp_free(A);
    ts_dp_free(B);
    int fds[] = {tunA0[0], tunA0[1], tunA1[0], tunA1[1], tunB[0], tunB[1], ua0, ua1, ub};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
}

/* ---- 11. packets that wait for their SA (start_action = trap) -------------------------- */
static void test_hold_unit(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_hold *h = ts_hold_new();
    FATAL_IF(!h);
    uint64_t d[TS_DROP__COUNT];
    CHECK(h->buf == NULL);   /* no packet buffer until a packet waits (a policy per client) */
    /* count cap: 10 pushed, the 2 oldest dropped and counted, the rest in order */
    for (uint8_t i = 0; i < 10; i++) {
        memset(bufA, i, 100);
        CHECK(ts_hold_push(dp, h, bufA, 100, 1000 + i));
    }
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_FULL] == 2 && ts_hold_count(h) == TS_HOLD_PKTS);
    for (uint8_t i = 2; i < 10; i++)
        CHECK(ts_hold_pop(dp, h, bufB, CAP, 2000, NULL) == 100 && bufB[0] == i && bufB[99] == i);
    CHECK(ts_hold_pop(dp, h, bufB, CAP, 2000, NULL) == 0);
    CHECK(h->buf == NULL);   /* emptied: the buffer is given back */
    /* byte cap: three 30000-byte packets do not fit in 64 KiB: the first goes */
    for (uint8_t i = 0; i < 3; i++) {
        memset(bufA, 0x40 + i, 30000);
        CHECK(ts_hold_push(dp, h, bufA, 30000, 3000));
    }
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_FULL] == 3 && ts_hold_count(h) == 2 && h->used == 60000);
    CHECK(ts_hold_pop(dp, h, bufB, CAP, 3000, NULL) == 30000 && bufB[0] == 0x41 && bufB[29999] == 0x41);
    /* too big for any hold: not held, the caller drops it as before */
    CHECK(!ts_hold_push(dp, h, bufA, TS_HOLD_BYTES + 1, 3000));
    /* negotiation failed: nothing binds, the packet times out, counted, never sent */
    CHECK(ts_hold_push(dp, h, bufA, 64, 5000));
    CHECK(ts_hold_pop(dp, h, bufB, CAP, 5000 + TS_HOLD_TIMEOUT_NS + 1, NULL) == 0);
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_TIMEOUT] == 2 && ts_hold_count(h) == 0 && h->buf == NULL);
    CHECK(d[TS_DROP_NO_SA] == 0);
    ts_hold_free(dp, h);
    ts_dp_free(dp);
}

static uint64_t policy_packets(ts_dp *dp, uint32_t id) {
    ts_policy_info pi[8];
    size_t n = ts_spd_list(dp, pi, 8);
    for (size_t i = 0; i < n; i++)
        if (pi[i].id == id)
            return pi[i].packets;
    return 0;
}

static void test_hold_loop(void) {
    /* A has a trap policy (a PROTECT policy whose reqid no SA ever gets): the
     * packets wait, ACQUIRE goes up.  Then, as the IKE side does it, the SA is
     * added (nothing binds to the trap: the packets wait again) and the child's
     * own policy after it: the packets arrive at B, in order. */
    int tunA[2], tunB[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunB) != 0);
    uint16_t pa, pb;
    int ua = udp_bound(&pa), ub = udp_bound(&pb);
    ts_dp *A = ts_dp_new(), *B = ts_dp_new();
    FATAL_IF(!A || !B);
    ts_policy trap;
    memset(&trap, 0, sizeof(trap));
    trap.action = TS_ACT_PROTECT;
    trap.reqid = 99;
    trap.priority = 20;
    trap.id = 7;
    sel_net(&trap.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(A, &trap) == TS_OK);
    CHECK(ts_dp_set_fds(A, tunA[0], ua, -1) == TS_OK);
    CHECK(ts_dp_set_fds(B, tunB[0], ub, -1) == TS_OK);
    pthread_t ta, tb;
    FATAL_IF(pthread_create(&ta, NULL, run_thread, A) != 0);
    FATAL_IF(pthread_create(&tb, NULL, run_thread, B) != 0);
    enum { N = 3 };
    uint8_t sent[N][200];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        lens[i] = make_inner(4, 60 + (size_t)i, false, sent[i]);
        FATAL_IF(send(tunA[1], sent[i], lens[i], 0) != (ssize_t)lens[i]);
    }
    struct pollfd pf = {.fd = ts_dp_event_fd(A), .events = POLLIN};
    CHECK(poll(&pf, 1, 10000) == 1);
    ts_event ev;
    CHECK(ts_dp_next_event(A, &ev, bufC, sizeof(bufC)) == 1 && ev.type == TS_EV_ACQUIRE && ev.policy_id == 7);
    for (int w = 0; w < 1000 && policy_packets(A, 7) < N; w++)
        usleep(10000);
    CHECK(policy_packets(A, 7) == N);
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(A, d);
    CHECK(d[TS_DROP_NO_SA] == 0 && d[TS_DROP_HOLD_FULL] == 0);
    /* nothing left A yet */
    CHECK(recv(tunB[1], bufC, sizeof(bufC), MSG_DONTWAIT) < 0);
    uint8_t key[20];
    rnd_fill(key, 20);
    uint32_t spi = 0;
    CHECK(ts_sad_getspi(B, 256, 0xffffffffu, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, key, 20, false, 64, 0);
    addr4(&p.remote, 0, pa);
    p.remote.addr[0] = 127; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    CHECK(ts_sad_update(B, &p) == TS_OK);
    params(&p, spi, TS_DIR_OUT, key, 20, false, 0, 0);
    addr4(&p.remote, 0, pb);
    p.remote.addr[0] = 127; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    CHECK(ts_sad_add(A, &p) == TS_OK);
    /* the SA alone does not let them out: they take the trap policy again and wait */
    for (int w = 0; w < 1000 && policy_packets(A, 7) < 2 * N; w++)
        usleep(10000);
    CHECK(policy_packets(A, 7) == 2 * N);
    CHECK(recv(tunB[1], bufC, sizeof(bufC), MSG_DONTWAIT) < 0);
    protect(A, 1);   /* the child's policy, bound to the SA at once */
    for (int i = 0; i < N; i++) {
        ssize_t r = recv_wait(tunB[1], bufC, sizeof(bufC));
        CHECK(r == (ssize_t)lens[i] && memcmp(bufC, sent[i], lens[i]) == 0);
    }
    ts_dp_stop(A);
    ts_dp_stop(B);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ts_sa_info info;
    CHECK(ts_sad_get(A, spi, TS_DIR_OUT, &p.remote, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == N);
    ts_dp_drops(A, d);
    CHECK(d[TS_DROP_NO_SA] == 0 && d[TS_DROP_HOLD_TIMEOUT] == 0);
    ts_dp_free(A);
    ts_dp_free(B);
    int fds[] = {tunA[0], tunA[1], tunB[0], tunB[1], ua, ub};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
}

static void test_hold_policy_gone(void) {
    /* a policy deleted while packets wait: they are dropped and counted */
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    protect(dp, 1);
    ts_spd_entry *e = &dp->spd.v[0];
    CHECK(ts_hold_push(dp, e->hold, bufA, 40, ts_now_ns()));
    CHECK(ts_spd_delete(dp, e->pol.id) == TS_OK);
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_TIMEOUT] == 1);
    ts_dp_free(dp);
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    test_kat();
    test_round_trips();
    test_bad_inner();
    test_replay();
    test_replay_ring();
    test_overflow();
    test_reservation();
    test_reservation_threads();
    test_first_use();
    test_first_use_threads();
    test_sad_errors();
    test_shared_out_spi();
    test_migrate();
    test_lifetimes();
    test_ike_port500();
    test_icmp();
    test_icmp_limits();
    test_key_wipe();
    test_fuzz(iterations);
    test_segment_64k();
    test_offload_fuzz(iterations / 10);
    test_loop();
    test_loop_two_queues();
    test_hold_unit();
    test_hold_policy_gone();
    test_hold_loop();
    printf("selftest: %lu checks, %lu failures\n", checks, failures);
    return failures ? 1 : 0;
}
