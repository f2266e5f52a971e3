/* Socket control data (cmsg.c): parsing what the kernel hands over with a
 * received datagram (UDP_GRO, IP_PKTINFO, IPV6_PKTINFO), well-formed, cut
 * short and malformed, each buffer in a heap block of exactly its length so
 * that ASan sees any read past it; the source address cmsg for sending; and
 * the batch loop over wildcard-bound sockets on loopback: IKE events carry
 * the address a datagram was sent to, ESP leaves from the SA's local address. */
#include "selftest.h"
#include <netinet/udp.h>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/* one cmsg of `dlen` data bytes at p (CMSG_SPACE(dlen) written); returns that space */
static size_t put_cmsg(uint8_t *p, int level, int type, const void *data, size_t dlen) {
    struct cmsghdr c = {.cmsg_len = CMSG_LEN(dlen), .cmsg_level = level, .cmsg_type = type};
    memset(p, 0, CMSG_SPACE(dlen));
    memcpy(p, &c, sizeof(c));
    memcpy(p + CMSG_LEN(0), data, dlen);
    return CMSG_SPACE(dlen);
}

/* parse a copy of buf[0..len) that ends where the heap block ends */
static void parse_exact(const uint8_t *buf, size_t len, uint16_t port, ts_rx_meta *m) {
    uint8_t *copy = malloc(len ? len : 1);
    FATAL_IF(!copy);
    memcpy(copy, buf, len);
    ts_rx_meta_parse(len ? copy : NULL, len, port, m);
    free(copy);
}

static bool is_v4(const ts_rx_meta *m, uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
    return m->local.family == 4 && m->local.addr[0] == a && m->local.addr[1] == b && m->local.addr[2] == c &&
           m->local.addr[3] == d && m->local.port == port;
}

static size_t v4_info(uint8_t *p, uint8_t last) {
    struct in_pktinfo pi = {.ipi_ifindex = 3};
    uint8_t a[4] = {198, 51, 100, last};
    memcpy(&pi.ipi_spec_dst, a, 4);
    memcpy(&pi.ipi_addr, a, 4);
    return put_cmsg(p, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
}

void test_cmsg_parse(void) {
    uint8_t buf[256];
    ts_rx_meta m;
    /* nothing: no GRO size, no local address */
    ts_rx_meta_parse(NULL, 0, 4500, &m);
    CHECK(m.gro_seg == 0 && m.local.family == 0);
    parse_exact(buf, 0, 4500, &m);
    CHECK(m.gro_seg == 0 && m.local.family == 0);

    /* GRO then IPv4 pktinfo: both, the socket's port with the address */
    int seg = 1400;
    size_t n = put_cmsg(buf, SOL_UDP, UDP_GRO, &seg, sizeof(seg));
    size_t first = n;
    n += v4_info(buf + n, 7);
    parse_exact(buf, n, 4500, &m);
    CHECK(m.gro_seg == 1400 && is_v4(&m, 198, 51, 100, 7, 4500));
    /* the kernel may leave off the last one's padding: still read */
    size_t unpadded = first + CMSG_LEN(sizeof(struct in_pktinfo));
    parse_exact(buf, unpadded, 4500, &m);
    CHECK(m.gro_seg == 1400 && is_v4(&m, 198, 51, 100, 7, 4500));
    /* every shorter length (MSG_CTRUNC): what is whole is read, the rest ignored, no overread */
    for (size_t cut = 0; cut < unpadded; cut++) {
        parse_exact(buf, cut, 4500, &m);
        bool gro_whole = cut >= CMSG_LEN(sizeof(int));
        CHECK(m.gro_seg == (gro_whole ? 1400u : 0u));
        CHECK(m.local.family == 0);
    }

    /* IPv6 pktinfo */
    struct in6_pktinfo pi6;
    memset(&pi6, 0, sizeof(pi6));
    pi6.ipi6_addr.s6_addr[0] = 0x20; pi6.ipi6_addr.s6_addr[1] = 0x01;
    pi6.ipi6_addr.s6_addr[2] = 0x0d; pi6.ipi6_addr.s6_addr[3] = 0xb8;
    pi6.ipi6_addr.s6_addr[15] = 2;
    n = put_cmsg(buf, IPPROTO_IPV6, IPV6_PKTINFO, &pi6, sizeof(pi6));
    parse_exact(buf, n, 4501, &m);
    CHECK(m.local.family == 6 && m.local.port == 4501 && memcmp(m.local.addr, &pi6.ipi6_addr, 16) == 0);
    for (size_t cut = 0; cut < CMSG_LEN(sizeof(pi6)); cut++) {
        parse_exact(buf, cut, 4501, &m);
        CHECK(m.local.family == 0);
    }
    /* a multicast or unspecified destination is no address to answer from */
    pi6.ipi6_addr.s6_addr[0] = 0xff;
    n = put_cmsg(buf, IPPROTO_IPV6, IPV6_PKTINFO, &pi6, sizeof(pi6));
    parse_exact(buf, n, 4500, &m);
    CHECK(m.local.family == 0);
    memset(&pi6, 0, sizeof(pi6));
    n = put_cmsg(buf, IPPROTO_IPV6, IPV6_PKTINFO, &pi6, sizeof(pi6));
    parse_exact(buf, n, 4500, &m);
    CHECK(m.local.family == 0);
    static const uint8_t bad4[][4] = {{0, 0, 0, 0}, {255, 255, 255, 255}, {224, 0, 0, 1}, {239, 1, 2, 3}};
    for (size_t i = 0; i < sizeof(bad4) / sizeof(bad4[0]); i++) {
        struct in_pktinfo pi = {0};
        memcpy(&pi.ipi_spec_dst, bad4[i], 4);
        n = put_cmsg(buf, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
        parse_exact(buf, n, 4500, &m);
        CHECK(m.local.family == 0);
    }

    /* a pktinfo whose cmsg_len is too short for its struct: ignored, the next one still read */
    struct in_pktinfo pi = {0};
    n = put_cmsg(buf, IPPROTO_IP, IP_PKTINFO, &pi, 4);
    n += v4_info(buf + n, 9);
    parse_exact(buf, n, 4500, &m);
    CHECK(is_v4(&m, 198, 51, 100, 9, 4500));
    /* cmsg_len below the header, past the buffer, or huge: the walk stops there */
    size_t lens[] = {0, 1, CMSG_LEN(0) - 1, 1000, (size_t)-1, (size_t)-1 - 7};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        n = v4_info(buf, 1);
        struct cmsghdr c;
        memcpy(&c, buf, sizeof(c));
        c.cmsg_len = lens[i];
        memcpy(buf, &c, sizeof(c));
        n += v4_info(buf + n, 2);
        parse_exact(buf, n, 4500, &m);
        CHECK(m.local.family == 0 && m.gro_seg == 0);
    }
    /* a negative or zero GRO size is none */
    seg = -5;
    n = put_cmsg(buf, SOL_UDP, UDP_GRO, &seg, sizeof(seg));
    parse_exact(buf, n, 4500, &m);
    CHECK(m.gro_seg == 0);
    /* other levels and types are skipped */
    n = put_cmsg(buf, SOL_SOCKET, SCM_RIGHTS, "abcdefgh", 8);
    n += v4_info(buf + n, 3);
    parse_exact(buf, n, 4500, &m);
    CHECK(is_v4(&m, 198, 51, 100, 3, 4500));

    /* random bytes and random lengths: whatever comes out, no read beyond the buffer, and a
     * local address, if any, carries the socket's port */
    for (int i = 0; i < 20000; i++) {
        size_t len = rnd_below(200);
        rnd_fill(buf, len);
        /* often plausible headers, so the walk gets past the first */
        if (len >= sizeof(struct cmsghdr) && rnd_below(2)) {
            struct cmsghdr c = {.cmsg_len = rnd_below((uint32_t)len + 24),
                                .cmsg_level = rnd_below(2) ? IPPROTO_IP : IPPROTO_IPV6,
                                .cmsg_type = rnd_below(2) ? IP_PKTINFO : IPV6_PKTINFO};
            memcpy(buf, &c, sizeof(c));
        }
        parse_exact(buf, len, 4500, &m);
        CHECK(m.local.family == 0 || m.local.port == 4500);
    }
}

void test_cmsg_pktinfo_put(void) {
    uint8_t buf[TS_PKTINFO_SPACE];
    ts_addr a;
    ts_rx_meta m;
    /* the wildcard and unset addresses name no source */
    memset(&a, 0, sizeof(a));
    CHECK(ts_pktinfo_put(buf, sizeof(buf), &a) == 0);
    a.family = 4;
    CHECK(!ts_addr_is_specific(&a) && ts_pktinfo_put(buf, sizeof(buf), &a) == 0);
    a.family = 6;
    CHECK(!ts_addr_is_specific(&a) && ts_pktinfo_put(buf, sizeof(buf), &a) == 0);
    /* IPv4: read back by the parser (spec_dst is what both use) */
    addr4(&a, 9, 4500);
    size_t n = ts_pktinfo_put(buf, sizeof(buf), &a);
    CHECK(n == CMSG_SPACE(sizeof(struct in_pktinfo)));
    ts_rx_meta_parse(buf, n, 4500, &m);
    CHECK(is_v4(&m, 192, 0, 2, 9, 4500));
    CHECK(ts_pktinfo_put(buf, n - 1, &a) == 0);   /* no room: nothing */
    /* IPv6 */
    memset(&a, 0, sizeof(a));
    a.family = 6;
    a.addr[0] = 0x20; a.addr[1] = 0x01; a.addr[15] = 5;
    n = ts_pktinfo_put(buf, sizeof(buf), &a);
    CHECK(n == CMSG_SPACE(sizeof(struct in6_pktinfo)));
    ts_rx_meta_parse(buf, n, 4500, &m);
    CHECK(m.local.family == 6 && memcmp(m.local.addr, a.addr, 16) == 0);
    CHECK(ts_pktinfo_put(buf, n - 1, &a) == 0);
}

/* the next event, waiting for it (up to 10 s: only a hang fails, never slowness) */
static bool next_event_wait(ts_dp *dp, ts_event *ev, uint8_t *data, size_t cap) {
    for (int i = 0; i < 1000; i++) {
        if (ts_dp_next_event(dp, ev, data, cap) == 1)
            return true;
        struct pollfd pf = {.fd = ts_dp_event_fd(dp), .events = POLLIN};
        (void)poll(&pf, 1, 10);
    }
    return false;
}

/* the loop on a wildcard socket: 127.0.0.0/8 is all ours on loopback, so .2 and .3 stand for a
 * gateway's second and third address */
void test_cmsg_loop(void) {
    int tun[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tun) != 0);
    uint16_t pg, pp;
    int ug = udp_wildcard(&pg);       /* the gateway's "port 4500" */
    int peer = udp_bound(&pp);        /* the peer, on 127.0.0.1 */
    ts_dp *G = ts_dp_new();
    FATAL_IF(!G);
    CHECK(ts_dp_set_fds(G, tun[0], ug, -1) == TS_OK);
    /* an outbound SA whose local address is 127.0.0.3: ESP to the peer must come from there */
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    params(&p, 0x4242, TS_DIR_OUT, key, 20, false, 0, 0);
    set_lo(&p.local, 3, pg);
    set_lo(&p.remote, 1, pp);
    CHECK(ts_sad_add(G, &p) == TS_OK);
    protect(G, 1);
    /* and one whose local address is not ours (it went away): ESP still leaves, from where the route says */
    params(&p, 0x4343, TS_DIR_OUT, key, 20, false, 0, 0);
    p.reqid = 2;
    addr4(&p.local, 77, pg);
    set_lo(&p.remote, 1, pp);
    CHECK(ts_sad_add(G, &p) == TS_OK);
    pthread_t t;
    FATAL_IF(pthread_create(&t, NULL, run_thread, G) != 0);

    /* IKE (non-ESP marker) sent to 127.0.0.2: the event says so, with the socket's port */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(pg)};
    to.sin_addr.s_addr = htonl(0x7f000002);
    uint8_t ike[4 + 28];   /* marker, IKE header (message ID 2, then 1) */
    put32(ike, 0);
    ike_hdr(ike + 4, 28, 28);
    put32(ike + 4 + 20, 2);
    FATAL_IF(sendto(peer, ike, sizeof(ike), 0, (struct sockaddr *)&to, sizeof(to)) != sizeof(ike));
    ts_event ev;
    uint8_t data[64];
    CHECK(next_event_wait(G, &ev, data, sizeof(data)) && ev.type == TS_EV_IKE && ev.data_len == 28 &&
          memcmp(data, ike + 4, 28) == 0);
    CHECK(ev.addr.family == 4 && ev.addr.port == pp);
    CHECK(ev.local.family == 4 && ev.local.addr[0] == 127 && ev.local.addr[3] == 2 && ev.local.port == pg);
    /* ... and to 127.0.0.1: each datagram its own */
    to.sin_addr.s_addr = htonl(0x7f000001);
    put32(ike + 4 + 20, 1);
    FATAL_IF(sendto(peer, ike, sizeof(ike), 0, (struct sockaddr *)&to, sizeof(to)) != sizeof(ike));
    CHECK(next_event_wait(G, &ev, data, sizeof(data)) && ev.type == TS_EV_IKE && get32(data + 20) == 1 &&
          ev.local.family == 4 && ev.local.addr[3] == 1);

    /* ESP out: from 127.0.0.3, the SA's local address, not the route's 127.0.0.1 */
    for (int i = 0; i < 3; i++) {
        size_t len = make_inner(4, 100, false, bufA);
        FATAL_IF(send(tun[1], bufA, len, 0) != (ssize_t)len);
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        FATAL_IF(poll(&(struct pollfd){.fd = peer, .events = POLLIN}, 1, 10000) != 1);
        ssize_t r = recvfrom(peer, bufC, sizeof(bufC), 0, (struct sockaddr *)&from, &fl);
        CHECK(r > 8 && get32(bufC) == 0x4242);
        CHECK(ntohl(from.sin_addr.s_addr) == 0x7f000003 && ntohs(from.sin_port) == pg);
    }
    /* the SA whose address is gone: rebind policy 1 to it (reqid 2) and send */
    ts_spd_flush(G);
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.action = TS_ACT_PROTECT;
    pol.reqid = 2;
    pol.id = 9;
    sel_net(&pol.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(G, &pol) == TS_OK);
    uint64_t io_before = drop_count(G, TS_DROP_IO);
    size_t len = make_inner(4, 100, false, bufA);
    FATAL_IF(send(tun[1], bufA, len, 0) != (ssize_t)len);
    struct sockaddr_in from;
    socklen_t fl = sizeof(from);
    FATAL_IF(poll(&(struct pollfd){.fd = peer, .events = POLLIN}, 1, 10000) != 1);
    ssize_t r = recvfrom(peer, bufC, sizeof(bufC), 0, (struct sockaddr *)&from, &fl);
    CHECK(r > 8 && get32(bufC) == 0x4343 && ntohl(from.sin_addr.s_addr) == 0x7f000001);
    CHECK(drop_count(G, TS_DROP_IO) == io_before);

    ts_dp_stop(G);
    void *rv;
    pthread_join(t, &rv);
    CHECK((intptr_t)rv == TS_OK);
    ts_dp_free(G);
    close(tun[0]); close(tun[1]);
    close(ug);
    close(peer);
}
