/* The worker's address watch (addrwatch.c): which route netlink notices say an address was added,
 * and which SAs noted gone try their source again (review revnatt F2: only those whose own address
 * came, not any RTM_NEWADDR; a tentative one is none yet), and the generation a refused send is
 * noted under (review revnatt's remark: read before the send, so an address another loop noted
 * between the refusal and the note counts).  The self-test is linked with -Wl,--wrap=sendmmsg
 * (Makefile): the wrapper passes every call through, and counts the refused ones.  Draws the SA's
 * key from the shared PRNG (last in main: the others' draws stay as they were). */
#include "selftest.h"
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdatomic.h>

int __real_sendmmsg(int fd, struct mmsghdr *m, unsigned int n, int flags);
int __wrap_sendmmsg(int fd, struct mmsghdr *m, unsigned int n, int flags);

static _Atomic int refused_sends;
static ts_dp *_Atomic note_dp;   /* armed: at the next refused send, added_addr is noted added there */
static ts_addr added_addr;

int __wrap_sendmmsg(int fd, struct mmsghdr *m, unsigned int n, int flags) {
    int r = __real_sendmmsg(fd, m, n, flags);
    if (r < 0 && errno != EAGAIN && errno != EINTR) {
        int err = errno;
        atomic_fetch_add(&refused_sends, 1);
        /* another loop reads the address's notice between the kernel's refusal and this loop's note */
        ts_dp *dp = atomic_exchange(&note_dp, NULL);
        if (dp)
            ts_addrwatch_note(dp, &added_addr);
        errno = err;
    }
    return r;
}

/* ---- notices, as the kernel writes them ---- */
typedef struct notice_spec {
    uint16_t type;            /* RTM_NEWADDR, RTM_DELADDR */
    uint8_t family;           /* AF_INET, AF_INET6 */
    uint8_t flags;            /* ifa_flags */
    const uint8_t *local, *address;   /* IFA_LOCAL, IFA_ADDRESS (NULL: none) */
    size_t alen;              /* their length */
    int32_t ifa_flags_attr;   /* IFA_FLAGS, -1: none */
} notice_spec;

static size_t put_attr(uint8_t *b, size_t off, uint16_t type, const void *v, size_t len) {
    struct rtattr rta = {.rta_len = (unsigned short)RTA_LENGTH(len), .rta_type = type};
    memcpy(b + off, &rta, sizeof(rta));
    memcpy(b + off + RTA_LENGTH(0), v, len);
    return off + RTA_SPACE(len);
}

/* one notice at b; returns its length, padded */
static size_t notice(uint8_t *b, const notice_spec *s) {
    struct ifaddrmsg ifa = {.ifa_family = s->family, .ifa_prefixlen = 24, .ifa_flags = s->flags, .ifa_index = 1};
    size_t off = NLMSG_HDRLEN;
    memcpy(b + off, &ifa, sizeof(ifa));
    off += NLMSG_ALIGN(sizeof(ifa));
    if (s->address)
        off = put_attr(b, off, IFA_ADDRESS, s->address, s->alen);
    if (s->local)
        off = put_attr(b, off, IFA_LOCAL, s->local, s->alen);
    if (s->ifa_flags_attr >= 0) {
        uint32_t f = (uint32_t)s->ifa_flags_attr;
        off = put_attr(b, off, IFA_FLAGS, &f, sizeof(f));
    }
    struct nlmsghdr h = {.nlmsg_len = (uint32_t)off, .nlmsg_type = s->type};
    memcpy(b, &h, sizeof(h));
    return NLMSG_ALIGN(off);
}

static const uint8_t V4_LOCAL[4] = {192, 0, 2, 5}, V4_PEER[4] = {192, 0, 2, 9};
static const uint8_t V6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 5};

static bool is4(const ts_addr *a, const uint8_t *v) { return a->family == 4 && memcmp(a->addr, v, 4) == 0; }
static bool is6(const ts_addr *a, const uint8_t *v) { return a->family == 6 && memcmp(a->addr, v, 16) == 0; }

static int parse1(const notice_spec *s, ts_addr *out) {
    uint8_t b[256];
    size_t n = notice(b, s);
    return ts_addrwatch_parse(b, n, out, 4);
}

void test_addrwatch_parse(void) {
    ts_addr out[4];
    /* IPv4: IFA_LOCAL is ours (IFA_ADDRESS a point-to-point link's far end) */
    notice_spec v4 = {RTM_NEWADDR, AF_INET, 0, V4_LOCAL, V4_PEER, 4, -1};
    CHECK(parse1(&v4, out) == 1 && is4(&out[0], V4_LOCAL) && out[0].port == 0);
    /* IPv6: IFA_ADDRESS alone */
    notice_spec v6 = {RTM_NEWADDR, AF_INET6, 0, NULL, V6, 16, -1};
    CHECK(parse1(&v6, out) == 1 && is6(&out[0], V6));
    /* tentative: no address yet; optimistic: one already; DAD failed (in IFA_FLAGS): none */
    notice_spec t = v6;
    t.flags = IFA_F_TENTATIVE;
    CHECK(parse1(&t, out) == 0);
    t.flags = IFA_F_TENTATIVE | IFA_F_OPTIMISTIC;
    CHECK(parse1(&t, out) == 1 && is6(&out[0], V6));
    t.flags = 0;
    t.ifa_flags_attr = IFA_F_TENTATIVE | IFA_F_DADFAILED;
    CHECK(parse1(&t, out) == 0);
    t.ifa_flags_attr = IFA_F_PERMANENT | IFA_F_NOPREFIXROUTE;   /* beyond the 8 bits: not tentative */
    CHECK(parse1(&t, out) == 1);
    /* an address removed, another family: nothing */
    notice_spec del = v4;
    del.type = RTM_DELADDR;
    CHECK(parse1(&del, out) == 0);
    notice_spec other = v4;
    other.family = AF_UNSPEC;
    CHECK(parse1(&other, out) == 0);
    /* an address of the wrong length, or none: unreadable, any */
    notice_spec bad = {RTM_NEWADDR, AF_INET, 0, V6, V6, 5, -1};
    CHECK(parse1(&bad, out) == 1 && out[0].family == 0);
    notice_spec none = {RTM_NEWADDR, AF_INET, 0, NULL, NULL, 0, 7};
    CHECK(parse1(&none, out) == 1 && out[0].family == 0);

    /* two in one read, in order; then the second cut short: the first and any */
    uint8_t b[512];
    size_t n1 = notice(b, &v4), n2 = notice(b + n1, &v6);
    CHECK(ts_addrwatch_parse(b, n1 + n2, out, 4) == 2 && is4(&out[0], V4_LOCAL) && is6(&out[1], V6));
    CHECK(ts_addrwatch_parse(b, n1 + n2 - 3, out, 4) == 2 && is4(&out[0], V4_LOCAL) && out[1].family == 0);
    CHECK(ts_addrwatch_parse(b, n1 + 7, out, 4) == 2 && out[1].family == 0);   /* less than a header */
    /* more than the caller takes: the last stands for any */
    CHECK(ts_addrwatch_parse(b, n1 + n2, out, 1) == 1 && out[0].family == 0);
    CHECK(ts_addrwatch_parse(b, 0, out, 4) == 0);
    /* an attribute longer than its message: any (nothing read past it) */
    size_t n = notice(b, &v4);
    struct rtattr rta;
    memcpy(&rta, b + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct ifaddrmsg)), sizeof(rta));
    rta.rta_len = 200;
    memcpy(b + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct ifaddrmsg)), &rta, sizeof(rta));
    CHECK(ts_addrwatch_parse(b, n, out, 4) == 1 && out[0].family == 0);
    /* a message longer than the read, or shorter than its header: any */
    struct nlmsghdr h = {.nlmsg_len = 9000, .nlmsg_type = RTM_NEWADDR};
    memcpy(b, &h, sizeof(h));
    CHECK(ts_addrwatch_parse(b, n, out, 4) == 1 && out[0].family == 0);
    h.nlmsg_len = 3;
    memcpy(b, &h, sizeof(h));
    CHECK(ts_addrwatch_parse(b, n, out, 4) == 1 && out[0].family == 0);
    /* the last message's padding left out: still read */
    notice_spec odd = {RTM_NEWADDR, AF_INET, 0, V4_LOCAL, NULL, 4, -1};
    n1 = notice(b, &odd);
    CHECK(ts_addrwatch_parse(b, n1, out, 4) == 1 && is4(&out[0], V4_LOCAL));
}

/* which SAs' gone sources an address noted ends: its own, any, or one the ring lost */
void test_addrwatch_ring(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_addr a, b, a6 = {.family = 6}, any = {0};
    addr4(&a, 77, 4500);
    addr4(&b, 78, 0);
    memcpy(a6.addr, a.addr, 4);   /* an IPv6 address that starts with a's bytes: another address */
    uint32_t since = atomic_load(&dp->addr_gen), now = 0;
    CHECK(!ts_addrwatch_came(dp, &a, since, &now) && now == since);
    ts_addrwatch_note(dp, &b);
    ts_addrwatch_note(dp, &a6);
    CHECK(!ts_addrwatch_came(dp, &a, since, &now) && now == since + 2);
    CHECK(ts_addrwatch_came(dp, &b, since, &now));
    ts_addrwatch_note(dp, &a);   /* the port is no part of it */
    CHECK(ts_addrwatch_came(dp, &a, since, &now) && now == since + 3);
    CHECK(ts_addrwatch_came(dp, &a, since + 2, &now));
    CHECK(!ts_addrwatch_came(dp, &a, since + 3, &now));
    ts_addrwatch_note(dp, &any);
    CHECK(ts_addrwatch_came(dp, &a, since + 3, &now));
    /* more since than the ring keeps: any of them may have been it */
    since = atomic_load(&dp->addr_gen);
    for (int i = 0; i < TS_ADDRS_SEEN + 1; i++)
        ts_addrwatch_note(dp, &b);
    CHECK(ts_addrwatch_came(dp, &a, since, &now));
    CHECK(!ts_addrwatch_came(dp, &a, since + 1, &now));
    /* the generation wraps */
    atomic_store(&dp->addr_gen, UINT32_MAX - 1);
    since = UINT32_MAX - 1;
    ts_addrwatch_note(dp, &b);
    ts_addrwatch_note(dp, &a);   /* generation 0 */
    ts_addrwatch_note(dp, &b);
    CHECK(ts_addrwatch_came(dp, &a, since, &now) && now == 1);
    CHECK(!ts_addrwatch_came(dp, &a, 0, &now));
    ts_dp_free(dp);
}

/* An SA from 192.0.2.77 (not ours: its source refused, each message sent again from the route's
 * address), and the address is noted added by another loop right after the kernel's refusal: the
 * SA's next message tries its source again.  Noted under the generation read after the send, the
 * SA waited its 10 s. */
void test_addrwatch_refused_then_added(void) {
    int tun[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tun) != 0);
    uint16_t port, peer_port;
    int udp = udp_wildcard(&port), peer = udp_bound(&peer_port);
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_set_fds(dp, tun[0], udp, -1) == TS_OK);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    params(&p, 0x7777, TS_DIR_OUT, key, 20, false, 0, 0);
    addr4(&p.local, 77, port);
    set_lo(&p.remote, 1, peer_port);
    CHECK(ts_sad_add(dp, &p) == TS_OK);
    protect(dp, 1);
    added_addr = p.local;
    pthread_t loop;
    FATAL_IF(pthread_create(&loop, NULL, run_thread, dp) != 0);
    int before = atomic_load(&refused_sends);
    atomic_store(&note_dp, dp);
    for (int i = 0; i < 3; i++) {
        size_t len = make_inner(4, 100, false, bufA);
        FATAL_IF(send(tun[1], bufA, len, 0) != (ssize_t)len);
        CHECK(recv_wait(peer, bufC, sizeof(bufC)) > 8 && get32(bufC) == 0x7777);   /* from the route's */
    }
    /* the first refused, the second tried again (the address came after the refusal) and refused,
     * the third left without its source at once */
    CHECK(atomic_load(&refused_sends) - before == 2);
    CHECK(atomic_load(&note_dp) == NULL);
    ts_dp_stop(dp);
    void *rv;
    pthread_join(loop, &rv);
    CHECK((intptr_t)rv == TS_OK);
    ts_dp_free(dp);
    close(tun[0]); close(tun[1]);
    close(udp);
    close(peer);
}
