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

bool ts_events_push(ts_events *q, const ts_event *ev, const uint8_t *data, size_t len) {
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return false;
        memcpy(copy, data, len);
    }
    pthread_mutex_lock(&q->lock);
    /* unauthenticated IKE datagrams may fill only part of the queue, so a
     * flood of them never crowds out EXPIRE/ACQUIRE */
    size_t cap = ev->type == TS_EV_IKE ? TS_EVENT_CAP / 2 : TS_EVENT_CAP;
    bool ok = q->count < cap;
    if (ok) {
        ts_event_slot *s = &q->slots[(q->head + q->count) % TS_EVENT_CAP];
        s->ev = *ev;
        s->ev.data_len = (uint32_t)len;
        s->data = copy;
        q->count++;
    }
    pthread_mutex_unlock(&q->lock);
    if (!ok) {
        free(copy);
        return false;
    }
    uint64_t one = 1;
    ssize_t w = write(q->efd, &one, sizeof(one));   /* EAGAIN only when already signalled */
    (void)w;
    return true;
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
    q->head = (q->head + 1) % TS_EVENT_CAP;
    q->count--;
    pthread_mutex_unlock(&q->lock);
    return 1;
}

int ts_dp_event_fd(ts_dp *dp) { return dp->events.efd; }
