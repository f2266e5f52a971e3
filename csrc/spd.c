/* The SPD: an ordered list of selectors -> PROTECT/BYPASS/DISCARD, and the
 * selector matching shared with the inbound policy check. */
#include "internal.h"
#include "srcroute.h"
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <openssl/crypto.h>

static size_t alen(uint8_t family) { return family == 4 ? 4 : 16; }

bool ts_selector_valid(const ts_selector *s) {
    if (s->family != 4 && s->family != 6)
        return false;
    size_t n = alen(s->family);
    return memcmp(s->src_lo, s->src_hi, n) <= 0 && memcmp(s->dst_lo, s->dst_hi, n) <= 0 &&
           s->sport_lo <= s->sport_hi && s->dport_lo <= s->dport_hi;
}

bool ts_selector_match(const ts_selector *s, const ts_flow *f) {
    if (s->family != f->family || (s->proto && s->proto != f->proto))
        return false;
    size_t n = alen(f->family);
    if (memcmp(f->src, s->src_lo, n) < 0 || memcmp(f->src, s->src_hi, n) > 0)
        return false;
    if (memcmp(f->dst, s->dst_lo, n) < 0 || memcmp(f->dst, s->dst_hi, n) > 0)
        return false;
    if (f->opaque)   /* ports it cannot show match only a selector that allows any */
        return s->sport_lo == 0 && s->sport_hi == 0xffff && s->dport_lo == 0 && s->dport_hi == 0xffff;
    return f->sport >= s->sport_lo && f->sport <= s->sport_hi &&
           f->dport >= s->dport_lo && f->dport <= s->dport_hi;
}

/* false if the protocol has ports and l4len is too short to hold them; a protocol without
 * ports (or one this does not know to have them) shows none: 0 and 0, as IKEv2 selectors
 * for it carry any port */
static bool ports_of(ts_flow *f, const uint8_t *l4, size_t l4len) {
    switch (f->proto) {
    case 6: case 17: case 33: case 132: case 136:   /* TCP, UDP, DCCP, SCTP, UDP-Lite */
        if (l4len < 4)
            return false;
        f->sport = ts_be16(l4);
        f->dport = ts_be16(l4 + 2);
        return true;
    case 1: case 58:
        /* ICMP: type in the high byte and code in the low byte of a 16-bit
         * "port" (RFC 4301 §4.4.1.3, IKEv2 TS), on whichever side the
         * selector restricts */
        if (l4len < 2)
            return false;
        f->sport = f->dport = (uint16_t)(l4[0] << 8 | l4[1]);
        return true;
    default:
        return true;
    }
}

/* What a parse found beyond the addresses: a packet quoted in an ICMP error
 * may be cut anywhere after its IP header (RFC 792: 8 bytes of data at
 * least), and its length fields are the original's, not the quote's. */
typedef struct ts_parsed {
    size_t l4, end;    /* the L4 header's offset and where the data ends */
    bool first;        /* not a later fragment: L4 starts at l4 */
    bool routed;       /* a packet's own header names further destinations (srcroute.h); never a quote's */
    uint8_t known;     /* enum ts_quote_known */
} ts_parsed;

static bool parse_v4(const uint8_t *p, size_t len, bool quote, ts_flow *f, ts_parsed *r) {
    if (len < 20)
        return false;
    size_t ihl = (size_t)(p[0] & 15) * 4, tot = ts_be16(p + 2);
    if (ihl < 20 || tot < ihl || (quote ? ihl > len : tot > len))
        return false;
    if (ihl > 20 && !quote) {   /* options (the common IHL 5 pays this one branch) */
        int route = ts_ip4_source_route(p + 20, ihl - 20);
        if (route == TS_SRCROUTE_BAD)
            return false;
        r->routed = route == TS_SRCROUTE_LIVE;
    }
    f->family = 4;
    f->proto = p[9];
    memcpy(f->src, p + 12, 4);
    memcpy(f->dst, p + 16, 4);
    r->l4 = ihl;
    r->end = tot < len ? tot : len;
    r->first = (ts_be16(p + 6) & 0x1fff) == 0;   /* later fragments carry no ports (OPAQUE) */
    r->known = TS_QUOTE_PROTO;
    if (r->first && ports_of(f, p + ihl, r->end - ihl))
        r->known = TS_QUOTE_PORTS;
    f->opaque = r->known != TS_QUOTE_PORTS;
    return true;
}

static bool parse_v6(const uint8_t *p, size_t len, bool quote, ts_flow *f, ts_parsed *r) {
    if (len < 40 || (!quote && (size_t)ts_be16(p + 4) + 40 > len))
        return false;
    size_t end = (size_t)ts_be16(p + 4) + 40, off = 40;
    if (end > len)
        end = len;   /* a quote only: a packet's own length must fit (checked above) */
    uint8_t nh = p[6];
    bool first = true;
    size_t ah = 0;   /* a packet's own first AH: its flow stops there, the walk goes on (below) */
    f->family = 6;
    memcpy(f->src, p + 8, 16);
    memcpy(f->dst, p + 24, 16);
    r->known = TS_QUOTE_ADDRS;
    /* The whole chain, as the host behind the TUN walks it (Linux ip6_input and
     * ipv6_skip_exthdr stop only at the packet's end): at a count cap the header at the cap
     * would pass for the protocol, and an ICMPv6 error behind it for a packet of that
     * protocol.  Every header takes 8 bytes or more (AH's length field counts 4-byte words
     * less 2: 8 at the least), so this ends within len / 8 steps. */
    for (;;) {
        if (nh == 0 || nh == 43 || nh == 60) {         /* hop-by-hop, routing, destination */
            if (off + 8 > end)
                return quote;                           /* a quote cut in its chain: protocol unknown */
            if (nh == 43 && !quote && ts_ip6_route_live(p + off))
                r->routed = true;                       /* segments left, or a packet behind: srcroute.h */
            size_t hl = ((size_t)p[off + 1] + 1) * 8;
            nh = p[off];
            off += hl;
            if (off > end)
                return quote;
        } else if (nh == 51) {                          /* AH, (len + 2) * 4 bytes (RFC 4302 §2.2) */
            /* a quote: the host behind the TUN hands an ICMPv6 error to the protocol behind AH
             * (ipv6_skip_exthdr), which the quote must be the SA's traffic of.  A packet's own
             * flow stops at AH, protocol 51, as XFRM's policy lookup does; but the host, once it
             * has verified the AH (xfrm_input), resubmits the header behind it, a Routing header
             * too: the walk goes on for that only (review revesp2 F2; srcroute.h) */
            if (off + 8 > end)
                return quote;
            if (!quote && !ah)
                ah = off;
            size_t hl = ((size_t)p[off + 1] + 2) * 4;
            nh = p[off];
            off += hl;
            if (off > end)
                return quote;
        } else if (nh == 44) {                          /* fragment */
            if (off + 8 > end)
                return quote;
            first = (ts_be16(p + off + 2) & 0xfff8) == 0;
            nh = p[off];
            off += 8;
            if (!first)
                break;                                  /* a later fragment's bytes are data */
        } else {
            break;
        }
    }
    if (ah) {   /* the flow is the AH's: no fragment header before it said "later" (that ends the walk) */
        nh = 51;
        off = ah;
        first = true;
    }
    f->proto = nh;
    r->l4 = off;
    r->end = end;
    r->first = first;
    r->known = TS_QUOTE_PROTO;
    if (first && ports_of(f, p + off, end - off))
        r->known = TS_QUOTE_PORTS;
    f->opaque = r->known != TS_QUOTE_PORTS;
    return true;
}

static bool parse_ip(const uint8_t *pkt, size_t len, bool quote, ts_flow *f, ts_parsed *r) {
    memset(f, 0, sizeof(*f));
    r->routed = false;
    if (len < 1)
        return false;
    switch (pkt[0] >> 4) {
    case 4: return parse_v4(pkt, len, quote, f, r);
    case 6: return parse_v6(pkt, len, quote, f, r);
    default: return false;
    }
}

bool ts_flow_parse(const uint8_t *pkt, size_t len, ts_flow *f) {
    ts_parsed r;
    return parse_ip(pkt, len, false, f, &r);
}

int ts_flow_parse_own(const uint8_t *pkt, size_t len, ts_flow *f) {
    ts_parsed r;
    if (!parse_ip(pkt, len, false, f, &r))
        return TS_DROP_MALFORMED;
    return r.routed ? TS_DROP_SOURCE_ROUTE : TS_DROP_NONE;
}

bool ts_flow_l4(const uint8_t *pkt, size_t len, size_t *l4, size_t *end) {
    ts_flow f;
    ts_parsed r;
    if (!parse_ip(pkt, len, false, &f, &r) || !r.first)
        return false;
    *l4 = r.l4;
    *end = r.end;
    return true;
}

int ts_quote_parse(const uint8_t *q, size_t len, ts_flow *f) {
    ts_parsed r = {0};
    return parse_ip(q, len, true, f, &r) ? r.known : TS_QUOTE_BAD;
}

bool ts_selector_match_known(const ts_selector *s, const ts_flow *f, int known) {
    ts_flow g = *f;
    if (known < TS_QUOTE_PORTS) {
        g.sport = g.dport = 0;
        g.opaque = 1;   /* matches only a selector that allows any port */
    }
    if (known < TS_QUOTE_PROTO) {
        if (s->proto)
            return false;
        g.proto = 0;
    }
    return known >= TS_QUOTE_ADDRS && ts_selector_match(s, &g);
}

_Thread_local uint64_t ts_spd_examined;

/* the ordered scan: the live match of lowest rank (the index's reference) */
ts_spd_entry *ts_spd_lookup(ts_spd *spd, const ts_flow *f) {
    ts_spd_entry *best = NULL;
    for (size_t i = 0; i < spd->used; i++) {
        ts_spd_entry *e = &spd->v[i];
        if (!e->dead && (!best || ts_spd_before(e, best)) && ts_selector_match(&e->pol.sel, f))
            best = e;
    }
    ts_spd_examined += spd->n;
    return best;
}

int ts_spd_init(ts_spd *spd) {
    ssize_t got;
    do
        got = getrandom(spd->key, sizeof(spd->key), 0);
    while (got < 0 && errno == EINTR);
    ts_rindex_reset(&spd->range);
    spd->range_first = spd->range_last = TS_SPD_NONE;
    return got == (ssize_t)sizeof(spd->key) ? TS_OK : TS_EIO;
}

static uint64_t addr_hash(const uint64_t key[2], uint8_t family, const uint8_t *addr) {
    uint8_t in[17] = {family};
    memcpy(in + 1, addr, alen(family));
    return ts_siphash24(key, in, 1 + alen(family));
}

/* the destination is one address: the only flows it matches have that destination */
static bool one_destination(const ts_selector *s) {
    return memcmp(s->dst_lo, s->dst_hi, alen(s->family)) == 0;
}

/* ---- the chains: by destination (rank order), by id, by reqid ---------------------------- */

/* ids and reqids are the control process's, handed out in sequence: a multiplicative hash
 * spreads them (no peer picks them) */
static uint32_t *id_bucket(ts_spd *spd, uint32_t id) {
    return &spd->by_id[(id * 0x9E3779B97F4A7C15ull >> 32) & (spd->cap - 1)];
}

static uint32_t *reqid_bucket(ts_spd *spd, uint32_t reqid) {
    return &spd->by_reqid[(reqid * 0x9E3779B97F4A7C15ull >> 32) & (spd->cap - 1)];
}

static uint32_t *dst_bucket(ts_spd *spd, const ts_spd_entry *e) {
    return &spd->head[e->hash & (spd->cap - 1)];
}

/* the link field at offset off of slot i (next or id_next) */
static uint32_t *link_of(ts_spd *spd, uint32_t i, size_t off) {
    return (uint32_t *)((char *)&spd->v[i] + off);
}

static void unlink_from(ts_spd *spd, uint32_t *at, uint32_t i, size_t off) {
    while (*at != TS_SPD_NONE && *at != i)
        at = link_of(spd, *at, off);
    if (*at == i)
        *at = *link_of(spd, i, off);
}

/* slot i into its chains: by destination after every entry of lower rank, so that a chain's
 * first match is its best; by id and reqid in front (their order means nothing) */
static void link_entry(ts_spd *spd, uint32_t i) {
    ts_spd_entry *e = &spd->v[i];
    uint32_t *b = id_bucket(spd, e->pol.id);
    e->id_next = *b;
    *b = i;
    e->rq_next = e->rq_prev = TS_SPD_NONE;
    if (e->pol.reqid) {   /* reqid 0 binds no SA (newest_out): BYPASS and DISCARD stay out */
        b = reqid_bucket(spd, e->pol.reqid);
        e->rq_next = *b;
        if (*b != TS_SPD_NONE)
            spd->v[*b].rq_prev = i;
        *b = i;
    }
    e->next = e->rg_next = e->rg_prev = TS_SPD_NONE;
    if (!e->hashed) {   /* at the back of the range chain, whose order means nothing (scan_unhashed and
                         * the range index compare ranks; relink_all, walking v from the back, reverses it) */
        e->rg_prev = spd->range_last;
        *(spd->range_last == TS_SPD_NONE ? &spd->range_first : &spd->v[spd->range_last].rg_next) = i;
        spd->range_last = i;
        spd->nrange++;
        return;
    }
    uint32_t *at = dst_bucket(spd, e);
    while (*at != TS_SPD_NONE && ts_spd_before(&spd->v[*at], e))
        at = &spd->v[*at].next;
    e->next = *at;
    *at = i;
    spd->nhashed++;
}

static void unlink_entry(ts_spd *spd, uint32_t i) {
    ts_spd_entry *e = &spd->v[i];
    unlink_from(spd, id_bucket(spd, e->pol.id), i, offsetof(ts_spd_entry, id_next));
    if (e->pol.reqid) {
        if (e->rq_prev == TS_SPD_NONE)
            *reqid_bucket(spd, e->pol.reqid) = e->rq_next;
        else
            spd->v[e->rq_prev].rq_next = e->rq_next;
        if (e->rq_next != TS_SPD_NONE)
            spd->v[e->rq_next].rq_prev = e->rq_prev;
    }
    if (e->hashed) {
        unlink_from(spd, dst_bucket(spd, e), i, offsetof(ts_spd_entry, next));
        spd->nhashed--;
        return;
    }
    *(e->rg_prev == TS_SPD_NONE ? &spd->range_first : &spd->v[e->rg_prev].rg_next) = e->rg_next;
    *(e->rg_next == TS_SPD_NONE ? &spd->range_last : &spd->v[e->rg_next].rg_prev) = e->rg_prev;
    spd->nrange--;
}

static uint32_t find_id(ts_spd *spd, uint32_t id) {
    if (!spd->cap)
        return TS_SPD_NONE;
    uint32_t i = *id_bucket(spd, id);
    while (i != TS_SPD_NONE && spd->v[i].pol.id != id)
        i = spd->v[i].id_next;
    return i;
}

/* ---- lookups ------------------------------------------------------------------------------ */

/* without the range index (out of memory): the unhashed entries, each compared */
static void scan_unhashed(ts_spd *spd, const ts_flow *f, size_t *best, size_t *seen) {
    for (uint32_t i = spd->cap ? spd->range_first : TS_SPD_NONE; i != TS_SPD_NONE; i = spd->v[i].rg_next) {
        const ts_spd_entry *e = &spd->v[i];
        if (*best != SIZE_MAX && !ts_spd_before(e, &spd->v[*best]))
            continue;
        (*seen)++;
        if (ts_selector_match(&e->pol.sel, f))
            *best = i;
    }
}

/* h: addr_hash of the flow's destination */
static ts_spd_entry *find_hashed(ts_spd *spd, const ts_flow *f, uint64_t h) {
    size_t best = SIZE_MAX, seen = 0;
    if (spd->nhashed) {
        for (uint32_t i = spd->head[h & (spd->cap - 1)]; i != TS_SPD_NONE; i = spd->v[i].next) {
            seen++;
            if (spd->v[i].hash == h && ts_selector_match(&spd->v[i].pol.sel, f)) {
                best = i;
                break;
            }
        }
    }
    /* an unhashed entry wins only with a rank before the bucket's match */
    if (spd->range.whole)
        ts_rindex_find(&spd->range, spd->v, spd->used, f, &best, &seen);
    else
        scan_unhashed(spd, f, &best, &seen);
    ts_spd_examined += seen;
    return best == SIZE_MAX ? NULL : &spd->v[best];
}

ts_spd_entry *ts_spd_find(ts_spd *spd, const ts_flow *f) {
    return find_hashed(spd, f, spd->nhashed ? addr_hash(spd->key, f->family, f->dst) : 0);
}

ts_spd_entry *ts_spd_lookup_cached(ts_spd *spd, ts_flow_cache *c, const ts_flow *f) {
    if (!c)
        return ts_spd_find(spd, f);
    uint32_t h = 2166136261u;   /* FNV-1a over the 5-tuple */
    const uint8_t *k = (const uint8_t *)f;
    for (size_t i = 0; i < sizeof(*f); i++)
        h = (h ^ k[i]) * 16777619u;
    ts_flow_slot *s = &c->slot[h & (TS_FLOW_CACHE - 1)];
    /* the entry's memory is v's while the generation stays: a deleted one is read dead there */
    if (s->entry && s->generation == spd->generation && s->dgen == spd->dgen[s->dbucket] && !s->entry->dead &&
        memcmp(&s->key, f, sizeof(*f)) == 0)
        return s->entry;
    uint64_t dh = addr_hash(spd->key, f->family, f->dst);
    ts_spd_entry *e = find_hashed(spd, f, dh);
    s->key = *f;
    s->generation = spd->generation;
    s->dbucket = (uint32_t)(dh & (TS_SPD_DGEN - 1));
    s->dgen = spd->dgen[s->dbucket];
    s->entry = e;
    return e;
}

/* ---- outbound SAs and held packets -------------------------------------------------------- */

static ts_sa *newest_out(ts_sad *sad, uint32_t reqid) {
    ts_sa *best = NULL;
    if (reqid == 0)
        return NULL;
    for (ts_sa *sa = ts_sad_by_reqid(sad, reqid); sa; sa = sa->rq_next)
        if (sa->reqid == reqid && atomic_load(&sa->state) == TS_SA_MATURE &&
            (!best || sa->created_ns >= best->created_ns))
            best = sa;
    return best;
}

/* an SA was bound or a policy added while packets wait: the loops look again
 * whether they can go (hold.c).  A trap policy's packets may leave through
 * another policy (the child's own) while the trap policy itself stays
 * unbound, so any waiting packet counts: the holds keep their count in held. */
static void kick_held(ts_spd *spd) {
    if (atomic_load_explicit(&spd->held, memory_order_relaxed))
        ts_hold_kick(spd);
}

void ts_spd_rebind(ts_spd *spd, ts_sad *sad) {
    for (size_t i = 0; i < spd->used; i++)
        if (!spd->v[i].dead)
            spd->v[i].out_sa = newest_out(sad, spd->v[i].pol.reqid);
    kick_held(spd);
}

void ts_spd_bind_new(ts_spd *spd, ts_sa *sa) {
    for (uint32_t i = sa->reqid && spd->cap ? *reqid_bucket(spd, sa->reqid) : TS_SPD_NONE; i != TS_SPD_NONE;
         i = spd->v[i].rq_next)
        if (spd->v[i].pol.reqid == sa->reqid)
            spd->v[i].out_sa = sa;   /* the SA just added is the newest */
    kick_held(spd);
}

/* only an entry of gone's reqid was bound to it (newest_out, bind_new) */
void ts_spd_unbind(ts_spd *spd, ts_sad *sad, const ts_sa *gone) {
    for (uint32_t i = spd->cap ? *reqid_bucket(spd, gone->reqid) : TS_SPD_NONE; i != TS_SPD_NONE;
         i = spd->v[i].rq_next)
        if (spd->v[i].out_sa == gone)
            spd->v[i].out_sa = newest_out(sad, spd->v[i].pol.reqid);
    kick_held(spd);
}

/* ---- upkeep ------------------------------------------------------------------------------- */

void ts_spd_destroy(ts_spd *spd) {
    for (size_t i = 0; i < spd->used; i++)
        ts_hold_free(NULL, spd->v[i].hold);
    free(spd->v);
    free(spd->head);
    free(spd->by_id);
    free(spd->by_reqid);
    ts_rindex_free(&spd->range);
    spd->v = NULL;
    spd->head = spd->by_id = spd->by_reqid = NULL;
    spd->n = spd->used = spd->cap = spd->nhashed = 0;
    OPENSSL_cleanse(spd->key, sizeof(spd->key));   /* the index's key goes with the SPD */
}

/* the range index afresh from the live unhashed entries' chain (its memory too when shrink):
 * after running out of memory, or when more of it is dead than live.  The chain, not every slot
 * (each client's hashed policy, the dead slots): a rebuild costs O(range policies x pieces),
 * and ts_rindex_close asks for one only after as many links died as live, so a delete of a
 * range policy is O(pieces) amortized (review revspd F1).  Slots do not move: the flow caches
 * stay good. */
static void range_rebuild(ts_spd *spd, bool shrink) {
    if (shrink)
        ts_rindex_free(&spd->range);
    ts_rindex_reset(&spd->range);
    for (uint32_t i = spd->cap ? spd->range_first : TS_SPD_NONE; i != TS_SPD_NONE; i = spd->v[i].rg_next)
        if (!ts_rindex_add(&spd->range, spd->v, i))
            return;   /* not whole: lookups scan the unhashed entries until a change rebuilds it */
}

static int by_rank(const void *a, const void *b) {
    const ts_spd_entry *x = a, *y = b;
    return ts_spd_before(x, y) ? -1 : ts_spd_before(y, x) ? 1 : 0;
}

/* every chain afresh over cap buckets, no slot moved; from the back, so that over a v sorted
 * by rank each entry goes in front of its chain at once */
static void relink_all(ts_spd *spd) {
    for (size_t b = 0; b < spd->cap; b++)
        spd->head[b] = spd->by_id[b] = spd->by_reqid[b] = TS_SPD_NONE;
    spd->nhashed = spd->nrange = 0;
    spd->range_first = spd->range_last = TS_SPD_NONE;
    for (size_t i = spd->used; i-- > 0;)
        if (!spd->v[i].dead)
            link_entry(spd, (uint32_t)i);
}

/* v and the buckets down to twice what is used once it is a quarter of them or less (review
 * revspd: after a peak of clients left, v and the buckets stayed at the peak's size).  Twice, not
 * once: the next growth waits for as many adds as there are live entries.  A realloc that cannot
 * shrink leaves its block as it was, at least nc long: cap = nc holds for every array either way.
 * Only compact calls it: the chains are rebuilt and the generation moves after it. */
static void shrink(ts_spd *spd) {
    size_t nc = spd->cap;
    while (nc > 16 && spd->used * 4 <= nc)
        nc /= 2;
    if (nc == spd->cap)
        return;
    uint32_t **arrays[3] = {&spd->head, &spd->by_id, &spd->by_reqid};
    for (int a = 0; a < 3; a++) {
        uint32_t *p = realloc(*arrays[a], nc * sizeof(*p));
        if (p)
            *arrays[a] = p;
    }
    ts_spd_entry *nv = realloc(spd->v, nc * sizeof(*nv));
    if (nv)
        spd->v = nv;
    spd->cap = nc;
}

/* The dead slots out, v sorted by rank (and smaller when mostly empty), the chains and the
 * range index rebuilt: v's entries move, so the generation moves. */
static void compact(ts_spd *spd) {
    size_t k = 0;
    for (size_t i = 0; i < spd->used; i++)
        if (!spd->v[i].dead) {
            if (k != i)
                memcpy(&spd->v[k], &spd->v[i], sizeof(*spd->v));
            k++;
        }
    spd->used = k;
    if (k)
        qsort(spd->v, k, sizeof(*spd->v), by_rank);
    shrink(spd);
    relink_all(spd);
    range_rebuild(spd, true);
    spd->generation++;
}

/* Room for one more slot: the dead ones back when they are a quarter of v (a compaction costs
 * O(cap log cap) once per cap / 4 additions), else v and the buckets twice as large (O(cap)
 * once per cap additions).  A loop
 * thread's flow cache keeps pointers into v from one packet to the next, trusted while the
 * generation stays: so v goes last, and once moved the generation moves too, even if the add
 * stops there.  The buckets grow first: only the writer reads past cap, and not before cap
 * changes with v. */
static int room(ts_spd *spd) {
    if (spd->used < spd->cap)
        return TS_OK;
    if (spd->used - spd->n >= spd->cap / 4 && spd->cap) {
        compact(spd);
        return TS_OK;
    }
    size_t nc = spd->cap ? spd->cap * 2 : 16;
    if (nc > TS_SPD_NONE)
        return TS_ENOMEM;
    uint32_t **arrays[3] = {&spd->head, &spd->by_id, &spd->by_reqid};
    for (int a = 0; a < 3; a++) {
        uint32_t *p = realloc(*arrays[a], nc * sizeof(*p));
        if (!p)
            return TS_ENOMEM;
        *arrays[a] = p;
    }
    ts_spd_entry *nv = realloc(spd->v, nc * sizeof(*nv));
    if (!nv)
        return TS_ENOMEM;
    spd->v = nv;
    spd->generation++;
    spd->cap = nc;
    relink_all(spd);   /* into the new buckets; the range index holds slots, which stay */
    return TS_OK;
}

/* the new entry at slot i into the indexes; the flows it may now win forget their policy */
static void index_new(ts_spd *spd, uint32_t i) {
    ts_spd_entry *e = &spd->v[i];
    link_entry(spd, i);
    if (e->hashed) {
        spd->dgen[e->hash & (TS_SPD_DGEN - 1)]++;   /* only flows to its destination */
        return;
    }
    spd->generation++;   /* a range: any flow */
    if (!spd->range.whole)
        range_rebuild(spd, false);
    else
        ts_rindex_add(&spd->range, spd->v, i);   /* on failure: not whole */
}

int ts_spd_add(ts_dp *dp, const ts_policy *p) {
    if (p->action > TS_ACT_PROTECT || !ts_selector_valid(&p->sel))
        return TS_EINVAL;
    /* allocated with the policy, never per packet */
    ts_hold *hold = p->action == TS_ACT_PROTECT ? ts_hold_new(&dp->spd.held, &dp->spd.busy) : NULL;
    if (p->action == TS_ACT_PROTECT && !hold)
        return TS_ENOMEM;
    int rc = TS_OK;
    pthread_rwlock_wrlock(&dp->lock);
    ts_spd *spd = &dp->spd;
    if (find_id(spd, p->id) != TS_SPD_NONE)
        rc = TS_EEXIST;
    if (rc == TS_OK)
        rc = room(spd);
    if (rc == TS_OK) {
        uint32_t i = (uint32_t)spd->used++;
        ts_spd_entry *e = &spd->v[i];
        memset(e, 0, sizeof(*e));
        e->pol = *p;
        e->order = spd->next_order++;
        e->out_sa = p->action == TS_ACT_PROTECT ? newest_out(&dp->sad, p->reqid) : NULL;
        e->hold = hold;
        hold = NULL;
        e->hashed = one_destination(&p->sel);
        if (e->hashed)
            e->hash = addr_hash(spd->key, p->sel.family, p->sel.dst_lo);
        spd->n++;
        index_new(spd, i);
        kick_held(spd);
    }
    pthread_rwlock_unlock(&dp->lock);
    ts_hold_free(NULL, hold);
    return rc;
}

/* dead slots a delete leaves before it compacts, beyond as many as are live: a small SPD is not
 * compacted (the flow caches emptied) on every other delete */
#define TS_SPD_DEAD_SLACK 64

/* The entry leaves every chain and its slot stays, dead, until a compaction: no other entry
 * moves, and no flow's best changes but the flows whose best it was (they see it dead). */
int ts_spd_delete(ts_dp *dp, uint32_t id) {
    int rc = TS_ENOENT;
    pthread_rwlock_wrlock(&dp->lock);
    ts_spd *spd = &dp->spd;
    uint32_t i = find_id(spd, id);
    if (i != TS_SPD_NONE) {
        ts_spd_entry *e = &spd->v[i];
        ts_hold_free(dp, e->hold);
        e->hold = NULL;
        unlink_entry(spd, i);
        e->dead = true;
        spd->n--;
        if (!e->hashed && (!spd->range.whole || ts_rindex_close(&spd->range, &e->pol.sel, i)))
            range_rebuild(spd, true);
        /* the dead slots go once they outnumber the live (review revspd R2): else after clients
         * leave v stays at its peak, and what walks slots (ts_spd_rebind, ts_spd_list) walks them
         * all.  O(used log used) once per used / 2 deletes; the generation moves */
        if (spd->used - spd->n > spd->n + TS_SPD_DEAD_SLACK)
            compact(spd);
        rc = TS_OK;
    }
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}

void ts_spd_flush(ts_dp *dp) {
    pthread_rwlock_wrlock(&dp->lock);
    ts_spd *spd = &dp->spd;
    for (size_t i = 0; i < spd->used; i++) {
        ts_hold_free(dp, spd->v[i].hold);
        spd->v[i].hold = NULL;
        spd->v[i].dead = true;
    }
    spd->n = 0;
    compact(spd);
    pthread_rwlock_unlock(&dp->lock);
}

size_t ts_spd_count(ts_dp *dp) {
    pthread_rwlock_rdlock(&dp->lock);
    size_t n = dp->spd.n;
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

size_t ts_spd_slots(ts_dp *dp) {
    pthread_rwlock_rdlock(&dp->lock);
    size_t n = dp->spd.cap;
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

static int by_rank_of(const void *a, const void *b, void *v) {
    const ts_spd_entry *x = &((ts_spd_entry *)v)[*(const uint32_t *)a],
                       *y = &((ts_spd_entry *)v)[*(const uint32_t *)b];
    return ts_spd_before(x, y) ? -1 : ts_spd_before(y, x) ? 1 : 0;
}

static void info_of(const ts_spd_entry *e, ts_policy_info *out) {
    out->id = e->pol.id;
    out->priority = e->pol.priority;
    out->reqid = e->pol.reqid;
    out->action = e->pol.action;
    out->out_spi = e->out_sa ? e->out_sa->spi : 0;
    out->packets = atomic_load(&e->packets);
    out->sel = e->pol.sel;
}

/* in rank order (the lookup's), which v keeps only from one compaction to the next: sorted
 * here; without memory for that, in slot order */
size_t ts_spd_list(ts_dp *dp, ts_policy_info *out, size_t max) {
    pthread_rwlock_rdlock(&dp->lock);
    ts_spd *spd = &dp->spd;
    uint32_t *live = malloc((spd->n ? spd->n : 1) * sizeof(*live));
    size_t k = 0;
    for (size_t i = 0; i < spd->used && live; i++)
        if (!spd->v[i].dead)
            live[k++] = (uint32_t)i;
    if (live && k)
        qsort_r(live, k, sizeof(*live), by_rank_of, spd->v);
    size_t n = 0;
    for (size_t i = 0; i < spd->used && n < max; i++) {
        size_t slot = live ? (i < k ? live[i] : SIZE_MAX) : i;
        if (slot != SIZE_MAX && !spd->v[slot].dead)
            info_of(&spd->v[slot], &out[n++]);
    }
    free(live);
    pthread_rwlock_unlock(&dp->lock);
    return n;
}
