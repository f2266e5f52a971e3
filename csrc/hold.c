/* Packets that wait for their SA (start_action = trap).
 *
 * A PROTECT policy without an outbound SA raises ACQUIRE; the packet that
 * triggered it (and the next few) wait here instead of being dropped, so that
 * a single ping through an on-demand tunnel is answered once the SA is up.
 * Each PROTECT policy owns one hold, allocated with the policy (never per
 * packet), whose buffer exists only while packets wait (a gateway's thousand
 * client policies would otherwise carry 64 KiB each): at most TS_HOLD_PKTS
 * packets and TS_HOLD_BYTES bytes, the oldest
 * dropped (TS_DROP_HOLD_FULL) to make room.  Binding an outbound SA or adding
 * a policy while packets wait (spd.c, under the write lock) wakes the loop
 * threads through spd.hold_fd; one loop thread runs the held packets through
 * the normal outbound path again: they leave through whichever policy now has
 * an SA (a trap policy's packets through the child's policy), or wait again
 * with their first hold time.  A packet older than TS_HOLD_TIMEOUT_NS is dropped
 * (TS_DROP_HOLD_TIMEOUT) instead of sent: that is how a failed negotiation
 * empties the hold, without a message from the control side. */
#include "internal.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

ts_hold *ts_hold_new(_Atomic uint64_t *held, ts_holds *busy) {
    ts_hold *h = calloc(1, sizeof(*h));
    if (h) {
        pthread_mutex_init(&h->lock, NULL);
        h->held = held;
        h->busy = busy;
    }
    return h;
}

/* ---- the holds that have packets (ts_holds) ------------------------------------------------ */

void ts_holds_init(ts_holds *hs) {
    pthread_mutex_init(&hs->lock, NULL);
    pthread_mutex_init(&hs->pass, NULL);
}

void ts_holds_destroy(ts_holds *hs) {
    pthread_mutex_destroy(&hs->lock);
    pthread_mutex_destroy(&hs->pass);
}

/* under hs->lock */
static void unlist(ts_holds *hs, ts_hold *h) {
    *(h->bprev ? &h->bprev->bnext : &hs->first) = h->bnext;
    *(h->bnext ? &h->bnext->bprev : &hs->last) = h->bprev;
    h->bprev = h->bnext = NULL;
}

static void list_back(ts_holds *hs, ts_hold *h) {
    h->bprev = hs->last;
    h->bnext = NULL;
    *(hs->last ? &hs->last->bnext : &hs->first) = h;
    hs->last = h;
}

/* under h->lock: on the list exactly while it has packets */
static void list_if_busy(ts_hold *h) {
    if (!h->busy || h->listed == (h->n > 0))
        return;
    pthread_mutex_lock(&h->busy->lock);
    if (h->n)
        list_back(h->busy, h);
    else
        unlist(h->busy, h);
    h->listed = h->n > 0;
    pthread_mutex_unlock(&h->busy->lock);
}

/* A kick (again) is stored before the pass lock is tried, and a pass's end loads it after the unlock,
 * each behind a seq_cst fence: either the ending pass sees the kick, or the kicker's try finds the lock
 * free (Dekker's pattern, which the mutex alone does not order: review revspd2 F1).  A kick the ending
 * pass sees is owed a pass, which the caller's wakeup of the loops brings, not this thread at once: one
 * pass per wakeup, so no loop is kept from its own queues while changes keep coming (F2). */
bool ts_held_begin(ts_holds *hs) {
    atomic_store(&hs->again, true);
    atomic_thread_fence(memory_order_seq_cst);
    if (pthread_mutex_trylock(&hs->pass) != 0)
        return false;   /* the running pass's end sees again */
    /* kicks before this point are served by this pass: it reads the SPD after them */
    atomic_store(&hs->again, false);
    hs->round++;   /* under the pass lock; read under the list's (ts_held_next) */
    atomic_fetch_add_explicit(&hs->passes, 1, memory_order_relaxed);
    return true;
}

bool ts_held_end(ts_holds *hs) {
    pthread_mutex_unlock(&hs->pass);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_exchange(&hs->again, false))
        atomic_store(&hs->owed, true);
    return false;
}

bool ts_held_owed(ts_holds *hs) {
    return atomic_exchange(&hs->owed, false);
}

/* The front hold unless this pass took it already; it goes to the back, so the holds not yet
 * taken stay in front.  A hold that gets its first packet during the pass goes to the back
 * behind those taken: it was held under the same policies and SAs, as the read lock is held. */
ts_hold *ts_held_next(ts_holds *hs) {
    pthread_mutex_lock(&hs->lock);
    ts_hold *h = hs->first;
    if (h && h->round != hs->round) {
        h->round = hs->round;
        unlist(hs, h);
        list_back(hs, h);
        atomic_fetch_add_explicit(&hs->visited, 1, memory_order_relaxed);
    } else {
        h = NULL;
    }
    pthread_mutex_unlock(&hs->lock);
    return h;
}

/* ---- one hold ------------------------------------------------------------------------------ */

/* the SPD's count follows n, and its list: a change asks the count, not every hold, whether
 * packets wait, and a pass walks the list alone */
static void count_held(ts_hold *h, int64_t d) {
    if (h->held)
        atomic_fetch_add_explicit(h->held, (uint64_t)d, memory_order_relaxed);
    list_if_busy(h);
}

static void drop_oldest(ts_dp *dp, ts_hold *h, int reason) {
    uint32_t first = h->len[0];
    memmove(h->buf, h->buf + first, h->used - first);
    memmove(h->len, h->len + 1, (h->n - 1) * sizeof(h->len[0]));
    memmove(h->t_ns, h->t_ns + 1, (h->n - 1) * sizeof(h->t_ns[0]));
    h->used -= first;
    h->n--;
    count_held(h, -1);
    if (dp)
        ts_drop(dp, reason);
}

static void release_if_empty(ts_hold *h) {
    if (h->n == 0 && h->buf) {
        free(h->buf);
        h->buf = NULL;
    }
}

static void expire_locked(ts_dp *dp, ts_hold *h, uint64_t now_ns) {
    /* a packet held again keeps its first hold time: pushes are not in time order */
    while (h->n && now_ns > h->t_ns[0] && now_ns - h->t_ns[0] > TS_HOLD_TIMEOUT_NS)
        drop_oldest(dp, h, TS_DROP_HOLD_TIMEOUT);
    release_if_empty(h);
}

bool ts_hold_push(ts_dp *dp, ts_hold *h, const uint8_t *pkt, size_t len, uint64_t now_ns) {
    if (!h || len == 0 || len > TS_HOLD_BYTES)
        return false;
    pthread_mutex_lock(&h->lock);
    expire_locked(dp, h, now_ns);
    if (!h->buf && !(h->buf = malloc(TS_HOLD_BYTES))) {
        pthread_mutex_unlock(&h->lock);
        return false;
    }
    while (h->n == TS_HOLD_PKTS || h->used + len > TS_HOLD_BYTES)
        drop_oldest(dp, h, TS_DROP_HOLD_FULL);
    memcpy(h->buf + h->used, pkt, len);
    h->len[h->n] = (uint32_t)len;
    h->t_ns[h->n] = now_ns;
    h->n++;
    count_held(h, 1);
    h->used += (uint32_t)len;
    pthread_mutex_unlock(&h->lock);
    return true;
}

size_t ts_hold_pop(ts_dp *dp, ts_hold *h, uint8_t *out, size_t outcap, uint64_t now_ns, uint64_t *held_ns) {
    size_t n = 0;
    pthread_mutex_lock(&h->lock);
    expire_locked(dp, h, now_ns);
    if (h->n && h->len[0] <= outcap) {
        n = h->len[0];
        if (held_ns)
            *held_ns = h->t_ns[0];
        memcpy(out, h->buf, n);
        drop_oldest(NULL, h, TS_DROP_NONE);   /* taken, not dropped */
        release_if_empty(h);
    }
    pthread_mutex_unlock(&h->lock);
    return n;
}

size_t ts_hold_count(ts_hold *h) {
    pthread_mutex_lock(&h->lock);
    size_t n = h->n;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void ts_hold_free(ts_dp *dp, ts_hold *h) {
    if (!h)
        return;
    for (uint32_t i = 0; dp && i < h->n; i++)
        ts_drop(dp, TS_DROP_HOLD_TIMEOUT);   /* the policy went away before its SA came */
    uint32_t n = h->n;
    h->n = 0;   /* off the list: under the write lock, no pass holds it */
    count_held(h, -(int64_t)n);
    pthread_mutex_destroy(&h->lock);
    free(h->buf);
    free(h);
}

void ts_hold_kick(ts_spd *spd) {
    uint64_t one = 1;
    ssize_t w = write(spd->hold_fd, &one, sizeof(one));
    (void)w;
}

bool ts_hold_take_kick(ts_spd *spd) {
    uint64_t v;
    return read(spd->hold_fd, &v, sizeof(v)) == (ssize_t)sizeof(v);
}
