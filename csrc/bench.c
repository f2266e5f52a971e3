/* Benchmark entry points: the per-packet work in C loops, so Python's call
 * overhead does not hide the cost being measured (bench/test_micro_*.py). */
#include "internal.h"
#include "tunsec_bench.h"
#include <string.h>

int ts_bench_outbound(ts_dp *dp, const uint8_t *pkt, size_t len, uint32_t count) {
    static _Thread_local uint8_t out[TS_MAX_PACKET + 256];
    int ok = 0;
    for (uint32_t i = 0; i < count; i++) {
        int drop;
        size_t icmp;
        ok += ts_dp_outbound(dp, pkt, len, out, sizeof(out), NULL, &drop, &icmp) > 0;
    }
    return ok;
}

int ts_bench_inbound(ts_dp *dp, const uint8_t *udp, size_t len, uint32_t count) {
    static _Thread_local uint8_t out[TS_MAX_PACKET];
    int ok = 0;
    for (uint32_t i = 0; i < count; i++) {
        int drop;
        ok += ts_dp_inbound(dp, udp, len, NULL, NULL, out, sizeof(out), &drop) > 0;
    }
    return ok;
}

/* SPD lookup for one packet count times: how 0 scans the ordered list, 1 goes through a
 * flow cache (a hit after the first), 2 through the index alone (what a cache miss costs) */
int ts_bench_spd_lookup(ts_dp *dp, const uint8_t *pkt, size_t len, uint32_t count, int how) {
    static _Thread_local ts_flow_cache cache;
    ts_flow f;
    if (!ts_flow_parse(pkt, len, &f) || how < 0 || how > 2)
        return TS_EINVAL;
    /* dp may be another context than the last call's, whose generations started at 0 too: a
     * slot from that one would pass for current */
    if (how == 1)
        memset(&cache, 0, sizeof(cache));
    int hits = 0;
    pthread_rwlock_rdlock(&dp->lock);
    for (uint32_t i = 0; i < count; i++)
        hits += (how == 0 ? ts_spd_lookup(&dp->spd, &f)
                 : how == 1 ? ts_spd_lookup_cached(&dp->spd, &cache, &f)
                            : ts_spd_find(&dp->spd, &f)) != NULL;
    pthread_rwlock_unlock(&dp->lock);
    return hits;
}

/* inbound SAD lookups of n SPIs, count rounds */
int ts_bench_sad_lookup(ts_dp *dp, const uint32_t *spis, size_t n, uint32_t count) {
    int hits = 0;
    pthread_rwlock_rdlock(&dp->lock);
    for (uint32_t r = 0; r < count; r++)
        for (size_t i = 0; i < n; i++)
            hits += ts_sad_find(&dp->sad, spis[i], TS_DIR_IN) != NULL;
    pthread_rwlock_unlock(&dp->lock);
    return hits;
}

int ts_bench_segment(const uint8_t *buf, size_t len, uint32_t count) {
    static _Thread_local uint8_t out[TS_MAX_PACKET + TS_VNET_MAX_SEGS * TS_VNET_SEG_HDR_MAX];
    static _Thread_local uint16_t lens[256];
    int segs = 0;
    for (uint32_t i = 0; i < count; i++) {
        int n = ts_vnet_segment(buf, len, out, sizeof(out), lens, 256);
        if (n < 0)
            return TS_EINVAL;
        segs += n;
    }
    return segs;
}

int ts_bench_gro(const uint8_t *pkts, const uint32_t *lens, size_t n, uint32_t count) {
    static _Thread_local uint8_t out[1 << 20];
    static _Thread_local uint32_t out_lens[1024];
    int writes = 0;
    for (uint32_t i = 0; i < count; i++)
        writes += ts_gro_run(pkts, lens, n, out, sizeof(out), out_lens, 1024);
    return writes;
}

/* OpenSSL's AES-GCM with the key set up once: the reference next to the ESP paths */
int ts_bench_gcm(const uint8_t *key, size_t keylen, uint8_t *buf, size_t len, uint32_t count) {
    const EVP_CIPHER *cipher = keylen == 16 ? EVP_aes_128_gcm() : keylen == 32 ? EVP_aes_256_gcm() : NULL;
    if (!cipher || len > INT32_MAX)
        return TS_EINVAL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return TS_ENOMEM;
    uint8_t nonce[12] = {0}, aad[8] = {0}, tag[16];
    int outl = 0, ok = EVP_EncryptInit_ex(c, cipher, NULL, key, NULL);
    for (uint32_t i = 0; ok && i < count; i++) {
        ts_put32(nonce + 8, i);
        ok = EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) &&
             EVP_EncryptUpdate(c, NULL, &outl, aad, sizeof(aad)) &&
             EVP_EncryptUpdate(c, buf, &outl, buf, (int)len) &&
             EVP_EncryptFinal_ex(c, buf + len, &outl) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
    }
    EVP_CIPHER_CTX_free(c);
    return ok ? (int)count : TS_ECRYPTO;
}
