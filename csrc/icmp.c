/* "Too big" answers written back into the TUN (RFC 792 type 3 code 4 with
 * the next-hop MTU of RFC 1191; RFC 4443 Packet Too Big), so that the
 * sender's path MTU discovery shrinks its packets to what the tunnel carries. */
#include "internal.h"
#include <string.h>

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t acc) {
    for (size_t i = 0; i + 1 < n; i += 2)
        acc += ts_be16(p + i);
    if (n & 1)
        acc += (uint32_t)p[n - 1] << 8;
    return acc;
}

static uint16_t fold(uint32_t acc) {
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}

static size_t too_big_v4(const uint8_t *pkt, size_t len, uint32_t mtu, uint8_t *out, size_t outcap) {
    size_t quote = len < 548 ? len : 548;   /* stays under 576 bytes in all */
    size_t total = 20 + 8 + quote;
    if (outcap < total || mtu > 0xffff)
        return 0;
    memset(out, 0, 28);
    out[0] = 0x45;
    ts_put16(out + 2, (uint16_t)total);
    out[8] = 64;
    out[9] = 1;
    memcpy(out + 12, pkt + 16, 4);           /* from the unreachable destination's side */
    memcpy(out + 16, pkt + 12, 4);
    ts_put16(out + 10, fold(sum16(out, 20, 0)));
    uint8_t *icmp = out + 20;
    icmp[0] = 3;
    icmp[1] = 4;
    ts_put16(icmp + 6, (uint16_t)mtu);
    memcpy(icmp + 8, pkt, quote);
    ts_put16(icmp + 2, fold(sum16(icmp, 8 + quote, 0)));
    return total;
}

static size_t too_big_v6(const uint8_t *pkt, size_t len, uint32_t mtu, uint8_t *out, size_t outcap) {
    size_t quote = len < 1280 - 48 ? len : 1280 - 48;   /* the whole answer fits the IPv6 minimum MTU */
    size_t plen = 8 + quote, total = 40 + plen;
    if (outcap < total)
        return 0;
    memset(out, 0, 48);
    out[0] = 0x60;
    ts_put16(out + 4, (uint16_t)plen);
    out[6] = 58;
    out[7] = 64;
    memcpy(out + 8, pkt + 24, 16);
    memcpy(out + 24, pkt + 8, 16);
    uint8_t *icmp = out + 40;
    icmp[0] = 2;
    ts_put32(icmp + 4, mtu);
    memcpy(icmp + 8, pkt, quote);
    uint32_t acc = sum16(out + 8, 32, 0) + (uint32_t)plen + 58;   /* pseudo-header */
    ts_put16(icmp + 2, fold(sum16(icmp, plen, acc)));
    return total;
}

size_t ts_icmp_too_big(const uint8_t *pkt, size_t len, uint32_t mtu, uint8_t *out, size_t outcap) {
    if (len >= 20 && pkt[0] >> 4 == 4)
        return too_big_v4(pkt, len, mtu, out, outcap);
    if (len >= 40 && pkt[0] >> 4 == 6)
        return too_big_v6(pkt, len, mtu, out, outcap);
    return 0;
}

static bool v4_one_host(const uint8_t *a) {
    /* 0/8 "this network", 127/8 loopback, 224/4 multicast, 240/4 incl. broadcast */
    return a[0] != 0 && a[0] != 127 && a[0] < 224;
}

static bool v6_one_host(const uint8_t *a) {
    static const uint8_t zero[15];
    if (a[0] == 0xff)                                   /* multicast */
        return false;
    return memcmp(a, zero, 15) != 0 || a[15] > 1;       /* :: unspecified, ::1 loopback */
}

bool ts_icmp_may_answer(const uint8_t *pkt, size_t len, const ts_flow *f) {
    if (f->family == 4) {
        if (len < 20 || (ts_be16(pkt + 6) & 0x1fff))    /* a later fragment: type unknown */
            return false;
        if (!v4_one_host(f->src) || f->dst[0] >= 224)   /* nor to broadcast/multicast traffic */
            return false;
        if (f->proto == 1) {
            uint8_t type = (uint8_t)(f->sport >> 8);    /* ts_flow_parse puts type<<8|code there */
            return !(type == 3 || type == 4 || type == 5 || type == 11 || type == 12);
        }
        return true;
    }
    if (!v6_one_host(f->src))
        return false;
    /* ICMPv6 errors are types 0..127 (a later fragment reads as type 0: refused too);
     * Packet Too Big may answer multicast destinations (RFC 4443 §2.4 e.2) */
    return f->proto != 58 || (f->sport >> 8) >= 128;
}

/* the errors the kernel takes to be about the packet they quote (Linux icmp_is_err; RFC 4443
 * §2.1: every ICMPv6 type below 128 is an error) */
static bool is_error(uint8_t family, uint8_t type) {
    if (family == 6)
        return type < 128;
    return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

/* An error that arrived on an SA tells our side about one of its own packets: a connected
 * socket takes "port unreachable" as ECONNREFUSED, "fragmentation needed" lowers the path MTU
 * toward the quoted destination for minutes.  The error's own addresses passed the SA's
 * selectors already; without this check a peer could speak so for a flow to another peer's
 * networks.  The quoted packet went from our side toward the peer's, so its reverse must be a
 * packet the SA could carry in (RFC 4301 §6.2).  Unlike Linux XFRM, which looks at the quote
 * only when the error's own addresses fail, this checks every error. */
bool ts_icmp_quote_ok(const uint8_t *pkt, size_t len, const ts_flow *f, const ts_selector *sel, uint32_t n) {
    size_t l4, end;
    /* a later fragment carries no ICMP header (ts_flow_l4 says false): its first fragment
     * must hold the whole 8-byte header, and so the type, and is checked */
    if (f->proto != (f->family == 4 ? 1 : 58) || !ts_flow_l4(pkt, len, &l4, &end))
        return true;
    /* Fewer than 8 bytes: no ICMP message, whatever its type.  Passing one with none (an IPv6
     * first fragment whose header chain ends at its end) would let the header and quote come in
     * a later fragment, never checked, and a kernel before 5.16 reassembles that. */
    if (end - l4 < 8)
        return false;
    if (!is_error(f->family, pkt[l4]))
        return true;
    ts_flow q;
    int known = ts_quote_parse(pkt + l4 + 8, end - l4 - 8, &q);
    if (known == TS_QUOTE_BAD || q.family != f->family)
        return false;
    ts_flow r = q;
    memcpy(r.src, q.dst, sizeof(r.src));
    memcpy(r.dst, q.src, sizeof(r.dst));
    r.sport = q.dport;
    r.dport = q.sport;
    for (uint32_t i = 0; i < n; i++)
        if (ts_selector_match_known(&sel[i], &r, known))
            return true;
    return false;
}
