/* ESP with AES-GCM (RFC 4303, RFC 4106): 8-byte explicit IV = the 64-bit
 * sequence number, so an IV never repeats under one key; nonce = salt || IV;
 * AAD = SPI || seq (or SPI || seq_hi || seq_lo with ESN, RFC 4106 §5). */
#include "internal.h"
#include <string.h>

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
/* The ciphers fetched once per process.  EVP_aes_*_gcm() are legacy handles that OpenSSL 3
 * resolves with an EVP_CIPHER_fetch on every init that names them: ~33k instructions, half of
 * an SA install's.  Held for the process's life (one reference each); should a fetch fail, the
 * legacy handle is used as before. */
static EVP_CIPHER *gcm128, *gcm256;
static pthread_once_t gcm_once = PTHREAD_ONCE_INIT;

static void fetch_gcm(void) {
    gcm128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    gcm256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}
#endif

static const EVP_CIPHER *gcm_for(size_t keylen) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    pthread_once(&gcm_once, fetch_gcm);
    switch (keylen) {
    case 16: return gcm128 ? gcm128 : EVP_aes_128_gcm();
    case 32: return gcm256 ? gcm256 : EVP_aes_256_gcm();
    default: return NULL;
    }
#else
    switch (keylen) {
    case 16: return EVP_aes_128_gcm();
    case 32: return EVP_aes_256_gcm();
    default: return NULL;
    }
#endif
}

static _Thread_local unsigned thread_slot;
/* cipher contexts alive, process-wide (ts_live_counts): one per SA and loop thread that used it */
static atomic_llong live_ctxs;

void ts_set_thread_slot(unsigned slot) { thread_slot = slot <= TS_MAX_QUEUES ? slot : 0; }
unsigned ts_thread_slot(void) { return thread_slot; }

static EVP_CIPHER_CTX *keyed_ctx(const uint8_t *keymat, size_t keylen, bool encrypt) {
    const EVP_CIPHER *c = gcm_for(keylen - 4);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return NULL;
    int ok = encrypt ? EVP_EncryptInit_ex(ctx, c, NULL, NULL, NULL) : EVP_DecryptInit_ex(ctx, c, NULL, NULL, NULL);
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL);
    ok = ok && (encrypt ? EVP_EncryptInit_ex(ctx, NULL, NULL, keymat, NULL)
                        : EVP_DecryptInit_ex(ctx, NULL, NULL, keymat, NULL));
    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    atomic_fetch_add(&live_ctxs, 1);
    return ctx;
}

void ts_esp_ctx_free(EVP_CIPHER_CTX *ctx) {
    if (!ctx)
        return;
    EVP_CIPHER_CTX_free(ctx);
    atomic_fetch_sub(&live_ctxs, 1);
}

long long ts_esp_live_ctxs(void) { return atomic_load(&live_ctxs); }

int ts_esp_key(ts_sa *sa, const uint8_t *keymat, size_t keylen, bool encrypt) {
    if (keylen != 20 && keylen != 36)
        return TS_EINVAL;
    sa->ctx[0] = keyed_ctx(keymat, keylen, encrypt);
    if (!sa->ctx[0])
        return TS_ECRYPTO;
    memcpy(sa->keymat, keymat, keylen);
    sa->encrypt = encrypt;
    memcpy(sa->salt, keymat + keylen - 4, 4);
    return TS_OK;
}

/* This thread's context for sa.  Slot 0 (control threads) is used under
 * sa->lock, which the caller holds.  A loop thread's first packet on the SA
 * takes over the context ts_esp_key made (in slot 0, so that it need not be
 * keyed twice) if no other loop thread has, else keys its own; a control
 * thread that needs slot 0 afterwards keys a new one.  So an SA that only
 * one loop thread uses (one TUN queue: every SA) holds one context, not two. */
static EVP_CIPHER_CTX *ctx_of(ts_sa *sa) {
    unsigned slot = thread_slot;
    if (sa->ctx[slot])
        return sa->ctx[slot];
    if (slot != 0) {
        pthread_mutex_lock(&sa->lock);
        sa->ctx[slot] = sa->ctx[0];
        sa->ctx[0] = NULL;
        pthread_mutex_unlock(&sa->lock);
        if (sa->ctx[slot])
            return sa->ctx[slot];
    }
    sa->ctx[slot] = keyed_ctx(sa->keymat, sa->keylen, sa->encrypt);
    return sa->ctx[slot];
}

static size_t build_aad(const ts_sa *sa, uint64_t seq, uint8_t aad[12]) {
    ts_put32(aad, sa->spi);
    if (sa->esn) {
        ts_put32(aad + 4, (uint32_t)(seq >> 32));
        ts_put32(aad + 8, (uint32_t)seq);
        return 12;
    }
    ts_put32(aad + 4, (uint32_t)seq);
    return 8;
}

static void build_nonce(const ts_sa *sa, uint64_t seq, uint8_t nonce[12]) {
    memcpy(nonce, sa->salt, 4);
    ts_put32(nonce + 4, (uint32_t)(seq >> 32));
    ts_put32(nonce + 8, (uint32_t)seq);
}

size_t ts_esp_seal(ts_sa *sa, uint64_t seq, uint8_t *out, size_t payload_len, uint8_t next_header) {
    uint8_t *pt = out + ESP_HDR + ESP_IV;
    /* pad so that payload + pad length + next header ends on 4 bytes */
    size_t pad = (4 - ((payload_len + 2) & 3)) & 3;
    for (size_t i = 0; i < pad; i++)
        pt[payload_len + i] = (uint8_t)(i + 1);
    pt[payload_len + pad] = (uint8_t)pad;
    pt[payload_len + pad + 1] = next_header;
    size_t ct_len = payload_len + pad + 2;

    ts_put32(out, sa->spi);
    ts_put32(out + 4, (uint32_t)seq);
    ts_put32(out + 8, (uint32_t)(seq >> 32));
    ts_put32(out + 12, (uint32_t)seq);

    uint8_t aad[12], nonce[12];
    size_t aadlen = build_aad(sa, seq, aad);
    build_nonce(sa, seq, nonce);
    int outl = 0;
    EVP_CIPHER_CTX *c = ctx_of(sa);
    if (!c || !EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) ||
        !EVP_EncryptUpdate(c, NULL, &outl, aad, (int)aadlen) ||
        !EVP_EncryptUpdate(c, pt, &outl, pt, (int)ct_len) ||
        !EVP_EncryptFinal_ex(c, pt + ct_len, &outl) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, ESP_ICV, pt + ct_len))
        return 0;
    return ESP_HDR + ESP_IV + ct_len + ESP_ICV;
}

bool ts_esp_open(ts_sa *sa, uint64_t seq, uint8_t *esp, size_t len, size_t *pt_len) {
    uint8_t *ct = esp + ESP_HDR + ESP_IV;
    size_t ct_len = len - ESP_HDR - ESP_IV - ESP_ICV;
    uint8_t aad[12], nonce[12];
    size_t aadlen = build_aad(sa, seq, aad);
    memcpy(nonce, sa->salt, 4);
    memcpy(nonce + 4, esp + ESP_HDR, ESP_IV);   /* the sender's IV, whatever it chose */
    int outl = 0;
    EVP_CIPHER_CTX *c = ctx_of(sa);
    /* OpenSSL compares the tag in constant time (CRYPTO_memcmp) */
    if (!c || !EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) ||
        !EVP_DecryptUpdate(c, NULL, &outl, aad, (int)aadlen) ||
        !EVP_DecryptUpdate(c, ct, &outl, ct, (int)ct_len) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, ESP_ICV, ct + ct_len) ||
        EVP_DecryptFinal_ex(c, ct + ct_len, &outl) <= 0)
        return false;
    *pt_len = ct_len;
    return true;
}

static int gcm_raw(bool enc, const uint8_t *key, size_t keylen, const uint8_t *iv12,
                   const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                   uint8_t *out, uint8_t *tag) {
    const EVP_CIPHER *cipher = gcm_for(keylen);
    if (!cipher || len > INT32_MAX || aadlen > INT32_MAX)
        return TS_EINVAL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return TS_ENOMEM;
    int outl = 0, ok;
    if (enc) {
        ok = EVP_EncryptInit_ex(c, cipher, NULL, key, iv12) &&
             (aadlen == 0 || EVP_EncryptUpdate(c, NULL, &outl, aad, (int)aadlen)) &&
             EVP_EncryptUpdate(c, out, &outl, in, (int)len) &&
             EVP_EncryptFinal_ex(c, out + len, &outl) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
    } else {
        ok = EVP_DecryptInit_ex(c, cipher, NULL, key, iv12) &&
             (aadlen == 0 || EVP_DecryptUpdate(c, NULL, &outl, aad, (int)aadlen)) &&
             EVP_DecryptUpdate(c, out, &outl, in, (int)len) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) &&
             EVP_DecryptFinal_ex(c, out + len, &outl) > 0;
    }
    EVP_CIPHER_CTX_free(c);
    return ok ? TS_OK : TS_ECRYPTO;
}

int ts_gcm_seal(const uint8_t *key, size_t keylen, const uint8_t *iv12,
                const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                uint8_t *out, uint8_t tag[16]) {
    return gcm_raw(true, key, keylen, iv12, aad, aadlen, in, len, out, tag);
}

int ts_gcm_open(const uint8_t *key, size_t keylen, const uint8_t *iv12,
                const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                const uint8_t tag[16], uint8_t *out) {
    uint8_t t[16];
    memcpy(t, tag, 16);
    return gcm_raw(false, key, keylen, iv12, aad, aadlen, in, len, out, t);
}
