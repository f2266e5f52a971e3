/* Control data of the UDP sockets (port 4500): what the kernel says about a
 * received datagram, and the source address we ask for on send.
 *
 * Receive: UDP_GRO (the segment size of a coalesced run) and IP_PKTINFO /
 * IPV6_PKTINFO (the local address the datagram was sent to: on a socket
 * bound to the wildcard address the only way to know which of the host's
 * addresses a peer talked to; RFC 7296 §2.11 wants answers from there, and
 * NAT detection hashes it).  The walk checks every header and value length
 * against the buffer itself, not trusting CMSG_NXTHDR's view of a truncated
 * (MSG_CTRUNC) or malformed buffer.
 *
 * Send: IP_PKTINFO / IPV6_PKTINFO naming the source address, as strongSwan's
 * socket-default plugin does for IKE, here also for ESP. */
#include "internal.h"
#include <netinet/udp.h>
#include <string.h>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

static bool ipv6_unspecified_or_multicast(const uint8_t a[16]) {
    static const uint8_t zero[16];
    return a[0] == 0xff || memcmp(a, zero, 16) == 0;
}

void ts_rx_meta_parse(const void *control, size_t len, uint16_t local_port, ts_rx_meta *out) {
    const uint8_t *p = control;
    const size_t hdr = CMSG_LEN(0);
    out->gro_seg = 0;
    memset(&out->local, 0, sizeof(out->local));
    if (!p)
        return;
    size_t off = 0;
    while (len - off >= hdr) {
        struct cmsghdr c;
        memcpy(&c, p + off, sizeof(c));
        if (c.cmsg_len < hdr || c.cmsg_len > len - off)
            return;   /* malformed or cut short (MSG_CTRUNC): nothing after it is trusted */
        const uint8_t *data = p + off + hdr;
        size_t dlen = c.cmsg_len - hdr;
        if (c.cmsg_level == SOL_UDP && c.cmsg_type == UDP_GRO && dlen >= sizeof(int)) {
            int v;
            memcpy(&v, data, sizeof(v));
            out->gro_seg = v > 0 ? (size_t)v : 0;
        } else if (c.cmsg_level == IPPROTO_IP && c.cmsg_type == IP_PKTINFO && dlen >= sizeof(struct in_pktinfo)) {
            struct in_pktinfo pi;
            memcpy(&pi, data, sizeof(pi));
            /* ipi_spec_dst: the header's destination for unicast; for a broadcast or
             * multicast one the local address the kernel would answer from */
            uint32_t a = ntohl(pi.ipi_spec_dst.s_addr);
            if (a != 0 && a != 0xffffffffu && (a >> 28) != 0xe) {
                memset(&out->local, 0, sizeof(out->local));
                out->local.family = 4;
                memcpy(out->local.addr, &pi.ipi_spec_dst, 4);
                out->local.port = local_port;
            }
        } else if (c.cmsg_level == IPPROTO_IPV6 && c.cmsg_type == IPV6_PKTINFO &&
                   dlen >= sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo pi;
            memcpy(&pi, data, sizeof(pi));
            if (!ipv6_unspecified_or_multicast(pi.ipi6_addr.s6_addr)) {
                out->local.family = 6;
                memcpy(out->local.addr, &pi.ipi6_addr, 16);
                out->local.port = local_port;
            }
        }
        size_t step = CMSG_ALIGN(c.cmsg_len);
        if (step >= len - off)
            return;   /* the last one (its padding may be missing) */
        off += step;
    }
}

bool ts_addr_is_specific(const ts_addr *a) {
    static const uint8_t zero[16];
    if (a->family == 4)
        return memcmp(a->addr, zero, 4) != 0;
    return a->family == 6 && memcmp(a->addr, zero, 16) != 0;
}

/* One control message (level, type, len bytes of data) at buf, zero-padded to its CMSG_SPACE;
 * 0 if cap cannot hold it. */
static size_t put_cmsg(void *buf, size_t cap, int level, int type, const void *data, size_t len) {
    if (cap < CMSG_SPACE(len))
        return 0;
    struct cmsghdr c = {0};
    c.cmsg_level = level;
    c.cmsg_type = type;
    c.cmsg_len = CMSG_LEN(len);
    memset(buf, 0, CMSG_SPACE(len));
    memcpy(buf, &c, sizeof(c));
    memcpy((uint8_t *)buf + CMSG_LEN(0), data, len);
    return CMSG_SPACE(len);
}

size_t ts_pktinfo_put(void *buf, size_t cap, const ts_addr *src) {
    if (!ts_addr_is_specific(src))
        return 0;
    if (src->family == 4) {
        struct in_pktinfo pi;
        memset(&pi, 0, sizeof(pi));
        memcpy(&pi.ipi_spec_dst, src->addr, 4);
        return put_cmsg(buf, cap, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
    }
    struct in6_pktinfo pi;
    memset(&pi, 0, sizeof(pi));
    memcpy(&pi.ipi6_addr, src->addr, 16);
    return put_cmsg(buf, cap, IPPROTO_IPV6, IPV6_PKTINFO, &pi, sizeof(pi));
}

void ts_socket_local(int fd, ts_addr *bound, bool *wildcard) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int one = 1;
    memset(bound, 0, sizeof(*bound));
    *wildcard = false;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        bound->family = 4;
        memcpy(bound->addr, &in->sin_addr, 4);
        bound->port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        bound->family = 6;
        memcpy(bound->addr, &in6->sin6_addr, 16);
        bound->port = ntohs(in6->sin6_port);
    } else {
        return;
    }
    /* a socket bound to one address receives only on it: the kernel need not say */
    *wildcard = !ts_addr_is_specific(bound);
    if (!*wildcard)
        return;
    if (bound->family == 4)
        (void)setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
    else
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
}
