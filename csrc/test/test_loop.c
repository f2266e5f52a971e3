/* The batch loop (loop.c) over real sockets: two dataplanes over loopback,
 * and two loop threads sharing one SA. */
#include "selftest.h"

/* ---- 9. the batch loop over real sockets ---------------------------------------------- */
/* keys A -> B over loopback: B's inbound SA (from port_a), A's outbound SA
 * (to port_b) and A's PROTECT policy; returns the SPI, the key in key[20] */
static uint32_t loopback_sa_pair(ts_dp *A, ts_dp *B, uint16_t port_a, uint16_t port_b, uint32_t window,
                                 uint8_t key[20]) {
    rnd_fill(key, 20);
    uint32_t spi = 0;
    CHECK(ts_sad_getspi(B, 256, 0xffffffffu, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, key, 20, false, window, 0);
    p.remote.addr[0] = 127; p.remote.addr[1] = 0; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    p.remote.port = port_a;
    CHECK(ts_sad_update(B, &p) == TS_OK);
    params(&p, spi, TS_DIR_OUT, key, 20, false, 0, 0);
    p.remote.addr[0] = 127; p.remote.addr[1] = 0; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    p.remote.port = port_b;
    CHECK(ts_sad_add(A, &p) == TS_OK);
    protect(A, 1);
    return spi;
}

void test_loop(void) {
    /* two dataplanes, each with a fake TUN (a datagram socketpair) and a UDP socket on loopback */
    int tunA[2], tunB[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunB) != 0);
    uint16_t pa, pb;
    int ua = udp_bound(&pa), ub = udp_bound(&pb);
    ts_dp *A = ts_dp_new(), *B = ts_dp_new();
    FATAL_IF(!A || !B);
    uint8_t key[20];
    uint32_t spi = loopback_sa_pair(A, B, pa, pb, 1024, key);
    ts_sa_params p;
    ts_dp_set_tunnel_mtu(A, 1400);
    CHECK(ts_dp_set_fds(A, tunA[0], ua, -1) == TS_OK);
    CHECK(ts_dp_set_fds(B, tunB[0], ub, -1) == TS_OK);
    pthread_t ta, tb;
    FATAL_IF(pthread_create(&ta, NULL, run_thread, A) != 0);
    FATAL_IF(pthread_create(&tb, NULL, run_thread, B) != 0);
    for (int i = 0; i < 300; i++) {
        size_t len = make_inner(i % 2 ? 4 : 6, rnd_below(1300), i % 3 == 0, bufA);
        FATAL_IF(send(tunA[1], bufA, len, 0) != (ssize_t)len);
        ssize_t r = recv_wait(tunB[1], bufC, sizeof(bufC));
        CHECK(r == (ssize_t)len && memcmp(bufC, bufA, len) == 0);
    }
    /* too big: the ICMP comes back into A's TUN */
    size_t len = make_inner(4, 1472, true, bufA);
    FATAL_IF(send(tunA[1], bufA, len, 0) != (ssize_t)len);
    ssize_t r = recv_wait(tunA[1], bufC, sizeof(bufC));
    CHECK(r >= 28 && bufC[9] == 1 && bufC[20] == 3 && bufC[21] == 4);
    /* garbage, junk after the marker and a keepalive at B's UDP port are dropped and counted,
     * IKE (a whole header after the marker) becomes an event */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(pb)};
    uint64_t before = drop_sum(B, NULL), malformed0 = drop_count(B, TS_DROP_MALFORMED);
    FATAL_IF(sendto(ua, "\xff", 1, 0, (struct sockaddr *)&to, sizeof(to)) != 1);
    FATAL_IF(sendto(ua, "\0\0\0\0ike", 7, 0, (struct sockaddr *)&to, sizeof(to)) != 7);
    uint8_t ike[4 + 28];
    put32(ike, 0);
    ike_hdr(ike + 4, 28, 28);
    FATAL_IF(sendto(ua, ike, sizeof(ike), 0, (struct sockaddr *)&to, sizeof(to)) != sizeof(ike));
    rnd_fill(bufA, 100);
    FATAL_IF(sendto(ua, bufA, 100, 0, (struct sockaddr *)&to, sizeof(to)) != 100);
    struct pollfd pf = {.fd = ts_dp_event_fd(B), .events = POLLIN};
    CHECK(poll(&pf, 1, 10000) == 1);
    ts_event ev;
    uint8_t data[64];
    CHECK(ts_dp_next_event(B, &ev, data, sizeof(data)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 28 &&
          memcmp(data, ike + 4, 28) == 0 && ev.addr.family == 4 && ev.addr.port == pa);
    /* B's socket is bound to 127.0.0.1: that is where it arrived */
    CHECK(ev.local.family == 4 && ev.local.addr[0] == 127 && ev.local.addr[3] == 1 && ev.local.port == pb);
    /* a control change while the loop runs, then one more packet through */
    ts_addr to_b = {.family = 4, .addr = {127, 0, 0, 1}, .port = pb};
    CHECK(ts_sad_delete(A, spi, TS_DIR_OUT, &to_b) == TS_OK);
    params(&p, spi, TS_DIR_OUT, key, 20, false, 0, 1000);
    p.remote.addr[0] = 127; p.remote.addr[1] = 0; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    p.remote.port = pb;
    CHECK(ts_sad_add(A, &p) == TS_OK);
    len = make_inner(4, 50, false, bufA);
    FATAL_IF(send(tunA[1], bufA, len, 0) != (ssize_t)len);
    r = recv_wait(tunB[1], bufC, sizeof(bufC));
    CHECK(r == (ssize_t)len && memcmp(bufC, bufA, len) == 0);
    ts_dp_stop(A);
    ts_dp_stop(B);
    void *ra, *rb;
    pthread_join(ta, &ra);
    pthread_join(tb, &rb);
    CHECK((intptr_t)ra == TS_OK && (intptr_t)rb == TS_OK);
    /* the keepalive, the junk and the garbage were processed before the IKE event's successor packet */
    uint64_t per[TS_DROP__COUNT];
    CHECK(drop_sum(B, per) - before == 3 && per[TS_DROP_MALFORMED] - malformed0 >= 1);
    ts_sa_info info;
    CHECK(ts_sad_get(B, spi, TS_DIR_IN, NULL, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 301);
    ts_dp_free(A);
    ts_dp_free(B);
    close(tunA[0]); close(tunA[1]); close(tunB[0]); close(tunB[1]);
    close(ua);
    close(ub);
}

/* ---- 10. two loop threads sharing one SA ---------------------------------------------- */
typedef struct queue_run {
    ts_dp *dp;
    int queue;
} queue_run;

static void *run_queue_thread(void *arg) {
    queue_run *q = arg;
    return (void *)(intptr_t)ts_dp_run_queue(q->dp, q->queue);
}

void test_loop_two_queues(void) {
    /* A: two queues (two fake TUN queues, two UDP sockets) sealing with one SA's
     * sequence numbers from two threads; B: one queue opening all of them */
    int tunA0[2], tunA1[2], tunB[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA0) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA1) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunB) != 0);
    uint16_t pa0, pa1, pb;
    int ua0 = udp_bound(&pa0), ua1 = udp_bound(&pa1), ub = udp_bound(&pb);
    int big = 4 << 20;
    setsockopt(ub, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    ts_dp *A = ts_dp_new(), *B = ts_dp_new();
    FATAL_IF(!A || !B);
    uint8_t key[20];
    uint32_t spi = loopback_sa_pair(A, B, pa0, pb, 4096, key);
    CHECK(ts_dp_set_fds(A, tunA0[0], ua0, -1) == TS_OK);
    CHECK(ts_dp_add_queue(A, tunA1[0], ua1, -1) == 1);
    CHECK(ts_dp_set_fds(B, tunB[0], ub, -1) == TS_OK);
    queue_run qa0 = {A, 0}, qa1 = {A, 1}, qb = {B, 0};
    pthread_t t0, t1, tb;
    FATAL_IF(pthread_create(&t0, NULL, run_queue_thread, &qa0) != 0);
    FATAL_IF(pthread_create(&t1, NULL, run_queue_thread, &qa1) != 0);
    FATAL_IF(pthread_create(&tb, NULL, run_queue_thread, &qb) != 0);
    /* bursts of 8 (a unix datagram socket queues only ~10): both threads busy at once */
    enum { N = 400, BURST = 8 };
    int got = 0;
    for (int i = 0; i < N; i += BURST) {
        for (int k = 0; k < BURST; k++) {
            size_t len = make_inner(4, 200 + (size_t)(i + k), false, bufA);
            FATAL_IF(send(k % 2 ? tunA1[1] : tunA0[1], bufA, len, 0) != (ssize_t)len);
        }
        for (int k = 0; k < BURST && recv_wait(tunB[1], bufC, sizeof(bufC)) > 0; k++)
            got++;
    }
    CHECK(got == N);   /* every packet through, whatever order the two threads sent them in */
    ts_dp_stop(A);
    ts_dp_stop(B);
    void *r0, *r1, *rb;
    pthread_join(t0, &r0);
    pthread_join(t1, &r1);
    pthread_join(tb, &rb);
    CHECK((intptr_t)r0 == TS_OK && (intptr_t)r1 == TS_OK && (intptr_t)rb == TS_OK);
    ts_sa_info info;
    ts_addr to_b = {.family = 4, .addr = {127, 0, 0, 1}, .port = pb};
    CHECK(ts_sad_get(A, spi, TS_DIR_OUT, &to_b, &info) == TS_OK && info.seq == N && info.counters[TS_CTR_PACKETS] == N);
    CHECK(ts_sad_get(B, spi, TS_DIR_IN, NULL, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == N && info.counters[TS_CTR_REPLAY_DROPS] == 0);
    ts_dp_free(A);
    ts_dp_free(B);
    int fds[] = {tunA0[0], tunA0[1], tunA1[0], tunA1[1], tunB[0], tunB[1], ua0, ua1, ub};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
}
