/* The host's addresses added, as the control process tells them (addrwatch.c, ts_dp_addr_added):
 * which SAs noted gone try their source again (review revnatt F2: only those whose own address
 * came), and the generation a refused send is noted under (review revnatt's remark: read before
 * the send, so an address another loop noted between the refusal and the note counts).  The self-test is linked with -Wl,--wrap=sendmmsg
 * (Makefile): the wrapper passes every call through, and counts the refused ones.  Draws the SA's
 * key from the shared PRNG (last in main: the others' draws stay as they were). */
#include "selftest.h"
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
    /* the pipe's ADDR_ADDED: an address of either family, or any (family 0); nothing else */
    since = atomic_load(&dp->addr_gen);
    CHECK(ts_dp_addr_added(dp, 6, a6.addr) == TS_OK);
    CHECK(!ts_addrwatch_came(dp, &a, since, &now) && now == since + 1);
    CHECK(ts_dp_addr_added(dp, 4, a.addr) == TS_OK);
    CHECK(ts_addrwatch_came(dp, &a, since, &now) && now == since + 2);
    CHECK(ts_dp_addr_added(dp, 5, a.addr) == TS_EINVAL && ts_dp_addr_added(dp, 4, NULL) == TS_EINVAL);
    CHECK(atomic_load(&dp->addr_gen) == since + 2);
    CHECK(ts_dp_addr_added(dp, 0, NULL) == TS_OK);
    CHECK(ts_addrwatch_came(dp, &b, since + 2, &now) && now == since + 3);
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
