/* tunsec dataplane: the C fast path's public API (consumed by cffi).
 *
 * One ts_dp holds the SAD, the SPD, the counters and the batch loop between a
 * TUN fd and the ESP-in-UDP sockets.  One loop per TUN queue, each on its own
 * thread (ts_dp_run_queue; ts_dp_run is queue 0; the per-packet pipeline is
 * drawn at the top of loop.c); control calls (SA/SPD changes, dumps) may come from any other
 * thread at any time: they take the context's write lock, the loop takes the
 * read lock once per batch.  Per-SA counters are atomics so that several loop
 * threads can share an SA.
 *
 * Return convention: >= 0 success, negative errno-style TS_E* on failure.
 */
#ifndef TUNSEC_DP_H
#define TUNSEC_DP_H

#include <stdint.h>
#include <stddef.h>

#define TS_MAX_SELECTORS 8
#define TS_KEYMAT_MAX 36      /* AES-256 key + 4-byte salt */
#define TS_MAX_PACKET 65536
/* the longest IKE message passed up to the control process; longer ones are dropped here
 * (TS_DROP_IKE_TOO_BIG): tunsec.ike.constants.MAX_IKE_MESSAGE, strongSwan's charon.max_packet */
#define TS_IKE_MAX_MESSAGE 10000
#define TS_BATCH 64
/* the most segments one TSO/USO read of a TUN with offloads may carry (loop.c cuts them; more: the
 * read is dropped, malformed): tun.py sets the TUN's gso_max_segs to it */
#define TS_VNET_MAX_SEGS 256
#define TS_MAX_QUEUES 16

enum ts_err {
    TS_OK = 0,
    TS_EINVAL = -1,    /* bad argument */
    TS_EEXIST = -2,    /* SPI / policy id already in use */
    TS_ENOENT = -3,    /* no such SA / policy */
    TS_ENOSPC = -4,    /* no free SPI in range / table full */
    TS_ESTATE = -5,    /* wrong state (UPDATE of a non-larval SA, ...) */
    TS_ENOMEM = -6,
    TS_ECRYPTO = -7,   /* OpenSSL refused */
    TS_EIO = -8,       /* system call failed; errno is kept in ts_dp_errno */
};

/* Why an incoming/outgoing packet was not forwarded.  A new reason is one line
 * here (before TS_DROP__COUNT) and the ts_drop() call that counts it: Python
 * reads this enum through cffi (fastpath.Drop), and DUMP and `tunsec status`
 * carry each counter by its lower-case name without TS_DROP_ (at most 32
 * characters); the numbers never leave the process.  Not exactly 20 names: CPython 3.11 keeps
 * every freed 20-tuple in a free list it never takes from, ~400 KiB per process as DUMP's drop table
 * (tests/test_ike_memory.py, tests/dataplane/test_worker_memory.py fail then). */
enum ts_drop {
    TS_DROP_NONE = 0,
    TS_DROP_NO_SA,          /* inbound SPI unknown, or PROTECT policy without SA */
    TS_DROP_REPLAY,         /* sequence number replayed or left of the window */
    TS_DROP_AUTH,           /* ICV did not verify */
    TS_DROP_POLICY,         /* inner packet outside the SA's selectors */
    TS_DROP_MALFORMED,      /* truncated/invalid ESP, IP or padding */
    TS_DROP_TOO_BIG,        /* larger than the tunnel carries (ICMP sent back) */
    TS_DROP_NO_POLICY,      /* outbound packet matched no SPD entry */
    TS_DROP_DISCARD,        /* outbound packet matched a DISCARD policy */
    TS_DROP_BYPASS,         /* outbound packet matched BYPASS: it has no clear path out of the TUN */
    TS_DROP_SEQ_OVERFLOW,   /* outbound SA used up its sequence numbers */
    TS_DROP_LIFETIME,       /* SA hit its hard byte/packet limit */
    TS_DROP_KEEPALIVE,      /* NAT-T keepalive (0xFF), expected, not an error */
    TS_DROP_DUMMY,          /* next header 59 (TFC dummy packet), expected */
    TS_DROP_IO,             /* send/write failed (EAGAIN, ENOBUFS, ...) */
    TS_DROP_QUEUE_FULL,     /* event queue to the control side full */
    TS_DROP_HOLD_FULL,      /* waiting for its SA, pushed out of the policy's hold by newer ones */
    TS_DROP_HOLD_TIMEOUT,   /* waited for its SA too long (negotiation failed), or its policy went away */
    TS_DROP_ICMP_SUPPRESSED, /* too big, but no ICMP answer: rate limit, or the packet was an
                                ICMP error, a later IPv4 fragment, to an IPv4 multicast or
                                broadcast address (224/3) or from a non-unicast source (icmp.c
                                ts_icmp_may_answer; counted per answer withheld, on top of
                                TS_DROP_TOO_BIG for the packet) */
    TS_DROP_UNRESERVED,     /* sequence number past the SA's persisted reservation (seq_limit) */
    TS_DROP_INVALID_SPI_SOURCE_LIMIT, /* unknown SPI, no INVALID_SPI event: its source address had one
                                         within the second (junk from one sender) */
    TS_DROP_INVALID_SPI_RATE_LIMIT,   /* unknown SPI, no INVALID_SPI event: all sources together spent
                                         their shared budget (a burst of 10, refilled at 10 a second;
                                         hints for real peers may be lost); both counted per event
                                         withheld, on top of TS_DROP_NO_SA */
    TS_DROP_IKE_TOO_BIG,    /* an IKE message longer than TS_IKE_MAX_MESSAGE: not passed up */
    TS_DROP_ICMP_QUOTE,     /* inbound ICMP/ICMPv6 error inside the SA's selectors whose quoted
                               packet, reversed, is not (RFC 4301 §6.2), or that quotes no
                               whole IP header; also the SA's policy_drops */
    TS_DROP_IKE_SOURCE_LIMIT,         /* IKE datagram not passed up: its source address (or one whose
                                         keyed hash shares its slot) already has 32 waiting for the
                                         control process */
    TS_DROP_IKE_KNOWN_SHARE,          /* IKE datagram of an established IKE SA (our SPI in it) not
                                         passed up: that SA's peer (all its IKE SAs, or a peer whose
                                         keyed hash shares its slot) already has 16 waiting */
    TS_DROP_IKE_KNOWN_FULL,           /* ... not passed up: the IKE half of the event queue is full,
                                         its reserve for established IKE SAs too */
    TS_DROP_IKE_KNOWN_SOURCE,         /* ... pushed out: its source address (whole, an IPv6 one's
                                         too; or one whose keyed hash shares its slot) had 32 of
                                         them waiting and another came, so the oldest of the peer
                                         with the most waiting there went (events.c evict_known) */
    TS_DROP_IKE_PROVEN_SOURCE,        /* IKE datagram whose SPI of ours carries our tag for its sender
                                         (an IKE_AUTH to a half-open SA, ts_dp_ike_spi_key) not passed
                                         up: its address (or one whose keyed hash shares its slot)
                                         already has 128 of them waiting */
    TS_DROP_IKE_PROVEN_FULL,          /* ... not passed up: the IKE half of the event queue is full,
                                         their reserve too */
    TS_DROP_FRAGMENT_NO_POLICY,       /* outbound packet that shows no ports (a later fragment, or a
                                         first one too short for them) matched no policy that allows
                                         any port: port-restricted ones never take it (RFC 4301 §7) */
    TS_DROP_ESP_LOOP,                 /* outbound packet that is our own ESP-in-UDP: UDP from one of
                                         our ESP ends (ownesp.c: an SA's local address and port, or
                                         its port from any address if its local is the wildcard),
                                         whatever its destination, or from the chosen SA's port to
                                         its peer: a peer's address is routed into the TUN, and
                                         sealing it again would loop (review revmobike F1, revmobfix
                                         F2: two SAs sealing each other's) */
    TS_DROP_SOURCE_ROUTE,             /* inner packet (inbound, decrypted; or outbound, from the TUN)
                                         with a source route that has hops to go: an IPv4 LSRR/SSRR
                                         option or an IPv6 Routing header with Segments Left > 0
                                         names destinations the selectors never saw (srcroute.h,
                                         review revesp F1) */
    TS_DROP__COUNT
};

/* Per-SA counters, the index of ts_sa_info.counters[] (and of the SA's own
 * array).  As with enum ts_drop, a new counter is one line here (before
 * TS_CTR__COUNT) and the code that counts it: Python reads this enum through
 * cffi (fastpath.SA_COUNTERS), DUMP carries each counter by its lower-case
 * name without TS_CTR_ (at most 32 characters), and `tunsec status` and the
 * tunsec_child_sa_<name> metric show it (metrics.SA_COUNTER_HELP holds the
 * help text, or says how a counter is exported differently). */
enum ts_sa_counter {
    TS_CTR_PACKETS = 0,     /* packets through the SA: OUT sent, IN accepted (TFC dummies too) */
    TS_CTR_BYTES,           /* inner bytes of those packets (a dummy's: its whole payload) */
    TS_CTR_REPLAY_DROPS,    /* IN: sequence number replayed or left of the window */
    TS_CTR_AUTH_DROPS,      /* IN: ICV did not verify */
    TS_CTR_POLICY_DROPS,    /* IN: inner packet (or the packet an ICMP error quotes) outside the SA's selectors */
    TS_CTR__COUNT
};

enum ts_action { TS_ACT_DISCARD = 0, TS_ACT_BYPASS = 1, TS_ACT_PROTECT = 2 };
enum ts_dir { TS_DIR_IN = 0, TS_DIR_OUT = 1 };
enum ts_sa_state { TS_SA_LARVAL = 0, TS_SA_MATURE = 1, TS_SA_DEAD = 2 };

typedef struct ts_addr {
    uint8_t family;        /* 4 or 6; 0 = unset */
    uint8_t addr[16];      /* IPv4 uses the first 4 bytes */
    uint16_t port;         /* host order */
} ts_addr;

/* A traffic selector: inclusive address and port ranges, one protocol
 * (0 = any).  Ranges are in network byte order, compared bytewise. */
typedef struct ts_selector {
    uint8_t family;              /* 4 or 6 */
    uint8_t proto;               /* 0 = any */
    uint8_t src_lo[16], src_hi[16];
    uint8_t dst_lo[16], dst_hi[16];
    uint16_t sport_lo, sport_hi; /* 0..65535 = any */
    uint16_t dport_lo, dport_hi;
} ts_selector;

typedef struct ts_sa_params {
    uint32_t spi;
    uint8_t dir;                 /* enum ts_dir */
    uint8_t keylen;              /* 20 (AES-128-GCM) or 36 (AES-256-GCM): key || salt */
    uint8_t key[TS_KEYMAT_MAX];
    uint8_t esn;
    uint32_t replay_window;      /* 0 = off, else 32..TS_REPLAY_MAX */
    uint32_t reqid;              /* links an outbound SA to PROTECT policies */
    ts_addr local, remote;       /* outer addresses and UDP ports */
    uint64_t soft_bytes, hard_bytes, soft_packets, hard_packets;   /* 0 = none */
    uint64_t seq_start;          /* first outbound sequence number - 1 (normally 0) */
    uint32_t n_sel;              /* inner selectors the SA carries (src=local side for OUT) */
    ts_selector sel[TS_MAX_SELECTORS];
    /* Reservations (manually keyed SAs, whose sequence state must survive
     * restarts).  seq_limit 0 = none.  OUT: no sequence number above
     * seq_limit is ever sent.  IN: none above it is accepted, and seq_start
     * is the replay floor: everything <= seq_start counts as already seen.
     * When OUT's last sent / IN's highest accepted number reaches seq_notify
     * (0 = never), one TS_EV_RESERVE is raised; ts_sad_reserve re-arms it. */
    uint64_t seq_limit;
    uint64_t seq_notify;
    /* IN only (0 or 1): raise one TS_EV_FIRST_USE when the first packet passes
     * ICV verification: proof the peer sends on this SA (a rekey responder
     * then moves its own traffic to the new outbound SA) */
    uint8_t report_first_use;
} ts_sa_params;

#define TS_REPLAY_MAX 65536

typedef struct ts_sa_info {
    uint32_t spi;
    uint8_t dir, state, esn, keylen;
    uint32_t reqid, replay_window;
    ts_addr local, remote;
    uint64_t counters[TS_CTR__COUNT];   /* enum ts_sa_counter */
    uint64_t seq;                /* OUT: last sequence number sent; IN: highest accepted */
    uint8_t soft_fired, hard_fired;
    uint64_t age_ns;             /* since GETSPI/ADD, or since UPDATE */
    uint64_t seq_limit, seq_notify;   /* reservation, 0 = none */
} ts_sa_info;

typedef struct ts_policy {
    uint32_t id;                 /* caller's handle, unique */
    uint32_t priority;           /* lower first; ties keep insertion order */
    uint8_t action;              /* enum ts_action */
    uint32_t reqid;              /* PROTECT: which outbound SA */
    ts_selector sel;             /* src = inner source (our side) */
} ts_policy;

typedef struct ts_policy_info {
    uint32_t id, priority, reqid;
    uint8_t action;
    uint32_t out_spi;            /* SA currently bound, 0 = none */
    uint64_t packets;            /* matches */
    ts_selector sel;
} ts_policy_info;

enum ts_event_type {
    TS_EV_ACQUIRE = 1,           /* policy_id, sel = the packet's 5-tuple */
    TS_EV_EXPIRE = 2,            /* spi, dir, hard (0 soft / 1 hard), reason; OUT: addr = the SA's peer */
    TS_EV_INVALID_SPI = 3,       /* spi, addr = sender */
    TS_EV_IKE = 4,               /* addr = sender, data = IKE message (marker stripped) */
    TS_EV_RESERVE = 5,           /* spi, dir, seq: the SA reached seq_notify, or (IN) a peer is past seq_limit */
    TS_EV_FIRST_USE = 6,         /* spi (IN): first authenticated packet on an SA with report_first_use */
};

/* numbered as the pipe's ExpireReason (3 = TIME is the worker's own) */
enum ts_expire_reason { TS_EXP_BYTES = 1, TS_EXP_PACKETS = 2, TS_EXP_SEQ = 4 };
/* An outbound SA without ESN raises one soft EXPIRE (TS_EXP_SEQ) at its sequence number
 * 2^32 - TS_SEQ_SOFT_MARGIN (or its first one past it): 2^26 numbers, ~50 s at 1.2 M packets/s, for a
 * rekey before the hard stop at 2^32 - 1 (RFC 4303 §3.3.3).  The pipe's protocol.SEQ_SOFT_MARGIN. */
#define TS_SEQ_SOFT_MARGIN 67108864

typedef struct ts_event {
    uint8_t type;
    uint8_t dir, hard, reason;
    uint8_t known;               /* IKE: 1 if it names an established IKE SA of ours (ts_dp_ike_spi_add) */
    uint8_t proven;              /* IKE, not known: 1 if our SPI in it carries our tag for its sender's
                                    address (ts_dp_ike_spi_key): it got our answer there */
    uint8_t unmarked;            /* IKE: 1 if it came without the non-ESP marker (a whole IKE_SA_INIT
                                    request: its answer goes back so, the control process decides) */
    uint64_t peer;               /* IKE, known: that SA's peer (as added) */
    uint32_t spi;
    uint32_t policy_id;
    ts_addr addr;                /* peer (INVALID_SPI, IKE, EXPIRE of an OUT SA) */
    ts_addr local;               /* our address the packet arrived on */
    ts_selector sel;             /* ACQUIRE: single-packet selector */
    uint32_t data_len;           /* IKE: bytes copied into the caller's buffer */
    uint64_t seq;                /* RESERVE: IN, an authenticated number above seq_limit (0 = none) */
} ts_event;

typedef struct ts_dp ts_dp;

/* lifecycle */
ts_dp *ts_dp_new(void);
void ts_dp_free(ts_dp *dp);
/* fds are borrowed (not closed by ts_dp_free); -1 = absent.  Must be non-blocking. */
int ts_dp_set_fds(ts_dp *dp, int tun_fd, int udp4_fd, int udp6_fd);
/* largest inner packet the tunnel carries; bigger ones get ICMP too-big */
void ts_dp_set_tunnel_mtu(ts_dp *dp, uint32_t mtu);
/* The IPv6 prefix (1..128 bits, else TS_EINVAL) an unknown or tagged IKE sender and an INVALID_SPI
 * source count under (dos.ipv6_source_prefix; an established IKE SA's sender counts by its whole
 * address whatever this is); TS_IPV6_SOURCE_PREFIX_DEFAULT until set */
#define TS_IPV6_SOURCE_PREFIX_DEFAULT 64
int ts_dp_set_ipv6_source_prefix(ts_dp *dp, unsigned bits);
/* The host added an address (the pipe's ADDR_ADDED: the control process watches the host's
 * addresses, the worker holds no netlink socket): family 4 (addr: 4 bytes) or 6 (16 bytes); 0, addr
 * unused: maybe any, notices were lost.  An SA whose source the kernel refused tries it again with
 * its next message if it is its own address (addrwatch.c).  TS_EINVAL for another family. */
int ts_dp_addr_added(ts_dp *dp, int family, const uint8_t *addr);
int ts_dp_run(ts_dp *dp);          /* batch loop of queue 0; returns when ts_dp_stop is called */
/* more queues (IFF_MULTI_QUEUE TUN fd + SO_REUSEPORT sockets), one loop
 * thread each: ts_dp_add_queue returns the index for ts_dp_run_queue */
int ts_dp_add_queue(ts_dp *dp, int tun_fd, int udp4_fd, int udp6_fd);
int ts_dp_run_queue(ts_dp *dp, int queue);
void ts_dp_stop(ts_dp *dp);        /* every queue's loop returns */
int ts_dp_event_fd(ts_dp *dp);     /* readable while events are queued */
/* pops one event; IKE payload copied into buf (truncated to buflen).
 * returns 1 if an event was returned, 0 if none */
int ts_dp_next_event(ts_dp *dp, ts_event *ev, uint8_t *buf, size_t buflen);
int ts_dp_errno(ts_dp *dp);

/* SAD */
int ts_sad_getspi(ts_dp *dp, uint32_t lo, uint32_t hi, uint32_t *spi_out); /* inserts a larval inbound SA */
int ts_sad_update(ts_dp *dp, const ts_sa_params *p);   /* larval IN -> mature */
int ts_sad_add(ts_dp *dp, const ts_sa_params *p);      /* OUT (or a fully keyed IN without GETSPI: refused) */
/* An SA is (spi, IN) with remote NULL, or (spi, OUT, remote = the peer's address and port):
 * peers choose outbound SPIs, so two of them may pick the same one (TS_EINVAL otherwise) */
int ts_sad_delete(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote);
/* ts_sad_delete that also fills *final (if not NULL) with the SA as it went: its last counters,
 * read under the same write lock, so no packet is counted on it after (EXPIRE's final counters) */
int ts_sad_remove(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, ts_sa_info *final);
void ts_sad_flush(ts_dp *dp);
/* move a mature SA (named as in delete) to new_remote, and our end to new_local unless NULL,
 * same family, keys kept: NAT rebinding and MOBIKE.  TS_EEXIST if an OUT SA with that SPI
 * already goes there */
int ts_sad_migrate(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, const ts_addr *new_remote,
                   const ts_addr *new_local);
int ts_sad_get(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, ts_sa_info *out);
size_t ts_sad_count(ts_dp *dp);
size_t ts_sad_list(ts_dp *dp, ts_sa_info *out, size_t max);   /* returns number written */
/* raise a mature SA's reservation to limit (never lowers it: TS_EINVAL) and
 * set the next notify point; re-arms TS_EV_RESERVE */
/* remote: the peer of an OUT SA (its identity with the SPI); ignored for IN */
int ts_sad_reserve(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, uint64_t limit, uint64_t notify);

/* Our SPIs of established IKE SAs (the 8 bytes of the IKE header, big-endian): IKE datagrams
 * that name one as ours get a reserve in the event queue that others cannot take.  At most
 * TS_IKE_SPI_MAX (then TS_ENOSPC: that SA goes without); 0 is TS_EINVAL, a second add of one
 * TS_EEXIST, a delete of one not there TS_ENOENT. */
#define TS_IKE_SPI_MAX 65536
/* peer: who authenticated the IKE SA (the control process's id; 0: a peer of its own): all the
 * SAs of one peer share one share of the reserve */
int ts_dp_ike_spi_add(ts_dp *dp, uint64_t spi, uint64_t peer);
/* The key of the tags in the IKE SPIs the control process makes (tunsec/ike/spi_tag.py): an SPI
 * R || T (4 bytes each, as in the IKE header) was made for the address A if T is the low 32 bits of
 * SipHash-2-4(key, R || family (4 or 6) || A).  An IKE datagram of no established IKE SA whose SPI of
 * ours carries the tag for its sender's address comes from where our answer went (an off-path
 * spoofer guesses a tag 1 time in 2^32): its own shares (TS_IKE_PROVEN_*).  Until a key is set no
 * datagram is taken for one.  The control process draws a new key every few half-open lifetimes:
 * the worker holds the one set last and the one before (tags never expired, and one address could
 * gather them to flood with), wiped with the context. */
int ts_dp_ike_spi_key(ts_dp *dp, const uint8_t key[16]);
/* the tag of R for addr under key (the control process's make and the tests check against it) */
uint32_t ts_ike_spi_tag(const uint8_t key[16], uint32_t r, const ts_addr *addr);
/* SipHash-2-4 of in under key (two little-endian words, as above): the control process makes its
 * SPIs' tags with it (tunsec/ike/spi_tag.py; its pure-Python SipHash is ~100 times slower) */
uint64_t ts_siphash24_bytes(const uint8_t key[16], const uint8_t *in, size_t len);
int ts_dp_ike_spi_delete(ts_dp *dp, uint64_t spi);
size_t ts_dp_ike_spi_count(ts_dp *dp);

/* SPD */
int ts_spd_add(ts_dp *dp, const ts_policy *p);
int ts_spd_delete(ts_dp *dp, uint32_t id);
void ts_spd_flush(ts_dp *dp);
size_t ts_spd_count(ts_dp *dp);
size_t ts_spd_slots(ts_dp *dp);   /* the policy slots allocated (the SPD's memory), live or not */
size_t ts_spd_list(ts_dp *dp, ts_policy_info *out, size_t max);   /* returns number written */

/* counters, indexed by enum ts_drop */
void ts_dp_drops(ts_dp *dp, uint64_t *out);   /* TS_DROP__COUNT entries */

/* Single packets without the loop (tests, fuzzing, benchmarks).
 * outbound: an inner IP packet -> ESP (the UDP payload) into out, peer into *dst.
 * Returns the ESP length, 0 if the packet was dropped (reason in *drop) or an
 * ICMP was produced instead (then *drop = TS_DROP_TOO_BIG and the ICMP is in
 * out with length *icmp_len). */
int ts_dp_outbound(ts_dp *dp, const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap,
                   ts_addr *dst, int *drop, size_t *icmp_len);
/* inbound: a UDP payload from src -> inner IP packet into out.  Returns its
 * length, or 0 with *drop set (keepalives, IKE -> event, failures). */
int ts_dp_inbound(ts_dp *dp, const uint8_t *udp, size_t len, const ts_addr *src,
                  const ts_addr *local, uint8_t *out, size_t outcap, int *drop);

/* raw crypto, for known-answer tests and benchmarks */
int ts_gcm_seal(const uint8_t *key, size_t keylen, const uint8_t *iv12,
                const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                uint8_t *out, uint8_t tag[16]);
int ts_gcm_open(const uint8_t *key, size_t keylen, const uint8_t *iv12,
                const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                const uint8_t tag[16], uint8_t *out);  /* 0 ok, TS_ECRYPTO on ICV failure */

/* The worker's seccomp filter (sandbox.c), on every thread: 0, or -errno (-ENOSYS: not built for
 * this architecture; -EBUSY: a thread could not take it).  self_pid: the one process it may signal. */
int ts_sandbox_seccomp(int self_pid);
/* Before the event loop is made: no io_uring (libuv then uses epoll alone); 0 or -errno as above. */
int ts_sandbox_no_io_uring(void);

/* TUN offloads (IFF_VNET_HDR): a virtio_net_hdr precedes every packet.
 * ts_vnet_segment: one TUN read (header + packet, possibly a TSO/USO
 * super-packet) -> complete packets back to back in out, their lengths in
 * seg_len; returns the count or -1 if malformed/unsupported.
 * ts_gro_run: coalesce n inner packets (back to back in pkts) into TUN writes
 * (each with its virtio_net_hdr), back to back in out; returns the count. */
#define TS_VNET_HDR_LEN 10
#define TS_GSO_V6_EXT_MAX 512  /* IPv6 extension header bytes a GSO read may carry (copied into each segment) */
#define TS_VNET_SEG_HDR_MAX 612  /* header bytes repeated per segment at most: IPv6 (40), its extension
                                  * headers (TS_GSO_V6_EXT_MAX), TCP with options (60); a buffer for a read
                                  * cut into n segments needs its length + n * this (review revipv6b F1) */
#define TS_OFF_VNET 1          /* TUN opened with IFF_VNET_HDR (+ TUNSETOFFLOAD by the caller) */
#define TS_OFF_UDP_GSO 2       /* UDP_SEGMENT on send */
#define TS_OFF_UDP_GRO 4       /* UDP_GRO on receive */
/* after ts_dp_set_fds: use the offloads the TUN and sockets allow; returns TS_OFF_* bits active */
int ts_dp_set_offloads(ts_dp *dp, int vnet_hdr);
int ts_vnet_segment(const uint8_t *buf, size_t len, uint8_t *out, size_t outcap,
                    uint16_t *seg_len, size_t max_segs);
int ts_gro_run(const uint8_t *pkts, const uint32_t *lens, size_t n, uint8_t *out, size_t outcap,
               uint32_t *out_lens, size_t max_out);


/* Live C allocations of the whole process (every ts_dp): SA entries and
 * cipher contexts allocated and not yet freed.  A gauge for leaks: after the
 * SAs are deleted both are back where they were. */
void ts_live_counts(int64_t *sas, int64_t *ctxs);

/* Key hygiene test hook: key an SA from p inside the caller's buffer (at least
 * ts_test_sa_size() bytes, 16-byte aligned), then release and wipe it with the
 * same code that frees every SA of the SAD.  *key_seen is 1 if the key bytes
 * were in the buffer before the wipe, so the caller can check the buffer holds
 * no key (all zero) afterwards. */
size_t ts_test_sa_size(void);
int ts_test_sa_wipe(const ts_sa_params *p, uint8_t *buf, size_t cap, int *key_seen);

/* Rate-limit test hook: stop the clock of this context's rate limiters (ACQUIRE per policy,
 * INVALID_SPI, ICMP answers) at now_ns (> 0), so a test decides when a second has passed,
 * without sleeping and whatever the machine's speed; 0 gives them CLOCK_MONOTONIC back.
 * Only tests call it; SA ages, lifetimes and holds keep CLOCK_MONOTONIC. */
void ts_test_set_clock(ts_dp *dp, uint64_t now_ns);

/* INVALID_SPI test hook: the per-source limiter's slot of src (its address hashed with this
 * context's random key): sources in one slot share one limit, so a test that wants two
 * sources limited apart picks addresses whose slots differ. */
unsigned ts_test_invalid_spi_slot(ts_dp *dp, const ts_addr *src);

/* IKE event test hook: the slot of src's share of the queued IKE datagrams (its address hashed
 * with this context's random key); sources in one slot share one share. */
unsigned ts_test_ike_source_slot(ts_dp *dp, const ts_addr *src);
unsigned ts_test_ike_proven_slot(ts_dp *dp, const ts_addr *src);
/* ... and of a known one's (an established IKE SA's) share: its whole address, an IPv6 one's too,
 * where the others' count an IPv6 sender by its prefix (ts_dp_set_ipv6_source_prefix) */
unsigned ts_test_ike_known_source_slot(ts_dp *dp, const ts_addr *src);
/* ... and of a known one's peer's share (the peer hashed with this context's random key): peers in
 * one slot share one share, so a test that wants peers held apart picks ids whose slots differ */
unsigned ts_test_ike_peer_slot(ts_dp *dp, uint64_t peer);

/* ICMP too-big test hook: the slot of src's share of the answers (its whole address hashed with
 * this context's random key); senders in one slot share one share, so a test that wants senders
 * limited apart picks addresses whose slots differ. */
unsigned ts_test_icmp_source_slot(ts_dp *dp, const ts_addr *src);

/* SAD test hook: the most SAs in one bucket of the SPI hash (keyed per context, so that peers,
 * who choose our outbound SPIs, cannot chain theirs together) */
size_t ts_test_sad_longest_chain(ts_dp *dp);

/* Loop test hook: how many of queue's receive slots have their first page in memory (mincore),
 * -1 before its loop made its buffers; *flow_pages_missing: its flow cache's pages not in memory */
int ts_test_loop_resident(ts_dp *dp, int queue, int *flow_pages_missing);

#endif
