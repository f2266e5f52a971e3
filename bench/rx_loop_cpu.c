/* The receive loop's CPU time per ESP packet (csrc/loop.c inbound_batch: recvmmsg, control
 * data, SPI lookup, AES-GCM open, TUN write), as a before/after check for changes to the hot
 * receive path.  Each round fills a fresh ts_dp's UDP socket (bound to 0.0.0.0, as a gateway
 * without local_addrs binds port 4500) with K pre-sealed ESP datagrams, then starts the loop
 * and reads the loop thread's CPU clock once it has accepted them all: CPU time, not wall
 * time, because the machine is shared; the fake TUN is a socketpair drained by a thread.
 *
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Icsrc -o build/rx_loop_cpu bench/rx_loop_cpu.c \
 *       $(ls csrc/[a-z]*.c | grep -v bench.c) -lcrypto -lpthread
 *   build/rx_loop_cpu [inner payload bytes, default 64] [rounds / 10, default 3 (30 rounds)] [bound]
 *
 * With `bound` the socket is bound to 127.0.0.1 instead (no IP_PKTINFO asked for).
 *
 * Build it from two checkouts and alternate the runs; compare medians as a ratio. */
#include <stdbool.h>
#include "tunsec_dp.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/time.h>

static ts_dp *B;
static pthread_t loop_thread;
static atomic_bool stop_drain;
static int tunB[2];

static void *run(void *a) { (void)a; ts_dp_run(B); return NULL; }
static void *drain(void *a) {
    (void)a;
    char buf[70000];
    while (!atomic_load(&stop_drain))
        (void)recv(tunB[1], buf, sizeof buf, 0);
    return NULL;
}

static size_t inner(uint8_t *p, size_t dlen) {
    size_t len = 20 + 8 + dlen;
    memset(p, 0, len);
    p[0] = 0x45; p[2] = (uint8_t)(len >> 8); p[3] = (uint8_t)len; p[8] = 64; p[9] = 17;
    p[12] = 10; p[13] = 1; p[14] = 0; p[15] = 1;
    p[16] = 10; p[17] = 2; p[18] = 0; p[19] = 1;
    p[20] = 0x10; p[22] = 0x20; p[24] = (uint8_t)((8 + dlen) >> 8); p[25] = (uint8_t)(8 + dlen);
    return len;
}

static void sel(ts_selector *s) {
    memset(s, 0, sizeof *s);
    s->family = 4;
    s->src_lo[0] = 10; s->src_lo[1] = 1; s->src_hi[0] = 10; s->src_hi[1] = 1; s->src_hi[2] = 255; s->src_hi[3] = 255;
    s->dst_lo[0] = 10; s->dst_lo[1] = 2; s->dst_hi[0] = 10; s->dst_hi[1] = 2; s->dst_hi[2] = 255; s->dst_hi[3] = 255;
    s->sport_hi = s->dport_hi = 65535;
}

int main(int argc, char **argv) {
    size_t dlen = argc > 1 ? (size_t)atoi(argv[1]) : 64;
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    bool bound = argc > 3 && strcmp(argv[3], "bound") == 0;
    ts_dp *A = ts_dp_new();
    B = ts_dp_new();
    uint8_t key[20];
    for (int i = 0; i < 20; i++) key[i] = (uint8_t)(i * 7 + 1);
    uint32_t spi;
    if (ts_sad_getspi(B, 256, 0xffffffff, &spi) != TS_OK) return 1;
    ts_sa_params p;
    memset(&p, 0, sizeof p);
    p.spi = spi; p.dir = TS_DIR_IN; p.keylen = 20; memcpy(p.key, key, 20); p.replay_window = 0; p.reqid = 1;
    p.local.family = p.remote.family = 4;
    p.local.addr[0] = 127; p.local.addr[3] = 1; p.remote.addr[0] = 127; p.remote.addr[3] = 1;
    p.local.port = p.remote.port = 4500;
    p.n_sel = 1;
    sel(&p.sel[0]);
    /* the inbound SA's selectors: src = remote side */
    ts_selector t = p.sel[0];
    if (ts_sad_update(B, &p) != TS_OK) return 2;
    p.dir = TS_DIR_OUT;
    p.sel[0] = t;
    if (ts_sad_add(A, &p) != TS_OK) return 3;
    ts_policy pol;
    memset(&pol, 0, sizeof pol);
    pol.id = 1; pol.action = TS_ACT_PROTECT; pol.reqid = 1; sel(&pol.sel);
    if (ts_spd_add(A, &pol) != TS_OK) return 4;
    enum { N = 4096 };
    static uint8_t pkts[N][2048];
    static size_t lens[N];
    uint8_t in[2048];
    for (int i = 0; i < N; i++) {
        size_t l = inner(in, dlen);
        ts_addr dst; int drop; size_t icmp;
        int r = ts_dp_outbound(A, in, l, pkts[i], sizeof pkts[i], &dst, &drop, &icmp);
        if (r <= 0) { fprintf(stderr, "outbound drop %d\n", drop); return 5; }
        lens[i] = (size_t)r;
    }
    int rounds = (int)(seconds * 10);
    int K = dlen > 500 ? 2500 : 6000;
    double cpu_total = 0;
    uint64_t pk_total = 0;
    int us = socket(AF_INET, SOCK_DGRAM, 0);
    for (int round = 0; round < rounds; round++) {
        B = ts_dp_new();
        uint32_t spi_b;
        if (ts_sad_getspi(B, spi, spi, &spi_b) != TS_OK) return 7;
        p.dir = TS_DIR_IN;
        if (ts_sad_update(B, &p) != TS_OK) return 8;
        int ub = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int big = 16 << 20;
        setsockopt(ub, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(bound ? INADDR_LOOPBACK : INADDR_ANY)};
        if (bind(ub, (struct sockaddr *)&a, sizeof a)) return 6;
        socklen_t sl = sizeof a;
        getsockname(ub, (struct sockaddr *)&a, &sl);
        socketpair(AF_UNIX, SOCK_DGRAM, 0, tunB);
        setsockopt(tunB[1], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
        setsockopt(tunB[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
        struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
        setsockopt(tunB[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        { int o = 1; ioctl(tunB[0], FIONBIO, &o); }
        ts_dp_set_fds(B, tunB[0], ub, -1);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = a.sin_port, .sin_addr.s_addr = htonl(0x7f000001)};
        for (int k = 0; k < K; k++)
            if (sendto(us, pkts[k % N], lens[k % N], 0, (struct sockaddr *)&to, sizeof to) < 0) return 9;
        atomic_store(&stop_drain, false);
        pthread_t td;
        pthread_create(&td, NULL, drain, NULL);
        pthread_create(&loop_thread, NULL, run, NULL);
        clockid_t cid;
        pthread_getcpuclockid(loop_thread, &cid);
        ts_sa_info i1;
        uint64_t got = 0;
        struct timespec c1;
        for (int w = 0; w < 5000; w++) {
            usleep(1000);
            ts_sad_get(B, spi, TS_DIR_IN, NULL, &i1);
            got = i1.counters[TS_CTR_PACKETS];
            if (got >= (uint64_t)K)
                break;
        }
        clock_gettime(cid, &c1);
        ts_dp_stop(B);
        pthread_join(loop_thread, NULL);
        atomic_store(&stop_drain, true);
        pthread_join(td, NULL);
        cpu_total += (double)c1.tv_sec * 1e9 + (double)c1.tv_nsec;
        pk_total += got;
        ts_dp_free(B);
        close(ub); close(tunB[0]); close(tunB[1]);
    }
    printf("%zu %.1f ns/pkt %llu pkts %.3f cpu_s\n", dlen, cpu_total / (double)pk_total,
           (unsigned long long)pk_total, cpu_total / 1e9);
    return 0;
}
