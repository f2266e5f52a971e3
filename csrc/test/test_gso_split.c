/* A UDP GSO run the kernel refuses (loop.c send_split): its ESP packets go as datagrams, in
 * order, from the SA's source address, none counted lost; the SA then sends datagrams for a
 * while (gso_paused_until) until the pause ends or the SA moves.
 *
 * The kernel refuses GSO where it sends the same datagrams alone: a segment larger than the
 * path MTU (EMSGSIZE; EINVAL on older kernels), an egress without checksum offload (EIO), and a
 * socket with SO_NO_CHECK (EINVAL, udp_send_skb), which is the one a self-test can set up on
 * loopback without a namespace.  tests/dataplane/test_gso_pmtu.py shows the path MTU case. */
#include "selftest.h"

#define BURST 8         /* a unix datagram socket (the fake TUN) queues ~10 */
#define SPI_GSO 0x5151

typedef struct gso_rig {
    int tun[2];
    int udp, peer;      /* the gateway's wildcard socket, the peer's on 127.0.0.1 */
    uint16_t port, peer_port;
    ts_dp *dp;
    ts_addr remote;
    pthread_t loop;
} gso_rig;

/* an outbound SA from 127.0.0.<local_last> (192.0.2.<local_last> if not on_lo) to the peer; false:
 * this kernel has no UDP GSO */
static bool rig_up(gso_rig *g, uint8_t local_last, bool on_lo) {
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, g->tun) != 0);
    g->udp = udp_wildcard(&g->port);
    g->peer = udp_bound(&g->peer_port);
    g->dp = ts_dp_new();
    FATAL_IF(!g->dp);
    CHECK(ts_dp_set_fds(g->dp, g->tun[0], g->udp, -1) == TS_OK);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    params(&p, SPI_GSO, TS_DIR_OUT, key, 20, false, 0, 0);
    if (on_lo)
        set_lo(&p.local, local_last, g->port);
    else
        addr4(&p.local, local_last, g->port);
    set_lo(&p.remote, 1, g->peer_port);
    g->remote = p.remote;
    CHECK(ts_sad_add(g->dp, &p) == TS_OK);
    protect(g->dp, 1);
    if (!(ts_dp_set_offloads(g->dp, 0) & TS_OFF_UDP_GSO))
        return false;
    int one = 1;   /* every GSO send refused (EINVAL), each datagram alone sent */
    FATAL_IF(setsockopt(g->udp, SOL_SOCKET, SO_NO_CHECK, &one, sizeof(one)) != 0);
    FATAL_IF(pthread_create(&g->loop, NULL, run_thread, g->dp) != 0);
    return true;
}

static void rig_down(gso_rig *g, bool running) {
    if (running) {
        ts_dp_stop(g->dp);
        void *rv;
        pthread_join(g->loop, &rv);
        CHECK((intptr_t)rv == TS_OK);
    }
    ts_dp_free(g->dp);
    close(g->tun[0]); close(g->tun[1]);
    close(g->udp);
    close(g->peer);
}

/* BURST equal-size packets into the TUN while the loop waits for the lock: its next batch reads
 * them all and makes them one GSO run */
static void burst(gso_rig *g) {
    pthread_rwlock_wrlock(&g->dp->lock);
    for (int i = 0; i < BURST; i++) {
        size_t len = make_inner(4, 1000, false, bufA);
        FATAL_IF(send(g->tun[1], bufA, len, 0) != (ssize_t)len);
    }
    pthread_rwlock_unlock(&g->dp->lock);
}

/* the burst's ESP at the peer: sequence numbers first.. in order, from 127.0.0.<src_last> */
static void expect_burst(gso_rig *g, uint32_t first, uint8_t src_last) {
    for (uint32_t i = 0; i < BURST; i++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        FATAL_IF(poll(&(struct pollfd){.fd = g->peer, .events = POLLIN}, 1, 10000) != 1);
        ssize_t r = recvfrom(g->peer, bufC, sizeof(bufC), 0, (struct sockaddr *)&from, &fl);
        CHECK(r > 8 && get32(bufC) == SPI_GSO && get32(bufC + 4) == first + i);
        CHECK(ntohl(from.sin_addr.s_addr) == (0x7f000000u | src_last) && ntohs(from.sin_port) == g->port);
    }
}

static uint64_t paused_until(gso_rig *g) {
    ts_sa *sa = ts_sad_find_sa(&g->dp->sad, SPI_GSO, TS_DIR_OUT, &g->remote);
    return sa ? atomic_load(&sa->gso_paused_until) : 0;
}

void test_gso_split(void) {
    gso_rig g;
    if (!rig_up(&g, 3, true)) {
        printf("selftest: no UDP GSO here, test_gso_split skipped\n");
        rig_down(&g, false);
        return;
    }
    /* refused: the run leaves datagram by datagram, from the SA's address 127.0.0.3, none lost */
    burst(&g);
    expect_burst(&g, 1, 3);
    CHECK(ts_dp_errno(g.dp) == EINVAL);   /* the run was refused: this went through the split */
    CHECK(paused_until(&g) != 0);
    /* paused: the next burst goes as datagrams without a refused run first */
    atomic_store(&g.dp->last_errno, 0);
    burst(&g);
    expect_burst(&g, 1 + BURST, 3);
    CHECK(ts_dp_errno(g.dp) == 0);
    /* the pause over: GSO is tried again (refused again, paused again) */
    ts_sa *sa = ts_sad_find_sa(&g.dp->sad, SPI_GSO, TS_DIR_OUT, &g.remote);
    FATAL_IF(!sa);
    atomic_store(&sa->gso_paused_until, ts_now_ns() - 1);
    burst(&g);
    expect_burst(&g, 1 + 2 * BURST, 3);
    CHECK(ts_dp_errno(g.dp) == EINVAL && paused_until(&g) != 0);
    /* the SA moved (MOBIKE): a new path, GSO tried at once */
    CHECK(ts_sad_migrate(g.dp, SPI_GSO, TS_DIR_OUT, &g.remote, &g.remote, NULL) == TS_OK);
    CHECK(paused_until(&g) == 0);
    atomic_store(&g.dp->last_errno, 0);
    burst(&g);
    expect_burst(&g, 1 + 3 * BURST, 3);
    CHECK(ts_dp_errno(g.dp) == EINVAL);
    CHECK(drop_count(g.dp, TS_DROP_IO) == 0);
    rig_down(&g, true);
}

/* the run's source address is gone as well: each datagram of the split falls back to the
 * address the route picks (all of them at the first one's refusal), none lost */
void test_gso_split_source_gone(void) {
    gso_rig g;
    if (!rig_up(&g, 77, false)) {
        rig_down(&g, false);
        return;
    }
    burst(&g);
    expect_burst(&g, 1, 1);
    CHECK(drop_count(g.dp, TS_DROP_IO) == 0);
    rig_down(&g, true);
}
