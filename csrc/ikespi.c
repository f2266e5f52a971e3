/* Our SPIs of the established IKE SAs (the control process adds each as its IKE SA comes up or
 * is rekeyed, and removes it as the SA goes): an IKE datagram that names one of them gets the
 * event queue's reserve, which a flood of spoofed IKE cannot take (events.c).  An off-path
 * attacker does not know them: we drew them at random and they travel only between us and the
 * peer.  Half-open SAs are not here: whoever sent the IKE_SA_INIT knows our SPI of those; but
 * their SPIs carry a tag for the address our answer went to (the end of this file), which gives
 * their datagrams from that address shares of their own.
 * Each SPI comes with its peer: the control process's id of the authenticated identity, so that
 * all the IKE SAs one peer opens (as many as it likes: unique=no) share one share of the reserve.
 *
 * Open addressing with linear probing over a table that doubles up to TS_IKE_SPI_MAX entries at
 * most half full; SPI 0 marks an empty slot (no IKE SA has it: RFC 7296 §3.1).  The hash is
 * SipHash-1-3 under a random key of this context, as the SAD's: the datagrams looked up are
 * anyone's, and the keyed hash of the peer also picks the peer's share of the queue. */
#include "internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <openssl/crypto.h>

#define MIN_SLOTS 64

int ts_ike_spis_init(ts_ike_spis *s) {
    memset(s, 0, sizeof(*s));
    ssize_t got;
    do
        got = getrandom(s->key, sizeof(s->key), 0);
    while (got < 0 && errno == EINTR);
    return got == (ssize_t)sizeof(s->key) ? TS_OK : TS_EIO;
}

void ts_ike_spis_destroy(ts_ike_spis *s) {
    free(s->slots);
    s->slots = NULL;
    s->cap = s->count = 0;
    OPENSSL_cleanse(s->key, sizeof(s->key));   /* the hash's key goes with the table */
}

uint64_t ts_ike_spi_hash(const ts_ike_spis *s, uint64_t spi) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(spi >> (56 - 8 * i));
    return ts_siphash(s->key, b, sizeof(b), 1, 3);
}

/* the slot that holds spi, or the empty one where it would go */
static size_t probe(const ts_ike_spis *s, uint64_t spi, uint64_t h) {
    size_t mask = s->cap - 1, i = (size_t)h & mask;
    while (s->slots[i].spi && s->slots[i].spi != spi)
        i = (i + 1) & mask;
    return i;
}

bool ts_ike_spis_has(const ts_ike_spis *s, uint64_t spi, uint64_t *peer) {
    if (!spi || !s->count)
        return false;
    const ts_ike_spi_entry *e = &s->slots[probe(s, spi, ts_ike_spi_hash(s, spi))];
    if (e->spi != spi)
        return false;
    if (peer)
        *peer = e->peer;
    return true;
}

static int grow(ts_ike_spis *s) {
    size_t cap = s->cap ? s->cap * 2 : MIN_SLOTS;
    ts_ike_spi_entry *old = s->slots, *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return TS_ENOMEM;
    size_t old_cap = s->cap;
    s->slots = slots;
    s->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].spi)
            slots[probe(s, old[i].spi, ts_ike_spi_hash(s, old[i].spi))] = old[i];
    free(old);
    return TS_OK;
}

/* peer 0: the SA is a peer of its own (its SPI stands for it) */
int ts_ike_spis_add(ts_ike_spis *s, uint64_t spi, uint64_t peer) {
    if (!spi)
        return TS_EINVAL;
    if (ts_ike_spis_has(s, spi, NULL))
        return TS_EEXIST;
    /* the bound holds whatever the control process sends: a full set reserves nothing more */
    if (s->count >= TS_IKE_SPI_MAX)
        return TS_ENOSPC;
    if ((s->count + 1) * 2 > s->cap) {
        int rc = grow(s);
        if (rc != TS_OK)
            return rc;
    }
    s->slots[probe(s, spi, ts_ike_spi_hash(s, spi))] = (ts_ike_spi_entry){spi, peer ? peer : spi};
    s->count++;
    return TS_OK;
}

int ts_ike_spis_delete(ts_ike_spis *s, uint64_t spi) {
    if (!spi || !s->count)
        return TS_ENOENT;
    size_t mask = s->cap - 1, i = probe(s, spi, ts_ike_spi_hash(s, spi));
    if (s->slots[i].spi != spi)
        return TS_ENOENT;
    /* backward shift: the entries after it that probed past slot i move up, so no lookup stops
     * early at the hole (no tombstones to accumulate over a gateway's years of rekeys) */
    s->slots[i] = (ts_ike_spi_entry){0, 0};
    for (size_t j = (i + 1) & mask; s->slots[j].spi; j = (j + 1) & mask) {
        size_t home = (size_t)ts_ike_spi_hash(s, s->slots[j].spi) & mask;
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        s->slots[i] = s->slots[j];
        s->slots[j] = (ts_ike_spi_entry){0, 0};
        i = j;
    }
    s->count--;
    return TS_OK;
}

static uint64_t be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- the control side's calls --------------------------------------------------------- */
int ts_dp_ike_spi_add(ts_dp *dp, uint64_t spi, uint64_t peer) {
    pthread_rwlock_wrlock(&dp->lock);
    int rc = ts_ike_spis_add(&dp->ike_spis, spi, peer);
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}

int ts_dp_ike_spi_delete(ts_dp *dp, uint64_t spi) {
    pthread_rwlock_wrlock(&dp->lock);
    int rc = ts_ike_spis_delete(&dp->ike_spis, spi);
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}

size_t ts_dp_ike_spi_count(ts_dp *dp) {
    pthread_rwlock_rdlock(&dp->lock);
    size_t n = dp->ike_spis.count;
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

/* Under the read lock: the share slot of the peer of the established IKE SA an IKE header (28
 * bytes at least) names as ours, and that peer in *peer, else -1.  The I flag says who sent it: the
 * original initiator (then we are the responder and our SPI is SPIr) or the responder (ours is
 * SPIi).  The slot is the keyed hash of the peer: which peers share one nobody outside can tell. */
int ts_ike_known_slot(const ts_dp *dp, const uint8_t *ike, uint64_t *peer) {
    uint64_t spi = be64(ike + ((ike[19] & IKE_FLAG_INITIATOR) ? 8 : 0));
    if (!ts_ike_spis_has(&dp->ike_spis, spi, peer))
        return -1;
    return (int)((ts_ike_spi_hash(&dp->ike_spis, *peer) >> 32) & (TS_IKE_PEER_SLOTS - 1));
}

unsigned ts_test_ike_peer_slot(ts_dp *dp, uint64_t peer) {
    return (unsigned)((ts_ike_spi_hash(&dp->ike_spis, peer) >> 32) & (TS_IKE_PEER_SLOTS - 1));
}

/* ---- the tags in the IKE SPIs the control process makes (tunsec/ike/spi_tag.py) --------- */

static uint64_t le64_at(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t spi_tag(const uint64_t key[2], uint32_t r, const ts_addr *addr) {
    uint8_t in[4 + 1 + 16];
    size_t alen = addr->family == 6 ? 16 : 4;
    in[0] = (uint8_t)(r >> 24);
    in[1] = (uint8_t)(r >> 16);
    in[2] = (uint8_t)(r >> 8);
    in[3] = (uint8_t)r;
    in[4] = addr->family;
    memcpy(in + 5, addr->addr, alen);
    return (uint32_t)ts_siphash24(key, in, 5 + alen);
}

/* The two below copy the caller's key into words on the stack: the copy is wiped on the way out
 * (the control process calls them once per IKE SA, not per packet; the caller's key is its own). */
uint32_t ts_ike_spi_tag(const uint8_t key[16], uint32_t r, const ts_addr *addr) {
    uint64_t k[2] = {le64_at(key), le64_at(key + 8)};
    uint32_t tag = spi_tag(k, r, addr);
    OPENSSL_cleanse(k, sizeof(k));
    return tag;
}

uint64_t ts_siphash24_bytes(const uint8_t key[16], const uint8_t *in, size_t len) {
    uint64_t k[2] = {le64_at(key), le64_at(key + 8)};
    uint64_t h = ts_siphash24(k, in, len);
    OPENSSL_cleanse(k, sizeof(k));
    return h;
}

int ts_dp_ike_spi_key(ts_dp *dp, const uint8_t key[16]) {
    if (!key)
        return TS_EINVAL;
    pthread_rwlock_wrlock(&dp->lock);
    memcpy(dp->ike_tag_key[1], dp->ike_tag_key[0], sizeof(dp->ike_tag_key[0]));
    dp->ike_tag_key[0][0] = le64_at(key);
    dp->ike_tag_key[0][1] = le64_at(key + 8);
    dp->ike_tag_keys = dp->ike_tag_keys < 2 ? dp->ike_tag_keys + 1 : 2;
    pthread_rwlock_unlock(&dp->lock);
    return TS_OK;
}

bool ts_ike_spi_tagged(const ts_dp *dp, const uint8_t *ike, const ts_addr *src) {
    if (src->family != 4 && src->family != 6)
        return false;
    uint64_t spi = be64(ike + ((ike[19] & IKE_FLAG_INITIATOR) ? 8 : 0));
    /* an IKE_SA_INIT request names no SPI of ours (zero): it carries no tag whatever the key */
    for (int k = 0; k < dp->ike_tag_keys && spi != 0; k++)
        if (spi_tag(dp->ike_tag_key[k], (uint32_t)(spi >> 32), src) == (uint32_t)spi)
            return true;
    return false;
}
