/* What the self-test's files share (make sanitize builds every .c in csrc/test/ into one
 * program): the CHECK counters, the fixed-seed PRNG, byte helpers, the test's
 * own ESP implementation (ref_esp.c), inner packets, SA set-up and the helpers
 * for the batch loop over real sockets (harness.c), and the test_* functions
 * main() (selftest.c) runs in a fixed order.  The order matters: every test
 * draws from the one PRNG, so the same seed gives the same packets and the
 * same number of checks run. */
#ifndef TUNSEC_SELFTEST_H
#define TUNSEC_SELFTEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../tunsec_dp.h"
#include "../internal.h"   /* the hold (hold.c) is tested on its own too */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern unsigned long checks, failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            if (failures <= 50)                                                      \
                fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, \
                        __func__, #cond);                                            \
        }                                                                            \
    } while (0)

#define FATAL_IF(cond)                                                        \
    do {                                                                      \
        if (cond) {                                                           \
            fprintf(stderr, "%s:%d: fatal: %s\n", __FILE__, __LINE__, #cond); \
            exit(2);                                                          \
        }                                                                     \
    } while (0)

/* ---- a fixed-seed PRNG (xorshift64*, harness.c) ------------------------------ */
uint64_t rnd(void);
uint32_t rnd_below(uint32_t n);
void rnd_fill(uint8_t *p, size_t n);

/* ---- big-endian fields ------------------------------------------------------- */
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* ---- an ESP implementation of the test's own (ref_esp.c) --------------------- */
size_t ref_seal(const uint8_t *keymat, size_t klen, uint32_t spi, uint64_t seq, bool esn,
                const uint8_t *iv8, const uint8_t *payload, size_t plen, size_t padlen,
                const uint8_t *pad, uint8_t nh, uint8_t *out);
size_t min_pad(size_t plen);
long ref_open(const uint8_t *keymat, size_t klen, bool esn, uint32_t seq_hi,
              const uint8_t *esp, size_t len, uint8_t *pt, uint8_t *nh);

/* ---- inner packets and SA set-up (harness.c) --------------------------------- */
extern const uint8_t A4[4], B4[4], A6[16], B6[16];
extern const ts_addr PEER;   /* the peer of params()'s outbound SAs */

uint16_t csum(const uint8_t *p, size_t n);
size_t make_inner(int family, size_t dlen, bool df, uint8_t *out);
void sel_net(ts_selector *s, int family, const uint8_t *src, const uint8_t *dst, int plen_bytes);
ts_policy client_policy(uint32_t id, uint32_t n);   /* BYPASS, priority 200, to 100.64.0.0/10 + n */
void addr4(ts_addr *a, uint8_t last, uint16_t port);
void params(ts_sa_params *p, uint32_t spi, uint8_t dir, const uint8_t *key, uint8_t klen, bool esn,
            uint32_t window, uint64_t seq_start);
void protect(ts_dp *dp, uint32_t reqid);

struct pair {
    ts_dp *tx, *rx;
    uint32_t spi;
    uint8_t key[36], klen;
    bool esn;
};

void pair_new(struct pair *pr, uint8_t klen, bool esn, uint32_t window, uint64_t seq_start);
void pair_free(struct pair *pr);

extern uint8_t bufA[TS_MAX_PACKET + 512], bufB[TS_MAX_PACKET + 512], bufC[TS_MAX_PACKET + 512];
#define CAP (TS_MAX_PACKET + 256)

int out1(ts_dp *dp, const uint8_t *pkt, size_t len, uint8_t *out, int *drop, size_t *icmp);
int in1(ts_dp *dp, const uint8_t *esp, size_t len, uint8_t *out, int *drop);

/* ---- events and drop counters (harness.c) ------------------------------------ */
int count_events(ts_dp *dp, int type, ts_event *last);
uint64_t drop_count(ts_dp *dp, int reason);
uint64_t drop_sum(ts_dp *dp, uint64_t *per);

/* ---- the batch loop over real sockets (harness.c) ----------------------------- */
void *run_thread(void *arg);
int udp_bound(uint16_t *port);
int udp_wildcard(uint16_t *port);         /* on 0.0.0.0, as a gateway without local_addrs */
void set_lo(ts_addr *a, uint8_t last, uint16_t port);   /* 127.0.0.<last> */
ssize_t recv_wait(int fd, uint8_t *buf, size_t cap);

/* ---- the tests, in the order main() runs them -------------------------------- */
void test_kat(void);                    /* test_esp.c */
void test_sandbox_seccomp(void);        /* test_sandbox.c */
void test_round_trips(void);
void test_bad_inner(void);
void test_replay(void);                 /* test_replay.c */
void test_replay_ring(void);
void test_overflow(void);               /* test_seq.c */
void test_seq_soft(void);
void test_reservation(void);
void test_reservation_threads(void);
void test_esn_end_threads(void);
void test_first_use(void);              /* test_sad.c */
void test_first_use_threads(void);
void test_sad_errors(void);
void test_shared_out_spi(void);
void test_migrate(void);
void test_migrate_local(void);
void test_lifetimes(void);
void test_dead_sa(void);               /* test_dead_sa.c */
void test_ike_port500(void);            /* test_ike_port.c */
void ike_hdr(uint8_t *p, size_t len, uint32_t hlen);   /* an IKE_SA_INIT header of len bytes, length field hlen */
void test_ike_marker(void);             /* test_ike_queue.c */
void test_ike_source_share(void);
void test_ike_source_share_threads(void);
void test_own_esp_ends(void);          /* test_own_esp.c */
void test_own_esp_pair(void);
void test_source_prefix_mask(void);     /* test_source_prefix.c */
void test_source_prefix_slots(void);
void test_source_prefix_shares(void);
void test_source_prefix_threads(void);
void test_ike_known_reserve(void);      /* test_ike_trust.c */
void test_ike_known_one_peer(void);
void test_ike_known_share_per_address(void);
void test_ike_known_source_biggest_pays(void);
void test_ike_spi_set(void);
void test_ike_spi_tag_vectors(void);
void test_ike_spi_tag_shares(void);
void test_ike_spi_tag_reserve(void);
void test_ike_spi_tag_floods_of_real_addresses(void);
void test_ike_spi_tag_ipv6_prefix(void);
void test_ike_spi_tag_key_epochs(void);
void test_siphash_vector(void);         /* test_invalid_spi.c */
void test_invalid_spi_per_source(void);
void test_invalid_spi_clock_behind(void);
void test_invalid_spi_threads(void);
void test_invalid_spi_race_refund(void);
void test_invalid_spi_ipv6_prefix(void);
void test_icmp(void);                   /* test_icmp.c */
void test_icmp_limits(void);
void test_icmp_quote(void);              /* test_icmp_quote.c */
void test_frag_ports_outbound(void);     /* test_frag_ports.c */
void test_frag_ports_acquire(void);
void test_frag_ports_dccp(void);
void test_frag_ports_inbound(void);
void test_key_wipe(void);               /* test_sad.c */
void test_table_keys_wiped(void);       /* test_secret_wipe.c */
void test_context_wiped(void);
void test_sad_chain_keyed(void);        /* test_sad_hash.c */
void test_sad_chain_peer(void);         /* test_sad_hash.c */
void test_sad_migrate_rehash(void);     /* test_sad_hash.c */
void test_fuzz(long iterations);        /* test_fuzz.c */
void test_segment_64k(void);            /* test_offload.c */
void test_segment_v6_exthdrs(void);
void test_offload_fuzz(long iterations);
void test_loop(void);                   /* test_loop.c */
void test_loop_two_queues(void);
void test_hold_unit(void);              /* test_hold.c */
void test_hold_policy_gone(void);
void test_hold_loop(void);
void test_cmsg_parse(void);             /* test_cmsg.c */
void test_cmsg_pktinfo_put(void);
void test_cmsg_loop(void);
void test_gso_split(void);              /* test_gso_split.c */
void test_gso_split_source_gone(void);
void test_spd_index_diff(void);         /* test_spd.c */
void test_spd_index_threads(void);
void test_spd_index_10k(void);
void test_spd_range_diff(void);       /* test_spd_range.c */
void test_spd_range_10k(void);
void test_spd_range_fallback(void);
void test_spd_range_churn(void);
void test_spd_grow_oom(void);         /* test_spd_oom.c */
void test_spd_index_oom(void);
/* random policies and flows over a small pool of addresses, so that they overlap (test_spd.c) */
void spd_rand_policy(ts_policy *p, uint32_t id, uint32_t priorities);
void spd_rand_flow(ts_flow *f);
void test_spd_churn_model(void);      /* test_spd_churn.c */
void test_spd_churn_keeps_cache(void);
void test_spd_churn_held(void);
void test_review_revspd_range_delete_cost(void);   /* test_review_revspd.c */
void test_review_revspd_shared_dgen_wrap(void);
void test_spd_held_pass_visits(void);         /* test_spd_upkeep.c */
void test_spd_delete_compacts(void);
void test_spd_held_two_loops(void);
void test_review_revspd2_lost_kick(void);   /* test_review_revspd2.c */
void test_review_revspd2_pass_bounded(void);
void test_addrwatch_ring(void);                  /* test_addrwatch.c */
void test_addrwatch_refused_then_added(void);
void test_srcroute_options(void);                /* test_srcroute.c */
void test_srcroute_v6_walk(void);
void test_srcroute_path(void);
void test_dummy_lifetime(void);

#endif
