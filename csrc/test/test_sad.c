/* The SAD and SPD API (sad.c, spd.c, events.c): FIRST_USE reports, API
 * errors, two peers with one outbound SPI, migration, lifetimes and the event
 * queue, and the key wipe every freed SA goes through. */
#include "selftest.h"

/* ---- 5c. FIRST_USE: the first authenticated packet on an armed inbound SA ---- */
void test_first_use(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);   /* its IN SA is not armed: never reports */
    size_t len = make_inner(4, 10, false, bufA), icmp;
    int drop;
    int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
    CHECK(n > 0 && in1(pr.rx, bufB, (size_t)n, bufC, &drop) == (int)len);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);

    uint32_t spi;
    CHECK(ts_sad_getspi(pr.rx, 0x6000, 0x6000, &spi) == TS_OK);
    ts_sa_params p;
    params(&p, spi, TS_DIR_IN, pr.key, 20, false, 64, 0);
    p.report_first_use = 2;
    CHECK(ts_sad_update(pr.rx, &p) == TS_EINVAL);
    p.report_first_use = 1;
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    params(&p, spi, TS_DIR_OUT, pr.key, 20, false, 0, 0);
    p.report_first_use = 1;
    CHECK(ts_sad_add(pr.tx, &p) == TS_EINVAL);   /* what we send proves nothing */
    /* a forgery raises nothing */
    size_t el = ref_seal(pr.key, 20, spi, 1, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    bufB[el - 1] ^= 1;
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_AUTH);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);
    /* the first authentic packet raises it once, with the SA's SPI */
    el = ref_seal(pr.key, 20, spi, 1, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    ts_event ev;
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, &ev) == 1 && ev.spi == spi && ev.dir == TS_DIR_IN);
    el = ref_seal(pr.key, 20, spi, 2, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);

    /* a full event queue loses the report: the next packet makes it again */
    CHECK(ts_sad_getspi(pr.rx, 0x6001, 0x6001, &spi) == TS_OK);
    params(&p, spi, TS_DIR_IN, pr.key, 20, false, 64, 0);
    p.report_first_use = 1;
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    ts_event filler = {.type = TS_EV_ACQUIRE};
    while (ts_events_push(&pr.rx->events, &filler, NULL, 0))
        ;
    uint64_t full_before = drop_count(pr.rx, TS_DROP_QUEUE_FULL);
    el = ref_seal(pr.key, 20, spi, 1, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len);   /* the packet itself goes through */
    CHECK(drop_count(pr.rx, TS_DROP_QUEUE_FULL) == full_before + 1);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, NULL) == 0);
    el = ref_seal(pr.key, 20, spi, 2, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len);
    CHECK(count_events(pr.rx, TS_EV_FIRST_USE, &ev) == 1 && ev.spi == spi);
    pair_free(&pr);
}

/* several threads open the first packets of many armed SAs at once: one report per SA */
#define FU_SAS 32
#define FU_THREADS 4
#define FU_PKTS 6
#define FU_LEN 128
struct fu_thread {
    ts_dp *dp;
    unsigned slot;
    uint8_t pkt[FU_SAS][FU_PKTS][FU_LEN];
    size_t len[FU_SAS][FU_PKTS];
    int accepted;
};
static void *fu_worker(void *arg) {
    struct fu_thread *t = arg;
    static _Thread_local uint8_t out[512];
    ts_set_thread_slot(t->slot);   /* a loop thread's own cipher contexts, as in ts_dp_run_queue */
    ts_addr src;
    addr4(&src, 1, 4500);
    for (int k = 0; k < FU_PKTS; k++)
        for (int i = 0; i < FU_SAS; i++) {
            int drop;
            if (ts_dp_inbound(t->dp, t->pkt[i][k], t->len[i][k], &src, NULL, out, sizeof(out), &drop) > 0)
                t->accepted++;
        }
    ts_set_thread_slot(0);
    return NULL;
}

void test_first_use_threads(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    uint32_t spis[FU_SAS];
    for (int i = 0; i < FU_SAS; i++) {
        ts_sa_params p;
        CHECK(ts_sad_getspi(dp, 0x7000, 0x7fff, &spis[i]) == TS_OK);
        params(&p, spis[i], TS_DIR_IN, key, 20, false, 1024, 0);
        p.report_first_use = 1;
        CHECK(ts_sad_update(dp, &p) == TS_OK);
    }
    static struct fu_thread th[FU_THREADS];
    static uint8_t inner[FU_LEN];
    size_t len = make_inner(4, 10, false, inner);
    for (int t = 0; t < FU_THREADS; t++) {
        th[t].dp = dp;
        th[t].slot = (unsigned)t + 1;
        th[t].accepted = 0;
        for (int i = 0; i < FU_SAS; i++)
            for (int k = 0; k < FU_PKTS; k++) {   /* every thread its own sequence numbers */
                uint64_t seq = (uint64_t)t * FU_PKTS + (uint64_t)k + 1;
                th[t].len[i][k] = ref_seal(key, 20, spis[i], seq, false, NULL, inner, len, min_pad(len), NULL,
                                           4, th[t].pkt[i][k]);
                FATAL_IF(th[t].len[i][k] > FU_LEN);
            }
    }
    pthread_t tid[FU_THREADS];
    for (int t = 0; t < FU_THREADS; t++)
        FATAL_IF(pthread_create(&tid[t], NULL, fu_worker, &th[t]) != 0);
    int accepted = 0;
    for (int t = 0; t < FU_THREADS; t++) {
        pthread_join(tid[t], NULL);
        accepted += th[t].accepted;
    }
    CHECK(accepted == FU_SAS * FU_THREADS * FU_PKTS);
    int reports[FU_SAS] = {0}, events = 0, stray = 0;
    ts_event ev;
    while (ts_dp_next_event(dp, &ev, bufC, sizeof(bufC)) == 1) {
        if (ev.type != TS_EV_FIRST_USE) {
            stray++;
            continue;
        }
        events++;
        for (int i = 0; i < FU_SAS; i++)
            if (spis[i] == ev.spi)
                reports[i]++;
    }
    CHECK(events == FU_SAS && stray == 0);
    for (int i = 0; i < FU_SAS; i++)
        CHECK(reports[i] == 1);
    ts_dp_free(dp);
}

/* ---- 6. SAD / SPD API errors ------------------------------------------------------ */
void test_sad_errors(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint32_t spi = 0, s2;
    uint8_t key[20] = {1};
    ts_sa_params p;
    CHECK(ts_sad_getspi(dp, 0x1000, 0x1000, &spi) == TS_OK && spi == 0x1000);
    CHECK(ts_sad_getspi(dp, 0x1000, 0x1000, &s2) == TS_ENOSPC);
    CHECK(ts_sad_getspi(dp, 10, 5, &s2) == TS_EINVAL);
    params(&p, 0x1000, TS_DIR_IN, key, 20, false, 31, 0);
    CHECK(ts_sad_update(dp, &p) == TS_EINVAL);
    params(&p, 0x1000, TS_DIR_IN, key, 20, false, 64, 0);
    p.n_sel = TS_MAX_SELECTORS + 1;
    CHECK(ts_sad_update(dp, &p) == TS_EINVAL);
    params(&p, 0x1000, TS_DIR_IN, key, 20, false, 64, 0);
    CHECK(ts_sad_update(dp, &p) == TS_OK);
    CHECK(ts_sad_update(dp, &p) == TS_ESTATE);
    p.spi = 0x2000;
    CHECK(ts_sad_update(dp, &p) == TS_ENOENT);
    params(&p, 0x3000, TS_DIR_OUT, key, 20, false, 0, 0);
    CHECK(ts_sad_add(dp, &p) == TS_OK);
    CHECK(ts_sad_add(dp, &p) == TS_EEXIST);
    p.keylen = 21;
    CHECK(ts_sad_add(dp, &p) == TS_EINVAL);
    CHECK(ts_sad_count(dp) == 2);
    ts_sa_info infos[4];
    CHECK(ts_sad_list(dp, infos, 4) == 2);
    CHECK(ts_sad_list(dp, infos, 1) == 1);
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, NULL) == TS_EINVAL);    /* an OUT SA needs its peer */
    CHECK(ts_sad_delete(dp, 0x1000, TS_DIR_IN, &PEER) == TS_EINVAL);   /* an IN SA is named by SPI alone */
    CHECK(ts_sad_get(dp, 0x3000, TS_DIR_OUT, NULL, infos) == TS_EINVAL);
    ts_addr other = PEER;
    other.port = 4501;
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, &other) == TS_ENOENT);   /* same SPI, another peer */
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, &PEER) == TS_OK);
    CHECK(ts_sad_delete(dp, 0x3000, TS_DIR_OUT, &PEER) == TS_ENOENT);
    CHECK(ts_sad_delete(dp, 0x1000, 7, NULL) == TS_EINVAL);
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.action = 9;
    sel_net(&pol.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(dp, &pol) == TS_EINVAL);
    pol.action = TS_ACT_BYPASS;
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
    CHECK(ts_spd_add(dp, &pol) == TS_EEXIST);
    for (uint32_t i = 1; i < 100; i++) {   /* grow the SPD past its first allocation */
        pol.id = i;
        pol.priority = (uint32_t)rnd_below(5);
        CHECK(ts_spd_add(dp, &pol) == TS_OK);
    }
    ts_policy_info pinfo[128];
    size_t np = ts_spd_list(dp, pinfo, 128);
    CHECK(np == 100);
    for (size_t i = 1; i < np; i++)
        CHECK(pinfo[i - 1].priority <= pinfo[i].priority);
    CHECK(ts_spd_delete(dp, 50) == TS_OK && ts_spd_delete(dp, 50) == TS_ENOENT);
    ts_sad_flush(dp);
    ts_spd_flush(dp);
    CHECK(ts_sad_count(dp) == 0 && ts_spd_list(dp, pinfo, 128) == 0);
    /* many SAs: the hash table grows */
    for (int i = 0; i < 5000; i++)
        CHECK(ts_sad_getspi(dp, 256, 0xffffffffu, &spi) == TS_OK);
    CHECK(ts_sad_count(dp) == 5000);
    ts_dp_free(dp);
}

/* ---- 6a. two peers chose the same outbound SPI ------------------------------------
 * Each has its own SA (own key, own reqid and policy); each SA seals for its own
 * peer only, and deleting one leaves the other working. */
void test_shared_out_spi(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    static const uint8_t C4[4] = {10, 3, 0, 1};
    const uint32_t spi = 0xc0ffee01;
    uint8_t key[2][20];
    ts_addr peer[2] = {PEER, PEER};
    peer[1].addr[3] = 3;
    for (int i = 0; i < 2; i++) {
        rnd_fill(key[i], 20);
        ts_sa_params p;
        params(&p, spi, TS_DIR_OUT, key[i], 20, false, 0, 0);
        p.remote = peer[i];
        p.reqid = 10 + (uint32_t)i;
        p.n_sel = 1;
        sel_net(&p.sel[0], 4, A4, i == 0 ? B4 : C4, 3);
        CHECK(ts_sad_add(dp, &p) == TS_OK);
        CHECK(ts_sad_add(dp, &p) == TS_EEXIST);   /* the same (SPI, peer) twice */
        ts_policy pol;
        memset(&pol, 0, sizeof(pol));
        pol.id = 100 + (uint32_t)i;
        pol.action = TS_ACT_PROTECT;
        pol.reqid = p.reqid;
        sel_net(&pol.sel, 4, A4, i == 0 ? B4 : C4, 3);
        CHECK(ts_spd_add(dp, &pol) == TS_OK);
    }
    CHECK(ts_sad_count(dp) == 2);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2; i++) {
            size_t len = make_inner(4, 20, false, bufA), icmp;
            if (i == 1)
                memcpy(bufA + 16, C4, 4);   /* to site C; the checksum does not matter here */
            ts_addr dst;
            int drop;
            int n = ts_dp_outbound(dp, bufA, len, bufB, CAP, &dst, &drop, &icmp);
            if (round == 1 && i == 1) {   /* its SA is gone: nothing goes anywhere */
                CHECK(n == 0 && drop == TS_DROP_NO_SA);
                continue;
            }
            CHECK(n > 0 && drop == TS_DROP_NONE && get32(bufB) == spi);
            CHECK(dst.family == 4 && memcmp(dst.addr, peer[i].addr, 4) == 0);
            uint8_t nh;
            CHECK(ref_open(key[i], 20, false, 0, bufB, (size_t)n, bufC, &nh) == (long)len);
            CHECK(ref_open(key[1 - i], 20, false, 0, bufB, (size_t)n, bufC, &nh) < 0);
        }
        if (round == 0)
            CHECK(ts_sad_delete(dp, spi, TS_DIR_OUT, &peer[1]) == TS_OK);
    }
    ts_sa_info info;
    CHECK(ts_sad_get(dp, spi, TS_DIR_OUT, &peer[0], &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 2 && info.reqid == 10);
    CHECK(ts_sad_get(dp, spi, TS_DIR_OUT, &peer[1], &info) == TS_ENOENT);
    ts_dp_free(dp);
}

/* ---- 6a. migrate: NAT rebinding / MOBIKE move a mature SA, keys and numbers kept ---- */
void test_migrate(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    size_t len = make_inner(4, 20, false, bufA), icmp;
    int drop;
    ts_addr dst;
    CHECK(ts_dp_outbound(pr.tx, bufA, len, bufB, CAP, &dst, &drop, &icmp) > 0 && dst.port == PEER.port);
    ts_addr moved = PEER;
    moved.addr[3] = 9;
    moved.port = 40001;
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &moved, NULL) == TS_OK);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_ENOENT);   /* known by its new peer */
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &moved, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 1);
    CHECK(info.remote.port == 40001 && info.remote.addr[3] == 9);
    int n = ts_dp_outbound(pr.tx, bufA, len, bufB, CAP, &dst, &drop, &icmp);
    CHECK(n > 0 && drop == TS_DROP_NONE && get32(bufB + 4) == 2);   /* the sequence goes on */
    CHECK(dst.family == 4 && dst.port == 40001 && memcmp(dst.addr, moved.addr, 4) == 0);
    uint8_t nh;
    CHECK(ref_open(pr.key, 20, false, 0, bufB, (size_t)n, bufC, &nh) == (long)len);   /* same keys */
    /* refused: the old name, a NULL or other-family target, IN named with a peer */
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &moved, NULL) == TS_ENOENT);
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, NULL, NULL) == TS_EINVAL);
    ts_addr v6 = {.family = 6, .port = 4500};
    v6.addr[15] = 1;
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &v6, NULL) == TS_EINVAL);
    ts_addr bad = moved;
    bad.family = 5;
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &bad, NULL) == TS_EINVAL);
    CHECK(ts_sad_migrate(pr.rx, pr.spi, TS_DIR_IN, &PEER, &moved, NULL) == TS_EINVAL);
    /* two peers' SAs with one SPI must stay two: no move onto the other */
    ts_sa_params p;
    params(&p, pr.spi, TS_DIR_OUT, pr.key, 20, false, 0, 0);
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);   /* (spi, PEER) again, a second SA */
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &PEER, NULL) == TS_EEXIST);
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &moved, NULL) == TS_OK);   /* no-op */
    /* IN keeps the peer for NAT-T checks: it moves too; larval SAs do not */
    CHECK(ts_sad_migrate(pr.rx, pr.spi, TS_DIR_IN, NULL, &moved, NULL) == TS_OK);
    CHECK(ts_sad_get(pr.rx, pr.spi, TS_DIR_IN, NULL, &info) == TS_OK && info.remote.port == 40001);
    uint32_t larval;
    CHECK(ts_sad_getspi(pr.rx, 0x6000, 0x6000, &larval) == TS_OK);
    CHECK(ts_sad_migrate(pr.rx, larval, TS_DIR_IN, NULL, &moved, NULL) == TS_ESTATE);
    CHECK(ts_sad_migrate(pr.rx, 0x6001, TS_DIR_IN, NULL, &moved, NULL) == TS_ENOENT);
    pair_free(&pr);
}

/* ---- 6a'. migrate with a new local address (MOBIKE: the peer reaches us at another of our
 * addresses, or we moved while the old address still exists): our end moves too ---- */
void test_migrate_local(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK);
    ts_addr old_local = info.local, moved = PEER, here = info.local;
    moved.addr[3] = 9;
    here.addr[3] = 77;   /* 192.0.2.77: our other address */
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &moved, &here) == TS_OK);
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &moved, &info) == TS_OK);
    CHECK(memcmp(&info.local, &here, sizeof(here)) == 0 && memcmp(&info.remote, &moved, sizeof(moved)) == 0);
    size_t len = make_inner(4, 20, false, bufA), icmp;
    int drop;
    ts_addr dst;
    int n = ts_dp_outbound(pr.tx, bufA, len, bufB, CAP, &dst, &drop, &icmp);
    CHECK(n > 0 && drop == TS_DROP_NONE && get32(bufB + 4) == 1 && dst.addr[3] == 9);
    uint8_t nh;
    CHECK(ref_open(pr.key, 20, false, 0, bufB, (size_t)n, bufC, &nh) == (long)len);   /* same keys */
    /* NULL: our end stays where it is (NAT rebinding of the peer only) */
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &moved, &PEER, NULL) == TS_OK);
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && memcmp(&info.local, &here, sizeof(here)) == 0);
    /* the same move for the inbound SA: its stored local follows */
    CHECK(ts_sad_migrate(pr.rx, pr.spi, TS_DIR_IN, NULL, &moved, &here) == TS_OK);
    CHECK(ts_sad_get(pr.rx, pr.spi, TS_DIR_IN, NULL, &info) == TS_OK && info.local.addr[3] == 77);
    /* refused, nothing changed: a local of another family or none at all; a wildcard is an address */
    ts_addr v6 = {.family = 6, .port = 4500}, bad = here, any = {.family = 4, .port = 4500};
    v6.addr[15] = 1;
    bad.family = 5;
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &PEER, &v6) == TS_EINVAL);
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &PEER, &bad) == TS_EINVAL);
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.local.addr[3] == 77);
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &PEER, &old_local) == TS_OK);   /* and back */
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && memcmp(&info.local, &old_local, sizeof(old_local)) == 0);
    CHECK(ts_sad_migrate(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &PEER, &any) == TS_OK);   /* the route's choice */
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.local.addr[0] == 0);
    pair_free(&pr);
}

/* ---- 6b. lifetimes and the event queue ------------------------------------------- */
void test_lifetimes(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    ts_sa_params p;
    params(&p, 0x7777, TS_DIR_OUT, pr.key, 20, false, 0, 0);
    p.reqid = 2;
    p.soft_packets = 3;
    p.hard_packets = 5;
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.id = 10;
    pol.action = TS_ACT_PROTECT;
    pol.reqid = 2;
    sel_net(&pol.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(pr.tx, &pol) == TS_OK);   /* same priority as policy 1, later: never chosen */
    CHECK(ts_spd_delete(pr.tx, 1) == TS_OK);   /* now it is */
    size_t len = make_inner(4, 12, false, bufA), icmp;
    int drop, soft = 0, hard = 0;
    ts_event ev;
    for (int i = 1; i <= 8; i++) {
        int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
        CHECK((n > 0) == (i <= 5));
        CHECK(drop == (i <= 5 ? TS_DROP_NONE : TS_DROP_LIFETIME));
        while (ts_dp_next_event(pr.tx, &ev, bufC, sizeof(bufC)) == 1) {
            CHECK(ev.type == TS_EV_EXPIRE && ev.spi == 0x7777 && ev.reason == TS_EXP_PACKETS);
            if (ev.hard) {
                hard++;
                CHECK(i == 6);
            } else {
                soft++;
                CHECK(i == 3);
            }
        }
    }
    CHECK(soft == 1 && hard == 1);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, 0x7777, TS_DIR_OUT, &PEER, &info) == TS_OK && info.state == TS_SA_DEAD &&
          info.counters[TS_CTR_PACKETS] == 5 && info.counters[TS_CTR_BYTES] == 5 * len);
    /* removed with its final counters (EXPIRE's LIFETIME_CURRENT): gone after, and named as in delete */
    memset(&info, 0xAA, sizeof(info));
    CHECK(ts_sad_remove(pr.tx, 0x7777, TS_DIR_OUT, NULL, &info) == TS_EINVAL);
    CHECK(ts_sad_remove(pr.tx, 0x7777, TS_DIR_OUT, &PEER, &info) == TS_OK && info.spi == 0x7777 &&
          info.dir == TS_DIR_OUT && info.counters[TS_CTR_PACKETS] == 5 && info.counters[TS_CTR_BYTES] == 5 * len);
    CHECK(ts_sad_remove(pr.tx, 0x7777, TS_DIR_OUT, &PEER, &info) == TS_ENOENT);
    CHECK(ts_sad_get(pr.tx, 0x7777, TS_DIR_OUT, &PEER, &info) == TS_ENOENT);

    /* the event queue is bounded: IKE packets beyond it are counted, not queued (from 1,100
     * senders: ~4 in each of the 256 per-source slots, none near its share of 32) */
    uint64_t d0[TS_DROP__COUNT], d1[TS_DROP__COUNT];
    ts_dp_drops(pr.rx, d0);
    int queued = 0;
    uint8_t ike[4 + 28];
    put32(ike, 0);
    ike_hdr(ike + 4, 28, 28);
    for (int i = 0; i < 1100; i++) {
        ts_addr src = {.family = 6, .port = 4500};
        memcpy(src.addr, A6, 16);
        put16(src.addr + 6, (uint16_t)i);   /* 1,100 /64s: a source is its /64 */
        CHECK(ts_dp_inbound(pr.rx, ike, sizeof(ike), &src, NULL, bufC, CAP, &drop) == 0);
        CHECK(drop == TS_DROP_NONE || drop == TS_DROP_QUEUE_FULL);
        queued += drop == TS_DROP_NONE;
    }
    ts_dp_drops(pr.rx, d1);
    /* the last TS_IKE_RESERVED of the IKE half are for established IKE SAs (none here), and
     * TS_IKE_PROVEN_RESERVED for datagrams with our tag (none: no key) */
    CHECK(queued == TS_EVENT_CAP / 2 - TS_IKE_RESERVED - TS_IKE_PROVEN_RESERVED && d1[TS_DROP_QUEUE_FULL] - d0[TS_DROP_QUEUE_FULL] == (uint64_t)(1100 - queued));
    int popped = 0;
    uint8_t small[2];
    while (ts_dp_next_event(pr.rx, &ev, small, sizeof(small)) == 1) {
        CHECK(ev.type == TS_EV_IKE && ev.data_len == 2 && small[0] == 0xa0 && small[1] == 0xa1);   /* truncated copy */
        popped++;
    }
    CHECK(popped == queued);
    pair_free(&pr);
}

/* The wipe every freed SA goes through leaves no key behind: keyed in a
 * buffer of ours, the key is there; after the wipe the buffer is all zero. */
void test_key_wipe(void) {
    size_t sz = ts_test_sa_size();
    uint8_t *buf = aligned_alloc(16, (sz + 15) / 16 * 16);
    FATAL_IF(!buf);
    uint8_t key[36];
    rnd_fill(key, sizeof(key));
    for (int k = 0; k < 2; k++) {
        uint8_t klen = k ? 36 : 20;
        ts_sa_params p;
        params(&p, 0x1234, k ? TS_DIR_OUT : TS_DIR_IN, key, klen, false, 64, 0);
        memset(buf, 0xa5, sz);
        int seen = 0;
        CHECK(ts_test_sa_wipe(&p, buf, sz, &seen) == TS_OK);
        CHECK(seen == 1);
        size_t nonzero = 0;
        for (size_t i = 0; i < sz; i++)
            nonzero += buf[i] != 0;
        CHECK(nonzero == 0);
    }
    int seen = 1;
    ts_sa_params p;
    params(&p, 0x1234, TS_DIR_IN, key, 20, false, 64, 0);
    CHECK(ts_test_sa_wipe(&p, buf, sz - 1, &seen) == TS_EINVAL && seen == 0);
    free(buf);
}
