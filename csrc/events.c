/* Events from the fast path to the control side (ACQUIRE, EXPIRE,
 * INVALID_SPI, IKE): a bounded queue plus an eventfd the worker's event loop
 * watches.  Rare by construction (rate-limited), so copying is fine here. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int ts_events_init(ts_events *q) {
    memset(q, 0, sizeof(*q));
    pthread_mutex_init(&q->lock, NULL);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return q->efd < 0 ? TS_EIO : TS_OK;
}

void ts_events_destroy(ts_events *q) {
    for (size_t i = 0; i < q->count; i++)
        free(q->slots[(q->head + i) % TS_EVENT_CAP].data);
    q->count = 0;
    if (q->efd >= 0)
        close(q->efd);
    q->efd = -1;
    pthread_mutex_destroy(&q->lock);
}

/* why an event of ev's type from source slot src (-1: not an IKE datagram), of an established IKE
 * SA whose peer's slot is peer (-1: none), finds no room: TS_DROP_NONE if it does.  The shares
 * first, as the INVALID_SPI limiter has it */
static int room(const ts_events *q, const ts_event *ev, int src, int peer) {
    if (peer >= 0) {
        /* its peer's share, whatever address it comes from or how many IKE SAs it has; its
         * sender's too, apart from the unknown ones' (which a spoofed flood fills, and no
         * off-path spoofer can make these) */
        if (q->ike_peer[peer] >= TS_IKE_PER_PEER)
            return TS_DROP_IKE_KNOWN_SHARE;
        if (src >= 0 && q->ike_known_src[src] >= TS_IKE_KNOWN_PER_SOURCE)
            return TS_DROP_IKE_KNOWN_SOURCE;
        return q->count < TS_EVENT_CAP / 2 ? TS_DROP_NONE : TS_DROP_IKE_KNOWN_FULL;
    }
    /* unauthenticated IKE datagrams may fill only part of the queue, so a flood of them never
     * crowds out EXPIRE/ACQUIRE, nor the IKE of established SAs: their reserve is the part of the
     * IKE half the others may not fill (they may not count on more: those may use it meanwhile).
     * Of that part those with our tag for their sender have a reserve of their own in turn. */
    size_t shared = q->ike_unknown + q->ike_proven;
    bool room = q->count < TS_EVENT_CAP / 2 && shared < TS_EVENT_CAP / 2 - TS_IKE_RESERVED;
    if (ev->type == TS_EV_IKE && ev->proven) {
        if (src >= 0 && q->ike_proven_src[src] >= TS_IKE_PROVEN_PER_SOURCE)
            return TS_DROP_IKE_PROVEN_SOURCE;
        /* a tag proves only that its sender once got an answer at that address (it may flood
         * with it): the tagged ones take at most TS_IKE_PROVEN_MAX (the unknown ones keep the
         * rest), and a sender already holding an unknown sender's share leaves the last
         * TS_IKE_PROVEN_SMALL of whatever room there is to those holding less */
        size_t keep = src >= 0 && q->ike_proven_src[src] >= TS_IKE_PER_SOURCE ? TS_IKE_PROVEN_SMALL : 0;
        return room && shared + keep < TS_EVENT_CAP / 2 - TS_IKE_RESERVED && q->ike_proven + keep < TS_IKE_PROVEN_MAX
                   ? TS_DROP_NONE : TS_DROP_IKE_PROVEN_FULL;
    }
    if (src >= 0 && q->ike_src[src] >= TS_IKE_PER_SOURCE)
        return TS_DROP_IKE_SOURCE_LIMIT;
    if (ev->type == TS_EV_IKE)
        return room && q->ike_unknown < TS_EVENT_CAP / 2 - TS_IKE_RESERVED - TS_IKE_PROVEN_RESERVED
                   ? TS_DROP_NONE : TS_DROP_QUEUE_FULL;
    return q->count < TS_EVENT_CAP ? TS_DROP_NONE : TS_DROP_QUEUE_FULL;
}

/* A known datagram whose sender's share is full but that has room otherwise is queued, and the
 * peer with the most waiting (all its IKE SAs, ike_peer) loses its oldest of that share: who holds
 * the most pays, as in the pipe writer (pipeio.py _wait_known), not whoever comes next.  An
 * authenticated peer sending its own SPIs from another's address (a NAT's, spoofed) fills that
 * address's share to the last place only with its own, and the next of the others pushes its
 * out (it is the biggest there, two identities holding 16 each), where with the newcomer paying
 * every other client of that address lost its DPD, rekey, DELETE until the queue drained. */
static bool evictable(const ts_events *q, int why) {
    return why == TS_DROP_IKE_KNOWN_SOURCE && q->count < TS_EVENT_CAP / 2;
}

/* a full share with no room either is the IKE half's being full: counted so, and
 * TS_DROP_IKE_KNOWN_SOURCE counts only the oldest pushed out */
static int known_verdict(const ts_events *q, int why) {
    return why == TS_DROP_IKE_KNOWN_SOURCE && !evictable(q, why) ? TS_DROP_IKE_KNOWN_FULL : why;
}

/* under the lock, the share of source slot src full: the victim's place in the share is closed
 * up (the later ones of src move down one place each, keeping their order: a look at the share's
 * TS_IKE_KNOWN_PER_SOURCE, never the whole queue), and the newcomer takes the last one.  The
 * events of other sources keep their places; the newcomer goes up before those that came after
 * the share's newest.  Order is kept per source address only: an IKE SA whose peer sent from two
 * addresses (a MOBIKE move, a NAT's new mapping) can have an earlier datagram from the other
 * address handled after this one (review revknown F1).  IKE keeps one request in flight per side,
 * so a request overtaken is dropped out of window and retransmitted: a delay, not a loss. */
static ts_event_slot *evict_known(ts_events *q, int src) {
    const uint16_t *pos = q->ike_known_pos[src];
    unsigned n = q->ike_known_src[src], victim = 0;
    uint16_t most = 0;
    for (unsigned i = 0; i < n; i++) {
        uint16_t held = q->ike_peer[q->slots[pos[i]].peer];
        if (held > most) {   /* the oldest of the biggest: the first found */
            most = held;
            victim = i;
        }
    }
    ts_event_slot *v = &q->slots[pos[victim]];
    free(v->data);
    q->ike_peer[v->peer]--;
    for (unsigned i = victim; i + 1 < n; i++)
        q->slots[pos[i]] = q->slots[pos[i + 1]];
    return &q->slots[pos[n - 1]];
}

static int push(ts_events *q, const ts_event *ev, const uint8_t *data, size_t len, int src, int peer,
                bool *evicted) {
    uint8_t *copy = NULL;
    int why;
    if (len) {
        /* a look before the copy, so a datagram with no room costs no allocation (a flood's
         * are up to 64 KiB each); the copy is made outside the lock, and room checked again */
        pthread_mutex_lock(&q->lock);
        why = room(q, ev, src, peer);
        why = evictable(q, why) ? TS_DROP_NONE : known_verdict(q, why);
        pthread_mutex_unlock(&q->lock);
        if (why != TS_DROP_NONE)
            return why;
        copy = malloc(len);
        if (!copy)
            return TS_DROP_QUEUE_FULL;
        memcpy(copy, data, len);
    }
    pthread_mutex_lock(&q->lock);
    why = room(q, ev, src, peer);
    if (evictable(q, why)) {
        ts_event_slot *s = evict_known(q, src);
        s->ev = *ev;
        s->ev.data_len = (uint32_t)len;
        s->data = copy;
        s->src = (int16_t)src;
        s->peer = (int16_t)peer;
        s->proven = false;
        q->ike_peer[peer]++;
        *evicted = true;
        why = TS_DROP_NONE;
    } else if ((why = known_verdict(q, why)) == TS_DROP_NONE) {
        ts_event_slot *s = &q->slots[(q->head + q->count) % TS_EVENT_CAP];
        s->ev = *ev;
        s->ev.data_len = (uint32_t)len;
        s->data = copy;
        s->src = (int16_t)src;
        s->peer = (int16_t)peer;
        s->proven = peer < 0 && src >= 0 && ev->proven;
        if (peer >= 0) {
            q->ike_peer[peer]++;
            if (src >= 0)
                q->ike_known_pos[src][q->ike_known_src[src]++] = (uint16_t)((q->head + q->count) % TS_EVENT_CAP);
        } else if (s->proven) {
            q->ike_proven_src[src]++;
            q->ike_proven++;
        } else if (src >= 0) {
            q->ike_src[src]++;
            q->ike_unknown++;
        }
        q->count++;
    }
    pthread_mutex_unlock(&q->lock);
    if (why != TS_DROP_NONE) {
        free(copy);
        return why;
    }
    uint64_t one = 1;
    ssize_t w = write(q->efd, &one, sizeof(one));   /* EAGAIN only when already signalled */
    (void)w;
    return TS_DROP_NONE;
}

bool ts_events_push(ts_events *q, const ts_event *ev, const uint8_t *data, size_t len) {
    bool evicted = false;   /* never: not an IKE datagram */
    return push(q, ev, data, len, -1, -1, &evicted) == TS_DROP_NONE;
}

int ts_events_push_ike(ts_events *q, const ts_event *ev, const uint8_t *data, size_t len, unsigned src_slot,
                       int peer_slot, bool *evicted) {
    *evicted = false;
    return push(q, ev, data, len, (int)(src_slot % TS_IKE_SOURCE_SLOTS),
                peer_slot < 0 ? -1 : peer_slot % TS_IKE_PEER_SLOTS, evicted);
}

int ts_dp_next_event(ts_dp *dp, ts_event *ev, uint8_t *buf, size_t buflen) {
    ts_events *q = &dp->events;
    uint64_t drain;
    pthread_mutex_lock(&q->lock);
    if (q->count == 0) {
        ssize_t r = read(q->efd, &drain, sizeof(drain));   /* re-arm: nothing left */
        (void)r;
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    ts_event_slot *s = &q->slots[q->head];
    *ev = s->ev;
    size_t n = s->ev.data_len < buflen ? s->ev.data_len : buflen;
    if (n)
        memcpy(buf, s->data, n);
    ev->data_len = (uint32_t)n;
    free(s->data);
    s->data = NULL;
    /* the shares back once the control side has it */
    if (s->peer >= 0) {
        q->ike_peer[s->peer]--;
        if (s->src >= 0) {   /* the head is its share's oldest, the first of its places */
            uint16_t *pos = q->ike_known_pos[s->src];
            size_t n = --q->ike_known_src[s->src];
            memmove(pos, pos + 1, n * sizeof(*pos));
        }
    } else if (s->proven) {
        q->ike_proven_src[s->src]--;
        q->ike_proven--;
    } else if (s->src >= 0) {
        q->ike_src[s->src]--;
        q->ike_unknown--;
    }
    q->head = (q->head + 1) % TS_EVENT_CAP;
    q->count--;
    pthread_mutex_unlock(&q->lock);
    return 1;
}

int ts_dp_event_fd(ts_dp *dp) { return dp->events.efd; }
