/* What the SPD's upkeep walks (h/fixspd2, review revspd R1 and R2): a held packet's retry visits
 * the holds that have packets, not every policy; deletes alone give the dead slots back. */
#include "selftest.h"

/* a client's policy (harness.c), PROTECT with a reqid of its own when asked */
static ts_policy one_dst(uint32_t id, uint32_t n, uint8_t action) {
    ts_policy p = client_policy(id, n);
    p.action = action;
    p.reqid = action == TS_ACT_PROTECT ? 1000 + n : 0;
    return p;
}

#define HELD_CLIENTS 2000u
#define HELD_CHANGES 16u

/* One packet waits at a trap whose SA never comes, next to HELD_CLIENTS clients' PROTECT
 * policies (each with a hold, all empty); every policy change kicks the loops, whose pass
 * must take that one hold, not walk HELD_CLIENTS + 1 (on main: every slot, each hold's mutex
 * taken under the read lock, ~0.47 ms at 50,000 policies). */
void test_spd_held_pass_visits(void) {
    int tun[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tun) != 0);
    uint16_t port;
    int udp = udp_bound(&port);
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    for (uint32_t n = 0; n < HELD_CLIENTS; n++) {
        ts_policy p = one_dst(100 + n, n, TS_ACT_PROTECT);
        FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    }
    ts_policy trap = {.id = 7, .priority = 20, .action = TS_ACT_PROTECT, .reqid = 99};
    sel_net(&trap.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(dp, &trap) == TS_OK);
    CHECK(ts_dp_set_fds(dp, tun[0], udp, -1) == TS_OK);
    pthread_t t;
    FATAL_IF(pthread_create(&t, NULL, run_thread, dp) != 0);
    uint8_t pkt[200];
    size_t len = make_inner(4, 60, false, pkt);
    FATAL_IF(send(tun[1], pkt, len, 0) != (ssize_t)len);
    for (int w = 0; w < 1000 && atomic_load(&dp->spd.held) < 1; w++)
        usleep(10000);
    CHECK(atomic_load(&dp->spd.held) == 1);
    uint64_t passes0 = atomic_load(&dp->spd.busy.passes), visited0 = atomic_load(&dp->spd.busy.visited);
    for (uint32_t c = 0; c < HELD_CHANGES; c++) {
        uint64_t before = atomic_load(&dp->spd.busy.passes);
        ts_policy p = one_dst(10000 + c, 60000 + c, TS_ACT_BYPASS);   /* kicks: a packet waits */
        CHECK(ts_spd_add(dp, &p) == TS_OK);
        for (int w = 0; w < 1000 && atomic_load(&dp->spd.busy.passes) == before; w++)
            usleep(10000);
    }
    uint64_t passes = atomic_load(&dp->spd.busy.passes) - passes0;
    uint64_t visited = atomic_load(&dp->spd.busy.visited) - visited0;
    CHECK(passes >= HELD_CHANGES);
    CHECK(visited <= passes);   /* the one hold with a packet, once a pass */
    if (visited > passes)
        fprintf(stderr, "held pass: %llu passes visited %llu holds\n", (unsigned long long)passes,
                (unsigned long long)visited);
    /* it went round and waits again: once the last pass is over (passes counts a pass as it begins,
     * and the packet is out of its hold while the pass runs it through the SPD) */
    for (int w = 0; w < 1000 && atomic_load(&dp->spd.held) != 1; w++)
        usleep(10000);
    CHECK(atomic_load(&dp->spd.held) == 1);
    ts_dp_stop(dp);
    pthread_join(t, NULL);
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_NO_SA] == 0);
    ts_dp_free(dp);
    close(tun[0]);
    close(tun[1]);
    close(udp);
}

#define LEAVE_ALL 1000u
#define LEAVE_STAY 10u

/* Clients leave (deletes alone, no addition to compact on): the dead slots go once they
 * outnumber the live, and every lookup after gives the ordered scan's answer (on main used
 * stayed at 1,000 + the ranges). */
void test_spd_delete_compacts(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    for (uint32_t n = 0; n < LEAVE_ALL; n++) {
        ts_policy p = one_dst(1 + n, n, TS_ACT_BYPASS);
        if (n % 10 == 0) {   /* every tenth a range: the range chain survives the compactions */
            p.priority = 100 + n % 7;
            p.sel.dst_lo[3] = 0;
            p.sel.dst_hi[3] = 0x7f;
        }
        FATAL_IF(ts_spd_add(dp, &p) != TS_OK);
    }
    for (uint32_t n = LEAVE_STAY; n < LEAVE_ALL; n++)
        CHECK(ts_spd_delete(dp, 1 + n) == TS_OK);
    CHECK(ts_spd_count(dp) == LEAVE_STAY);
    CHECK(dp->spd.used <= 2 * LEAVE_STAY + 64);
    if (dp->spd.used > 2 * LEAVE_STAY + 64)
        fprintf(stderr, "deletes: %zu slots used for %u policies\n", dp->spd.used, LEAVE_STAY);
    CHECK(dp->spd.nrange == 1);   /* policy 1 (n = 0) is the range among those that stayed */
    for (uint32_t n = 0; n < LEAVE_ALL; n += 3) {
        ts_flow f = {.family = 4, .proto = 6, .sport = 1, .dport = 2,
                     .dst = {100, 64, (uint8_t)(n >> 8), (uint8_t)n}};
        pthread_rwlock_rdlock(&dp->lock);
        CHECK(ts_spd_find(&dp->spd, &f) == ts_spd_lookup(&dp->spd, &f));
        pthread_rwlock_unlock(&dp->lock);
    }
    for (uint32_t n = 0; n < LEAVE_STAY; n++)
        CHECK(ts_spd_delete(dp, 1 + n) == TS_OK);
    CHECK(ts_spd_count(dp) == 0 && dp->spd.nrange == 0);
    ts_dp_free(dp);
}

#define TWO_HOLDS 8u

struct kicker {
    ts_dp *dp;
    uint32_t changes;
};

/* policy changes while packets wait: each kicks the loops */
static void *kick_changes(void *arg) {
    struct kicker *k = arg;
    for (uint32_t c = 0; c < k->changes; c++) {
        ts_policy p = client_policy(20000 + c, c);
        CHECK(ts_spd_add(k->dp, &p) == TS_OK);
        CHECK(ts_spd_delete(k->dp, p.id) == TS_OK);
    }
    return NULL;
}

static void *run_queue1(void *arg) {
    return (void *)(intptr_t)ts_dp_run_queue((ts_dp *)arg, 1);
}

/* Two loop threads, TWO_HOLDS holds with a packet each (sent through both TUN queues), a
 * thread changing policies meanwhile (kicks that find a pass running are served by another
 * pass, one pass at a time): when the SA comes, every held packet leaves as ESP, none lost or
 * sent twice (under TSan: the holds' list, its lock order and the pass lock). */
void test_spd_held_two_loops(void) {
    int tun0[2], tun1[2];
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tun0) != 0);
    FATAL_IF(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, tun1) != 0);
    uint16_t p0, p1, pp;
    int u0 = udp_bound(&p0), u1 = udp_bound(&p1), peer = udp_bound(&pp);
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    for (uint32_t k = 0; k < TWO_HOLDS; k++) {   /* a trap per destination 10.2.0.10 + k */
        ts_policy t = {.id = 100 + k, .priority = 20, .action = TS_ACT_PROTECT, .reqid = 1};
        sel_net(&t.sel, 4, A4, B4, 3);
        t.sel.dst_lo[3] = t.sel.dst_hi[3] = (uint8_t)(10 + k);
        CHECK(ts_spd_add(dp, &t) == TS_OK);
    }
    CHECK(ts_dp_set_fds(dp, tun0[0], u0, -1) == TS_OK);
    CHECK(ts_dp_add_queue(dp, tun1[0], u1, -1) == 1);
    pthread_t t0, t1, tk;
    FATAL_IF(pthread_create(&t0, NULL, run_thread, dp) != 0);
    FATAL_IF(pthread_create(&t1, NULL, run_queue1, dp) != 0);
    for (uint32_t k = 0; k < TWO_HOLDS; k++) {
        uint8_t pkt[200];
        size_t len = make_inner(4, 60 + k, false, pkt);
        pkt[19] = (uint8_t)(10 + k);
        pkt[10] = pkt[11] = 0;
        uint16_t c = csum(pkt, 20);
        pkt[10] = (uint8_t)(c >> 8);
        pkt[11] = (uint8_t)c;
        FATAL_IF(send((k & 1 ? tun1 : tun0)[1], pkt, len, 0) != (ssize_t)len);
    }
    for (int w = 0; w < 1000 && atomic_load(&dp->spd.held) < TWO_HOLDS; w++)
        usleep(10000);
    CHECK(atomic_load(&dp->spd.held) == TWO_HOLDS);
    struct kicker k = {.dp = dp, .changes = 300};
    FATAL_IF(pthread_create(&tk, NULL, kick_changes, &k) != 0);
    pthread_join(tk, NULL);
    /* still waiting, no SA (a pass may have one out of its hold for a moment) */
    for (int w = 0; w < 1000 && atomic_load(&dp->spd.held) < TWO_HOLDS; w++)
        usleep(10000);
    CHECK(atomic_load(&dp->spd.held) == TWO_HOLDS);
    uint8_t key[20];
    rnd_fill(key, 20);
    ts_sa_params sa;
    params(&sa, 0x3001, TS_DIR_OUT, key, 20, false, 0, 0);
    addr4(&sa.remote, 0, pp);
    sa.remote.addr[0] = 127; sa.remote.addr[2] = 0; sa.remote.addr[3] = 1;
    CHECK(ts_sad_add(dp, &sa) == TS_OK);   /* binds the traps (reqid 1): the packets go */
    for (uint32_t n = 0; n < TWO_HOLDS; n++)
        CHECK(recv_wait(peer, bufC, sizeof(bufC)) > 60);
    CHECK(recv(peer, bufC, sizeof(bufC), MSG_DONTWAIT) < 0);   /* none twice */
    CHECK(atomic_load(&dp->spd.held) == 0);
    CHECK(atomic_load(&dp->spd.busy.visited) <= TWO_HOLDS * atomic_load(&dp->spd.busy.passes));
    ts_dp_stop(dp);
    pthread_join(t0, NULL);
    pthread_join(t1, NULL);
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(dp, d);
    CHECK(d[TS_DROP_NO_SA] == 0 && d[TS_DROP_HOLD_TIMEOUT] == 0 && d[TS_DROP_HOLD_FULL] == 0);
    ts_dp_free(dp);
    int fds[] = {tun0[0], tun0[1], tun1[0], tun1[1], u0, u1, peer};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
}
