/* An ESP implementation of the self-test's own (RFC 4303 / RFC 4106), with
 * OpenSSL EVP used directly, not csrc/esp.c: it opens what the fast path
 * seals and seals what the fast path must open. */
#include "selftest.h"

/* ---- an ESP implementation of the test's own (RFC 4303 / RFC 4106) -------- */
static const EVP_CIPHER *gcm(size_t keymat_len) {
    return keymat_len == 20 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
}

/* payload (inner packet + any TFC) sealed with `padlen` bytes of padding
 * (pad bytes from `pad`, or 1, 2, 3, ... if NULL); returns the ESP length */
size_t ref_seal(const uint8_t *keymat, size_t klen, uint32_t spi, uint64_t seq, bool esn,
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

size_t min_pad(size_t plen) { return (4 - ((plen + 2) & 3)) & 3; }

/* opens and checks the trailer; returns the payload length or -1 */
long ref_open(const uint8_t *keymat, size_t klen, bool esn, uint32_t seq_hi,
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
