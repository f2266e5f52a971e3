/* The SPD's range index (internal.h ts_rindex): the policies whose destination is a range
 * (a hub's subnet per spoke, a site-to-site child's /24) by destination prefix, so that a
 * flow-cache miss compares the few policies around its destination instead of scanning them
 * all in order.  Positions are slots of spd.c's v; a chain holds them by rank (priority, then
 * insertion: ts_spd_before), so its first match is its best and a walk can stop at the best so
 * far.  A slot never moves while it is in the index (spd.c rebuilds it when v is compacted). */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

/* A range that takes more prefixes than this (one that is no subnet and straddles a wide
 * boundary) goes whole to the one prefix around it: one link instead of up to 2 x 128, at
 * the price of being compared for destinations in that prefix outside the range. */
#define TS_RANGE_PIECES 8

static unsigned bits_of(uint8_t family) { return family == 4 ? 32 : 128; }

static unsigned bit_at(const uint8_t *a, unsigned d) { return (unsigned)(a[d >> 3] >> (7 - (d & 7))) & 1u; }

static void set_bit(uint8_t *a, unsigned d, unsigned v) {
    uint8_t m = (uint8_t)(0x80u >> (d & 7));
    a[d >> 3] = (uint8_t)(v ? a[d >> 3] | m : a[d >> 3] & ~m);
}

/* a's first len bits are b's */
static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned len) {
    unsigned full = len >> 3, part = len & 7;
    if (memcmp(a, b, full) != 0)
        return false;
    return !part || ((a[full] ^ b[full]) & (uint8_t)(0xff00u >> part)) == 0;
}

/* how many leading bits a and b share, at most max */
static unsigned common_bits(const uint8_t *a, const uint8_t *b, unsigned max) {
    unsigned d = 0;
    while (d + 8 <= max && a[d >> 3] == b[d >> 3])
        d += 8;
    while (d < max && bit_at(a, d) == bit_at(b, d))
        d++;
    return d;
}

/* a capacity that holds need (cap if it does already); 0 past what uint32_t indices reach */
static size_t cap_for(size_t cap, size_t need) {
    size_t nc = cap ? cap : 64;
    while (nc < need)
        nc *= 2;
    return nc < TS_SPD_NONE ? nc : 0;   /* TS_SPD_NONE marks the end of a chain */
}

static bool reserve(ts_rindex *r, size_t nodes, size_t links) {
    size_t nc = cap_for(r->node_cap, r->nnode + nodes), lc = cap_for(r->link_cap, r->nlink + links);
    if (!nc || !lc)
        return false;
    if (nc != r->node_cap) {
        ts_rnode *p = realloc(r->node, nc * sizeof(*p));
        if (!p)
            return false;
        r->node = p;
        r->node_cap = nc;
    }
    if (lc != r->link_cap) {
        ts_rlink *p = realloc(r->link, lc * sizeof(*p));
        if (!p)
            return false;
        r->link = p;
        r->link_cap = lc;
    }
    return true;
}

/* dst = a's first len bits, zeros after */
static void take_prefix(uint8_t dst[16], const uint8_t *a, unsigned len) {
    memset(dst, 0, 16);
    memcpy(dst, a, (len + 7) / 8);
    if (len & 7)
        dst[len / 8] &= (uint8_t)(0xff00u >> (len & 7));
}

static uint32_t new_node(ts_rindex *r, const uint8_t *prefix, unsigned len) {
    uint32_t i = (uint32_t)r->nnode++;
    ts_rnode *n = &r->node[i];
    take_prefix(n->prefix, prefix, len);
    n->len = (uint8_t)len;
    n->child[0] = n->child[1] = n->head = n->tail = TS_SPD_NONE;
    return i;
}

/* The node of exactly this prefix; made if missing, with the node where it branches off an
 * existing one.  Room for two nodes is reserved: no realloc moves what `at` points into. */
static uint32_t node_for(ts_rindex *r, unsigned fam, const uint8_t *prefix, unsigned len) {
    uint32_t *at = &r->root[fam];
    for (;;) {
        uint32_t i = *at;
        if (i == TS_SPD_NONE)
            return *at = new_node(r, prefix, len);
        ts_rnode *n = &r->node[i];
        unsigned c = common_bits(n->prefix, prefix, n->len < len ? n->len : len);
        if (c == n->len && c == len)
            return i;
        if (c == n->len) {   /* below n */
            at = &n->child[bit_at(prefix, c)];
            continue;
        }
        /* n's prefix is longer than c: a node at c goes above it, which is ours if c == len */
        uint32_t up = new_node(r, prefix, c);
        r->node[up].child[bit_at(r->node[i].prefix, c)] = i;
        *at = up;
        if (c == len)
            return up;
        uint32_t leaf = new_node(r, prefix, len);
        r->node[up].child[bit_at(prefix, c)] = leaf;
        return leaf;
    }
}

/* into the node's chain by rank (an entry of the last rank, the common addition, appends) */
static void chain(ts_rindex *r, const ts_spd_entry *v, uint32_t node, uint32_t pos) {
    uint32_t l = (uint32_t)r->nlink++;
    ts_rnode *n = &r->node[node];
    uint32_t *at = &n->head;
    if (n->tail != TS_SPD_NONE && ts_spd_before(&v[r->link[n->tail].pos], &v[pos]))
        at = &r->link[n->tail].next;
    else
        while (*at != TS_SPD_NONE && ts_spd_before(&v[r->link[*at].pos], &v[pos]))
            at = &r->link[*at].next;
    r->link[l].pos = pos;
    r->link[l].next = *at;
    *at = l;
    if (r->link[l].next == TS_SPD_NONE)
        n->tail = l;
    r->nlive++;
}

/* [lo, hi] as the prefixes that cover it exactly: the trie's canonical split, walking the
 * paths of lo and hi; a node with neither bound in force below it is inside the range */
struct split {
    const uint8_t *lo, *hi;
    unsigned lo_zero_from, hi_one_from;   /* lo's bits from here on are 0, hi's are 1 */
    uint8_t path[16];
    uint8_t piece[TS_RANGE_PIECES][16];
    unsigned len[TS_RANGE_PIECES], n;
};

static bool split(struct split *s, unsigned d, bool on_lo, bool on_hi) {
    if ((!on_lo || d >= s->lo_zero_from) && (!on_hi || d >= s->hi_one_from)) {
        if (s->n == TS_RANGE_PIECES)
            return false;
        memcpy(s->piece[s->n], s->path, sizeof(s->path));
        s->len[s->n++] = d;
        return true;
    }
    /* d is below the address width here: at the width both conditions hold */
    unsigned lb = bit_at(s->lo, d), hb = bit_at(s->hi, d);
    for (unsigned c = 0; c < 2; c++) {
        if ((on_lo && c < lb) || (on_hi && c > hb))
            continue;
        set_bit(s->path, d, c);
        bool ok = split(s, d + 1, on_lo && c == lb, on_hi && c == hb);
        set_bit(s->path, d, 0);
        if (!ok)
            return false;
    }
    return true;
}

/* where the bits of a from here on are all v: one past its last bit that is not v */
static unsigned run_from(const uint8_t *a, unsigned bits, unsigned v) {
    unsigned d = bits;
    uint8_t all = v ? 0xff : 0;
    while (d >= 8 && a[d / 8 - 1] == all)
        d -= 8;
    while (d > 0 && bit_at(a, d - 1) == v)
        d--;
    return d;
}

void ts_rindex_reset(ts_rindex *r) {
    r->root[0] = r->root[1] = TS_SPD_NONE;
    r->nnode = r->nlink = r->nlive = 0;
    r->whole = true;
}

/* the prefixes the selector's destination goes to */
static void pieces_of(const ts_selector *sel, struct split *s) {
    unsigned bits = bits_of(sel->family);
    s->lo = sel->dst_lo;   /* pieces are written as they are found: no need to clear them */
    s->hi = sel->dst_hi;
    s->n = 0;
    s->lo_zero_from = run_from(sel->dst_lo, bits, 0);
    s->hi_one_from = run_from(sel->dst_hi, bits, 1);
    /* the bits lo and hi share are the path to where the split starts; a subnet ends there */
    unsigned common = common_bits(sel->dst_lo, sel->dst_hi, bits);
    take_prefix(s->path, sel->dst_lo, common);
    if (!split(s, common, true, true)) {
        s->n = 1;
        memcpy(s->piece[0], s->path, sizeof(s->piece[0]));
        s->len[0] = common;
    }
}

bool ts_rindex_add(ts_rindex *r, const ts_spd_entry *v, uint32_t pos) {
    const ts_selector *sel = &v[pos].pol.sel;
    if (!r->whole)
        return false;
    struct split s;
    pieces_of(sel, &s);
    if (!reserve(r, 2 * (size_t)s.n, s.n)) {
        r->whole = false;
        return false;
    }
    for (unsigned k = 0; k < s.n; k++)
        chain(r, v, node_for(r, sel->family == 4 ? 0 : 1, s.piece[k], s.len[k]), pos);
    return true;
}

/* the node of exactly this prefix, TS_SPD_NONE if there is none */
static uint32_t node_at(const ts_rindex *r, unsigned fam, const uint8_t *prefix, unsigned len) {
    uint32_t i = r->root[fam];
    while (i != TS_SPD_NONE && r->node[i].len < len && prefix_eq(r->node[i].prefix, prefix, r->node[i].len))
        i = r->node[i].child[bit_at(prefix, r->node[i].len)];
    return i != TS_SPD_NONE && r->node[i].len == len && prefix_eq(r->node[i].prefix, prefix, len) ? i : TS_SPD_NONE;
}

/* pos out of the node's chain; false if it was not there */
static bool unchain(ts_rindex *r, uint32_t node, uint32_t pos) {
    ts_rnode *n = &r->node[node];
    uint32_t prev = TS_SPD_NONE;
    for (uint32_t *at = &n->head; *at != TS_SPD_NONE; prev = *at, at = &r->link[*at].next) {
        if (r->link[*at].pos != pos)
            continue;
        *at = r->link[*at].next;
        if (*at == TS_SPD_NONE)
            n->tail = prev;
        r->nlive--;
        return true;
    }
    return false;
}

bool ts_rindex_close(ts_rindex *r, const ts_selector *sel, uint32_t pos) {
    struct split s = {.n = 0};
    if (sel)
        pieces_of(sel, &s);
    bool found = true;
    for (unsigned k = 0; k < s.n; k++) {
        uint32_t node = node_at(r, sel->family == 4 ? 0 : 1, s.piece[k], s.len[k]);
        found = found && node != TS_SPD_NONE && unchain(r, node, pos);
    }
    /* unlinked links and emptied nodes stay until a rebuild: one is due when they outnumber
     * what is live, so churn cannot grow the index without bound (or if pos was not where its
     * selector puts it, which would be a bug: the rebuild puts it right) */
    return !found || r->nlink - r->nlive > r->nlive + 64 || r->nnode > 4 * r->nlive + 64;
}

void ts_rindex_find(const ts_rindex *r, const ts_spd_entry *v, size_t used, const ts_flow *f, size_t *best,
                    size_t *seen) {
    unsigned bits = bits_of(f->family);
    for (uint32_t i = r->root[f->family == 4 ? 0 : 1]; i != TS_SPD_NONE;) {
        const ts_rnode *n = &r->node[i];
        if (!prefix_eq(n->prefix, f->dst, n->len))
            break;
        /* a slot past v would be a bug of the index's upkeep: it is never read */
        for (uint32_t l = n->head; l != TS_SPD_NONE && r->link[l].pos < used &&
                                   (*best == SIZE_MAX || ts_spd_before(&v[r->link[l].pos], &v[*best]));
             l = r->link[l].next) {
            (*seen)++;
            if (ts_selector_match(&v[r->link[l].pos].pol.sel, f)) {
                *best = r->link[l].pos;
                break;
            }
        }
        if (n->len >= bits)
            break;
        i = n->child[bit_at(f->dst, n->len)];
    }
}

void ts_rindex_free(ts_rindex *r) {
    free(r->node);
    free(r->link);
    r->node = NULL;
    r->link = NULL;
    r->node_cap = r->link_cap = 0;
    ts_rindex_reset(r);
}
