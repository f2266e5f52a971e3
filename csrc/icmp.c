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
