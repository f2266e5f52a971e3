/* Outbound sequence numbers (sad.c, dp.c): overflow, and reservations (manual
 * keys: sequence state that survives restarts), also from several threads. */
#include "selftest.h"

/* ---- 5. sequence number overflow ----------------------------------------------- */
void test_overflow(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0xfffffffeull);
    size_t len = make_inner(4, 3, false, bufA), icmp;
    int drop;
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE);
    CHECK(get32(bufB + 4) == 0xffffffffu);
    ts_event ev;   /* installed past the soft margin: the soft EXPIRE with its first packet */
    CHECK(count_events(pr.tx, TS_EV_EXPIRE, &ev) == 1 && ev.hard == 0 && ev.reason == TS_EXP_SEQ);
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_SEQ_OVERFLOW);
    CHECK(count_events(pr.tx, TS_EV_EXPIRE, &ev) == 1 && ev.hard == 1 && ev.reason == TS_EXP_SEQ &&
          ev.spi == pr.spi && ev.dir == TS_DIR_OUT);
    CHECK(ev.addr.family == 4 && ev.addr.port == PEER.port && memcmp(ev.addr.addr, PEER.addr, 4) == 0);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.state == TS_SA_DEAD);
    CHECK(info.seq == 0xffffffffull && info.counters[TS_CTR_PACKETS] == 1);   /* the last number sent */
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_SEQ_OVERFLOW);
    CHECK(count_events(pr.tx, TS_EV_EXPIRE, NULL) == 0);
    pair_free(&pr);

    pair_new(&pr, 20, true, 64, 0xfffffffeull);
    for (uint64_t seq = 0xffffffffull; seq < 0x100000003ull; seq++) {
        int n = out1(pr.tx, bufA, len, bufB, &drop, &icmp);
        CHECK(n > 0 && drop == TS_DROP_NONE);
        uint8_t nh;
        CHECK(ref_open(pr.key, 20, true, (uint32_t)(seq >> 32), bufB, (size_t)n, bufC, &nh) == (long)len);
        CHECK(get32(bufB + 8) == (uint32_t)(seq >> 32) && get32(bufB + 12) == (uint32_t)seq);
    }
    pair_free(&pr);
}

/* ---- 5a. the soft EXPIRE a margin before 2^32 (RFC 4303 §3.3.3: rekey first) --------- */
void test_seq_soft(void) {
    const uint64_t at = (1ull << 32) - TS_SEQ_SOFT_MARGIN;
    for (int esn = 0; esn < 2; esn++) {
        struct pair pr;
        pair_new(&pr, 20, esn, 64, at - 2);
        size_t len = make_inner(4, 3, false, bufA), icmp;
        int drop;
        ts_event ev;
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && get32(bufB + 4) == (uint32_t)(at - 1));
        CHECK(count_events(pr.tx, TS_EV_EXPIRE, NULL) == 0);   /* one number before the margin */
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && get32(bufB + 4) == (uint32_t)at);
        /* ESN SAs run to 2^64: nothing; without ESN one soft EXPIRE, with this packet counted */
        CHECK(count_events(pr.tx, TS_EV_EXPIRE, &ev) == (esn ? 0 : 1));
        CHECK(esn || (ev.hard == 0 && ev.reason == TS_EXP_SEQ && ev.spi == pr.spi && ev.dir == TS_DIR_OUT));
        ts_sa_info info;
        CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.counters[TS_CTR_PACKETS] == 2 &&
              info.soft_fired == !esn && info.state == TS_SA_MATURE);
        for (int i = 0; i < 3; i++)   /* once per SA */
            CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE);
        CHECK(count_events(pr.tx, TS_EV_EXPIRE, NULL) == 0);
        pair_free(&pr);
    }
}

/* ---- 5b. reservations (manual keys: sequence state that survives restarts) ---- */
void test_reservation(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    /* OUT: resumes after seq_start, never passes seq_limit, asks once at seq_notify */
    ts_sa_params p;
    params(&p, pr.spi + 1, TS_DIR_OUT, pr.key, 20, false, 0, 100);
    p.reqid = 2;
    p.seq_limit = 110;
    p.seq_notify = 105;
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);
    CHECK(ts_sad_delete(pr.tx, pr.spi, TS_DIR_OUT, &PEER) == TS_OK);
    ts_spd_flush(pr.tx);
    protect(pr.tx, 2);
    size_t len = make_inner(4, 10, false, bufA), icmp;
    int drop;
    for (uint32_t seq = 101; seq <= 110; seq++) {
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && drop == TS_DROP_NONE);
        CHECK(get32(bufB + 4) == seq);
    }
    ts_event ev;
    CHECK(count_events(pr.tx, TS_EV_RESERVE, &ev) == 1 && ev.spi == pr.spi + 1 && ev.dir == TS_DIR_OUT);
    CHECK(ev.addr.family == PEER.family && ev.addr.port == PEER.port && memcmp(ev.addr.addr, PEER.addr, 4) == 0);
    /* another peer's SA with the same SPI is not this one */
    ts_addr other = PEER;
    other.port = 4501;
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &other, 200, 0) == TS_ENOENT);
    for (int i = 0; i < 3; i++)
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_UNRESERVED);
    uint64_t drops[TS_DROP__COUNT];
    ts_dp_drops(pr.tx, drops);
    CHECK(drops[TS_DROP_UNRESERVED] == 3);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, &info) == TS_OK && info.seq == 110 &&
          info.state == TS_SA_MATURE && info.seq_limit == 110);
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, 109, 0) == TS_EINVAL);   /* never lower */
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, 1ull << 32, 0) == TS_EINVAL);   /* no ESN */
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 7, TS_DIR_OUT, &PEER, 200, 0) == TS_ENOENT);
    CHECK(ts_sad_reserve(pr.tx, pr.spi + 1, TS_DIR_OUT, &PEER, 120, 115) == TS_OK);
    for (uint32_t seq = 111; seq <= 120; seq++) {
        CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) > 0 && get32(bufB + 4) == seq);
    }
    CHECK(out1(pr.tx, bufA, len, bufB, &drop, &icmp) == 0 && drop == TS_DROP_UNRESERVED);
    CHECK(count_events(pr.tx, TS_EV_RESERVE, NULL) == 1);
    /* a limit below seq_start is refused at install */
    params(&p, pr.spi + 2, TS_DIR_OUT, pr.key, 20, false, 0, 100);
    p.seq_limit = 99;
    CHECK(ts_sad_add(pr.tx, &p) == TS_EINVAL);

    /* IN: a restarted receiver treats everything <= seq_start as seen and
     * accepts nothing past seq_limit */
    uint32_t spi_in;
    CHECK(ts_sad_getspi(pr.rx, 0x5000, 0x5000, &spi_in) == TS_OK);
    params(&p, spi_in, TS_DIR_IN, pr.key, 20, false, 64, 1000);
    p.seq_limit = 2000;
    p.seq_notify = 1500;
    CHECK(ts_sad_update(pr.rx, &p) == TS_OK);
    static const uint64_t old[] = {1000, 999, 990, 960, 1};
    for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++) {
        size_t el = ref_seal(pr.key, 20, spi_in, old[i], false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
        CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_REPLAY);
    }
    /* 1001..1023 share the floor's bitmap word: still acceptable, in any order */
    static const uint64_t fresh[] = {1003, 1001, 1002, 1499, 1500, 1600, 2000};
    for (size_t i = 0; i < sizeof(fresh) / sizeof(fresh[0]); i++) {
        size_t el = ref_seal(pr.key, 20, spi_in, fresh[i], false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
        CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    }
    CHECK(count_events(pr.rx, TS_EV_RESERVE, &ev) == 1 && ev.spi == spi_in && ev.dir == TS_DIR_IN);
    /* above the limit: refused, and once authenticated it asks for a reservation past it */
    size_t el = ref_seal(pr.key, 20, spi_in, 2001, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
    bufB[el - 1] ^= 1;
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_AUTH);
    CHECK(count_events(pr.rx, TS_EV_RESERVE, NULL) == 0);   /* a forgery moves nothing */
    bufB[el - 1] ^= 1;
    CHECK(ts_sad_reserve(pr.rx, spi_in, TS_DIR_IN, NULL, 2000, 0) == TS_OK);   /* re-arm, as a refill does */
    size_t el9 = ref_seal(pr.key, 20, spi_in, 90000, false, NULL, bufA, len, min_pad(len), NULL, 4, bufC);
    memcpy(bufA + 4096, bufC, el9);
    CHECK(in1(pr.rx, bufA + 4096, el9, bufC, &drop) == 0 && drop == TS_DROP_UNRESERVED);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_UNRESERVED);
    CHECK(count_events(pr.rx, TS_EV_RESERVE, &ev) == 1 && ev.seq == 90000 && ev.dir == TS_DIR_IN);
    CHECK(ts_sad_get(pr.rx, spi_in, TS_DIR_IN, NULL, &info) == TS_OK && info.seq == 2000 && info.counters[TS_CTR_REPLAY_DROPS] == 5);
    CHECK(ts_sad_reserve(pr.rx, spi_in, TS_DIR_IN, NULL, 3000, 2500) == TS_OK);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_REPLAY);
    pair_free(&pr);
}

/* several threads taking numbers from one reserved SA: each number once, none past the limit */
struct res_thread {
    ts_dp *dp;
    const uint8_t *in;
    size_t len;
    uint32_t got[3000];
    size_t n;
};
static void *res_worker(void *arg) {
    struct res_thread *t = arg;
    static _Thread_local uint8_t out[512];
    for (int i = 0; i < 3000; i++) {
        ts_addr dst;
        int drop;
        size_t icmp;
        int n = ts_dp_outbound(t->dp, t->in, t->len, out, sizeof(out), &dst, &drop, &icmp);
        if (n > 0)
            t->got[t->n++] = get32(out + 4);
    }
    return NULL;
}

void test_reservation_threads(void) {
    struct pair pr;
    pair_new(&pr, 20, false, 64, 0);
    CHECK(ts_sad_delete(pr.tx, pr.spi, TS_DIR_OUT, &PEER) == TS_OK);
    ts_sa_params p;
    params(&p, pr.spi, TS_DIR_OUT, pr.key, 20, false, 0, 1000);
    p.seq_limit = 6000;
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);
    static struct res_thread th[4];
    static uint8_t inner[256];
    size_t len = make_inner(4, 10, false, inner);
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) {
        th[i].dp = pr.tx;
        th[i].in = inner;
        th[i].len = len;
        th[i].n = 0;
        FATAL_IF(pthread_create(&tid[i], NULL, res_worker, &th[i]) != 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(tid[i], NULL);
    static uint8_t seen[6001];
    memset(seen, 0, sizeof(seen));
    size_t total = 0, dup = 0, out_of_range = 0;
    for (int i = 0; i < 4; i++)
        for (size_t k = 0; k < th[i].n; k++, total++) {
            uint32_t s = th[i].got[k];
            if (s <= 1000 || s > 6000)
                out_of_range++;
            else if (seen[s]++)
                dup++;
        }
    CHECK(total == 5000 && dup == 0 && out_of_range == 0);
    uint64_t drops[TS_DROP__COUNT];
    ts_dp_drops(pr.tx, drops);
    CHECK(drops[TS_DROP_UNRESERVED] == 12000 - 5000);
    pair_free(&pr);
}

/* an ESN SA without a reservation at the end of its numbers, threads racing for them: each
 * number once and none after 2^64 - 1 (a fetch-add that wrapped to 0 for an instant let another
 * thread take 1 again under the key; next_seq's CAS loop never moves the counter past the end) */
void test_esn_end_threads(void) {
    struct pair pr;
    pair_new(&pr, 20, true, 64, 0);
    CHECK(ts_sad_delete(pr.tx, pr.spi, TS_DIR_OUT, &PEER) == TS_OK);
    ts_sa_params p;
    params(&p, pr.spi, TS_DIR_OUT, pr.key, 20, true, 0, UINT64_MAX - 2000);
    CHECK(ts_sad_add(pr.tx, &p) == TS_OK);
    static struct res_thread th[4];
    static uint8_t inner[256];
    size_t len = make_inner(4, 10, false, inner);
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) {
        th[i] = (struct res_thread){.dp = pr.tx, .in = inner, .len = len};
        FATAL_IF(pthread_create(&tid[i], NULL, res_worker, &th[i]) != 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(tid[i], NULL);
    static uint8_t seen[2001];
    memset(seen, 0, sizeof(seen));
    size_t total = 0, dup = 0, out_of_range = 0;
    for (int i = 0; i < 4; i++)
        for (size_t k = 0; k < th[i].n; k++, total++) {
            uint32_t back = UINT32_MAX - th[i].got[k];   /* the low half: 2^64 - 1 - seq */
            if (back >= 2000)
                out_of_range++;
            else if (seen[back]++)
                dup++;
        }
    CHECK(total == 2000 && dup == 0 && out_of_range == 0);
    ts_sa_info info;
    CHECK(ts_sad_get(pr.tx, pr.spi, TS_DIR_OUT, &PEER, &info) == TS_OK && info.seq == UINT64_MAX);
    pair_free(&pr);
}
