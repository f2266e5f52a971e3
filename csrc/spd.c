/* The SPD: an ordered list of selectors -> PROTECT/BYPASS/DISCARD, and the
 * selector matching shared with the inbound policy check. */
#include "internal.h"
#include <errno.h>
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
    uint8_t known;     /* enum ts_quote_known */
} ts_parsed;

static bool parse_v4(const uint8_t *p, size_t len, bool quote, ts_flow *f, ts_parsed *r) {
    if (len < 20)
        return false;
    size_t ihl = (size_t)(p[0] & 15) * 4, tot = ts_be16(p + 2);
    if (ihl < 20 || tot < ihl || (quote ? ihl > len : tot > len))
        return false;
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
            size_t hl = ((size_t)p[off + 1] + 1) * 8;
            nh = p[off];
            off += hl;
            if (off > end)
                return quote;
        } else if (nh == 51 && quote) {                 /* AH, (len + 2) * 4 bytes (RFC 4302 §2.2) */
            /* only in a quote: the host behind the TUN hands an ICMPv6 error to the protocol
             * behind AH (ipv6_skip_exthdr), which the quote must be the SA's traffic of; a
             * packet's own flow stops at AH, protocol 51, as XFRM's policy lookup does */
            if (off + 8 > end)
                return quote;
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

ts_spd_entry *ts_spd_lookup(ts_spd *spd, const ts_flow *f) {
    for (size_t i = 0; i < spd->n; i++)
        if (ts_selector_match(&spd->v[i].pol.sel, f)) {
            ts_spd_examined += i + 1;
            return &spd->v[i];
        }
    ts_spd_examined += spd->n;
    return NULL;
}

int ts_spd_init(ts_spd *spd) {
    ssize_t got;
    do
        got = getrandom(spd->key, sizeof(spd->key), 0);
    while (got < 0 && errno == EINTR);
    ts_rindex_reset(&spd->range);
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

/* Chains are built from the back so that each lists its entries in position order: the first
 * match in a bucket is the bucket's best.  Never allocates (ts_spd_add sized head and rest). */
static void reindex(ts_spd *spd) {
    for (size_t b = 0; b < spd->cap; b++)
        spd->head[b] = TS_SPD_NONE;
    spd->nrest = spd->nhashed = 0;
    for (size_t i = spd->n; i-- > 0;) {
        ts_spd_entry *e = &spd->v[i];
        if (!e->hashed)
            continue;
        uint32_t *b = &spd->head[e->hash & (spd->cap - 1)];
        e->next = *b;
        *b = (uint32_t)i;
        spd->nhashed++;
    }
    for (size_t i = 0; i < spd->n; i++)
        if (!spd->v[i].hashed)
            spd->rest[spd->nrest++] = (uint32_t)i;
}

/* the entry at the last position, into an index that holds all the others: it goes last in its
 * chain or in the rest, so the common addition (priorities equal or rising) costs no rebuild */
static void index_last(ts_spd *spd) {
    uint32_t i = (uint32_t)(spd->n - 1);
    ts_spd_entry *e = &spd->v[i];
    if (!e->hashed) {
        spd->rest[spd->nrest++] = i;
        return;
    }
    uint32_t *link = &spd->head[e->hash & (spd->cap - 1)];
    while (*link != TS_SPD_NONE)
        link = &spd->v[*link].next;
    e->next = TS_SPD_NONE;
    *link = i;
    spd->nhashed++;
}

ts_spd_entry *ts_spd_find(ts_spd *spd, const ts_flow *f) {
    size_t best = SIZE_MAX, seen = 0;
    if (spd->nhashed) {
        uint64_t h = addr_hash(spd->key, f->family, f->dst);
        for (uint32_t i = spd->head[h & (spd->cap - 1)]; i != TS_SPD_NONE; i = spd->v[i].next) {
            seen++;
            if (spd->v[i].hash == h && ts_selector_match(&spd->v[i].pol.sel, f)) {
                best = i;
                break;
            }
        }
    }
    /* an unhashed entry wins only from a position before the bucket's match */
    if (spd->range.whole) {
        ts_rindex_find(&spd->range, spd->v, spd->n, f, &best, &seen);
        ts_spd_examined += seen;
        return best == SIZE_MAX ? NULL : &spd->v[best];
    }
    for (size_t k = 0; k < spd->nrest && spd->rest[k] < best; k++) {
        seen++;
        if (ts_selector_match(&spd->v[spd->rest[k]].pol.sel, f)) {
            best = spd->rest[k];
            break;
        }
    }
    ts_spd_examined += seen;
    return best == SIZE_MAX ? NULL : &spd->v[best];
}

ts_spd_entry *ts_spd_lookup_cached(ts_spd *spd, ts_flow_cache *c, const ts_flow *f) {
    if (!c)
        return ts_spd_find(spd, f);
    uint32_t h = 2166136261u;   /* FNV-1a over the 5-tuple */
    const uint8_t *k = (const uint8_t *)f;
    for (size_t i = 0; i < sizeof(*f); i++)
        h = (h ^ k[i]) * 16777619u;
    ts_flow_slot *s = &c->slot[h & (TS_FLOW_CACHE - 1)];
    if (s->entry && s->generation == spd->generation && memcmp(&s->key, f, sizeof(*f)) == 0)
        return s->entry;
    ts_spd_entry *e = ts_spd_find(spd, f);
    s->key = *f;
    s->generation = spd->generation;
    s->entry = e;
    return e;
}

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
 * unbound, so any waiting packet counts.  Called under the write lock: no
 * loop thread is touching the holds. */
static void kick_held(ts_spd *spd) {
    for (size_t i = 0; i < spd->n; i++) {
        const ts_spd_entry *e = &spd->v[i];
        if (e->hold && e->hold->n) {
            ts_hold_kick(spd);
            return;
        }
    }
}

void ts_spd_rebind(ts_spd *spd, ts_sad *sad) {
    for (size_t i = 0; i < spd->n; i++)
        spd->v[i].out_sa = newest_out(sad, spd->v[i].pol.reqid);
    kick_held(spd);
}

void ts_spd_bind_new(ts_spd *spd, ts_sa *sa) {
    for (size_t i = 0; i < spd->n; i++)
        if (spd->v[i].pol.reqid == sa->reqid && sa->reqid != 0)
            spd->v[i].out_sa = sa;   /* the SA just added is the newest */
    kick_held(spd);
}

void ts_spd_unbind(ts_spd *spd, ts_sad *sad, const ts_sa *gone) {
    for (size_t i = 0; i < spd->n; i++)
        if (spd->v[i].out_sa == gone)
            spd->v[i].out_sa = newest_out(sad, spd->v[i].pol.reqid);
    kick_held(spd);
}

void ts_spd_destroy(ts_spd *spd) {
    for (size_t i = 0; i < spd->n; i++)
        ts_hold_free(NULL, spd->v[i].hold);
    free(spd->v);
    free(spd->head);
    free(spd->rest);
    ts_rindex_free(&spd->range);
    spd->v = NULL;
    spd->head = spd->rest = NULL;
    spd->n = spd->cap = spd->nrest = spd->nhashed = 0;
    OPENSSL_cleanse(spd->key, sizeof(spd->key));   /* the index's key goes with the SPD */
}

/* the range index from v, afresh (its memory too when shrink): after running out of memory,
 * or when more of it is dead than live */
static void range_rebuild(ts_spd *spd, bool shrink) {
    if (shrink)
        ts_rindex_free(&spd->range);
    ts_rindex_reset(&spd->range);
    for (size_t i = 0; i < spd->n; i++)
        if (!spd->v[i].hashed && !ts_rindex_add(&spd->range, &spd->v[i].pol.sel, (uint32_t)i))
            return;   /* not whole: lookups scan the rest until a change rebuilds it */
}

/* Room for one more entry in v and in the index; cap changes only once all three have it.  A
 * loop thread's flow cache keeps pointers into v from one packet to the next, trusted while the
 * generation stays: so v goes last, and once moved the generation moves too, even if the add
 * stops there.  Only the writer, under the lock, holds positions into head and rest, so their
 * growing first and alone (v's realloc failing) leaves nothing stale. */
static int grow(ts_spd *spd) {
    if (spd->n < spd->cap)
        return TS_OK;
    size_t nc = spd->cap ? spd->cap * 2 : 16;
    if (nc > TS_SPD_NONE)
        return TS_ENOMEM;
    uint32_t *nr = realloc(spd->rest, nc * sizeof(*nr));
    if (!nr)
        return TS_ENOMEM;
    spd->rest = nr;
    uint32_t *nh = realloc(spd->head, nc * sizeof(*nh));
    if (!nh)
        return TS_ENOMEM;
    spd->head = nh;
    ts_spd_entry *nv = realloc(spd->v, nc * sizeof(*nv));
    if (!nv)
        return TS_ENOMEM;
    spd->v = nv;
    spd->generation++;
    spd->cap = nc;
    return TS_OK;
}

int ts_spd_add(ts_dp *dp, const ts_policy *p) {
    if (p->action > TS_ACT_PROTECT || !ts_selector_valid(&p->sel))
        return TS_EINVAL;
    /* allocated with the policy, never per packet */
    ts_hold *hold = p->action == TS_ACT_PROTECT ? ts_hold_new() : NULL;
    if (p->action == TS_ACT_PROTECT && !hold)
        return TS_ENOMEM;
    int rc = TS_OK;
    pthread_rwlock_wrlock(&dp->lock);
    ts_spd *spd = &dp->spd;
    for (size_t i = 0; i < spd->n; i++)
        if (spd->v[i].pol.id == p->id)
            rc = TS_EEXIST;
    size_t buckets = spd->cap;
    if (rc == TS_OK)
        rc = grow(spd);
    if (rc == TS_OK) {
        size_t pos = spd->n;
        while (pos > 0 && spd->v[pos - 1].pol.priority > p->priority)
            pos--;
        memmove(&spd->v[pos + 1], &spd->v[pos], (spd->n - pos) * sizeof(*spd->v));
        ts_spd_entry *e = &spd->v[pos];
        memset(e, 0, sizeof(*e));
        e->pol = *p;
        e->order = spd->next_order++;
        spd->generation++;
        e->out_sa = p->action == TS_ACT_PROTECT ? newest_out(&dp->sad, p->reqid) : NULL;
        e->hold = hold;
        hold = NULL;
        e->hashed = one_destination(&p->sel);
        if (e->hashed)
            e->hash = addr_hash(spd->key, p->sel.family, p->sel.dst_lo);
        spd->n++;
        if (!spd->range.whole) {
            range_rebuild(spd, false);
        } else {
            if (pos != spd->n - 1)
                ts_rindex_open(&spd->range, (uint32_t)pos);
            if (!e->hashed)
                ts_rindex_add(&spd->range, &p->sel, (uint32_t)pos);   /* on failure: not whole */
        }
        if (pos == spd->n - 1 && buckets == spd->cap)
            index_last(spd);
        else
            reindex(spd);   /* positions after pos moved, or the buckets grew */
        kick_held(spd);
    }
    pthread_rwlock_unlock(&dp->lock);
    ts_hold_free(NULL, hold);
    return rc;
}

int ts_spd_delete(ts_dp *dp, uint32_t id) {
    int rc = TS_ENOENT;
    pthread_rwlock_wrlock(&dp->lock);
    ts_spd *spd = &dp->spd;
    for (size_t i = 0; i < spd->n; i++) {
        if (spd->v[i].pol.id == id) {
            ts_hold_free(dp, spd->v[i].hold);
            ts_selector sel = spd->v[i].pol.sel;
            bool ranged = !spd->v[i].hashed;
            memmove(&spd->v[i], &spd->v[i + 1], (spd->n - i - 1) * sizeof(*spd->v));
            spd->n--;
            spd->generation++;
            reindex(spd);
            if (!spd->range.whole || ts_rindex_close(&spd->range, ranged ? &sel : NULL, (uint32_t)i))
                range_rebuild(spd, true);
            rc = TS_OK;
            break;
        }
    }
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}

void ts_spd_flush(ts_dp *dp) {
    pthread_rwlock_wrlock(&dp->lock);
    for (size_t i = 0; i < dp->spd.n; i++)
        ts_hold_free(dp, dp->spd.v[i].hold);
    dp->spd.n = 0;
    dp->spd.generation++;
    reindex(&dp->spd);
    range_rebuild(&dp->spd, true);
    pthread_rwlock_unlock(&dp->lock);
}

size_t ts_spd_count(ts_dp *dp) {
    pthread_rwlock_rdlock(&dp->lock);
    size_t n = dp->spd.n;
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

size_t ts_spd_list(ts_dp *dp, ts_policy_info *out, size_t max) {
    pthread_rwlock_rdlock(&dp->lock);
    size_t n = dp->spd.n < max ? dp->spd.n : max;
    for (size_t i = 0; i < n; i++) {
        const ts_spd_entry *e = &dp->spd.v[i];
        out[i].id = e->pol.id;
        out[i].priority = e->pol.priority;
        out[i].reqid = e->pol.reqid;
        out[i].action = e->pol.action;
        out[i].out_spi = e->out_sa ? e->out_sa->spi : 0;
        out[i].packets = atomic_load(&e->packets);
        out[i].sel = e->pol.sel;
    }
    pthread_rwlock_unlock(&dp->lock);
    return n;
}
