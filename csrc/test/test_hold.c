/* Packets that wait for their SA (hold.c, start_action = trap): the hold on
 * its own, a policy deleted while packets wait, and the loop with a trap
 * policy. */
#include "selftest.h"

/* ---- 11. packets that wait for their SA (start_action = trap) -------------------------- */
void test_hold_unit(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_hold *h = ts_hold_new(NULL, NULL);
    FATAL_IF(!h);
    uint64_t d[TS_DROP__COUNT];
    CHECK(h->buf == NULL);   /* no packet buffer until a packet waits (a policy per client) */
    /* count cap: 10 pushed, the 2 oldest dropped and counted, the rest in order */
    for (uint8_t i = 0; i < 10; i++) {
        memset(bufA, i, 100);
        CHECK(ts_hold_push(dp, h, bufA, 100, 1000 + i));
    }
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_FULL] == 2 && ts_hold_count(h) == TS_HOLD_PKTS);
    for (uint8_t i = 2; i < 10; i++)
        CHECK(ts_hold_pop(dp, h, bufB, CAP, 2000, NULL) == 100 && bufB[0] == i && bufB[99] == i);
    CHECK(ts_hold_pop(dp, h, bufB, CAP, 2000, NULL) == 0);
    CHECK(h->buf == NULL);   /* emptied: the buffer is given back */
    /* byte cap: three 30000-byte packets do not fit in 64 KiB: the first goes */
    for (uint8_t i = 0; i < 3; i++) {
        memset(bufA, 0x40 + i, 30000);
        CHECK(ts_hold_push(dp, h, bufA, 30000, 3000));
    }
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_FULL] == 3 && ts_hold_count(h) == 2 && h->used == 60000);
    CHECK(ts_hold_pop(dp, h, bufB, CAP, 3000, NULL) == 30000 && bufB[0] == 0x41 && bufB[29999] == 0x41);
    /* too big for any hold: not held, the caller drops it as before */
    CHECK(!ts_hold_push(dp, h, bufA, TS_HOLD_BYTES + 1, 3000));
    /* negotiation failed: nothing binds, the packet times out, counted, never sent */
    CHECK(ts_hold_push(dp, h, bufA, 64, 5000));
    CHECK(ts_hold_pop(dp, h, bufB, CAP, 5000 + TS_HOLD_TIMEOUT_NS + 1, NULL) == 0);
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_TIMEOUT] == 2 && ts_hold_count(h) == 0 && h->buf == NULL);
    CHECK(d[TS_DROP_NO_SA] == 0);
    ts_hold_free(dp, h);
    ts_dp_free(dp);
}

static uint64_t policy_packets(ts_dp *dp, uint32_t id) {
    ts_policy_info pi[8];
    size_t n = ts_spd_list(dp, pi, 8);
    for (size_t i = 0; i < n; i++)
        if (pi[i].id == id)
            return pi[i].packets;
    return 0;
}

void test_hold_loop(void) {
    /* A has a trap policy (a PROTECT policy whose reqid no SA ever gets): the
     * packets wait, ACQUIRE goes up.  Then, as the IKE side does it, the SA is
     * added (nothing binds to the trap: the packets wait again) and the child's
     * own policy after it: the packets arrive at B, in order. */
    int tunA[2], tunB[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunA) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tunB) != 0);
    uint16_t pa, pb;
    int ua = udp_bound(&pa), ub = udp_bound(&pb);
    ts_dp *A = ts_dp_new(), *B = ts_dp_new();
    FATAL_IF(!A || !B);
    ts_policy trap;
    memset(&trap, 0, sizeof(trap));
    trap.action = TS_ACT_PROTECT;
    trap.reqid = 99;
    trap.priority = 20;
    trap.id = 7;
    sel_net(&trap.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(A, &trap) == TS_OK);
    CHECK(ts_dp_set_fds(A, tunA[0], ua, -1) == TS_OK);
    CHECK(ts_dp_set_fds(B, tunB[0], ub, -1) == TS_OK);
    pthread_t ta, tb;
    FATAL_IF(pthread_create(&ta, NULL, run_thread, A) != 0);
    FATAL_IF(pthread_create(&tb, NULL, run_thread, B) != 0);
    enum { N = 3 };
    uint8_t sent[N][200];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        lens[i] = make_inner(4, 60 + (size_t)i, false, sent[i]);
        FATAL_IF(send(tunA[1], sent[i], lens[i], 0) != (ssize_t)lens[i]);
    }
    struct pollfd pf = {.fd = ts_dp_event_fd(A), .events = POLLIN};
    CHECK(poll(&pf, 1, 10000) == 1);
    ts_event ev;
    CHECK(ts_dp_next_event(A, &ev, bufC, sizeof(bufC)) == 1 && ev.type == TS_EV_ACQUIRE && ev.policy_id == 7);
    for (int w = 0; w < 1000 && policy_packets(A, 7) < N; w++)
        usleep(10000);
    CHECK(policy_packets(A, 7) == N);
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(A, d);
    CHECK(d[TS_DROP_NO_SA] == 0 && d[TS_DROP_HOLD_FULL] == 0);
    /* nothing left A yet */
    CHECK(recv(tunB[1], bufC, sizeof(bufC), MSG_DONTWAIT) < 0);
    uint8_t key[20];
    rnd_fill(key, 20);
    uint32_t spi = 0;
    CHECK(ts_sad_getspi(B, 256, 0xffffffffu, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, key, 20, false, 64, 0);
    addr4(&p.remote, 0, pa);
    p.remote.addr[0] = 127; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    CHECK(ts_sad_update(B, &p) == TS_OK);
    params(&p, spi, TS_DIR_OUT, key, 20, false, 0, 0);
    addr4(&p.remote, 0, pb);
    p.remote.addr[0] = 127; p.remote.addr[2] = 0; p.remote.addr[3] = 1;
    CHECK(ts_sad_add(A, &p) == TS_OK);
    /* the SA alone does not let them out: they take the trap policy again and wait */
    for (int w = 0; w < 1000 && policy_packets(A, 7) < 2 * N; w++)
        usleep(10000);
    CHECK(policy_packets(A, 7) == 2 * N);
    CHECK(recv(tunB[1], bufC, sizeof(bufC), MSG_DONTWAIT) < 0);
    protect(A, 1);   /* the child's policy, bound to the SA at once */
    for (int i = 0; i < N; i++) {
        ssize_t r = recv_wait(tunB[1], bufC, sizeof(bufC));
        CHECK(r == (ssize_t)lens[i] && memcmp(bufC, sent[i], lens[i]) == 0);
    }
    ts_dp_stop(A);
    ts_dp_stop(B);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ts_sa_info info;
    CHECK(ts_sad_get(A, spi, TS_DIR_OUT, &p.remote, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == N);
    ts_dp_drops(A, d);
    CHECK(d[TS_DROP_NO_SA] == 0 && d[TS_DROP_HOLD_TIMEOUT] == 0);
    ts_dp_free(A);
    ts_dp_free(B);
    int fds[] = {tunA[0], tunA[1], tunB[0], tunB[1], ua, ub};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
}

void test_hold_policy_gone(void) {
    /* a policy deleted while packets wait: they are dropped and counted */
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    protect(dp, 1);
    ts_spd_entry *e = &dp->spd.v[0];
    CHECK(ts_hold_push(dp, e->hold, bufA, 40, ts_now_ns()));
    CHECK(ts_spd_delete(dp, e->pol.id) == TS_OK);
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_HOLD_TIMEOUT] == 1);
    ts_dp_free(dp);
}
