/* IKE on the NAT-T port after the non-ESP marker (dp.c): only a whole IKE header whose length
 * field is the message's goes up, and each sender (its address, hashed with the context's key)
 * has a share of the event queue's IKE half, given back as the control side pops its events:
 * anyone can send these, spoofed and before any state, and established peers' DPD, rekeys and
 * MOBIKE come the same way. */
#include "selftest.h"

#define SHARE TS_IKE_PER_SOURCE
#define IKE_ROOM (TS_EVENT_CAP / 2 - TS_IKE_RESERVED - TS_IKE_PROVEN_RESERVED)   /* what datagrams of no IKE SA we know and no tag may fill */

/* marker + an IKE header whose length field is the len - 4 bytes after the marker */
static size_t marked(uint8_t *p, size_t len) {
    put32(p, 0);
    ike_hdr(p + 4, len - 4, (uint32_t)(len - 4));
    return len;
}

static int send_from(ts_dp *dp, const uint8_t *p, size_t len, const ts_addr *src) {
    int drop = -1;
    CHECK(ts_dp_inbound(dp, p, len, src, NULL, bufC, CAP, &drop) == 0);
    return drop;
}

/* n IPv4 senders, each in an IKE share slot of its own (and none in `taken`'s) */
static void senders_apart(ts_dp *dp, const ts_addr *taken, ts_addr *out, int n) {
    bool used[TS_IKE_SOURCE_SLOTS] = {false};
    used[ts_test_ike_source_slot(dp, taken)] = true;
    int last = 0;
    for (int i = 0; i < n; i++) {
        unsigned slot;
        do {
            FATAL_IF(last == 254);
            addr4(&out[i], (uint8_t)++last, 4500);
            out[i].addr[2] = 77;   /* not taken's network: never taken itself */
            slot = ts_test_ike_source_slot(dp, &out[i]);
        } while (used[slot]);
        used[slot] = true;
    }
}

void test_ike_marker(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_addr nat;
    addr4(&nat, 9, 33333);
    ts_event ev;
    static uint8_t got[512];
    /* a whole header after the marker: up without the marker, the sender's port kept */
    size_t len = marked(bufA, 304);
    CHECK(send_from(dp, bufA, len, &nat) == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 300 &&
          memcmp(got, bufA + 4, 300) == 0 && ev.addr.port == 33333 && ev.addr.addr[3] == 9);
    /* the marker alone, no whole header after it, or a length field that is not the message's
     * (counting the marker, short, long, zero, huge): malformed, counted, nothing up */
    static const size_t cases[][2] = {{0, 0},     {1, 1},     {27, 27}, {28, 29},        {29, 28},
                                      {300, 304}, {300, 299}, {300, 0}, {300, 0xffffffffu}};
    size_t n = sizeof(cases) / sizeof(cases[0]);
    uint64_t before = drop_count(dp, TS_DROP_MALFORMED);
    for (size_t i = 0; i < n; i++) {
        put32(bufA, 0);
        if (cases[i][0] >= 28)
            ike_hdr(bufA + 4, cases[i][0], (uint32_t)cases[i][1]);
        else
            memset(bufA + 4, 0xa5, cases[i][0]);
        CHECK(send_from(dp, bufA, 4 + cases[i][0], &nat) == TS_DROP_MALFORMED);
    }
    CHECK(drop_count(dp, TS_DROP_MALFORMED) - before == n);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 0);
    ts_dp_free(dp);
}

void test_ike_source_share(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    ts_addr x, others[IKE_ROOM / SHARE + 1];
    addr4(&x, 9, 33333);
    senders_apart(dp, &x, others, IKE_ROOM / SHARE + 1);
    /* 2,000 datagrams of junk after the marker from one sender (the reviewer's flood): all
     * malformed, nothing queued, and a peer's IKE still goes up */
    memset(bufA, 0x41, 1000);
    put32(bufA, 0);
    for (int i = 0; i < 2000; i++)
        CHECK(send_from(dp, bufA, 1000, &x) == TS_DROP_MALFORMED);
    CHECK(drop_count(dp, TS_DROP_MALFORMED) == 2000);
    size_t len = marked(bufA, 1000);
    CHECK(send_from(dp, bufA, len, &others[0]) == TS_DROP_NONE);
    CHECK(count_events(dp, TS_EV_IKE, NULL) == 1);
    /* well-formed headers from that one sender: its share is queued, the rest counted apart */
    int queued = 0;
    for (int i = 0; i < 2000; i++) {
        int drop = send_from(dp, bufA, len, &x);
        queued += drop == TS_DROP_NONE;
        CHECK(drop == TS_DROP_NONE || drop == TS_DROP_IKE_SOURCE_LIMIT);
    }
    CHECK(queued == SHARE && drop_count(dp, TS_DROP_IKE_SOURCE_LIMIT) == 2000 - SHARE);
    CHECK(drop_count(dp, TS_DROP_QUEUE_FULL) == 0);
    /* whatever its port (a NAT gives one host many), unmarked from port 500 too */
    ts_addr x500 = x;
    x500.port = 500;
    CHECK(send_from(dp, bufA + 4, len - 4, &x500) == TS_DROP_IKE_SOURCE_LIMIT);
    /* another sender, marked on 4500 and unmarked from 500, still gets through */
    CHECK(send_from(dp, bufA, len, &others[0]) == TS_DROP_NONE);
    ts_addr o500 = others[0];
    o500.port = 500;
    CHECK(send_from(dp, bufA + 4, len - 4, &o500) == TS_DROP_NONE);
    /* each event popped gives its sender's share back, one at a time */
    ts_event ev;
    CHECK(ts_dp_next_event(dp, &ev, bufC, CAP) == 1 && ev.type == TS_EV_IKE && ev.addr.addr[3] == 9);
    CHECK(send_from(dp, bufA, len, &x) == TS_DROP_NONE);
    CHECK(send_from(dp, bufA, len, &x) == TS_DROP_IKE_SOURCE_LIMIT);
    CHECK(count_events(dp, TS_EV_IKE, NULL) == SHARE + 2);
    for (int i = 0; i < SHARE; i++)
        CHECK(send_from(dp, bufA, len, &x) == TS_DROP_NONE);
    CHECK(send_from(dp, bufA, len, &x) == TS_DROP_IKE_SOURCE_LIMIT);
    CHECK(count_events(dp, TS_EV_IKE, NULL) == SHARE);
    /* many senders (spoofing is free) fill no more than the IKE half: the rest stays for
     * EXPIRE, ACQUIRE and INVALID_SPI */
    queued = 0;
    for (int s = 0; s <= IKE_ROOM / SHARE; s++)
        for (int i = 0; i < SHARE; i++) {
            int drop = send_from(dp, bufA, len, &others[s]);
            queued += drop == TS_DROP_NONE;
            CHECK(drop == (s < IKE_ROOM / SHARE ? TS_DROP_NONE : TS_DROP_QUEUE_FULL));
        }
    CHECK(queued == IKE_ROOM && drop_count(dp, TS_DROP_QUEUE_FULL) == SHARE);
    uint8_t esp[48];
    memset(esp, 0x5a, sizeof(esp));
    put32(esp, 0x7777);   /* an SPI nobody has */
    CHECK(send_from(dp, esp, sizeof(esp), &x) == TS_DROP_NO_SA);
    int ike = 0, hints = 0;
    while (ts_dp_next_event(dp, &ev, bufC, CAP) == 1) {
        ike += ev.type == TS_EV_IKE;
        hints += ev.type == TS_EV_INVALID_SPI;
    }
    CHECK(ike == IKE_ROOM && hints == 1);
    /* some left queued for ts_dp_free to release (ASan's leak check) */
    CHECK(send_from(dp, bufA, len, &x) == TS_DROP_NONE);
    ts_dp_free(dp);
}

/* ---- loop threads pushing while the control side pops: no share leaks --------------------- */
#define PUSHERS 4
#define PUSHES 400

struct pusher {
    ts_dp *dp;
    ts_addr src;
    int queued;
};

static void *push_thread(void *arg) {
    struct pusher *p = arg;
    uint8_t *buf = malloc(1000), *out = malloc(CAP);
    FATAL_IF(!buf || !out);
    size_t len = marked(buf, 200);
    for (int i = 0; i < PUSHES; i++) {
        int drop;
        FATAL_IF(ts_dp_inbound(p->dp, buf, len, &p->src, NULL, out, CAP, &drop) != 0);
        FATAL_IF(drop != TS_DROP_NONE && drop != TS_DROP_IKE_SOURCE_LIMIT && drop != TS_DROP_QUEUE_FULL);
        p->queued += drop == TS_DROP_NONE;
    }
    free(buf);
    free(out);
    return NULL;
}

void test_ike_source_share_threads(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    struct pusher ps[PUSHERS];
    pthread_t t[PUSHERS];
    ts_addr who[2];   /* two senders in slots apart, two threads each */
    addr4(&who[0], 9, 1000);
    senders_apart(dp, &who[0], &who[1], 1);
    for (int i = 0; i < PUSHERS; i++) {
        ps[i] = (struct pusher){.dp = dp, .src = who[i % 2]};
        ps[i].src.port = (uint16_t)(1000 + i);
        FATAL_IF(pthread_create(&t[i], NULL, push_thread, &ps[i]) != 0);
    }
    int popped = 0;
    ts_event ev;
    for (int i = 0; i < 200; i++)
        popped += ts_dp_next_event(dp, &ev, bufC, CAP);
    for (int i = 0; i < PUSHERS; i++)
        FATAL_IF(pthread_join(t[i], NULL) != 0);
    popped += count_events(dp, TS_EV_IKE, NULL);
    int queued = 0;
    for (int i = 0; i < PUSHERS; i++)
        queued += ps[i].queued;
    CHECK(queued == popped && queued >= SHARE);
    /* every share came back: each sender may queue a whole one again, and no more */
    size_t len = marked(bufA, 200);
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < SHARE; i++)
            CHECK(send_from(dp, bufA, len, &who[s]) == TS_DROP_NONE);
        CHECK(send_from(dp, bufA, len, &who[s]) == TS_DROP_IKE_SOURCE_LIMIT);
    }
    ts_dp_free(dp);
}
