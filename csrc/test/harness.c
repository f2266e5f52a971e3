/* The self-test's shared parts (selftest.h): the CHECK counters, the
 * fixed-seed PRNG, inner packets, SA set-up, event and drop counters, and the
 * helpers for the batch loop over real sockets. */
#include "selftest.h"

unsigned long checks, failures;

/* ---- a fixed-seed PRNG (xorshift64*) ---------------------------------------- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
uint32_t rnd_below(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }
void rnd_fill(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* ---- inner packets and SA set-up ----------------------------------------- */
const uint8_t A4[4] = {10, 1, 0, 1}, B4[4] = {10, 2, 0, 1};
const uint8_t A6[16] = {0xfd, 0, 0, 0x0a, [15] = 1}, B6[16] = {0xfd, 0, 0, 0x0b, [15] = 1};

uint16_t csum(const uint8_t *p, size_t n) {
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += get16(p + i);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* a UDP packet of `family` from A's side to B's with `dlen` random payload bytes */
size_t make_inner(int family, size_t dlen, bool df, uint8_t *out) {
    size_t hl = family == 4 ? 20 : 40, total = hl + 8 + dlen;
    memset(out, 0, hl + 8);
    if (family == 4) {
        out[0] = 0x45;
        put16(out + 2, (uint16_t)total);
        put16(out + 4, (uint16_t)rnd());
        put16(out + 6, df ? 0x4000 : 0);
        out[8] = 64;
        out[9] = 17;
        memcpy(out + 12, A4, 4);
        memcpy(out + 16, B4, 4);
        put16(out + 10, csum(out, 20));
    } else {
        out[0] = 0x60;
        put16(out + 4, (uint16_t)(8 + dlen));
        out[6] = 17;
        out[7] = 64;
        memcpy(out + 8, A6, 16);
        memcpy(out + 24, B6, 16);
    }
    put16(out + hl, 1234);
    put16(out + hl + 2, 5678);
    put16(out + hl + 4, (uint16_t)(8 + dlen));
    rnd_fill(out + hl + 8, dlen);
    return total;
}

/* a gateway client's policy: BYPASS at priority 200, any source and port, destination the one
 * address 100.64.0.0/10 + n (its virtual IP: hashed in the SPD's index) */
ts_policy client_policy(uint32_t id, uint32_t n) {
    ts_policy p = {.id = id, .priority = 200, .action = TS_ACT_BYPASS};
    p.sel.family = 4;
    memset(p.sel.src_hi, 0xff, 4);
    p.sel.sport_hi = p.sel.dport_hi = 0xffff;
    uint8_t a[4] = {100, (uint8_t)(64 + (n >> 16)), (uint8_t)(n >> 8), (uint8_t)n};
    memcpy(p.sel.dst_lo, a, 4);
    memcpy(p.sel.dst_hi, a, 4);
    return p;
}

void sel_net(ts_selector *s, int family, const uint8_t *src, const uint8_t *dst, int plen_bytes) {
    memset(s, 0, sizeof(*s));
    s->family = (uint8_t)family;
    size_t n = family == 4 ? 4 : 16;
    memcpy(s->src_lo, src, n);
    memcpy(s->src_hi, src, n);
    memcpy(s->dst_lo, dst, n);
    memcpy(s->dst_hi, dst, n);
    for (size_t i = (size_t)plen_bytes; i < n; i++) {
        s->src_lo[i] = s->dst_lo[i] = 0;
        s->src_hi[i] = s->dst_hi[i] = 0xff;
    }
    s->sport_hi = s->dport_hi = 0xffff;
}

void addr4(ts_addr *a, uint8_t last, uint16_t port) {
    memset(a, 0, sizeof(*a));
    a->family = 4;
    a->addr[0] = 192; a->addr[1] = 0; a->addr[2] = 2; a->addr[3] = last;
    a->port = port;
}

/* the peer of params()'s outbound SAs */
const ts_addr PEER = {.family = 4, .addr = {192, 0, 2, 2}, .port = 4500};

void params(ts_sa_params *p, uint32_t spi, uint8_t dir, const uint8_t *key, uint8_t klen, bool esn,
                   uint32_t window, uint64_t seq_start) {
    memset(p, 0, sizeof(*p));
    p->spi = spi;
    p->dir = dir;
    p->keylen = klen;
    memcpy(p->key, key, klen);
    p->esn = esn;
    p->replay_window = window;
    p->reqid = 1;
    addr4(&p->local, dir == TS_DIR_OUT ? 1 : 2, 4500);
    addr4(&p->remote, dir == TS_DIR_OUT ? 2 : 1, 4500);
    p->seq_start = seq_start;
    p->n_sel = 2;
    sel_net(&p->sel[0], 4, A4, B4, 3);
    sel_net(&p->sel[1], 6, A6, B6, 8);
}

void protect(ts_dp *dp, uint32_t reqid) {
    ts_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.action = TS_ACT_PROTECT;
    pol.reqid = reqid;
    pol.priority = 10;
    pol.id = 1;
    sel_net(&pol.sel, 4, A4, B4, 3);
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
    pol.id = 2;
    sel_net(&pol.sel, 6, A6, B6, 8);
    CHECK(ts_spd_add(dp, &pol) == TS_OK);
}

void pair_new(struct pair *pr, uint8_t klen, bool esn, uint32_t window, uint64_t seq_start) {
    pr->tx = ts_dp_new();
    pr->rx = ts_dp_new();
    FATAL_IF(!pr->tx || !pr->rx);
    pr->klen = klen;
    pr->esn = esn;
    rnd_fill(pr->key, klen);
    CHECK(ts_sad_getspi(pr->rx, 256, 0xffffffffu, &pr->spi) == TS_OK);
    ts_sa_params p;
    params(&p, pr->spi, TS_DIR_IN, pr->key, klen, esn, window, 0);
    CHECK(ts_sad_update(pr->rx, &p) == TS_OK);
    params(&p, pr->spi, TS_DIR_OUT, pr->key, klen, esn, 0, seq_start);
    CHECK(ts_sad_add(pr->tx, &p) == TS_OK);
    protect(pr->tx, 1);
}

void pair_free(struct pair *pr) {
    ts_dp_free(pr->tx);
    ts_dp_free(pr->rx);
}

uint8_t bufA[TS_MAX_PACKET + 512], bufB[TS_MAX_PACKET + 512], bufC[TS_MAX_PACKET + 512];

int out1(ts_dp *dp, const uint8_t *pkt, size_t len, uint8_t *out, int *drop, size_t *icmp) {
    ts_addr dst;
    return ts_dp_outbound(dp, pkt, len, out, CAP, &dst, drop, icmp);
}
int in1(ts_dp *dp, const uint8_t *esp, size_t len, uint8_t *out, int *drop) {
    ts_addr src;
    addr4(&src, 1, 4500);
    return ts_dp_inbound(dp, esp, len, &src, NULL, out, CAP, drop);
}

/* ---- events and drop counters ------------------------------------------------ */
int count_events(ts_dp *dp, int type, ts_event *last) {
    ts_event ev;
    int n = 0;
    while (ts_dp_next_event(dp, &ev, bufC, sizeof(bufC)) == 1)
        if (ev.type == type) {
            n++;
            if (last)
                *last = ev;
        }
    return n;
}

uint64_t drop_count(ts_dp *dp, int reason) {
    uint64_t d[TS_DROP__COUNT];
    ts_dp_drops(dp, d);
    return d[reason];
}

uint64_t drop_sum(ts_dp *dp, uint64_t *per) {
    uint64_t d[TS_DROP__COUNT], s = 0;
    ts_dp_drops(dp, d);
    for (int i = 0; i < TS_DROP__COUNT; i++) {
        s += d[i];
        if (per)
            per[i] = d[i];
    }
    return s;
}

/* ---- 9. the batch loop over real sockets ---------------------------------------------- */
void *run_thread(void *arg) {
    int rc = ts_dp_run((ts_dp *)arg);
    return (void *)(intptr_t)rc;
}

/* a UDP socket on addr (host order), any port */
static int udp_on(uint32_t addr, uint16_t *port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FATAL_IF(fd < 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(addr)};
    FATAL_IF(bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0);
    socklen_t l = sizeof(a);
    FATAL_IF(getsockname(fd, (struct sockaddr *)&a, &l) != 0);
    *port = ntohs(a.sin_port);
    return fd;
}

int udp_bound(uint16_t *port) { return udp_on(INADDR_LOOPBACK, port); }

/* on 0.0.0.0, as a gateway without local_addrs binds its port 4500 */
int udp_wildcard(uint16_t *port) { return udp_on(INADDR_ANY, port); }

/* 127.0.0.<last>: on loopback all of 127.0.0.0/8 is ours */
void set_lo(ts_addr *a, uint8_t last, uint16_t port) {
    memset(a, 0, sizeof(*a));
    a->family = 4;
    a->addr[0] = 127; a->addr[3] = last;
    a->port = port;
}

ssize_t recv_wait(int fd, uint8_t *buf, size_t cap) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10000) != 1)   /* only a hang fails here, never slowness */
        return -1;
    return recv(fd, buf, cap, 0);
}
