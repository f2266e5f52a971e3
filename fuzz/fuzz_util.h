/* Shared helpers of the libFuzzer targets: they use only the public API
 * (csrc/tunsec_dp.h), so they keep working while the insides change. */
#ifndef TUNSEC_FUZZ_UTIL_H
#define TUNSEC_FUZZ_UTIL_H

#include "tunsec_dp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant the API promises did not hold: report it like a crash. */
#define FUZZ_ASSERT(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* A setup call failed: the harness itself is broken, not the code under test. */
#define FUZZ_SETUP(cond)                                                               \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: fuzz setup failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

/* FUZZ_TRACE=1 in the environment: say what each input did (replaying a seed) */
static inline int fz_trace(void) {
    static int on = -1;
    if (on < 0)
        on = getenv("FUZZ_TRACE") != NULL;
    return on;
}

static inline uint16_t fz_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t fz_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t fz_be64(const uint8_t *p) { return (uint64_t)fz_be32(p) << 32 | fz_be32(p + 4); }
static inline void fz_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* A reader over the fuzz input that yields zeros once it runs dry, so that
 * every input is usable and short inputs stay meaningful. */
typedef struct fz_in {
    const uint8_t *p;
    size_t n;
} fz_in;

static inline uint8_t fz_u8(fz_in *in) {
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}
static inline uint16_t fz_u16(fz_in *in) { return (uint16_t)(fz_u8(in) << 8 | fz_u8(in)); }
static inline uint64_t fz_u64(fz_in *in) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | fz_u8(in);
    return v;
}
/* up to want bytes of the input (fewer at its end) */
static inline const uint8_t *fz_take(fz_in *in, size_t want, size_t *got) {
    const uint8_t *p = in->p;
    *got = want < in->n ? want : in->n;
    in->p += *got;
    in->n -= *got;
    return p;
}

/* a heap copy of exactly n bytes, so that ASan sees any access past its end */
static inline uint8_t *fz_dup(const uint8_t *p, size_t n) {
    uint8_t *b = malloc(n ? n : 1);
    FUZZ_SETUP(b != NULL);
    if (n)
        memcpy(b, p, n);
    return b;
}

static inline void fz_addr4(ts_addr *a, uint8_t a0, uint8_t a1, uint8_t a2, uint8_t a3, uint16_t port) {
    memset(a, 0, sizeof(*a));
    a->family = 4;
    a->addr[0] = a0; a->addr[1] = a1; a->addr[2] = a2; a->addr[3] = a3;
    a->port = port;
}

/* a selector over a prefix (whole bytes) on both sides, any protocol and port */
static inline void fz_sel(ts_selector *s, int family, const uint8_t *src, int src_bytes, const uint8_t *dst,
                          int dst_bytes) {
    memset(s, 0, sizeof(*s));
    s->family = (uint8_t)family;
    int n = family == 4 ? 4 : 16;
    memset(s->src_hi, 0xff, (size_t)n);
    memset(s->dst_hi, 0xff, (size_t)n);
    memcpy(s->src_lo, src, (size_t)src_bytes);
    memcpy(s->src_hi, src, (size_t)src_bytes);
    memcpy(s->dst_lo, dst, (size_t)dst_bytes);
    memcpy(s->dst_hi, dst, (size_t)dst_bytes);
    s->sport_hi = s->dport_hi = 0xffff;
}

static inline void fz_sel_any(ts_selector *s, int family) {
    static const uint8_t z[16];
    fz_sel(s, family, z, 0, z, 0);
}

/* an SA's params: peer 192.0.2.1:4500, us 192.0.2.2:4500 */
static inline void fz_params(ts_sa_params *p, uint32_t spi, uint8_t dir, const uint8_t *key, uint8_t keylen,
                             uint8_t esn, uint32_t window) {
    memset(p, 0, sizeof(*p));
    p->spi = spi;
    p->dir = dir;
    p->keylen = keylen;
    memcpy(p->key, key, keylen);
    p->esn = esn;
    p->replay_window = window;
    p->reqid = 1;
    fz_addr4(&p->local, 192, 0, 2, 2, 4500);
    fz_addr4(&p->remote, 192, 0, 2, 1, 4500);
}

/* The oracle's own reading (not csrc/srcroute.c's) of whether a whole packet (its length fields
 * checked by the caller) names destinations beyond its header's, which the fast path never passes
 * either way (review revesp F1, revesp2 F1, F2): 1 an IPv4 LSRR/SSRR with its pointer not past its
 * end, an IPv6 Routing header with segments left or with an IPv4/IPv6 header (4, 41) straight
 * behind it, anywhere in the chain, behind AH too; -1 an IPv4 option or an IPv6 header chain cut
 * short (malformed); else 0. */
static inline int fz_source_routed(const uint8_t *p, size_t n) {
    if (p[0] >> 4 == 4) {
        size_t end = (size_t)(p[0] & 15) * 4;
        for (size_t i = 20; i < end && p[i] != 0; i += p[i] == 1 ? 1 : p[i + 1]) {
            if (p[i] == 1)
                continue;
            if (i + 1 >= end || p[i + 1] < 2 || i + p[i + 1] > end ||
                ((p[i] == 131 || p[i] == 137) && p[i + 1] < 3))
                return -1;
            if ((p[i] == 131 || p[i] == 137) && p[i + 2] <= p[i + 1])
                return 1;
        }
        return 0;
    }
    size_t end = (size_t)fz_be16(p + 4) + 40, off = 40;
    if (end > n)
        end = n;
    uint8_t nh = p[6];
    while (nh == 0 || nh == 43 || nh == 60 || nh == 44 || nh == 51) {
        if (off + 8 > end)
            return -1;
        if (nh == 43 && (p[off + 3] || p[off] == 4 || p[off] == 41))
            return 1;
        if (nh == 44 && (fz_be16(p + off + 2) & 0xfff8))
            return 0;   /* a later fragment: the rest is data */
        size_t hl = nh == 44 ? 8 : nh == 51 ? ((size_t)p[off + 1] + 2) * 4 : ((size_t)p[off + 1] + 1) * 8;
        nh = p[off];
        off += hl;
        if (off > end)
            return -1;
    }
    return 0;
}

/* pop every queued event so the bounded queue never fills across runs */
static inline void fz_drain_events(ts_dp *dp) {
    static uint8_t buf[TS_MAX_PACKET];
    ts_event ev;
    while (ts_dp_next_event(dp, &ev, buf, sizeof(buf)) == 1)
        FUZZ_ASSERT(ev.type != TS_EV_IKE || ev.data_len <= sizeof(buf));
}

#endif
