/* Offloads between the TUN device and ESP (issue: throughput).
 *
 * With IFF_VNET_HDR and TUNSETOFFLOAD the kernel hands us TCP/UDP
 * super-packets (up to 64 KiB) behind a virtio_net_hdr, and accepts them
 * from us.  Outbound we cut them into MTU-sized segments before ESP (fixing
 * IP ids, lengths, TCP sequence numbers and checksums); inbound we coalesce
 * consecutive decrypted TCP segments of one flow into one super-packet (GRO)
 * so the receiving stack handles one packet instead of dozens. */
#include "internal.h"
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define VNET_F_NEEDS_CSUM 1
#define GSO_NONE 0
#define GSO_TCPV4 1
#define GSO_UDP 3
#define GSO_TCPV6 4
#define GSO_UDP_L4 5
#define GSO_ECN 0x80

/* ---- checksums (RFC 1071; byte order independent, so sum native words) -- */
/* Every TCP segment that GRO coalesces has its checksum verified (below),
 * so this runs over every byte received: sum 16 bytes per step into two
 * vectors of 64-bit lanes (each 32-bit word zero-extended, so no carry is
 * lost for up to 2^32 words), the same sum of native 32-bit words as the
 * scalar tail. */
static uint64_t csum_add(const uint8_t *p, size_t n, uint64_t acc) {
#if defined(__SSE2__)
    if (n >= 32) {
        const __m128i zero = _mm_setzero_si128();
        __m128i a = zero, b = zero, c = zero, d = zero;
        while (n >= 32) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
            __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
            a = _mm_add_epi64(a, _mm_unpacklo_epi32(v, zero));
            b = _mm_add_epi64(b, _mm_unpackhi_epi32(v, zero));
            c = _mm_add_epi64(c, _mm_unpacklo_epi32(w, zero));
            d = _mm_add_epi64(d, _mm_unpackhi_epi32(w, zero));
            p += 32;
            n -= 32;
        }
        uint64_t lanes[2];
        _mm_storeu_si128((__m128i *)(void *)lanes, _mm_add_epi64(_mm_add_epi64(a, b), _mm_add_epi64(c, d)));
        /* each lane < 2^48 for any packet we handle: no overflow in acc */
        acc += lanes[0] + lanes[1];
    }
#endif
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        acc += (v & 0xffffffffu) + (v >> 32);
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        acc += v;
        p += 4;
        n -= 4;
    }
    if (n) {
        uint8_t t[4] = {0};
        uint32_t v;
        memcpy(t, p, n);
        memcpy(&v, t, 4);
        acc += v;
    }
    return acc;
}

/* folded sum as a big-endian 16-bit value (not complemented) */
static uint16_t csum_fold(uint64_t acc) {
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    uint32_t a = (uint32_t)acc;
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    uint16_t r = (uint16_t)a;
    uint8_t b[2];
    memcpy(b, &r, 2);
    return ts_be16(b);
}

static uint64_t pseudo_sum(const uint8_t *ip, int family, uint8_t proto, size_t l4len) {
    uint8_t tail[4] = {0, proto, (uint8_t)(l4len >> 8), (uint8_t)l4len};
    uint64_t acc = family == 4 ? csum_add(ip + 12, 8, 0) : csum_add(ip + 8, 32, 0);
    return csum_add(tail, 4, acc);
}

static void ipv4_fix_csum(uint8_t *ip, size_t ihl) {
    ip[10] = ip[11] = 0;
    ts_put16(ip + 10, (uint16_t)~csum_fold(csum_add(ip, ihl, 0)));
}

/* complete an L4 checksum over [start, len) of pkt, stored at start+off */
static void l4_fix_csum(uint8_t *pkt, size_t len, size_t start, size_t off, uint64_t seed, bool udp) {
    pkt[start + off] = pkt[start + off + 1] = 0;
    uint16_t c = (uint16_t)~csum_fold(csum_add(pkt + start, len - start, seed));
    if (udp && c == 0)
        c = 0xffff;
    ts_put16(pkt + start + off, c);
}

/* ---- outbound: segmentation ------------------------------------------------ */
typedef struct vnet_hdr {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
} vnet_hdr;

static void vnet_parse(const uint8_t *b, vnet_hdr *h) {
    /* the TUN uses the host's byte order (little-endian on every target we build) */
    h->flags = b[0];
    h->gso_type = b[1];
    h->hdr_len = (uint16_t)(b[2] | b[3] << 8);
    h->gso_size = (uint16_t)(b[4] | b[5] << 8);
    h->csum_start = (uint16_t)(b[6] | b[7] << 8);
    h->csum_offset = (uint16_t)(b[8] | b[9] << 8);
}

static void vnet_put(uint8_t *b, const vnet_hdr *h) {
    b[0] = h->flags;
    b[1] = h->gso_type;
    b[2] = (uint8_t)h->hdr_len; b[3] = (uint8_t)(h->hdr_len >> 8);
    b[4] = (uint8_t)h->gso_size; b[5] = (uint8_t)(h->gso_size >> 8);
    b[6] = (uint8_t)h->csum_start; b[7] = (uint8_t)(h->csum_start >> 8);
    b[8] = (uint8_t)h->csum_offset; b[9] = (uint8_t)(h->csum_offset >> 8);
}

/* IP header length and L4 protocol of a packet the kernel built, IPv6 taken as
 * 40 bytes (GRO: a packet with extension headers is then no TCP, not coalesced);
 * 0 if unusable */
static size_t ip_hdr(const uint8_t *p, size_t len, int *family, uint8_t *proto) {
    if (len >= 20 && p[0] >> 4 == 4) {
        size_t ihl = (size_t)(p[0] & 15) * 4;
        if (ihl < 20 || ihl > len)
            return 0;
        *family = 4;
        *proto = p[9];
        return ihl;
    }
    if (len >= 40 && p[0] >> 4 == 6) {
        *family = 6;
        *proto = p[6];
        return 40;
    }
    return 0;
}

/* The IPv6 header and its extension headers up to the L4 header of a TUN GSO
 * read, as the kernel's GSO walks them (ipv6_gso_pull_exthdrs): GRO merges such
 * packets and a socket with IPV6_DSTOPTS/IPV6_RTHDR sends them.  Refused (0): a
 * Fragment header (no GSO of fragments), a Routing header with segments left
 * (the L4 checksum's pseudo-header would take its final destination, not the
 * IPv6 header's, which fix_tcp/fix_udp sum), a chain past len or longer than
 * TS_GSO_V6_EXT_MAX (every segment repeats it: a read of mostly headers would
 * multiply into far more bytes than it holds; real chains, a Destination Options
 * or a segment routing header, are tens of bytes).  Each header takes 8 bytes or
 * more, so the walk ends within TS_GSO_V6_EXT_MAX / 8 steps. */
static size_t ipv6_l4(const uint8_t *p, size_t len, uint8_t *proto) {
    if (len < 40 || p[0] >> 4 != 6)
        return 0;
    size_t off = 40;
    uint8_t nh = p[6];
    while (nh == 0 || nh == 43 || nh == 60) {   /* hop-by-hop, routing, destination options */
        if (off + 8 > len || (nh == 43 && p[off + 3] != 0))
            return 0;
        nh = p[off];
        off += ((size_t)p[off + 1] + 1) * 8;
        if (off > len || off > 40 + TS_GSO_V6_EXT_MAX)
            return 0;
    }
    if (nh == 44)
        return 0;
    *proto = nh;
    return off;
}

/* ip_hdr for a GSO read: IPv6's extension headers walked (ipv6_l4) */
static size_t gso_ip_hdr(const uint8_t *p, size_t len, int *family, uint8_t *proto) {
    if (len >= 1 && p[0] >> 4 == 6) {
        size_t off = ipv6_l4(p, len, proto);
        *family = off ? 6 : 0;
        return off;
    }
    return ip_hdr(p, len, family, proto);
}

/* Cut a super-packet into segments of `size` payload bytes after `hdr` bytes
 * of headers (IP + the L4 header), each with its own IP header fixed up; the
 * protocol's own fields and checksum are set by the caller's fixup. */
typedef void (*l4_fixup)(uint8_t *seg, size_t slen, size_t iphl, int family, size_t i, size_t nseg,
                         size_t size, const uint8_t *orig);

static int segment(const uint8_t *p, size_t len, size_t iphl, size_t hdr, int family, uint16_t size,
                   l4_fixup fix, uint8_t *out, size_t outcap, uint16_t *seg_len, size_t max_segs) {
    if (hdr > len || size == 0)
        return -1;
    size_t payload = len - hdr, nseg = (payload + size - 1) / size;
    if (nseg == 0)
        nseg = 1;
    if (nseg > max_segs || nseg * hdr + payload > outcap)
        return -1;
    /* a segment's length must fit the IP length field and seg_len (16 bits):
     * a 64 KiB read with a gso_size covering it all would wrap to 0 */
    if (hdr + (payload < size ? payload : size) > 0xffff)
        return -1;
    uint16_t id0 = family == 4 ? ts_be16(p + 4) : 0;
    size_t off = 0;
    for (size_t i = 0; i < nseg; i++) {
        size_t chunk = payload - i * size < size ? payload - i * size : size;
        uint8_t *s = out + off;
        memcpy(s, p, hdr);
        memcpy(s + hdr, p + hdr + i * size, chunk);
        size_t slen = hdr + chunk;
        if (family == 4) {
            ts_put16(s + 2, (uint16_t)slen);
            ts_put16(s + 4, (uint16_t)(id0 + i));
            ipv4_fix_csum(s, iphl);
        } else {
            ts_put16(s + 4, (uint16_t)(slen - 40));
        }
        fix(s, slen, iphl, family, i, nseg, size, p);
        seg_len[i] = (uint16_t)slen;
        off += slen;
    }
    return (int)nseg;
}

static void fix_tcp(uint8_t *s, size_t slen, size_t iphl, int family, size_t i, size_t nseg, size_t mss,
                    const uint8_t *orig) {
    uint8_t *tcp = s + iphl;
    ts_put32(tcp + 4, ts_be32(orig + iphl + 4) + (uint32_t)(i * mss));
    if (i + 1 < nseg)
        tcp[13] &= (uint8_t)~0x09;      /* FIN and PSH only on the last segment */
    if (i > 0)
        tcp[13] &= (uint8_t)~0x80;      /* CWR only on the first */
    l4_fix_csum(s, slen, iphl, 16, pseudo_sum(s, family, 6, slen - iphl), false);
}

static void fix_udp(uint8_t *s, size_t slen, size_t iphl, int family, size_t i, size_t nseg, size_t size,
                    const uint8_t *orig) {
    (void)i, (void)nseg, (void)size, (void)orig;
    ts_put16(s + iphl + 4, (uint16_t)(slen - iphl));
    l4_fix_csum(s, slen, iphl, 6, pseudo_sum(s, family, 17, slen - iphl), true);
}

static int segment_tcp(const uint8_t *p, size_t len, size_t iphl, int family, uint16_t mss,
                       uint8_t *out, size_t outcap, uint16_t *seg_len, size_t max_segs) {
    if (len < iphl + 20)
        return -1;
    size_t thl = (size_t)(p[iphl + 12] >> 4) * 4;
    if (thl < 20)
        return -1;
    return segment(p, len, iphl, iphl + thl, family, mss, fix_tcp, out, outcap, seg_len, max_segs);
}

static int segment_udp(const uint8_t *p, size_t len, size_t iphl, int family, uint16_t size,
                       uint8_t *out, size_t outcap, uint16_t *seg_len, size_t max_segs) {
    return segment(p, len, iphl, iphl + 8, family, size, fix_udp, out, outcap, seg_len, max_segs);
}

int ts_vnet_segment(const uint8_t *buf, size_t len, uint8_t *out, size_t outcap,
                    uint16_t *seg_len, size_t max_segs) {
    if (len < TS_VNET_HDR_LEN || max_segs == 0)
        return -1;
    vnet_hdr h;
    vnet_parse(buf, &h);
    const uint8_t *p = buf + TS_VNET_HDR_LEN;
    len -= TS_VNET_HDR_LEN;
    if (len > TS_MAX_PACKET)
        return -1;
    int family = 0;
    uint8_t proto = 0;
    size_t iphl = gso_ip_hdr(p, len, &family, &proto);
    uint8_t gso = h.gso_type & (uint8_t)~GSO_ECN;
    if (gso == GSO_NONE) {
        if (len > outcap || len > 0xffff)
            return -1;
        memcpy(out, p, len);
        if (h.flags & VNET_F_NEEDS_CSUM) {
            /* the field holds the pseudo-header sum; finish it over the rest */
            if ((size_t)h.csum_start + h.csum_offset + 2 > len)
                return -1;
            size_t at = (size_t)h.csum_start + h.csum_offset;
            uint64_t seed = csum_add(out + at, 2, 0);
            out[at] = out[at + 1] = 0;
            uint16_t c = (uint16_t)~csum_fold(csum_add(out + h.csum_start, len - h.csum_start, seed));
            if (proto == 17 && c == 0)
                c = 0xffff;
            ts_put16(out + at, c);
        }
        seg_len[0] = (uint16_t)len;
        return 1;
    }
    if (!iphl)
        return -1;
    if ((gso == GSO_TCPV4 && family == 4 && proto == 6) || (gso == GSO_TCPV6 && family == 6 && proto == 6))
        return segment_tcp(p, len, iphl, family, h.gso_size, out, outcap, seg_len, max_segs);
    if ((gso == GSO_UDP_L4 || gso == GSO_UDP) && proto == 17)
        return segment_udp(p, len, iphl, family, h.gso_size, out, outcap, seg_len, max_segs);
    return -1;
}

/* ---- inbound: coalescing (GRO) ------------------------------------------------ */
/* A run of TCP segments of one flow that can be written as one super-packet. */
static bool gro_key(const uint8_t *p, size_t len, size_t *iphl, size_t *thl, int *family) {
    uint8_t proto;
    size_t ih = ip_hdr(p, len, family, &proto);
    if (!ih || proto != 6 || len < ih + 20)
        return false;
    if (*family == 4 && (ih != 20 || (ts_be16(p + 6) & 0x3fff) || ts_be16(p + 2) != len))
        return false;     /* options or fragments: not coalesced */
    if (*family == 6 && (size_t)ts_be16(p + 4) + 40 != len)
        return false;
    size_t th = (size_t)(p[ih + 12] >> 4) * 4;
    if (th < 20 || ih + th > len)
        return false;
    *iphl = ih;
    *thl = th;
    return true;
}

void ts_gro_init(ts_gro *g, uint8_t *buf, size_t cap, ts_gro_emit emit, void *ctx) {
    memset(g, 0, sizeof(*g));
    g->buf = buf;
    g->cap = cap;
    g->emit = emit;
    g->ctx = ctx;
}

void ts_gro_flush(ts_gro *g) {
    if (!g->len)
        return;
    uint8_t *pkt = g->buf + TS_VNET_HDR_LEN;
    size_t len = g->len;
    vnet_hdr h = {0};
    if (g->segs > 1) {
        if (g->family == 4) {
            ts_put16(pkt + 2, (uint16_t)len);
            ipv4_fix_csum(pkt, g->iphl);
        } else {
            ts_put16(pkt + 4, (uint16_t)(len - 40));
        }
        /* checksum left to the kernel: the field holds the pseudo-header sum */
        size_t l4 = len - g->iphl;
        ts_put16(pkt + g->iphl + 16, csum_fold(pseudo_sum(pkt, g->family, 6, l4)));
        h.flags = VNET_F_NEEDS_CSUM;
        h.gso_type = g->family == 4 ? GSO_TCPV4 : GSO_TCPV6;
        h.hdr_len = (uint16_t)(g->iphl + g->thl);
        h.gso_size = (uint16_t)g->mss;
        h.csum_start = (uint16_t)g->iphl;
        h.csum_offset = 16;
    }
    vnet_put(g->buf, &h);
    g->emit(g->ctx, g->buf, TS_VNET_HDR_LEN + len);
    g->len = 0;
    g->segs = 0;
}

static bool gro_mergeable(const ts_gro *g, const uint8_t *p, size_t len, size_t iphl, size_t thl, int family) {
    const uint8_t *q = g->buf + TS_VNET_HDR_LEN;
    if (family != g->family || iphl != g->iphl || thl != g->thl || !g->open)
        return false;
    size_t payload = len - iphl - thl;
    if (payload == 0 || payload > g->mss || g->len + payload > 65535 || g->segs >= 64)
        return false;
    if (family == 4) {
        if (memcmp(p + 12, q + 12, 8) || p[1] != q[1] || p[8] != q[8])   /* addresses, TOS, TTL */
            return false;
    } else if (memcmp(p + 8, q + 8, 32) || memcmp(p, q, 4) || p[7] != q[7]) {
        return false;
    }
    const uint8_t *t = p + iphl, *u = q + iphl;
    if (memcmp(t, u, 4) || ts_be32(t + 4) != g->next_seq || memcmp(t + 8, u + 8, 4))
        return false;     /* ports, sequence, ack number */
    /* the window: a merged segment carries the first one's, so a later one's update would be
     * lost for the whole run (Linux tcp_gro_receive refuses the merge too: its flag word holds it) */
    if (memcmp(t + 14, u + 14, 2))
        return false;
    uint8_t flags = t[13];
    if ((flags & (uint8_t)~0x08) != 0x10 || u[13] != 0x10)   /* ACK (+PSH on the newcomer) only */
        return false;
    return memcmp(t + 20, u + 20, thl - 20) == 0;             /* identical options */
}

/* A coalesced write carries VIRTIO_NET_HDR_F_NEEDS_CSUM: the kernel takes
 * the payload as good and fills the checksum in.  So only segments whose own
 * TCP checksum verifies may join one; any other is written alone, as it came,
 * for the receiving stack to check (and drop). */
static bool tcp_csum_ok(const uint8_t *p, size_t len, size_t iphl, int family) {
    size_t l4 = len - iphl;
    return csum_fold(csum_add(p + iphl, l4, pseudo_sum(p, family, 6, l4))) == 0xffff;
}

void ts_gro_add(ts_gro *g, const uint8_t *p, size_t len) {
    size_t iphl = 0, thl = 0;
    int family = 0;
    bool tcp = gro_key(p, len, &iphl, &thl, &family) && tcp_csum_ok(p, len, iphl, family);
    if (tcp && g->len && gro_mergeable(g, p, len, iphl, thl, family)) {
        size_t payload = len - iphl - thl;
        memcpy(g->buf + TS_VNET_HDR_LEN + g->len, p + iphl + thl, payload);
        g->len += payload;
        g->segs++;
        g->next_seq += (uint32_t)payload;
        uint8_t *tcph = g->buf + TS_VNET_HDR_LEN + iphl;
        tcph[13] |= p[iphl + 13] & 0x08;
        /* a short segment or a PSH ends the run */
        g->open = payload == g->mss && !(p[iphl + 13] & 0x08);
        if (!g->open)
            ts_gro_flush(g);
        return;
    }
    ts_gro_flush(g);
    if (len + TS_VNET_HDR_LEN > g->cap)
        return;
    memcpy(g->buf + TS_VNET_HDR_LEN, p, len);
    g->len = len;
    g->segs = 1;
    g->open = false;
    if (tcp) {
        size_t payload = len - iphl - thl;
        g->family = family;
        g->iphl = iphl;
        g->thl = thl;
        g->mss = payload;
        g->next_seq = ts_be32(p + iphl + 4) + (uint32_t)payload;
        g->open = payload > 0 && p[iphl + 13] == 0x10;
    }
    if (!g->open)
        ts_gro_flush(g);
}

typedef struct gro_collect {
    uint8_t *out;
    size_t cap, used, n, max;
    uint32_t *lens;
} gro_collect;

static void collect(void *ctx, const uint8_t *p, size_t len) {
    gro_collect *c = ctx;
    if (c->n >= c->max || c->used + len > c->cap)
        return;
    memcpy(c->out + c->used, p, len);
    c->lens[c->n++] = (uint32_t)len;
    c->used += len;
}

int ts_gro_run(const uint8_t *pkts, const uint32_t *lens, size_t n, uint8_t *out, size_t outcap,
               uint32_t *out_lens, size_t max_out) {
    static _Thread_local uint8_t buf[TS_VNET_HDR_LEN + 65536];
    gro_collect c = {.out = out, .cap = outcap, .lens = out_lens, .max = max_out};
    ts_gro g;
    ts_gro_init(&g, buf, sizeof(buf), collect, &c);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        ts_gro_add(&g, pkts + off, lens[i]);
        off += lens[i];
    }
    ts_gro_flush(&g);
    return (int)c.n;
}
