/* Internal structures shared by the C files; not part of the cffi API. */
#ifndef TUNSEC_INTERNAL_H
#define TUNSEC_INTERNAL_H

#include "tunsec_dp.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <openssl/evp.h>

#define ESP_HDR 8          /* SPI + sequence number */
#define ESP_IV 8
#define ESP_ICV 16
#define ESP_MIN (ESP_HDR + ESP_IV + 4 + ESP_ICV)   /* smallest ciphertext is one 4-byte block */
#define PROTO_DUMMY 59
/* ESP in UDP (RFC 3948): a NAT-keepalive is this one byte (§2.3); IKE on the
 * same port starts with this many zero bytes where ESP has its SPI (§2.2) */
#define UDP_KEEPALIVE 0xff
#define NON_ESP_MARKER_LEN 4
/* ... except an IKE_SA_INIT request from port 500, which has none (RFC 7296 §2.23,
 * strongSwan's sender: the marker only when neither port is 500): the IKE header is 28 bytes,
 * its total length a 32-bit field at offset 24 */
#define IKE_HDR_LEN 28
#define IKE_HDR_LEN_OFF 24
#define IKE_VERSION_2 0x20        /* header byte 17: major version 2, minor 0 */
#define IKE_SA_INIT 34            /* header byte 18: the exchange type */
#define IKE_FLAG_INITIATOR 0x08   /* header byte 19: sent by the original initiator */
#define IKE_FLAG_RESPONSE 0x20    /* header byte 19: a response */

/* ---- anti-replay (replay.c) ---------------------------------------------
 * RFC 6479 style: a ring of 64-bit words; sliding the window clears whole
 * words instead of shifting bits, so cost is independent of window size. */
typedef struct ts_replay {
    uint64_t top;          /* highest authenticated sequence number (64-bit) */
    uint32_t window;       /* bits; 0 = replay check off */
    uint32_t nwords;       /* ceil(window/64) + 1: the ring's size in words */
    uint64_t *bits;
} ts_replay;

int ts_replay_init(ts_replay *r, uint32_t window);
void ts_replay_free(ts_replay *r);
/* full 64-bit sequence number for a received low half (RFC 4303 A2.2) */
uint64_t ts_replay_infer(const ts_replay *r, uint32_t seq_lo, bool esn);
/* true if seq may be accepted (not seen, not left of the window) */
bool ts_replay_check(const ts_replay *r, uint64_t seq);
/* record seq after its ICV verified; returns false if it raced a duplicate */
bool ts_replay_update(ts_replay *r, uint64_t seq);
/* a fresh window in which every number <= floor counts as already received */
void ts_replay_set_floor(ts_replay *r, uint64_t floor);

/* ---- security associations (sad.c) ------------------------------------- */
typedef struct ts_sa {
    struct ts_sa *next;                /* hash chain */
    struct ts_sa *rq_next;             /* OUT with a reqid: chain of ts_sad.by_reqid */
    uint32_t spi;
    uint8_t dir, esn, keylen;
    _Atomic uint8_t state;
    uint32_t reqid;
    uint32_t n_sel;
    ts_addr local, remote;
    union {                            /* prebuilt destination for sendmmsg */
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } peer;
    socklen_t peer_len;
    uint8_t salt[4];
    bool encrypt;
    _Atomic uint8_t soft_fired, hard_fired;
    _Atomic uint8_t hard_reason;       /* enum ts_expire_reason the SA died of (set before state DEAD) */
    _Atomic uint8_t reserve_fired;
    _Atomic uint8_t first_use_armed;   /* TS_EV_FIRST_USE still to raise (ts_sa_params.report_first_use) */
    /* keyed once; per packet only the nonce changes.  One per loop thread
     * (created on its first packet; the first loop thread takes over the one
     * ts_esp_key made), slot 0 for control threads under lock, made when one
     * needs it: a gateway keeps two SAs per client, and a context is ~1.4 KiB */
    EVP_CIPHER_CTX *ctx[TS_MAX_QUEUES + 1];
    uint8_t keymat[TS_KEYMAT_MAX];     /* to key a new thread's ctx; wiped on free */
    pthread_mutex_t lock;              /* guards ctx[0], the handover of the first ctx, and replay */
    ts_replay replay;
    _Atomic uint64_t seq;              /* OUT: last sequence number handed out */
    _Atomic uint64_t counters[TS_CTR__COUNT];   /* enum ts_sa_counter, copied out by ts_sad_get/list */
    uint64_t soft_bytes, hard_bytes, soft_packets, hard_packets;
    uint64_t created_ns;
    _Atomic uint64_t seq_limit, seq_notify;   /* reservation (ts_sa_params), 0 = none */
    _Atomic uint64_t gso_paused_until; /* OUT: ts_now_ns() until which runs go as datagrams, 0 = no pause
                                          (the kernel refused a GSO run to the peer: loop.c gso_pause) */
    _Atomic uint64_t source_gone_until; /* OUT: ts_now_ns() until which ESP leaves without its source
                                           cmsg, 0 = with it (the kernel refused local: loop.c source_gone) */
    _Atomic uint32_t source_gone_gen;  /* OUT: dp->addr_gen when it was noted: an address added since ends it */
    ts_selector *sel;                  /* n_sel of them (most SAs carry one: not TS_MAX_SELECTORS inline) */
} ts_sa;

typedef struct ts_sad {
    ts_sa **buckets;
    size_t nbuckets;                   /* power of two */
    size_t count;
    /* the outbound SAs' bucket hash key, random per context, over (SPI, peer address, port): peers
     * choose our outbound SPIs and their own ports, and with a fixed hash, or one of the SPI alone,
     * they could chain all of theirs in one bucket, which every inbound packet (junk with an
     * unknown SPI included) and control call hashing there would walk */
    uint64_t key[2];
    /* OUT SAs with a reqid, hashed by it: a new policy finds its SA (spd.c newest_out)
     * without a pass over every SA, which made a thousand clients' set-up O(N^2) */
    ts_sa **by_reqid;                  /* TS_REQID_BUCKETS chains */
} ts_sad;

#define TS_REQID_BUCKETS 4096u
/* the chain of OUT SAs whose reqid hashes like this one's */
ts_sa *ts_sad_by_reqid(const ts_sad *s, uint32_t reqid);

int ts_sad_init(ts_sad *s);
void ts_sad_destroy(ts_sad *s);
ts_sa *ts_sad_find(const ts_sad *s, uint32_t spi, uint8_t dir);   /* IN: SPIs are ours, unique */
/* release what an SA owns and wipe it (OPENSSL_cleanse); does not free sa */
void ts_sa_wipe(ts_sa *sa);
ts_sa *ts_sad_find_sa(const ts_sad *s, uint32_t spi, uint8_t dir, const ts_addr *remote);   /* OUT: (SPI, peer) */

/* ---- packets waiting for their SA (hold.c) -------------------------------- */
#define TS_HOLD_PKTS 8
#define TS_HOLD_BYTES 65536
#define TS_HOLD_TIMEOUT_NS (10ull * 1000000000ull)
/* The holds that have packets, so that a change while one packet waits somewhere (a trap that
 * keeps failing) does not make a loop visit every policy's hold (send_held): a hold is on the
 * list exactly while it has packets.  Lock order: a hold's lock, then the list's. */
typedef struct ts_holds {
    pthread_mutex_t lock;              /* the list, its holds' links and stamps */
    pthread_mutex_t pass;              /* one send_held pass at a time (ts_held_begin) */
    _Atomic bool again;                /* a kick came: another pass is due */
    _Atomic bool owed;                 /* one came during a pass: the loops are woken again (ts_held_owed) */
    struct ts_hold *first, *last;      /* moved to the back when a pass takes one */
    uint64_t round;                    /* the pass's number, stamped on the holds it took */
    _Atomic uint64_t passes, visited;  /* passes run, holds they took (a selftest hook) */
} ts_holds;
typedef struct ts_hold {
    pthread_mutex_t lock;              /* loop threads push/pop under the read lock */
    uint32_t n, used;                  /* packets, bytes in buf (oldest first, back to back) */
    _Atomic uint64_t *held;            /* the SPD's count of waiting packets, kept with n (may be NULL) */
    ts_holds *busy;                    /* the SPD's list of holds with packets (may be NULL) */
    struct ts_hold *bprev, *bnext;     /* on busy: under busy->lock */
    bool listed;
    uint64_t round;                    /* the last pass that took it */
    uint32_t len[TS_HOLD_PKTS];
    uint64_t t_ns[TS_HOLD_PKTS];       /* when each was held */
    uint8_t *buf;                      /* TS_HOLD_BYTES, only while packets wait: most policies never
                                          hold one, and a gateway has a policy per client */
} ts_hold;

/* ---- policies (spd.c) --------------------------------------------------- */
typedef struct ts_spd_entry {
    ts_policy pol;
    uint64_t order;                    /* insertion order breaks priority ties */
    ts_sa *out_sa;                     /* newest mature OUT SA with pol.reqid */
    _Atomic uint64_t packets;
    _Atomic uint64_t last_acquire_ns;
    ts_hold *hold;                     /* PROTECT: packets waiting for out_sa (hold.c) */
    bool hashed;                       /* destination one address: in the index's hash */
    bool dead;                         /* deleted: in no index, its slot kept until a compaction */
    uint32_t next;                     /* slot of the next entry in its bucket, TS_SPD_NONE = last */
    uint32_t id_next;                  /* the next entry in its id bucket */
    uint32_t rq_next, rq_prev;         /* the next and previous in its reqid bucket (reqid 0: in none);
                                          both ways: many policies may share a reqid */
    uint32_t rg_next, rg_prev;         /* unhashed (a range): the next and previous live one, so that
                                          the range index's rebuild walks these alone, not every slot */
    uint64_t hash;                     /* keyed hash of (family, destination) when hashed */
} ts_spd_entry;

/* The index over v (spd.c): a gateway has one policy per client, whose destination is
 * the client's virtual IP, so those entries are hashed by (family, destination) with a
 * key random per context (nobody can pile policies into one bucket and aim packets at
 * it); the rest (destination a range) are indexed by destination prefix (ts_rindex below).
 * An entry keeps its slot in v from its addition to the next compaction, whatever is
 * added or deleted around it: the order that decides between matches is its rank,
 * (priority, insertion), and every chain lists its slots by rank, so the first match
 * of a chain is the chain's best and the lower rank of the bucket's and the range
 * index's is what the ordered scan finds.  A change links or unlinks one entry (a delete
 * leaves a dead slot); a compaction drops the dead slots, sorts v by rank and rebuilds
 * the chains once the dead outnumber the live (or v must grow): O(1) amortized a change
 * besides the chain walks.  Changed under the write lock; loop threads read under the
 * read lock. */
#define TS_SPD_NONE UINT32_MAX

/* The range index (spdrange.c): the entries whose destination is a range, per family in a
 * path-compressed binary trie of destination prefixes.  A range is split into the prefixes
 * that cover it exactly (one for a subnet), or placed at the one prefix holding it whole when
 * that takes more than TS_RANGE_PIECES; each prefix's node chains the slots of its entries
 * by rank.  A lookup walks the destination's path and takes the lowest rank
 * whose selector matches: every entry matching the flow has its destination range around the
 * flow's destination, so it is on that path. */
typedef struct ts_rnode {
    uint8_t prefix[16];                /* bits past len are zero */
    uint8_t len;                       /* prefix length in bits */
    uint32_t child[2];                 /* node by the bit after the prefix, TS_SPD_NONE = none */
    uint32_t head, tail;               /* chain of links, slots by rank */
} ts_rnode;
typedef struct ts_rlink {
    uint32_t pos, next;                /* pos: a slot of v */
} ts_rlink;
typedef struct ts_rindex {
    uint32_t root[2];                  /* IPv4, IPv6 */
    ts_rnode *node;
    ts_rlink *link;
    size_t nnode, node_cap, nlink, link_cap;
    size_t nlive;                      /* links in a chain (the others were unlinked by close) */
    bool whole;                        /* every unhashed entry is in it; false (out of memory): the
                                          lookups scan the unhashed entries instead */
} ts_rindex;

/* Destination generations: a flow-cache slot is current while the SPD's generation and its
 * destination's here are unchanged (ts_spd_lookup_cached) */
#define TS_SPD_DGEN 4096
typedef struct ts_spd {
    ts_spd_entry *v;
    size_t n;                          /* live entries */
    size_t used, cap;                  /* slots taken (live and dead); cap: 0 or a power of two,
                                          also the number of buckets of each hash below */
    uint64_t next_order;
    /* Flow caches hold pointers into v: the generation moves whenever v moves (grows or is
     * compacted) or a policy is added whose destination is a range (it may win any flow); a
     * policy for one destination moves only that destination's dgen (only flows to it can
     * match it); a delete moves neither (a flow cached to the dead entry sees it dead, no
     * other flow's best changes) unless it compacts */
    uint64_t generation;
    uint64_t dgen[TS_SPD_DGEN];
    int hold_fd;                       /* eventfd: a held packet's SA was bound (hold.c) */
    _Atomic uint64_t held;             /* packets waiting in the holds (hold.c) */
    uint64_t key[2];                   /* the index's SipHash key (ts_spd_init) */
    uint32_t *head;                    /* by destination: slot of the first entry, TS_SPD_NONE = empty */
    uint32_t *by_id, *by_reqid;        /* by policy id, by reqid: slot of the first entry */
    size_t nhashed;
    ts_rindex range;                   /* the unhashed entries by destination (spdrange.c) */
    uint32_t range_first, range_last;  /* the live unhashed entries' chain (rg_next), TS_SPD_NONE = empty */
    size_t nrange;                     /* entries on it */
    ts_holds busy;                     /* the holds that have packets (hold.c) */
} ts_spd;

typedef struct ts_flow {
    uint8_t family, proto;
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    /* 1: the packet shows no ports although its protocol has them (a later fragment, or a first
     * one too short to hold them): sport and dport are 0 and mean nothing, so it matches only a
     * selector that allows any port (RFC 4301 §7), never one whose range holds 0.  16 bits so
     * that the struct has no padding: the flow cache hashes and compares its bytes. */
    uint16_t opaque;
} ts_flow;
_Static_assert(sizeof(ts_flow) == 40, "ts_flow is a flow cache key: no padding");

/* A loop thread's cache of outbound flow -> policy (RFC 4301 §4.4.2's SPD cache):
 * a miss goes to the SPD's index (ts_spd_find). */
#define TS_FLOW_CACHE 1024
typedef struct ts_flow_slot {
    ts_flow key;
    uint64_t generation, dgen;         /* the SPD's and the destination's when filled */
    uint32_t dbucket;                  /* the destination's index in spd->dgen */
    ts_spd_entry *entry;
} ts_flow_slot;
typedef struct ts_flow_cache {
    ts_flow_slot slot[TS_FLOW_CACHE];
} ts_flow_cache;

/* through the cache (c may be NULL) and on a miss the index */
ts_spd_entry *ts_spd_lookup_cached(ts_spd *spd, ts_flow_cache *c, const ts_flow *f);
bool ts_selector_match(const ts_selector *s, const ts_flow *f);
bool ts_selector_valid(const ts_selector *s);
/* 5-tuple of an IP packet; false if it is not a well-formed IPv4/IPv6 packet */
bool ts_flow_parse(const uint8_t *pkt, size_t len, ts_flow *f);
/* the same for a packet the fast path would pass on (inbound decrypted, or outbound from the TUN),
 * as its drop reason: TS_DROP_MALFORMED, TS_DROP_SOURCE_ROUTE for a source route with hops to go
 * (the selectors see only its header's destination: srcroute.h), else TS_DROP_NONE */
int ts_flow_parse_own(const uint8_t *pkt, size_t len, ts_flow *f);
/* where a well-formed packet's L4 header starts and its data ends; false for a later fragment */
bool ts_flow_l4(const uint8_t *pkt, size_t len, size_t *l4, size_t *end);
/* How much of its flow a packet quoted in an ICMP error shows (the quote may
 * end anywhere after the IP header, its length fields are the original's) */
enum ts_quote_known {
    TS_QUOTE_BAD = 0,      /* no whole IP header: nothing */
    TS_QUOTE_ADDRS,        /* addresses (an IPv6 extension header chain cut short) */
    TS_QUOTE_PROTO,        /* and the protocol (cut before the ports, or a later fragment) */
    TS_QUOTE_PORTS,        /* and the ports, or a protocol without any */
};
int ts_quote_parse(const uint8_t *q, size_t len, ts_flow *f);   /* enum ts_quote_known */
/* s matches f as far as it is known: what is unknown matches only a selector that allows any */
bool ts_selector_match_known(const ts_selector *s, const ts_flow *f, int known);
/* the ordered scan: the first entry whose selector matches (the index's reference) */
ts_spd_entry *ts_spd_lookup(ts_spd *spd, const ts_flow *f);
/* the same answer through the index */
ts_spd_entry *ts_spd_find(ts_spd *spd, const ts_flow *f);
/* entries the lookups on this thread compared (a selftest hook: proof that the packet
 * path stays off the ordered scan, counted without any clock) */
extern _Thread_local uint64_t ts_spd_examined;
int ts_spd_init(ts_spd *spd);                      /* the index's key; TS_EIO without randomness */
void ts_spd_rebind(ts_spd *spd, ts_sad *sad);
void ts_spd_bind_new(ts_spd *spd, ts_sa *sa);
void ts_spd_unbind(ts_spd *spd, ts_sad *sad, const ts_sa *gone);
void ts_spd_destroy(ts_spd *spd);
/* the range index (spdrange.c), changed under the write lock.  reset empties it; add puts the
 * entry at slot pos of v in (false: out of memory, and it is no longer whole); close takes it out
 * (s NULL: one not in it; true: more is dead than live, or it was missing: time to rebuild); find
 * lowers *best to the slot of lowest rank below *best's (SIZE_MAX: none yet) whose selector
 * matches f, counting the selectors it compared in *seen */
void ts_rindex_reset(ts_rindex *r);
bool ts_rindex_add(ts_rindex *r, const ts_spd_entry *v, uint32_t pos);
bool ts_rindex_close(ts_rindex *r, const ts_selector *s, uint32_t pos);
void ts_rindex_find(const ts_rindex *r, const ts_spd_entry *v, size_t used, const ts_flow *f, size_t *best,
                    size_t *seen);
/* a's rank is before b's: lower priority, or as low and added earlier */
static inline bool ts_spd_before(const ts_spd_entry *a, const ts_spd_entry *b) {
    return a->pol.priority < b->pol.priority || (a->pol.priority == b->pol.priority && a->order < b->order);
}
void ts_rindex_free(ts_rindex *r);

/* held: the SPD's count of waiting packets, busy its list of holds that have some (both may be NULL) */
ts_hold *ts_hold_new(_Atomic uint64_t *held, ts_holds *busy);
void ts_hold_free(ts_dp *dp, ts_hold *h);          /* counts what it still held (dp may be NULL) */
/* false if not held (no hold, empty or oversized packet); may drop the oldest */
bool ts_hold_push(ts_dp *dp, ts_hold *h, const uint8_t *pkt, size_t len, uint64_t now_ns);
/* the oldest packet that has not timed out into out (when it was held into *held_ns); 0 if none */
size_t ts_hold_pop(ts_dp *dp, ts_hold *h, uint8_t *out, size_t outcap, uint64_t now_ns, uint64_t *held_ns);
size_t ts_hold_count(ts_hold *h);
void ts_hold_kick(ts_spd *spd);                    /* wake the loops to send held packets */
bool ts_hold_take_kick(ts_spd *spd);               /* true for the one loop that takes the wakeup */
void ts_holds_init(ts_holds *hs);
void ts_holds_destroy(ts_holds *hs);
/* send_held's passes over the holds that have packets, one at a time: begin is true if this thread
 * runs a pass now (else the running one's end sees the kick); next is the next hold of the pass,
 * NULL at its end; end is always false (one pass per wakeup), and owed is true once if a kick came
 * during a pass: the caller wakes the loops again (ts_hold_kick) */
bool ts_held_begin(ts_holds *hs);
ts_hold *ts_held_next(ts_holds *hs);
bool ts_held_end(ts_holds *hs);
bool ts_held_owed(ts_holds *hs);

/* ---- ESP transforms (esp.c) --------------------------------------------- */
/* which ctx slot this thread uses: 0 = any control thread, k = loop queue k-1 */
void ts_set_thread_slot(unsigned slot);
unsigned ts_thread_slot(void);
int ts_esp_key(ts_sa *sa, const uint8_t *keymat, size_t keylen, bool encrypt);
/* free a context ts_esp_key or a loop thread made (counted in ts_live_counts) */
void ts_esp_ctx_free(EVP_CIPHER_CTX *ctx);
long long ts_esp_live_ctxs(void);
/* seal payload (already at out + ESP_HDR + ESP_IV) in place; returns total length */
size_t ts_esp_seal(ts_sa *sa, uint64_t seq, uint8_t *out, size_t payload_len, uint8_t next_header);
/* verify+decrypt in place; plaintext at esp + ESP_HDR + ESP_IV, *pt_len bytes incl. trailer */
bool ts_esp_open(ts_sa *sa, uint64_t seq, uint8_t *esp, size_t len, size_t *pt_len);

/* ---- ICMP too big (icmp.c) ----------------------------------------------- */
size_t ts_icmp_too_big(const uint8_t *pkt, size_t len, uint32_t mtu, uint8_t *out, size_t outcap);
/* false for packets no ICMP error may answer (RFC 1122 §3.2.2, RFC 1812
 * §4.3.2.7, RFC 4443 §2.4): ICMP errors themselves, later fragments, and
 * sources that are not one unicast host */
bool ts_icmp_may_answer(const uint8_t *pkt, size_t len, const ts_flow *f);
/* false for an ICMP/ICMPv6 error (pkt, already parsed into f) whose quoted
 * packet, reversed, is not one the n selectors admit (RFC 4301 §6.2); true for
 * anything else */
bool ts_icmp_quote_ok(const uint8_t *pkt, size_t len, const ts_flow *f, const ts_selector *sel, uint32_t n);
/* whether the too-big packet of flow f may be answered now: its sender's share, then all senders'
 * (icmp_limit.c; lock-free) */
bool ts_icmp_limit_ok(ts_dp *dp, const ts_flow *f);
/* the keyed hash of a source address, an IPv6 one by its dos.ipv6_source_prefix (dp.c): the per-source
 * limiters' slots */
uint64_t ts_source_hash(const ts_dp *dp, const ts_addr *src);
/* the keyed hash of the whole source address, whatever dos.ipv6_source_prefix is (dp.c): the shares
 * of senders that are not anyone on the Internet (known IKE datagrams, ICMP too-big answers) */
uint64_t ts_address_hash(const ts_dp *dp, const ts_addr *src);

/* ---- offloads (offload.c) --------------------------------------------------- */
typedef void (*ts_gro_emit)(void *ctx, const uint8_t *p, size_t len);
typedef struct ts_gro {
    uint8_t *buf;              /* vnet header + the super-packet being built */
    size_t cap, len, segs, mss, iphl, thl;
    int family;
    bool open;                 /* more segments may still join */
    uint32_t next_seq;
    ts_gro_emit emit;
    void *ctx;
} ts_gro;

void ts_gro_init(ts_gro *g, uint8_t *buf, size_t cap, ts_gro_emit emit, void *ctx);
void ts_gro_add(ts_gro *g, const uint8_t *p, size_t len);
void ts_gro_flush(ts_gro *g);

/* ---- events (events.c) ---------------------------------------------------- */
typedef struct ts_event_slot {
    ts_event ev;
    uint8_t *data;
    int16_t src;                       /* IKE: the sender's slot in ts_events.ike_src, else -1 */
    int16_t peer;                      /* IKE of an established IKE SA: its peer's slot in ts_events.ike_peer, else -1
                                          (then src is its slot in ike_known_src, by whole address) */
    bool proven;                       /* IKE with our tag for its sender (src is its slot in ike_proven_src) */
} ts_event_slot;

#define TS_EVENT_CAP 1024
/* IKE datagrams waiting, per sender: slots a keyed hash of the source address (an IPv6 one's prefix,
 * dos.ipv6_source_prefix, /64 by default) picks (dp.c source_hash, as the INVALID_SPI limiter's),
 * each with at most TS_IKE_PER_SOURCE of the TS_EVENT_CAP / 2 IKE may use, so one sender cannot
 * take them all from the peers whose DPD and rekeys need them */
#define TS_IKE_SOURCE_SLOTS 256
#define TS_IKE_PER_SOURCE 32
/* Of that IKE half, TS_IKE_RESERVED are for datagrams that name an established IKE SA (ikespi.c):
 * those of no SA we know, from spoofed senders in any number of slots, fill only the rest, so the
 * peers' DPD, rekeys, DELETEs and MOBIKE still go up (and may use the rest while it is free).
 * Only a peer who authenticated can make one: it knows its SPIs, and may send them from any
 * address, spoofed too, in any number of IKE SAs (unique=no).  So each is held to two shares:
 * - its peer's (the identity the control process named in IKE_SPI_ADD, all its IKE SAs together):
 *   TS_IKE_PER_PEER in slots a keyed hash of the peer picks.  This is what bounds one authenticated
 *   peer to a constant part of the reserve however many IKE SAs and addresses it uses: 8 distinct
 *   identities (credentials) at least to fill it;
 * - its sender's: TS_IKE_KNOWN_PER_SOURCE in the source slots (apart from the unknown ones' shares,
 *   which a spoofed flood fills): peers with several identities on one address (or one whose slot
 *   it shares) are held to it.  By its whole address, an IPv6 one's too (dp.c ts_address_hash, not the
 *   prefix the others count under, whatever dos.ipv6_source_prefix is): the peer's share bounds what its host's 2^64 addresses get, and
 *   by /64 a LAN's road warriors had one share, an insider's two identities enough to fill it
 *   (review revfastfix F1).  It is twice a peer's share, so a peer that spoofs another's address
 *   with its own SPIs takes at most half of that address's share.
 * A peer sharing its slot (1/TS_IKE_PEER_SLOTS of the others) shares its share. */
#define TS_IKE_RESERVED 128
/* Of the rest, TS_IKE_PROVEN_RESERVED are for datagrams whose SPI of ours carries our tag for their
 * sender's address (ts_dp_ike_spi_key): a client's IKE_AUTH (and its fragments, its EAP rounds) to
 * the half-open SA our IKE_SA_INIT answer made.  Only who got that answer at that address can send
 * one, so a spoofed flood (which fills the unknown ones' part) no longer keeps clients that got
 * their IKE_SA_INIT answered from authenticating.  Each address may have TS_IKE_PROVEN_PER_SOURCE
 * waiting, four times an unknown sender's share: road warriors behind one NAT answer our
 * IKE_SA_INIT answers in bursts (a burst of 1,000 from one address lost hundreds of IKE_AUTHs at
 * the share of 32, each a client's 4 s retransmission).  They may use the unknown ones' part
 * while it is free; the unknown ones may not use theirs. */
#define TS_IKE_PROVEN_RESERVED 128
#define TS_IKE_PROVEN_PER_SOURCE 128
/* A tag proves only that its sender once got an answer at that address, and it may flood with
 * it: the tagged ones fill at most TS_IKE_PROVEN_MAX of the room they share with the unknown ones
 * (which keep the rest), a sender holding TS_IKE_PER_SOURCE or more of them leaves the last
 * TS_IKE_PROVEN_SMALL of the room free for senders holding fewer, and an IPv6 sender's share is
 * its prefix's (dos.ipv6_source_prefix: a host has 2^64 addresses, each able to earn a tag) */
#define TS_IKE_PROVEN_MAX 256
#define TS_IKE_PROVEN_SMALL 64
#define TS_IKE_PEER_SLOTS 1024
#define TS_IKE_PER_PEER 16
#define TS_IKE_KNOWN_PER_SOURCE 32
typedef struct ts_events {
    pthread_mutex_t lock;
    ts_event_slot slots[TS_EVENT_CAP];
    size_t head, count;
    size_t ike_unknown;                      /* IKE events queued of no established IKE SA, no tag */
    uint16_t ike_src[TS_IKE_SOURCE_SLOTS];   /* ... of them per source slot */
    size_t ike_proven;                       /* IKE events queued with our tag for their sender */
    uint16_t ike_proven_src[TS_IKE_SOURCE_SLOTS];   /* ... of them per source slot */
    uint16_t ike_peer[TS_IKE_PEER_SLOTS];    /* known IKE events queued per peer slot ... */
    uint16_t ike_known_src[TS_IKE_SOURCE_SLOTS];   /* ... and per source slot, */
    /* ... and where they are in slots[], in the order they wait: when a source slot's share is
     * full, its biggest peer loses its oldest there (events.c evict_known) in a look at these few,
     * not at the whole queue */
    uint16_t ike_known_pos[TS_IKE_SOURCE_SLOTS][TS_IKE_KNOWN_PER_SOURCE];
    int efd;
} ts_events;

int ts_events_init(ts_events *q);
void ts_events_destroy(ts_events *q);
/* false if the queue is full (the caller counts the drop) */
bool ts_events_push(ts_events *q, const ts_event *ev, const uint8_t *data, size_t len);
/* an IKE datagram from the sender whose slot is src_slot, of an established IKE SA whose peer's
 * slot is peer_slot (-1: none we know): TS_DROP_NONE once queued, else TS_DROP_IKE_SOURCE_LIMIT
 * (that sender's share is waiting) or TS_DROP_QUEUE_FULL; for a known SA TS_DROP_IKE_KNOWN_SHARE
 * (its peer's share) or TS_DROP_IKE_KNOWN_FULL, and when its sender's share is full it is queued
 * and the peer with the most waiting loses its oldest of that share instead (*evicted set: the
 * caller counts it TS_DROP_IKE_KNOWN_SOURCE); for one with our tag for its sender (ev->proven)
 * TS_DROP_IKE_PROVEN_SOURCE or TS_DROP_IKE_PROVEN_FULL */
int ts_events_push_ike(ts_events *q, const ts_event *ev, const uint8_t *data, size_t len, unsigned src_slot,
                       int peer_slot, bool *evicted);

/* ---- our established IKE SAs' SPIs (ikespi.c) ------------------------------------------ */
typedef struct ts_ike_spi_entry {
    uint64_t spi, peer;                /* spi 0 = empty */
} ts_ike_spi_entry;
typedef struct ts_ike_spis {
    ts_ike_spi_entry *slots;           /* cap of them; NULL until the first add */
    size_t cap, count;                 /* cap a power of two, count <= cap / 2 */
    uint64_t key[2];                   /* SipHash key, random per context */
} ts_ike_spis;
int ts_ike_spis_init(ts_ike_spis *s);
void ts_ike_spis_destroy(ts_ike_spis *s);
uint64_t ts_ike_spi_hash(const ts_ike_spis *s, uint64_t spi);
bool ts_ike_spis_has(const ts_ike_spis *s, uint64_t spi, uint64_t *peer);
int ts_ike_spis_add(ts_ike_spis *s, uint64_t spi, uint64_t peer);
int ts_ike_spis_delete(ts_ike_spis *s, uint64_t spi);
/* under the read lock: the slot of the peer of the established IKE SA whose SPI an IKE header (28
 * bytes or more) names as ours (SPIr if the initiator sent it, else SPIi), the peer in *peer; -1
 * if none */
int ts_ike_known_slot(const ts_dp *dp, const uint8_t *ike, uint64_t *peer);
/* under the read lock: whether our SPI in the IKE header (28 bytes at least) carries our tag for
 * src's address (ts_dp_ike_spi_key) */
bool ts_ike_spi_tagged(const ts_dp *dp, const uint8_t *ike, const ts_addr *src);

/* ---- socket control data (cmsg.c) ------------------------------------------- */
typedef struct ts_rx_meta {
    size_t gro_seg;        /* UDP_GRO segment size, 0 = one datagram */
    ts_addr local;         /* IP(V6)_PKTINFO: our address it was sent to, port = the socket's; family 0 = not told */
} ts_rx_meta;
/* parse a received datagram's control data (len bytes, any content: every length checked) */
void ts_rx_meta_parse(const void *control, size_t len, uint16_t local_port, ts_rx_meta *out);
/* family set and address not all-zero (not the wildcard an SA may carry) */
bool ts_addr_is_specific(const ts_addr *a);
/* an IP_PKTINFO / IPV6_PKTINFO cmsg choosing src as the source address into buf;
 * returns its CMSG_SPACE, 0 (nothing written) if src is not specific or cap too small */
size_t ts_pktinfo_put(void *buf, size_t cap, const ts_addr *src);
#define TS_PKTINFO_SPACE CMSG_SPACE(sizeof(struct in6_pktinfo))
/* where a UDP socket is bound (family 0: unknown); *wildcard: to 0.0.0.0 / ::, and then
 * IP(V6)_PKTINFO is asked for (failures ignored: then no local address is known) */
void ts_socket_local(int fd, ts_addr *bound, bool *wildcard);

/* ---- the context (dp.c) ---------------------------------------------------- */
#define TS_OWN_ENDS 16              /* our ESP ends the loop guard knows (ownesp.c) */
#define TS_INVALID_SPI_SLOTS 256   /* a power of two: the hash is masked */
#define TS_ICMP_SOURCE_SLOTS 256   /* a power of two: the hash is masked */
typedef struct ts_queue {
    int tun_fd, udp4_fd, udp6_fd;
    ts_addr bound4, bound6;            /* where the UDP sockets are bound (IKE events' local address) */
    bool any4, any6;                   /* ... to the wildcard: the kernel tells each datagram's local
                                          address and ESP names its source (IP(V6)_PKTINFO) */
    struct ts_batch *batch;            /* loop buffers, preallocated */
} ts_queue;

/* the addresses added lately that a gone source is compared with (addrwatch.c); more added between
 * two looks of an SA than this: it tries its source again, as for any address */
#define TS_ADDRS_SEEN 64

struct ts_dp {
    pthread_rwlock_t lock;             /* SAD/SPD: loop reads, control writes */
    ts_sad sad;
    ts_spd spd;
    ts_events events;
    ts_ike_spis ike_spis;              /* our SPIs of established IKE SAs: their IKE gets a reserve */
    _Atomic uint64_t drops[TS_DROP__COUNT];
    _Atomic uint32_t tunnel_mtu;
    ts_queue queues[TS_MAX_QUEUES];
    int nqueues;
    int wake_fd;
    _Atomic uint32_t addr_gen;         /* moved on by every address the host adds (ts_addrwatch_note) */
    pthread_mutex_t addr_lock;         /* addr_seen, and addr_gen's moves with it */
    ts_addr addr_seen[TS_ADDRS_SEEN];  /* [g % TS_ADDRS_SEEN]: the address that moved addr_gen to g
                                          (family 0: any, a notice lost or unreadable) */
    bool vnet, udp_gso, udp_gro;       /* offloads in use (ts_dp_set_offloads) */
    _Atomic bool stop;
    _Atomic int last_errno;           /* written by every loop thread */
    _Atomic uint64_t invalid_spi_tat_ns;  /* token bucket (GCRA) for INVALID_SPI, all sources together */
    /* ... and one per source address, in slots a keyed hash picks: the key is random per context so
     * that nobody can aim at a real peer's slot (a collision only shares that slot's budget) */
    uint64_t source_key[2];
    /* ... the address an IPv6 source is (dp.c source_hash): its prefix of dos.ipv6_source_prefix
     * bits (ts_dp_set_ipv6_source_prefix, under the write lock; the loops read it under the read lock) */
    uint8_t source_mask6[16];
    /* our ESP ends (ownesp.c): UDP read from the TUN from one of them is our own ESP; written under
     * the write lock, read by the loops under the read lock */
    ts_addr own_ends[TS_OWN_ENDS];
    int n_own_ends;
    uint64_t ike_tag_key[2][2];        /* ts_dp_ike_spi_key's (under lock): the last set, the one before */
    int ike_tag_keys;                  /* how many of them are set */
    _Atomic uint64_t invalid_spi_src_ns[TS_INVALID_SPI_SLOTS];
    _Atomic uint64_t test_clock_ns;   /* ts_test_set_clock: the rate limiters' clock if > 0 */
    _Atomic uint64_t icmp_tat_ns;     /* token bucket (GCRA) for ICMP too-big answers, all senders */
    /* ... and one per sender (icmp_limit.c), in slots the keyed source hash picks */
    _Atomic uint64_t icmp_src_tat_ns[TS_ICMP_SOURCE_SLOTS];
};

/* release what the context owns and wipe it all (its keys among it): ts_dp_free before its free */
void ts_dp_wipe(ts_dp *dp);
uint64_t ts_now_ns(void);
/* ownesp.c: note one of our ESP ends (write lock held; NULL or port 0: nothing; family 0: our port
 * from any address), and whether a flow read from the TUN is UDP from one of them */
void ts_own_end_note(ts_dp *dp, const ts_addr *local);
bool ts_own_end_from(const ts_dp *dp, const ts_flow *f);
/* mask: the first bits (0..128) of an IPv6 address set, the rest clear (dp.c) */
void ts_ipv6_prefix_mask(uint8_t mask[16], unsigned bits);
uint64_t ts_siphash24(const uint64_t key[2], const uint8_t *in, size_t len);   /* dp.c */
/* SipHash with c compression and d finalization rounds (2, 4 is ts_siphash24) */
uint64_t ts_siphash(const uint64_t key[2], const uint8_t *in, size_t len, int c, int d);

#define TS_SIP_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
static inline void ts_sip_round(uint64_t v[4]) {
    v[0] += v[1]; v[1] = TS_SIP_ROTL(v[1], 13); v[1] ^= v[0]; v[0] = TS_SIP_ROTL(v[0], 32);
    v[2] += v[3]; v[3] = TS_SIP_ROTL(v[3], 16); v[3] ^= v[2];
    v[0] += v[3]; v[3] = TS_SIP_ROTL(v[3], 21); v[3] ^= v[0];
    v[2] += v[1]; v[1] = TS_SIP_ROTL(v[1], 17); v[1] ^= v[2]; v[2] = TS_SIP_ROTL(v[2], 32);
}

void ts_drop(ts_dp *dp, int reason);
int ts_outbound_locked(ts_dp *dp, ts_flow_cache *cache, const uint8_t *pkt, size_t len, uint8_t *out,
                       size_t outcap, ts_sa **sa_out, int *drop, size_t *icmp_len);
int ts_inbound_locked(ts_dp *dp, uint8_t *udp, size_t len, const ts_addr *src,
                      const ts_addr *local, uint8_t *out, size_t outcap, int *drop);

static inline uint32_t ts_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t ts_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline void ts_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void ts_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* addrwatch.c: the host's addresses added (ts_dp_addr_added), for the SAs whose source was refused (loop.c) */
void ts_addrwatch_note(ts_dp *dp, const ts_addr *added);   /* addr_gen moved on for it (family 0: any) */
/* whether `addr` (or any, family 0) was noted after generation `since`; *now: addr_gen looked at */
bool ts_addrwatch_came(ts_dp *dp, const ts_addr *addr, uint32_t since, uint32_t *now);

#endif
