/* The SAD: inbound SAs hashed by SPI, outbound ones by (SPI, peer).  Inbound SPIs are allocated here
 * (GETSPI) so that they are unique among live and larval SAs.  Outbound SPIs
 * are chosen by the peers, so two peers may pick the same one: an outbound SA
 * is known by (SPI, remote address, remote port), never by its SPI alone. */
#include "internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <arpa/inet.h>
#include <openssl/crypto.h>

/* Inbound SPIs are ours (GETSPI draws them at random; manual ones the admin configured): a fixed
 * mix spreads them, at no cost to the packet path, which hashes (SPI, IN) once per datagram.
 * Outbound SPIs are the peers' choice, and an outbound SA is (SPI, remote address, remote port):
 * hashed by all of it, keyed, so that no peer can chain SAs together in the buckets that inbound
 * lookups (junk with unknown SPIs included) and control calls walk.  The SPI alone would not do:
 * one host choosing one SPI from many source ports made one chain of all its SAs.  SipHash-1-3
 * (as CPython's and Rust's hash tables use against hash flooding) rather than a keyed
 * multiply-shift: that one is universal for inputs chosen blind, but one collision an attacker
 * learns (by timing) hands him more along its arithmetic progression.  Only control calls hash
 * an OUT SA, so its few ns never reach the packet path. */
static size_t slot(const ts_sad *s, uint32_t spi, uint8_t dir, const ts_addr *remote) {
    uint64_t h;
    if (dir == TS_DIR_IN) {
        uint32_t m = spi * 2654435761u;
        h = m ^ (m >> 16);
    } else {
        /* only the address bytes its family uses: callers need not zero the rest */
        uint8_t b[24];
        size_t alen = remote->family == 4 ? 4 : 16;
        b[0] = dir;
        b[1] = remote->family;
        b[2] = (uint8_t)(remote->port >> 8);
        b[3] = (uint8_t)remote->port;
        memcpy(b + 4, &spi, 4);
        memcpy(b + 8, remote->addr, alen);
        h = ts_siphash(s->key, b, 8 + alen, 1, 3);
    }
    return (size_t)h & (s->nbuckets - 1);
}

static size_t reqid_slot(uint32_t reqid) {
    return (reqid * 2654435761u) % TS_REQID_BUCKETS;
}

int ts_sad_init(ts_sad *s) {
    s->nbuckets = 1024;
    s->count = 0;
    ssize_t got;
    do
        got = getrandom(s->key, sizeof(s->key), 0);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof(s->key)) {   /* no table without a secret key: see ts_sad.key */
        s->buckets = s->by_reqid = NULL;
        s->nbuckets = 0;
        return TS_EIO;
    }
    s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
    s->by_reqid = calloc(TS_REQID_BUCKETS, sizeof(*s->by_reqid));
    if (!s->buckets || !s->by_reqid) {
        free(s->buckets);
        free(s->by_reqid);
        s->buckets = s->by_reqid = NULL;
        s->nbuckets = 0;
        return TS_ENOMEM;
    }
    return TS_OK;
}

ts_sa *ts_sad_by_reqid(const ts_sad *s, uint32_t reqid) {
    return s->by_reqid[reqid_slot(reqid)];
}

static bool in_reqid_index(const ts_sa *sa) {
    return sa->dir == TS_DIR_OUT && sa->reqid != 0;
}

static void reqid_unlink(ts_sad *s, ts_sa *sa) {
    for (ts_sa **pp = &s->by_reqid[reqid_slot(sa->reqid)]; *pp; pp = &(*pp)->rq_next) {
        if (*pp == sa) {
            *pp = sa->rq_next;
            sa->rq_next = NULL;
            return;
        }
    }
}

/* Release what an SA owns and wipe it.  The key schedule lived in ctx
 * (freed, OpenSSL cleanses it); keymat and salt are wiped here with
 * OPENSSL_cleanse, which the compiler cannot drop as a dead store the way it
 * may drop a memset right before free(). */
void ts_sa_wipe(ts_sa *sa) {
    for (int i = 0; i <= TS_MAX_QUEUES; i++)
        ts_esp_ctx_free(sa->ctx[i]);
    ts_replay_free(&sa->replay);
    free(sa->sel);
    pthread_mutex_destroy(&sa->lock);
    OPENSSL_cleanse(sa, sizeof(*sa));
}

/* SA entries allocated and not freed, process-wide (ts_live_counts) */
static atomic_llong live_sas;

static void sa_free(ts_sa *sa) {
    ts_sa_wipe(sa);
    free(sa);
    atomic_fetch_sub(&live_sas, 1);
}

void ts_live_counts(int64_t *sas, int64_t *ctxs) {
    *sas = atomic_load(&live_sas);
    *ctxs = ts_esp_live_ctxs();
}

void ts_sad_destroy(ts_sad *s) {
    for (size_t i = 0; i < s->nbuckets; i++) {
        ts_sa *sa = s->buckets[i];
        while (sa) {
            ts_sa *n = sa->next;
            sa_free(sa);
            sa = n;
        }
    }
    free(s->buckets);
    s->buckets = NULL;
    free(s->by_reqid);
    s->by_reqid = NULL;
    s->count = 0;
    OPENSSL_cleanse(s->key, sizeof(s->key));   /* the hash's key goes with the table */
}

static bool same_peer(const ts_addr *a, const ts_addr *b) {
    return a->family == b->family && a->port == b->port &&
           memcmp(a->addr, b->addr, a->family == 4 ? 4 : 16) == 0;
}

/* IN: remote is ignored (inbound SPIs are ours, locally unique); OUT: the
 * peer the SA sends to is part of its identity */
static bool is_sa(const ts_sa *sa, uint32_t spi, uint8_t dir, const ts_addr *remote) {
    return sa->spi == spi && sa->dir == dir && (dir == TS_DIR_IN || same_peer(&sa->remote, remote));
}

ts_sa *ts_sad_find(const ts_sad *s, uint32_t spi, uint8_t dir) {
    if (dir != TS_DIR_IN)
        return NULL;   /* an OUT SA hashes by its peer too: ts_sad_find_sa */
    for (ts_sa *sa = s->buckets[slot(s, spi, dir, NULL)]; sa; sa = sa->next)
        if (sa->spi == spi && sa->dir == dir)
            return sa;
    return NULL;
}

ts_sa *ts_sad_find_sa(const ts_sad *s, uint32_t spi, uint8_t dir, const ts_addr *remote) {
    for (ts_sa *sa = s->buckets[slot(s, spi, dir, remote)]; sa; sa = sa->next)
        if (is_sa(sa, spi, dir, remote))
            return sa;
    return NULL;
}

static void grow(ts_sad *s) {
    size_t nb = s->nbuckets * 2;
    ts_sa **b = calloc(nb, sizeof(*b));
    if (!b)
        return;   /* keep the longer chains; lookups stay correct */
    ts_sa **old = s->buckets;
    size_t on = s->nbuckets;
    s->buckets = b;
    s->nbuckets = nb;
    for (size_t i = 0; i < on; i++) {
        ts_sa *sa = old[i];
        while (sa) {
            ts_sa *n = sa->next;
            size_t k = slot(s, sa->spi, sa->dir, &sa->remote);
            sa->next = b[k];
            b[k] = sa;
            sa = n;
        }
    }
    free(old);
}

/* Move an SA between hash chains (its OUT slot follows its peer), nothing else: the SA, its
 * count and its reqid entry stay; the caller holds the write lock, so no loop thread walks a
 * chain meanwhile, and SPD entries keep pointing at the same SA. */
static void bucket_unlink(ts_sad *s, ts_sa *sa) {
    for (ts_sa **pp = &s->buckets[slot(s, sa->spi, sa->dir, &sa->remote)]; *pp; pp = &(*pp)->next) {
        if (*pp == sa) {
            *pp = sa->next;
            sa->next = NULL;
            return;
        }
    }
}

static void bucket_link(ts_sad *s, ts_sa *sa) {
    size_t k = slot(s, sa->spi, sa->dir, &sa->remote);
    sa->next = s->buckets[k];
    s->buckets[k] = sa;
}

static void insert(ts_sad *s, ts_sa *sa) {
    if (s->count >= s->nbuckets * 2)
        grow(s);
    bucket_link(s, sa);
    s->count++;
    if (in_reqid_index(sa)) {   /* reqid and direction never change once inserted */
        size_t r = reqid_slot(sa->reqid);
        sa->rq_next = s->by_reqid[r];
        s->by_reqid[r] = sa;
    }
}

static ts_sa *unlink_sa(ts_sad *s, uint32_t spi, uint8_t dir, const ts_addr *remote) {
    ts_sa **pp = &s->buckets[slot(s, spi, dir, remote)];
    for (; *pp; pp = &(*pp)->next) {
        if (is_sa(*pp, spi, dir, remote)) {
            ts_sa *sa = *pp;
            *pp = sa->next;
            s->count--;
            if (in_reqid_index(sa))
                reqid_unlink(s, sa);
            return sa;
        }
    }
    return NULL;
}

static ts_sa *sa_new(uint32_t spi, uint8_t dir) {
    ts_sa *sa = calloc(1, sizeof(*sa));
    if (!sa)
        return NULL;
    atomic_fetch_add(&live_sas, 1);
    sa->spi = spi;
    sa->dir = dir;
    atomic_store(&sa->state, TS_SA_LARVAL);
    pthread_mutex_init(&sa->lock, NULL);
    sa->created_ns = ts_now_ns();
    return sa;
}

static bool addr_valid(const ts_addr *a) {
    return a->family == 4 || a->family == 6;
}

static void build_peer(ts_sa *sa) {
    memset(&sa->peer, 0, sizeof(sa->peer));
    if (sa->remote.family == 4) {
        sa->peer.v4.sin_family = AF_INET;
        sa->peer.v4.sin_port = htons(sa->remote.port);
        memcpy(&sa->peer.v4.sin_addr, sa->remote.addr, 4);
        sa->peer_len = sizeof(sa->peer.v4);
    } else {
        sa->peer.v6.sin6_family = AF_INET6;
        sa->peer.v6.sin6_port = htons(sa->remote.port);
        memcpy(&sa->peer.v6.sin6_addr, sa->remote.addr, 16);
        sa->peer_len = sizeof(sa->peer.v6);
    }
}

size_t ts_test_sa_size(void) { return sizeof(ts_sa); }

static int validate(const ts_sa_params *p, uint8_t dir);
static int fill(ts_sa *sa, const ts_sa_params *p);

int ts_test_sa_wipe(const ts_sa_params *p, uint8_t *buf, size_t cap, int *key_seen) {
    *key_seen = 0;
    if (cap < sizeof(ts_sa) || (uintptr_t)buf % 16)
        return TS_EINVAL;
    int rc = validate(p, p->dir);
    if (rc)
        return rc;
    ts_sa *sa = (ts_sa *)buf;
    memset(sa, 0, sizeof(*sa));
    sa->spi = p->spi;
    sa->dir = p->dir;
    pthread_mutex_init(&sa->lock, NULL);
    rc = fill(sa, p);
    if (rc) {
        pthread_mutex_destroy(&sa->lock);
        return rc;
    }
    *key_seen = memmem(buf, sizeof(*sa), p->key, p->keylen) != NULL;
    ts_sa_wipe(sa);
    return TS_OK;
}

static int validate(const ts_sa_params *p, uint8_t dir) {
    if (p->dir != dir || p->spi < 256)
        return TS_EINVAL;
    if (p->keylen != 20 && p->keylen != 36)
        return TS_EINVAL;
    if (p->esn > 1 || (p->replay_window != 0 && (p->replay_window < 32 || p->replay_window > TS_REPLAY_MAX)))
        return TS_EINVAL;
    if (!addr_valid(&p->remote) || p->remote.port == 0)
        return TS_EINVAL;
    if (p->local.family != 0 && p->local.family != p->remote.family)
        return TS_EINVAL;
    if (p->n_sel > TS_MAX_SELECTORS)
        return TS_EINVAL;
    for (uint32_t i = 0; i < p->n_sel; i++)
        if (!ts_selector_valid(&p->sel[i]))
            return TS_EINVAL;
    if (!p->esn && p->seq_start > UINT32_MAX)
        return TS_EINVAL;
    if (p->seq_limit && (p->seq_limit < p->seq_start || (!p->esn && p->seq_limit > UINT32_MAX)))
        return TS_EINVAL;
    if (p->report_first_use > 1 || (p->report_first_use && p->dir != TS_DIR_IN))
        return TS_EINVAL;   /* only what we receive can prove the peer uses an SA */
    return TS_OK;
}

/* Fill a (new or larval) SA from params; on failure the SA is unchanged
 * except for fields the caller discards. */
static int fill(ts_sa *sa, const ts_sa_params *p) {
    ts_selector *sel = NULL;
    if (p->n_sel) {
        sel = malloc(sizeof(ts_selector) * p->n_sel);
        if (!sel)
            return TS_ENOMEM;
        memcpy(sel, p->sel, sizeof(ts_selector) * p->n_sel);
    }
    ts_replay rp;
    int rc = ts_replay_init(&rp, p->dir == TS_DIR_IN ? p->replay_window : 0);
    if (rc) {
        free(sel);
        return rc;
    }
    if (p->dir == TS_DIR_IN)
        ts_replay_set_floor(&rp, p->seq_start);
    rc = ts_esp_key(sa, p->key, p->keylen, p->dir == TS_DIR_OUT);
    if (rc) {
        ts_replay_free(&rp);
        free(sel);
        return rc;
    }
    sa->replay = rp;
    sa->sel = sel;
    sa->keylen = p->keylen;
    sa->esn = p->esn;
    sa->reqid = p->reqid;
    sa->local = p->local;
    sa->remote = p->remote;
    build_peer(sa);
    sa->soft_bytes = p->soft_bytes;
    sa->hard_bytes = p->hard_bytes;
    sa->soft_packets = p->soft_packets;
    sa->hard_packets = p->hard_packets;
    atomic_store(&sa->seq, p->seq_start);
    atomic_store(&sa->seq_limit, p->seq_limit);
    atomic_store(&sa->seq_notify, p->seq_notify);
    atomic_store(&sa->reserve_fired, 0);
    atomic_store(&sa->first_use_armed, p->report_first_use);   /* armed before the SA turns mature */
    sa->n_sel = p->n_sel;
    sa->created_ns = ts_now_ns();
    atomic_store(&sa->state, TS_SA_MATURE);
    return TS_OK;
}

int ts_sad_getspi(ts_dp *dp, uint32_t lo, uint32_t hi, uint32_t *spi_out) {
    if (lo < 256)
        lo = 256;
    if (hi < lo)
        return TS_EINVAL;
    pthread_rwlock_wrlock(&dp->lock);
    uint64_t span = (uint64_t)hi - lo + 1;
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint32_t)ts_now_ns();
    uint64_t start = r % span;
    int rc = TS_ENOSPC;
    /* a random start then a linear probe: always terminates, finds any free SPI */
    for (uint64_t i = 0; i < span && i < (1u << 20); i++) {
        uint32_t spi = (uint32_t)(lo + (start + i) % span);
        if (ts_sad_find(&dp->sad, spi, TS_DIR_IN))
            continue;
        ts_sa *sa = sa_new(spi, TS_DIR_IN);
        if (!sa) {
            rc = TS_ENOMEM;
            break;
        }
        insert(&dp->sad, sa);
        *spi_out = spi;
        rc = TS_OK;
        break;
    }
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}

int ts_sad_update(ts_dp *dp, const ts_sa_params *p) {
    int rc = validate(p, TS_DIR_IN);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&dp->lock);
    ts_sa *sa = ts_sad_find(&dp->sad, p->spi, TS_DIR_IN);
    if (!sa)
        rc = TS_ENOENT;
    else if (atomic_load(&sa->state) != TS_SA_LARVAL)
        rc = TS_ESTATE;
    else
        rc = fill(sa, p);
    if (rc == TS_OK)
        ts_own_end_note(dp, &p->local);
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}

int ts_sad_add(ts_dp *dp, const ts_sa_params *p) {
    int rc = validate(p, TS_DIR_OUT);
    if (rc)
        return rc;
    ts_sa *sa = sa_new(p->spi, TS_DIR_OUT);
    if (!sa)
        return TS_ENOMEM;
    rc = fill(sa, p);
    if (rc) {
        sa_free(sa);
        return rc;
    }
    pthread_rwlock_wrlock(&dp->lock);
    if (ts_sad_find_sa(&dp->sad, p->spi, TS_DIR_OUT, &p->remote)) {
        rc = TS_EEXIST;
    } else {
        insert(&dp->sad, sa);
        ts_spd_bind_new(&dp->spd, sa);
        ts_own_end_note(dp, &sa->local);
        sa = NULL;
    }
    pthread_rwlock_unlock(&dp->lock);
    if (sa)
        sa_free(sa);
    return rc;
}

/* OUT needs the peer (remote address and port); IN takes NULL */
static bool sa_id_valid(uint8_t dir, const ts_addr *remote) {
    if (dir == TS_DIR_IN)
        return remote == NULL;
    return dir == TS_DIR_OUT && remote != NULL && addr_valid(remote);
}

int ts_sad_delete(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote) {
    return ts_sad_remove(dp, spi, dir, remote, NULL);
}

/* Move a mature SA to a new peer endpoint (NAT rebinding, MOBIKE) without
 * re-keying.  An IN SA's slot depends on its SPI only; an OUT SA's on its
 * peer too, so it moves to its new peer's chain, the same SA (pointer) that
 * policies bind.  The write lock makes the move, the change of remote and of
 * the prebuilt sendmmsg destination atomic for the loop threads, which read
 * them all under the read lock.  An OUT SA is named by its old peer; moving it onto a peer
 * that already has an SA with the same SPI would make two SAs one (EEXIST).
 * IN: remote NULL; its stored peer moves too (what DUMP shows of it).  Inbound
 * ESP is not checked against it: any source with a valid ICV is taken (RFC 4301 allows it;
 * the replay window stops a replay from elsewhere), so a NAT rebinding loses no packet.
 * new_local (NULL: ours stays) moves our end as well (MOBIKE: the peer now
 * reaches us at another of our addresses, or we moved): on a wildcard-bound
 * socket an OUT SA's ESP leaves from its local address (IP_PKTINFO), so
 * without it ESP would keep leaving from the old one while that exists. */
int ts_sad_migrate(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, const ts_addr *new_remote,
                   const ts_addr *new_local) {
    if (!sa_id_valid(dir, remote) || !new_remote || !addr_valid(new_remote))
        return TS_EINVAL;
    if (new_local && (!addr_valid(new_local) || new_local->family != new_remote->family))
        return TS_EINVAL;
    int rc = TS_OK;
    pthread_rwlock_wrlock(&dp->lock);
    ts_sa *sa = ts_sad_find_sa(&dp->sad, spi, dir, remote);
    if (!sa)
        rc = TS_ENOENT;
    else if (atomic_load(&sa->state) != TS_SA_MATURE)
        rc = TS_ESTATE;
    else if (sa->remote.family != new_remote->family || (!new_local && sa->local.family != new_remote->family))
        rc = TS_EINVAL;   /* a family change needs a new SA */
    else if (dir == TS_DIR_OUT && !same_peer(remote, new_remote) &&
             ts_sad_find_sa(&dp->sad, spi, dir, new_remote))
        rc = TS_EEXIST;
    if (rc == TS_OK) {
        bool moves = dir == TS_DIR_OUT && !same_peer(&sa->remote, new_remote);
        if (moves)
            bucket_unlink(&dp->sad, sa);
        sa->remote = *new_remote;
        if (new_local) {
            sa->local = *new_local;
            ts_own_end_note(dp, new_local);
        }
        build_peer(sa);
        /* a new path: its MTU may take GSO runs again, and its source may be ours again */
        atomic_store(&sa->gso_paused_until, 0);
        atomic_store(&sa->source_gone_until, 0);
        if (moves)
            bucket_link(&dp->sad, sa);
    }
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}

void ts_sad_flush(ts_dp *dp) {
    pthread_rwlock_wrlock(&dp->lock);
    for (size_t i = 0; i < dp->sad.nbuckets; i++) {
        ts_sa *sa = dp->sad.buckets[i];
        dp->sad.buckets[i] = NULL;
        while (sa) {
            ts_sa *n = sa->next;
            sa_free(sa);
            sa = n;
        }
    }
    memset(dp->sad.by_reqid, 0, TS_REQID_BUCKETS * sizeof(*dp->sad.by_reqid));
    dp->sad.count = 0;
    ts_spd_rebind(&dp->spd, &dp->sad);
    pthread_rwlock_unlock(&dp->lock);
}

static void info_of(const ts_sa *sa, ts_sa_info *o) {
    memset(o, 0, sizeof(*o));
    o->spi = sa->spi;
    o->dir = sa->dir;
    o->state = atomic_load(&sa->state);
    o->esn = sa->esn;
    o->keylen = sa->keylen;
    o->reqid = sa->reqid;
    o->replay_window = sa->replay.window;
    o->local = sa->local;
    o->remote = sa->remote;
    for (size_t c = 0; c < TS_CTR__COUNT; c++)
        o->counters[c] = atomic_load(&sa->counters[c]);
    o->seq = sa->dir == TS_DIR_OUT ? atomic_load(&sa->seq) : sa->replay.top;
    o->soft_fired = atomic_load(&sa->soft_fired);
    o->hard_fired = atomic_load(&sa->hard_fired);
    o->age_ns = ts_now_ns() - sa->created_ns;
    o->seq_limit = atomic_load(&sa->seq_limit);
    o->seq_notify = atomic_load(&sa->seq_notify);
}

int ts_sad_remove(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, ts_sa_info *final) {
    if (!sa_id_valid(dir, remote))
        return TS_EINVAL;
    pthread_rwlock_wrlock(&dp->lock);
    ts_sa *sa = unlink_sa(&dp->sad, spi, dir, remote);
    if (sa && dir == TS_DIR_OUT)
        ts_spd_unbind(&dp->spd, &dp->sad, sa);
    /* read under the write lock: no loop thread counts a packet on it between this and the unlink */
    if (sa && final)
        info_of(sa, final);
    pthread_rwlock_unlock(&dp->lock);
    if (!sa)
        return TS_ENOENT;
    sa_free(sa);   /* safe: the loop only touches SAs while holding the read lock */
    return TS_OK;
}

int ts_sad_get(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, ts_sa_info *out) {
    if (!sa_id_valid(dir, remote))
        return TS_EINVAL;
    pthread_rwlock_rdlock(&dp->lock);
    ts_sa *sa = ts_sad_find_sa(&dp->sad, spi, dir, remote);
    if (sa) {
        pthread_mutex_lock(&sa->lock);   /* replay.top is guarded by the SA lock */
        info_of(sa, out);
        pthread_mutex_unlock(&sa->lock);
    }
    pthread_rwlock_unlock(&dp->lock);
    return sa ? TS_OK : TS_ENOENT;
}

size_t ts_test_sad_longest_chain(ts_dp *dp) {
    size_t longest = 0;
    pthread_rwlock_rdlock(&dp->lock);
    for (size_t i = 0; i < dp->sad.nbuckets; i++) {
        size_t n = 0;
        for (ts_sa *sa = dp->sad.buckets[i]; sa; sa = sa->next)
            n++;
        longest = n > longest ? n : longest;
    }
    pthread_rwlock_unlock(&dp->lock);
    return longest;
}

size_t ts_sad_count(ts_dp *dp) {
    pthread_rwlock_rdlock(&dp->lock);
    size_t n = dp->sad.count;
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

size_t ts_sad_list(ts_dp *dp, ts_sa_info *out, size_t max) {
    size_t n = 0;
    pthread_rwlock_rdlock(&dp->lock);
    for (size_t i = 0; i < dp->sad.nbuckets && n < max; i++) {
        for (ts_sa *sa = dp->sad.buckets[i]; sa && n < max; sa = sa->next) {
            pthread_mutex_lock(&sa->lock);
            info_of(sa, &out[n++]);
            pthread_mutex_unlock(&sa->lock);
        }
    }
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

int ts_sad_reserve(ts_dp *dp, uint32_t spi, uint8_t dir, const ts_addr *remote, uint64_t limit, uint64_t notify) {
    if (dir > TS_DIR_OUT || limit == 0 || (dir == TS_DIR_OUT && !sa_id_valid(dir, remote)))
        return TS_EINVAL;   /* an OUT SA is found by (SPI, peer): none, nothing to hash */
    int rc = TS_OK;
    /* the loop reads the limit atomically: the read lock keeps the SA alive */
    pthread_rwlock_rdlock(&dp->lock);
    ts_sa *sa = ts_sad_find_sa(&dp->sad, spi, dir, remote);
    if (!sa)
        rc = TS_ENOENT;
    else if (atomic_load(&sa->state) == TS_SA_LARVAL)
        rc = TS_ESTATE;
    else if ((!sa->esn && limit > UINT32_MAX) || limit < atomic_load(&sa->seq_limit))
        rc = TS_EINVAL;   /* a lower limit could undercut numbers already in use */
    if (rc == TS_OK) {
        atomic_store(&sa->seq_notify, notify);
        atomic_store(&sa->seq_limit, limit);
        atomic_store(&sa->reserve_fired, 0);
    }
    pthread_rwlock_unlock(&dp->lock);
    return rc;
}
