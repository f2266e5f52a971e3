/* Anti-replay window (RFC 4303 §3.4.3, bitmap layout after RFC 6479). */
#include "internal.h"
#include <stdlib.h>

int ts_replay_init(ts_replay *r, uint32_t window) {
    r->top = 0;
    r->window = window;
    r->nwords = 0;
    r->bits = NULL;
    if (window == 0)
        return TS_OK;
    if (window < 32 || window > TS_REPLAY_MAX)
        return TS_EINVAL;
    /* The window's numbers span at most ceil(window/64) + 1 words (its left
     * edge need not sit on a word boundary), so that many words make a ring in
     * which no two of them share a slot and sliding never clears a word still
     * inside the window.  Not rounded up to a power of two: the slot is taken
     * modulo nwords (one division per packet, next to an AES-GCM pass), and
     * a gateway keeps one bitmap per client: 4096 packets take 65 words, not 128. */
    uint32_t n = (window + 63) / 64 + 1;
    r->bits = calloc(n, sizeof(uint64_t));
    if (!r->bits)
        return TS_ENOMEM;
    r->nwords = n;
    return TS_OK;
}

void ts_replay_free(ts_replay *r) {
    free(r->bits);
    r->bits = NULL;
}

uint64_t ts_replay_infer(const ts_replay *r, uint32_t seq_lo, bool esn) {
    if (!esn)
        return seq_lo;
    /* Without a replay window the inference still needs one; half the space
     * keeps it unambiguous. */
    uint32_t w = r->window ? r->window : 0x80000000u;
    uint32_t tl = (uint32_t)r->top, th = (uint32_t)(r->top >> 32);
    uint32_t left = tl - w + 1;   /* wraps in case B, as the RFC intends */
    if (tl >= w - 1) {
        if (seq_lo >= left)
            return ((uint64_t)th << 32) | seq_lo;
        if (th == UINT32_MAX)
            return 0;                 /* would wrap 64 bits: reject */
        return ((uint64_t)(th + 1) << 32) | seq_lo;
    }
    if (seq_lo >= left) {
        if (th == 0)
            return 0;                 /* "previous" epoch does not exist: reject */
        return ((uint64_t)(th - 1) << 32) | seq_lo;
    }
    return ((uint64_t)th << 32) | seq_lo;
}

static inline uint64_t bit_of(uint64_t seq) { return 1ull << (seq & 63); }
static inline uint32_t slot_of(const ts_replay *r, uint64_t word) {
    return (uint32_t)(word % r->nwords);
}
static inline uint32_t word_of(const ts_replay *r, uint64_t seq) {
    return slot_of(r, seq >> 6);
}

bool ts_replay_check(const ts_replay *r, uint64_t seq) {
    if (seq == 0)
        return false;   /* never sent (RFC 4303 §3.3.3), or an impossible ESN epoch */
    if (r->window == 0)
        return true;
    if (seq > r->top)
        return true;
    if (r->top - seq >= r->window)
        return false;
    return !(r->bits[word_of(r, seq)] & bit_of(seq));
}

bool ts_replay_update(ts_replay *r, uint64_t seq) {
    if (r->window == 0) {
        if (seq > r->top)
            r->top = seq;
        return true;
    }
    if (seq == 0)
        return false;
    if (seq > r->top) {
        uint64_t diff = (seq >> 6) - (r->top >> 6);
        if (diff > r->nwords)
            diff = r->nwords;
        for (uint64_t i = 1; i <= diff; i++)
            r->bits[slot_of(r, (r->top >> 6) + i)] = 0;
        r->top = seq;
    } else {
        if (r->top - seq >= r->window)
            return false;
        if (r->bits[word_of(r, seq)] & bit_of(seq))
            return false;
    }
    r->bits[word_of(r, seq)] |= bit_of(seq);
    return true;
}

void ts_replay_set_floor(ts_replay *r, uint64_t floor) {
    r->top = floor;
    if (r->window == 0 || floor == 0)
        return;
    /* every word but top's holds older numbers only: all seen; top's word
     * only up to top itself, so later numbers sharing it stay acceptable */
    for (uint32_t i = 0; i < r->nwords; i++)
        r->bits[i] = ~0ull;
    unsigned b = (unsigned)(floor & 63);
    r->bits[word_of(r, floor)] = b == 63 ? ~0ull : (1ull << (b + 1)) - 1;
}
