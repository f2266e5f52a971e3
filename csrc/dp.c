/* Per-packet processing: outbound (inner IP -> ESP) and inbound (UDP
 * payload -> inner IP), plus the context that owns SAD, SPD and counters. */
#include "internal.h"
#include "limit.h"
#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

uint64_t ts_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

void ts_drop(ts_dp *dp, int reason) {
    if (reason > 0 && reason < TS_DROP__COUNT)
        atomic_fetch_add_explicit(&dp->drops[reason], 1, memory_order_relaxed);
}

ts_dp *ts_dp_new(void) {
    ts_dp *dp = calloc(1, sizeof(*dp));
    if (!dp)
        return NULL;
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    /* control changes must not starve behind a busy loop re-taking the read lock */
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&dp->lock, &a);
    pthread_rwlockattr_destroy(&a);
    pthread_mutex_init(&dp->addr_lock, NULL);
    ts_holds_init(&dp->spd.busy);
    for (int i = 0; i < TS_MAX_QUEUES; i++)
        dp->queues[i] = (ts_queue){.tun_fd = -1, .udp4_fd = -1, .udp6_fd = -1};
    dp->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    dp->spd.hold_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ssize_t got;
    do
        got = getrandom(dp->source_key, sizeof(dp->source_key), 0);
    while (got < 0 && errno == EINTR);
    /* no context without a secret key: with a known one an attacker could aim at a peer's
     * INVALID_SPI slot */
    bool keyed = got == (ssize_t)sizeof(dp->source_key);
    ts_ipv6_prefix_mask(dp->source_mask6, TS_IPV6_SOURCE_PREFIX_DEFAULT);
    if (dp->wake_fd < 0 || dp->spd.hold_fd < 0 || !keyed || ts_spd_init(&dp->spd) != TS_OK ||
        ts_sad_init(&dp->sad) != TS_OK || ts_ike_spis_init(&dp->ike_spis) != TS_OK ||
        ts_events_init(&dp->events) != TS_OK) {
        ts_dp_free(dp);
        return NULL;
    }
    return dp;
}

void ts_dp_wipe(ts_dp *dp) {
    ts_sad_destroy(&dp->sad);
    ts_spd_destroy(&dp->spd);
    ts_ike_spis_destroy(&dp->ike_spis);
    ts_events_destroy(&dp->events);
    if (dp->wake_fd >= 0)
        close(dp->wake_fd);
    if (dp->spd.hold_fd >= 0)
        close(dp->spd.hold_fd);
    extern void ts_loop_free(ts_queue *);
    for (int i = 0; i < TS_MAX_QUEUES; i++)
        ts_loop_free(&dp->queues[i]);
    pthread_rwlock_destroy(&dp->lock);
    pthread_mutex_destroy(&dp->addr_lock);
    ts_holds_destroy(&dp->spd.busy);
    /* all of it, not only the keys we know of today (the per-source limits' SipHash key, the IKE
     * tag keys): OPENSSL_cleanse, which the compiler cannot drop as a dead store before free() */
    OPENSSL_cleanse(dp, sizeof(*dp));
}

void ts_dp_free(ts_dp *dp) {
    if (!dp)
        return;
    ts_dp_wipe(dp);
    free(dp);
}

/* a stop from an earlier run no longer applies once fds are (re)assigned */
static void rearm(ts_dp *dp) {
    uint64_t v;
    ssize_t r = read(dp->wake_fd, &v, sizeof(v));
    (void)r;
    atomic_store(&dp->stop, false);
}

/* a socket bound to one of our addresses is one of our ESP ends (ownesp.c); a wildcard one's SAs
 * name the address their ESP leaves from (ts_sad_add), an unknown one (family 0) nothing */
static void note_bound(ts_dp *dp, const ts_queue *q) {
    if (q->bound4.family == 4 && !q->any4)
        ts_own_end_note(dp, &q->bound4);
    if (q->bound6.family == 6 && !q->any6)
        ts_own_end_note(dp, &q->bound6);
}

int ts_dp_set_fds(ts_dp *dp, int tun_fd, int udp4_fd, int udp6_fd) {
    pthread_rwlock_wrlock(&dp->lock);
    dp->queues[0].tun_fd = tun_fd;
    dp->queues[0].udp4_fd = udp4_fd;
    dp->queues[0].udp6_fd = udp6_fd;
    ts_socket_local(udp4_fd, &dp->queues[0].bound4, &dp->queues[0].any4);
    ts_socket_local(udp6_fd, &dp->queues[0].bound6, &dp->queues[0].any6);
    note_bound(dp, &dp->queues[0]);
    if (dp->nqueues < 1)
        dp->nqueues = 1;
    rearm(dp);
    pthread_rwlock_unlock(&dp->lock);
    return TS_OK;
}

int ts_dp_add_queue(ts_dp *dp, int tun_fd, int udp4_fd, int udp6_fd) {
    pthread_rwlock_wrlock(&dp->lock);
    int i = dp->nqueues;
    if (i >= TS_MAX_QUEUES) {
        pthread_rwlock_unlock(&dp->lock);
        return TS_ENOSPC;
    }
    dp->queues[i] = (ts_queue){.tun_fd = tun_fd, .udp4_fd = udp4_fd, .udp6_fd = udp6_fd};
    ts_socket_local(udp4_fd, &dp->queues[i].bound4, &dp->queues[i].any4);
    ts_socket_local(udp6_fd, &dp->queues[i].bound6, &dp->queues[i].any6);
    note_bound(dp, &dp->queues[i]);
    dp->nqueues = i + 1;
    rearm(dp);
    pthread_rwlock_unlock(&dp->lock);
    return i;
}

void ts_dp_set_tunnel_mtu(ts_dp *dp, uint32_t mtu) { atomic_store(&dp->tunnel_mtu, mtu); }
int ts_dp_errno(ts_dp *dp) { return dp->last_errno; }

void ts_dp_drops(ts_dp *dp, uint64_t *out) {
    for (int i = 0; i < TS_DROP__COUNT; i++)
        out[i] = atomic_load(&dp->drops[i]);
}

static void emit_expire(ts_dp *dp, ts_sa *sa, bool hard, uint8_t reason) {
    _Atomic uint8_t *flag = hard ? &sa->hard_fired : &sa->soft_fired;
    if (atomic_exchange(flag, 1))
        return;   /* once per SA and kind */
    ts_event ev = {.type = TS_EV_EXPIRE, .dir = sa->dir, .hard = hard, .reason = reason, .spi = sa->spi};
    if (sa->dir == TS_DIR_OUT)
        ev.addr = sa->remote;   /* an outbound SPI alone does not say which peer's SA */
    if (!ts_events_push(&dp->events, &ev, NULL, 0)) {
        ts_drop(dp, TS_DROP_QUEUE_FULL);
        atomic_store(flag, 0);   /* lost: report it again with the SA's next packet */
    }
}

/* The SA reached a hard limit: one hard EXPIRE, and it carries nothing more.
 * The worker removes it when it takes the EXPIRE (as the kernel removes an SA
 * at its hard lifetime); the reason is kept for expire_again. */
static void kill_sa(ts_dp *dp, ts_sa *sa, uint8_t reason) {
    atomic_store(&sa->hard_reason, reason);
    emit_expire(dp, sa, true, reason);
    atomic_store(&sa->state, TS_SA_DEAD);
}

/* A packet for a dead SA: if its hard EXPIRE was lost to a full event queue,
 * raise it again now.  Nothing else would: the SA would stay in the SAD, with
 * its SPI and cipher contexts, for ever.  One relaxed load once it went up. */
static void expire_again(ts_dp *dp, ts_sa *sa) {
    if (!atomic_load_explicit(&sa->hard_fired, memory_order_relaxed))
        emit_expire(dp, sa, true, atomic_load(&sa->hard_reason));
}

/* account a packet; false if the SA has reached its hard limit */
static bool account(ts_dp *dp, ts_sa *sa, size_t bytes) {
    uint64_t p = atomic_fetch_add_explicit(&sa->counters[TS_CTR_PACKETS], 1, memory_order_relaxed) + 1;
    uint64_t b = atomic_fetch_add_explicit(&sa->counters[TS_CTR_BYTES], bytes, memory_order_relaxed) + bytes;
    if ((sa->hard_packets && p > sa->hard_packets) || (sa->hard_bytes && b > sa->hard_bytes)) {
        /* dropped, so not carried: the SA's counters show what went through */
        atomic_fetch_sub_explicit(&sa->counters[TS_CTR_PACKETS], 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&sa->counters[TS_CTR_BYTES], bytes, memory_order_relaxed);
        kill_sa(dp, sa, sa->hard_packets && p > sa->hard_packets ? TS_EXP_PACKETS : TS_EXP_BYTES);
        return false;
    }
    if (sa->soft_packets && p >= sa->soft_packets)
        emit_expire(dp, sa, false, TS_EXP_PACKETS);
    else if (sa->soft_bytes && b >= sa->soft_bytes)
        emit_expire(dp, sa, false, TS_EXP_BYTES);
    return true;
}

/* Without ESN the SA must be replaced before its 2^32nd packet (RFC 4303 §3.3.3), and only a soft
 * packet limit (rekey_packets, off by default) would say so before the hard stop: one soft EXPIRE a
 * margin before the last number, for every such SA (an SA installed past it: at its first packet).
 * A relaxed load first: no locked instruction per packet for the margin's numbers. */
static void seq_soft(ts_dp *dp, ts_sa *sa, uint64_t seq) {
    if (!sa->esn && seq >= (1ull << 32) - TS_SEQ_SOFT_MARGIN &&
        !atomic_load_explicit(&sa->soft_fired, memory_order_relaxed))
        emit_expire(dp, sa, false, TS_EXP_SEQ);
}

/* the rate limiters' clock: CLOCK_MONOTONIC, unless a test stopped it (ts_test_set_clock) */
void ts_test_set_clock(ts_dp *dp, uint64_t now_ns) {
    atomic_store(&dp->test_clock_ns, now_ns);
}

static void acquire(ts_dp *dp, ts_spd_entry *e, const ts_flow *f) {
    if (!rate_ok(&e->last_acquire_ns, limiter_now(dp), 1000000000ull))
        return;
    ts_event ev = {.type = TS_EV_ACQUIRE, .policy_id = e->pol.id};
    ts_selector *s = &ev.sel;
    s->family = f->family;
    s->proto = f->proto;
    memcpy(s->src_lo, f->src, 16);
    memcpy(s->src_hi, f->src, 16);
    memcpy(s->dst_lo, f->dst, 16);
    memcpy(s->dst_hi, f->dst, 16);
    s->sport_lo = s->sport_hi = f->sport;
    s->dport_lo = s->dport_hi = f->dport;
    if (f->opaque) {   /* no ports to ask for: 0 would be a port of its own */
        s->sport_lo = s->dport_lo = 0;
        s->sport_hi = s->dport_hi = 0xffff;
    }
    if (!ts_events_push(&dp->events, &ev, NULL, 0))
        ts_drop(dp, TS_DROP_QUEUE_FULL);
}

static bool dont_fragment(const uint8_t *pkt) {
    return (pkt[0] >> 4) == 6 || (ts_be16(pkt + 6) & 0x4000);
}

/* once per reservation: seq reached seq_notify, or (above) an authenticated
 * inbound packet is past seq_limit, e.g. from a sender that restarted and
 * jumped ahead: the control side then reserves past it */
static void emit_reserve(ts_dp *dp, ts_sa *sa, uint64_t seq, bool above) {
    uint64_t notify = atomic_load(&sa->seq_notify);
    if (!above && (!notify || seq < notify))
        return;
    if (atomic_exchange(&sa->reserve_fired, 1))
        return;
    ts_event ev = {.type = TS_EV_RESERVE, .dir = sa->dir, .spi = sa->spi, .seq = above ? seq : 0};
    if (sa->dir == TS_DIR_OUT)
        ev.addr = sa->remote;   /* (SPI, peer) names an outbound SA */
    if (!ts_events_push(&dp->events, &ev, NULL, 0)) {
        ts_drop(dp, TS_DROP_QUEUE_FULL);
        atomic_store(&sa->reserve_fired, 0);   /* lost: ask again with the next packet */
    }
}

/* once per SA UPDATEd with report_first_use: the first packet that passed ICV
 * verification proves the peer installed its side and sends on this SA.  After
 * that one relaxed load per packet; the exchange lets only one loop thread
 * report it.  A full queue re-arms it for the next packet. */
static void emit_first_use(ts_dp *dp, ts_sa *sa) {
    if (!atomic_load_explicit(&sa->first_use_armed, memory_order_relaxed) ||
        !atomic_exchange(&sa->first_use_armed, 0))
        return;
    ts_event ev = {.type = TS_EV_FIRST_USE, .dir = TS_DIR_IN, .spi = sa->spi};
    if (!ts_events_push(&dp->events, &ev, NULL, 0)) {
        ts_drop(dp, TS_DROP_QUEUE_FULL);
        atomic_store(&sa->first_use_armed, 1);
    }
}

/* The next outbound sequence number; on overflow the counter rests on the
 * last number sent (the SA dies with it).  Without a reservation and without
 * ESN a plain fetch-add, given back at once on overflow: 2^32 does not wrap
 * the 64-bit counter.  Otherwise a number is only taken if it is <= the
 * limit (seq_limit, or 2^64 - 1 for an unreserved ESN SA), and the counter is
 * never moved past it: a counter wrapped to 0 for an instant would let
 * another thread take 1 again under the same key (a manual SA's limit may be
 * 2^64 - 1 itself, its persisted state; an ESN SA may be installed with a
 * seq_start near 2^64).  The loop costs what the fetch-add does, one locked
 * instruction, unless loop threads race for the SA's numbers (then a retry). */
static int next_seq(ts_sa *sa, uint64_t *out) {
    uint64_t max = sa->esn ? UINT64_MAX : UINT32_MAX;
    if (!sa->esn && !atomic_load_explicit(&sa->seq_limit, memory_order_relaxed)) {
        uint64_t seq = atomic_fetch_add(&sa->seq, 1) + 1;
        *out = seq;
        if (seq > max) {
            atomic_fetch_sub(&sa->seq, 1);
            return TS_DROP_SEQ_OVERFLOW;
        }
        return TS_DROP_NONE;
    }
    uint64_t cur = atomic_load(&sa->seq);
    for (;;) {
        uint64_t limit = atomic_load(&sa->seq_limit);
        if (!limit)
            limit = max;   /* none: the end of the numbers (ESN here) */
        if (cur >= limit)
            return limit < max ? TS_DROP_UNRESERVED : TS_DROP_SEQ_OVERFLOW;
        if (atomic_compare_exchange_weak(&sa->seq, &cur, cur + 1)) {
            *out = cur + 1;
            return TS_DROP_NONE;
        }
    }
}

/* The packet read from the TUN is this SA's own ESP (or our IKE) on its way to the SA's peer: UDP
 * from the SA's port (and its address, unless the wildcard) to its remote address and port.  The
 * host routes that peer's address into the TUN (a peer that moved to an address inside a tunnel or a
 * pool); sealed again it would come back larger, round after round, until the MTU stops it.  Four
 * comparisons of the parsed flow, no route lookup; a later fragment (no ports) passes, its next
 * round does not. */
static bool own_esp(const ts_sa *sa, const ts_flow *f) {
    size_t n = sa->remote.family == 4 ? 4 : 16;
    if (f->proto != 17 || f->opaque || f->family != sa->remote.family || f->dport != sa->remote.port ||
        f->sport != sa->local.port || memcmp(f->dst, sa->remote.addr, n) != 0)
        return false;
    return !ts_addr_is_specific(&sa->local) || sa->local.family != f->family || memcmp(f->src, sa->local.addr, n) == 0;
}

int ts_outbound_locked(ts_dp *dp, ts_flow_cache *cache, const uint8_t *pkt, size_t len, uint8_t *out,
                       size_t outcap, ts_sa **sa_out, int *drop, size_t *icmp_len) {
    ts_flow f;
    *icmp_len = 0;
    /* malformed, or a source route: sealed, it would go on past the selectors (srcroute.h) */
    *drop = ts_flow_parse_own(pkt, len, &f);
    if (*drop != TS_DROP_NONE)
        return 0;
    if (ts_own_end_from(dp, &f)) {   /* our own ESP (or IKE), whatever SA it would enter: ownesp.c */
        *drop = TS_DROP_ESP_LOOP;
        return 0;
    }
    ts_spd_entry *e = ts_spd_lookup_cached(&dp->spd, cache, &f);
    if (!e) {
        /* a fragment's own count: its datagram's first fragment may have found a policy */
        *drop = f.opaque ? TS_DROP_FRAGMENT_NO_POLICY : TS_DROP_NO_POLICY;
        return 0;
    }
    atomic_fetch_add_explicit(&e->packets, 1, memory_order_relaxed);
    if (e->pol.action != TS_ACT_PROTECT) {
        *drop = e->pol.action == TS_ACT_DISCARD ? TS_DROP_DISCARD : TS_DROP_BYPASS;
        return 0;
    }
    ts_sa *sa = e->out_sa;
    if (!sa) {
        acquire(dp, e, &f);
        *drop = TS_DROP_NO_SA;
        return 0;
    }
    if (atomic_load(&sa->state) != TS_SA_MATURE) {
        /* dead: its numbers used up (the counter rests on the last one), or a hard limit */
        bool spent = atomic_load(&sa->seq) == (sa->esn ? UINT64_MAX : UINT32_MAX);
        *drop = spent ? TS_DROP_SEQ_OVERFLOW : TS_DROP_LIFETIME;
        expire_again(dp, sa);
        return 0;
    }
    if (own_esp(sa, &f)) {
        *drop = TS_DROP_ESP_LOOP;
        return 0;
    }
    uint32_t mtu = atomic_load(&dp->tunnel_mtu);
    if (mtu && len > mtu && dont_fragment(pkt)) {
        *drop = TS_DROP_TOO_BIG;
        if (ts_icmp_may_answer(pkt, len, &f) && ts_icmp_limit_ok(dp, &f))
            *icmp_len = ts_icmp_too_big(pkt, len, mtu, out, outcap);
        else
            ts_drop(dp, TS_DROP_ICMP_SUPPRESSED);
        return 0;
    }
    if (len + ESP_HDR + ESP_IV + 3 + 2 + ESP_ICV > outcap) {
        *drop = TS_DROP_TOO_BIG;
        return 0;
    }
    uint64_t seq;
    int why = next_seq(sa, &seq);
    if (why == TS_DROP_UNRESERVED) {
        *drop = why;
        return 0;
    }
    if (why == TS_DROP_SEQ_OVERFLOW) {
        /* RFC 4303 §3.3.3: never wrap without ESN; the SA must be replaced
         * (next_seq left the counter on the last number sent). */
        kill_sa(dp, sa, TS_EXP_SEQ);
        *drop = TS_DROP_SEQ_OVERFLOW;
        return 0;
    }
    if (!account(dp, sa, len)) {
        *drop = TS_DROP_LIFETIME;
        return 0;
    }
    seq_soft(dp, sa, seq);   /* after account: the EXPIRE's counters include this packet */
    emit_reserve(dp, sa, seq, false);
    memcpy(out + ESP_HDR + ESP_IV, pkt, len);
    /* loop threads seal with contexts of their own; control threads share slot 0 */
    bool shared = ts_thread_slot() == 0;
    if (shared)
        pthread_mutex_lock(&sa->lock);
    size_t n = ts_esp_seal(sa, seq, out, len, f.family == 4 ? 4 : 41);
    if (shared)
        pthread_mutex_unlock(&sa->lock);
    if (!n) {
        *drop = TS_DROP_MALFORMED;
        return 0;
    }
    *sa_out = sa;
    return (int)n;
}

static uint64_t sip_le64(const uint8_t *p, size_t n) {
    uint64_t r = 0;
    for (size_t i = n; i-- > 0;)
        r = r << 8 | p[i];
    return r;
}

/* SipHash-c-d (Aumasson, Bernstein): a keyed hash whose output an attacker who does not know
 * the key cannot steer, however he picks the input */
uint64_t ts_siphash(const uint64_t key[2], const uint8_t *in, size_t len, int c, int d) {
    uint64_t v[4] = {key[0] ^ 0x736f6d6570736575ull, key[1] ^ 0x646f72616e646f6dull,
                     key[0] ^ 0x6c7967656e657261ull, key[1] ^ 0x7465646279746573ull};
    size_t whole = len - len % 8;
    for (size_t i = 0; i <= whole; i += 8) {
        /* the last word: the tail bytes and the length in the top byte */
        uint64_t m = i < whole ? sip_le64(in + i, 8) : sip_le64(in + i, len % 8) | (uint64_t)len << 56;
        v[3] ^= m;
        for (int r = 0; r < c; r++)
            ts_sip_round(v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for (int r = 0; r < d; r++)
        ts_sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t ts_siphash24(const uint64_t key[2], const uint8_t *in, size_t len) {
    return ts_siphash(key, in, len, 2, 4);
}

/* The IPv6 prefix a sender counts under: every host is given a /64 at least and may send from
 * any address of it (SLAAC privacy addresses, no spoofing needed), so counting by address gave
 * one host 2^64 shares (review revfast F1).  It is dos.ipv6_source_prefix, as in the control
 * process's own per-source limits (tunsec/ike/dos_source.py): 64 by default, 128 per address, 48
 * a site's /48 (the worker's --ipv6-source-prefix, ts_dp_set_ipv6_source_prefix).  Kept as a
 * mask, made once: a packet pays 16 ANDs for it. */
static const uint8_t WHOLE_ADDRESS[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

void ts_ipv6_prefix_mask(uint8_t mask[16], unsigned bits) {
    for (unsigned i = 0; i < 16; i++) {
        unsigned in = bits > 8 * i ? bits - 8 * i : 0;   /* the prefix's bits in byte i */
        mask[i] = in >= 8 ? 0xff : (uint8_t)(0xff00u >> in);
    }
}

int ts_dp_set_ipv6_source_prefix(ts_dp *dp, unsigned bits) {
    if (bits < 1 || bits > 128)
        return TS_EINVAL;
    uint8_t mask[16];
    ts_ipv6_prefix_mask(mask, bits);
    /* the loops hash under the read lock: a change while they run is never half seen */
    pthread_rwlock_wrlock(&dp->lock);
    memcpy(dp->source_mask6, mask, sizeof(mask));
    pthread_rwlock_unlock(&dp->lock);
    return TS_OK;
}

/* src's address only (a NAT gives one host many ports), an IPv6 one's under mask6 (the rest
 * counted as 0), hashed with this context's key */
static uint64_t hash_source(const ts_dp *dp, const ts_addr *src, const uint8_t mask6[16]) {
    uint8_t in[17] = {0};
    size_t n = 1;
    if (src && src->family == 4) {
        in[0] = 4;
        memcpy(in + 1, src->addr, 4);
        n += 4;
    } else if (src && src->family == 6) {
        in[0] = 6;
        for (size_t i = 0; i < 16; i++)
            in[1 + i] = src->addr[i] & mask6[i];
        n += 16;
    }
    return ts_siphash24(dp->source_key, in, n);
}

/* an IPv6 one by its prefix (dos.ipv6_source_prefix): the per-source slots of INVALID_SPI and of
 * queued IKE datagrams, unknown or tagged, take their bits from it (anyone may send those, from
 * any address of the host's prefix) */
uint64_t ts_source_hash(const ts_dp *dp, const ts_addr *src) {
    return hash_source(dp, src, dp->source_mask6);
}

/* the whole address, whatever dos.ipv6_source_prefix is: the known IKE datagrams' per-source share
 * (review revfastfix F1).  Each of those needs an authenticated identity, held to its peer's share
 * whatever address it sends from, so a host's 2^64 addresses give it nothing more; by /64, every
 * road warrior of an office or
 * Wi-Fi LAN shared one share of 32 for its DPD, rekeys and DELETEs, and an insider with two
 * identities sending its own SPIs from one address of the LAN filled it for all of them; and the
 * ICMP too-big answers' per-sender share (icmp_limit.c, review revcfg F3) */
uint64_t ts_address_hash(const ts_dp *dp, const ts_addr *src) {
    return hash_source(dp, src, WHOLE_ADDRESS);
}

static _Atomic uint64_t *invalid_spi_slot(ts_dp *dp, const ts_addr *src) {
    return &dp->invalid_spi_src_ns[ts_source_hash(dp, src) & (TS_INVALID_SPI_SLOTS - 1)];
}

/* the high half: sources that share an INVALID_SPI slot need not share this one */
static unsigned ike_source_slot(const ts_dp *dp, const ts_addr *src) {
    return (unsigned)(ts_source_hash(dp, src) >> 32) & (TS_IKE_SOURCE_SLOTS - 1);
}

/* a known datagram's sender's slot in the known shares: by its whole address */
static unsigned ike_known_source_slot(const ts_dp *dp, const ts_addr *src) {
    return (unsigned)(ts_address_hash(dp, src) >> 32) & (TS_IKE_SOURCE_SLOTS - 1);
}

unsigned ts_test_ike_known_source_slot(ts_dp *dp, const ts_addr *src) {
    return ike_known_source_slot(dp, src);
}

/* a tagged datagram's sender has the unknown one's slot: source_hash counts an IPv6 one by its prefix
 * for both (a host holds it all, and each address of it may earn a tag) */
unsigned ts_test_ike_proven_slot(ts_dp *dp, const ts_addr *src) {
    return ike_source_slot(dp, src);
}

unsigned ts_test_invalid_spi_slot(ts_dp *dp, const ts_addr *src) {
    return (unsigned)(invalid_spi_slot(dp, src) - dp->invalid_spi_src_ns);
}

unsigned ts_test_ike_source_slot(ts_dp *dp, const ts_addr *src) {
    return ike_source_slot(dp, src);
}

#define INVALID_SPI_SOURCE_NS 1000000000ull   /* one event per source address a second ... */
/* ... and from all together a burst of ten, then ten a second (GCRA).  The hints that matter
 * come in a crowd: after the gateway or its worker restarts, every peer's ESP for SPIs it lost
 * arrives within milliseconds, and a fixed 100 ms spacing withheld all but one of them.  Ten at
 * once serves a small crowd in one go and a larger one at 10/s as the bucket refills (each peer
 * keeps sending, so its next packet asks again).  The average stays the 10/s the control process
 * was sized for (no one-second window holds more than 20), and ten is far below the event
 * queue's TS_EVENT_CAP, so a burst never crowds out EXPIRE or ACQUIRE. */
#define INVALID_SPI_ALL_INTERVAL_NS 100000000ull
#define INVALID_SPI_ALL_BURST 10

/* a hint for the control side, never proof of anything: one source must not crowd out the
 * others (RFC 7296 §2.21.4 wants the hint for the peer that lost its state) */
static void invalid_spi(ts_dp *dp, uint32_t spi, const ts_addr *src) {
    uint64_t now = limiter_now(dp);
    _Atomic uint64_t *slot = invalid_spi_slot(dp, src);
    uint64_t last = atomic_load(slot);
    /* the source's own limit first, so a source over it takes nothing from the shared budget */
    if (last && now < last + INVALID_SPI_SOURCE_NS) {
        ts_drop(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT);
        return;
    }
    /* its slot is taken only once the shared limiter agreed: a spent budget costs it no turn */
    if (!bucket_ok(&dp->invalid_spi_tat_ns, now, INVALID_SPI_ALL_INTERVAL_NS, INVALID_SPI_ALL_BURST)) {
        ts_drop(dp, TS_DROP_INVALID_SPI_RATE_LIMIT);
        return;
    }
    if (!atomic_compare_exchange_strong(slot, &last, now)) {
        /* another thread took this slot's turn since the check above: the source is over its
         * limit after all, so the shared answer goes back for the others */
        bucket_refund(&dp->invalid_spi_tat_ns, INVALID_SPI_ALL_INTERVAL_NS);
        ts_drop(dp, TS_DROP_INVALID_SPI_SOURCE_LIMIT);
        return;
    }
    ts_event ev = {.type = TS_EV_INVALID_SPI, .spi = spi};
    if (src)
        ev.addr = *src;
    if (!ts_events_push(&dp->events, &ev, NULL, 0))
        ts_drop(dp, TS_DROP_QUEUE_FULL);
}

/* trailer and inner header checks after a successful decryption */
static int check_inner(ts_sa *sa, const uint8_t *pt, size_t pt_len, size_t *inner_len) {
    if (pt_len < 2)
        return TS_DROP_MALFORMED;
    size_t padlen = pt[pt_len - 2];
    uint8_t nh = pt[pt_len - 1];
    if (padlen + 2 > pt_len)
        return TS_DROP_MALFORMED;
    size_t plen = pt_len - 2 - padlen;
    for (size_t i = 0; i < padlen; i++)
        if (pt[plen + i] != (uint8_t)(i + 1))
            return TS_DROP_MALFORMED;
    if (nh == PROTO_DUMMY) {
        *inner_len = pt_len;   /* no inner packet: what it carried is its whole payload (account) */
        return TS_DROP_DUMMY;
    }
    ts_flow f;
    int why = nh == 4 || nh == 41 ? ts_flow_parse_own(pt, plen, &f) : TS_DROP_MALFORMED;
    if (why == TS_DROP_NONE && (nh == 4) != (f.family == 4))
        why = TS_DROP_MALFORMED;   /* the next header and the inner version disagree */
    if (why != TS_DROP_NONE)
        return why;   /* malformed, or a source route: destinations no selector saw (srcroute.h) */
    /* TFC padding may follow the inner packet: its own length field wins */
    *inner_len = f.family == 4 ? ts_be16(pt + 2) : (size_t)ts_be16(pt + 4) + 40;
    /* an SA without selectors admits nothing: "no selector" never means "any" */
    bool ok = false;
    for (uint32_t i = 0; i < sa->n_sel && !ok; i++)
        ok = ts_selector_match(&sa->sel[i], &f);
    if (!ok)
        return TS_DROP_POLICY;
    /* an ICMP error speaks for the packet it quotes: that one must be this SA's traffic too */
    return ts_icmp_quote_ok(pt, plen, &f, sa->sel, sa->n_sel) ? TS_DROP_NONE : TS_DROP_ICMP_QUOTE;
}

/* An IKE message up to the control process (it parses and answers it): only a whole IKE header
 * whose length field is the message's goes up (cheap, and keeps junk out of the event queue),
 * within its sender's share of the queue, or its peer's and its sender's shares of the reserve.
 * Anyone may send these, spoofed, before any state. */
static void ike_event(ts_dp *dp, const uint8_t *ike, size_t len, const ts_addr *src, const ts_addr *local,
                      bool unmarked, int *drop) {
    if (len > TS_IKE_MAX_MESSAGE) {   /* the control side would drop it unparsed: spare the queue */
        *drop = TS_DROP_IKE_TOO_BIG;
        return;
    }
    if (len < IKE_HDR_LEN || ts_be32(ike + IKE_HDR_LEN_OFF) != len) {
        *drop = TS_DROP_MALFORMED;
        return;
    }
    /* a datagram of an established IKE SA (our SPI in it: nobody off-path knows one) has a
     * reserve in the queue; the others' senders share what is left */
    uint64_t peer = 0;
    int slot = ts_ike_known_slot(dp, ike, &peer);
    ts_event ev = {.type = TS_EV_IKE, .known = slot >= 0, .peer = peer, .unmarked = unmarked,
                   .proven = slot < 0 && src && ts_ike_spi_tagged(dp, ike, src)};
    if (src)
        ev.addr = *src;
    if (local)
        ev.local = *local;
    bool evicted;
    *drop = ts_events_push_ike(&dp->events, &ev, ike, len,
                               slot >= 0 ? ike_known_source_slot(dp, src) : ike_source_slot(dp, src), slot, &evicted);
    if (evicted)   /* queued, and another of its sender's share (its biggest peer's oldest) dropped */
        ts_drop(dp, TS_DROP_IKE_KNOWN_SOURCE);
}

/* A whole unmarked IKE_SA_INIT request (RFC 7296 §3.1): IKEv2, the original initiator's, no
 * response, the responder's SPI zero, its length field the datagram's. */
static bool ike_sa_init_request(const uint8_t *p, size_t len) {
    static const uint8_t zero_spi[8];
    return len >= IKE_HDR_LEN && memcmp(p + 8, zero_spi, 8) == 0 && p[17] == IKE_VERSION_2 &&
           p[18] == IKE_SA_INIT && (p[19] & (IKE_FLAG_INITIATOR | IKE_FLAG_RESPONSE)) == IKE_FLAG_INITIATOR &&
           ts_be32(p + IKE_HDR_LEN_OFF) == len;
}

int ts_inbound_locked(ts_dp *dp, uint8_t *udp, size_t len, const ts_addr *src,
                      const ts_addr *local, uint8_t *out, size_t outcap, int *drop) {
    *drop = TS_DROP_NONE;
    if (len == 1 && udp[0] == UDP_KEEPALIVE) {
        *drop = TS_DROP_KEEPALIVE;
        return 0;
    }
    /* The marker decides, from any port (RFC 3948 §2.2, as the kernel's UDP_ENCAP socket under
     * strongSwan does): a NAT may map a client's port 4500 to public port 500, and its ESP and
     * marked IKE come from there.  One exception: a whole unmarked IKE_SA_INIT request, from any
     * port (a strongSwan peer with remote_port = 4500 sends it from its 500 unmarked, the marker
     * used only when neither port is 500, and a NAT may give that 500 another public port; it
     * floats to 4500 after the answer, which goes back unmarked: the event says so).  ESP never
     * looks like one: an IKE_SA_INIT request's bytes 8-15, ESP's IV, are zero, and its type,
     * flags and length too. */
    if (ike_sa_init_request(udp, len)) {
        ike_event(dp, udp, len, src, local, true, drop);
        return 0;
    }
    if (len > NON_ESP_MARKER_LEN && ts_be32(udp) == 0) {   /* the marker alone carries no IKE: malformed below */
        ike_event(dp, udp + NON_ESP_MARKER_LEN, len - NON_ESP_MARKER_LEN, src, local, false, drop);
        return 0;
    }
    uint32_t spi = len >= 4 ? ts_be32(udp) : 0;
    if (len < ESP_MIN || ((len - ESP_HDR - ESP_IV - ESP_ICV) & 3) || spi < 256) {
        *drop = TS_DROP_MALFORMED;
        return 0;
    }
    ts_sa *sa = ts_sad_find(&dp->sad, spi, TS_DIR_IN);
    uint8_t state = sa ? atomic_load(&sa->state) : TS_SA_LARVAL;
    if (state != TS_SA_MATURE) {
        if (state == TS_SA_LARVAL)
            invalid_spi(dp, spi, src);   /* a larval SA has no keys yet: as good as unknown */
        else
            expire_again(dp, sa);   /* dead, until the worker takes its hard EXPIRE and removes it */
        *drop = state == TS_SA_LARVAL ? TS_DROP_NO_SA : TS_DROP_LIFETIME;
        return 0;
    }
    if (len - ESP_HDR - ESP_IV - ESP_ICV > outcap) {
        *drop = TS_DROP_MALFORMED;
        return 0;
    }
    uint32_t seq_lo = ts_be32(udp + 4);
    /* the window is checked before and updated after decryption, which runs
     * outside the lock on loop threads (their own cipher contexts) */
    bool shared = ts_thread_slot() == 0;
    pthread_mutex_lock(&sa->lock);
    uint64_t seq = ts_replay_infer(&sa->replay, seq_lo, sa->esn);
    /* past the high-water mark persisted for a restart: accepting it could
     * let a restarted receiver accept it a second time.  It is still
     * authenticated (never recorded), so that a genuine sender's jump makes
     * the control side reserve past it. */
    uint64_t limit = atomic_load(&sa->seq_limit);
    bool above = limit && seq > limit;
    bool fresh = ts_replay_check(&sa->replay, seq);
    if (!shared)
        pthread_mutex_unlock(&sa->lock);
    if (!fresh) {
        if (shared)
            pthread_mutex_unlock(&sa->lock);
        atomic_fetch_add_explicit(&sa->counters[TS_CTR_REPLAY_DROPS], 1, memory_order_relaxed);
        *drop = TS_DROP_REPLAY;
        return 0;
    }
    size_t pt_len = 0;
    bool ok = ts_esp_open(sa, seq, udp, len, &pt_len);
    if (!shared)
        pthread_mutex_lock(&sa->lock);
    fresh = ok && !above && ts_replay_update(&sa->replay, seq);   /* a duplicate may have won the race */
    pthread_mutex_unlock(&sa->lock);
    if (!ok) {
        atomic_fetch_add_explicit(&sa->counters[TS_CTR_AUTH_DROPS], 1, memory_order_relaxed);
        *drop = TS_DROP_AUTH;
        return 0;
    }
    emit_first_use(dp, sa);   /* authentic, even if replayed or past the reservation below */
    if (above) {
        emit_reserve(dp, sa, seq, true);
        *drop = TS_DROP_UNRESERVED;
        return 0;
    }
    if (!fresh) {
        atomic_fetch_add_explicit(&sa->counters[TS_CTR_REPLAY_DROPS], 1, memory_order_relaxed);
        *drop = TS_DROP_REPLAY;
        return 0;
    }
    const uint8_t *pt = udp + ESP_HDR + ESP_IV;
    size_t inner_len = 0;
    int why = check_inner(sa, pt, pt_len, &inner_len);
    if (why != TS_DROP_NONE && why != TS_DROP_DUMMY) {
        if (why == TS_DROP_POLICY || why == TS_DROP_ICMP_QUOTE || why == TS_DROP_SOURCE_ROUTE)
            atomic_fetch_add_explicit(&sa->counters[TS_CTR_POLICY_DROPS], 1, memory_order_relaxed);
        *drop = why;
        return 0;
    }
    /* a TFC dummy (RFC 4303 §2.6) took a number and the key like any packet: it counts in the SA's
     * lifetime too, or a peer could send without end on one key (review revesp R2; XFRM counts it) */
    if (!account(dp, sa, inner_len)) {
        *drop = TS_DROP_LIFETIME;
        return 0;
    }
    emit_reserve(dp, sa, seq, false);
    if (why == TS_DROP_DUMMY) {
        *drop = why;
        return 0;
    }
    memcpy(out, pt, inner_len);
    return (int)inner_len;
}

int ts_dp_outbound(ts_dp *dp, const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap,
                   ts_addr *dst, int *drop, size_t *icmp_len) {
    if (len > TS_MAX_PACKET) {
        *drop = TS_DROP_MALFORMED;
        ts_drop(dp, *drop);
        return 0;
    }
    ts_sa *sa = NULL;
    pthread_rwlock_rdlock(&dp->lock);
    int n = ts_outbound_locked(dp, NULL, pkt, len, out, outcap, &sa, drop, icmp_len);
    if (n > 0 && dst)
        *dst = sa->remote;
    pthread_rwlock_unlock(&dp->lock);
    ts_drop(dp, *drop);
    return n;
}

/* decryption works in place: callers' buffers are const, so copy into a
 * per-thread scratch buffer (no allocation per packet) */
static _Thread_local uint8_t scratch[TS_MAX_PACKET];

int ts_dp_inbound(ts_dp *dp, const uint8_t *udp, size_t len, const ts_addr *src,
                  const ts_addr *local, uint8_t *out, size_t outcap, int *drop) {
    if (len > TS_MAX_PACKET) {
        *drop = TS_DROP_MALFORMED;
        ts_drop(dp, *drop);
        return 0;
    }
    memcpy(scratch, udp, len);
    pthread_rwlock_rdlock(&dp->lock);
    int n = ts_inbound_locked(dp, scratch, len, src, local, out, outcap, drop);
    pthread_rwlock_unlock(&dp->lock);
    ts_drop(dp, *drop);
    return n;
}

