/* The batch loop between the TUN device and the ESP-in-UDP sockets: up to
 * TS_BATCH TUN reads per wakeup sent with one sendmmsg per socket, and
 * recvmmsg on the way in.  Buffers are allocated once, never per packet. */
#include "internal.h"
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOT (TS_MAX_PACKET + 256)

struct ts_batch {
    uint8_t *rx;                       /* TS_BATCH slots */
    uint8_t *tx;
    struct mmsghdr out4[TS_BATCH], out6[TS_BATCH], in[TS_BATCH];
    struct iovec iov_out[TS_BATCH], iov_in[TS_BATCH];
    struct sockaddr_storage names[TS_BATCH];
};

static struct ts_batch *batch_new(void) {
    struct ts_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->rx = malloc((size_t)TS_BATCH * SLOT);
    b->tx = malloc((size_t)TS_BATCH * SLOT);
    if (!b->rx || !b->tx) {
        free(b->rx);
        free(b->tx);
        free(b);
        return NULL;
    }
    return b;
}

void ts_loop_free(ts_dp *dp) {
    if (dp->batch) {
        free(dp->batch->rx);
        free(dp->batch->tx);
        free(dp->batch);
        dp->batch = NULL;
    }
}

static void send_all(ts_dp *dp, int fd, struct mmsghdr *m, unsigned n) {
    unsigned done = 0;
    while (done < n) {
        int r = sendmmsg(fd, m + done, n - done, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* EAGAIN/ENOBUFS/unreachable: the batch's rest is lost, like a full NIC queue */
            dp->last_errno = errno;
            for (; done < n; done++)
                ts_drop(dp, TS_DROP_IO);
            return;
        }
        done += (unsigned)r;
    }
}

static void tun_write(ts_dp *dp, const uint8_t *p, size_t n) {
    if (write(dp->tun_fd, p, n) < 0) {
        dp->last_errno = errno;
        ts_drop(dp, TS_DROP_IO);
    }
}

/* TUN -> ESP: returns the number of packets read */
static int outbound_batch(ts_dp *dp, struct ts_batch *b) {
    unsigned n4 = 0, n6 = 0;
    int nread = 0;
    pthread_rwlock_rdlock(&dp->lock);
    for (int i = 0; i < TS_BATCH; i++) {
        uint8_t *rx = b->rx + (size_t)i * SLOT, *tx = b->tx + (size_t)i * SLOT;
        ssize_t n = read(dp->tun_fd, rx, SLOT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                dp->last_errno = errno;
            break;
        }
        nread++;
        ts_sa *sa = NULL;
        int drop;
        size_t icmp = 0;
        int r = ts_outbound_locked(dp, rx, (size_t)n, tx, SLOT, &sa, &drop, &icmp);
        ts_drop(dp, drop);
        if (icmp)
            tun_write(dp, tx, icmp);
        if (r <= 0)
            continue;
        struct mmsghdr *m = sa->remote.family == 4 ? &b->out4[n4++] : &b->out6[n6++];
        b->iov_out[i].iov_base = tx;
        b->iov_out[i].iov_len = (size_t)r;
        memset(m, 0, sizeof(*m));
        m->msg_hdr.msg_name = &sa->peer;   /* valid while the read lock is held */
        m->msg_hdr.msg_namelen = sa->peer_len;
        m->msg_hdr.msg_iov = &b->iov_out[i];
        m->msg_hdr.msg_iovlen = 1;
    }
    if (n4)
        send_all(dp, dp->udp4_fd, b->out4, n4);
    if (n6)
        send_all(dp, dp->udp6_fd, b->out6, n6);
    pthread_rwlock_unlock(&dp->lock);
    return nread;
}

static void addr_of(const struct sockaddr_storage *ss, ts_addr *a) {
    memset(a, 0, sizeof(*a));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        a->family = 4;
        memcpy(a->addr, &in->sin_addr, 4);
        a->port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        a->family = 6;
        memcpy(a->addr, &in6->sin6_addr, 16);
        a->port = ntohs(in6->sin6_port);
    }
}

/* UDP -> TUN: returns the number of datagrams received */
static int inbound_batch(ts_dp *dp, struct ts_batch *b, int fd) {
    for (int i = 0; i < TS_BATCH; i++) {
        b->iov_in[i].iov_base = b->rx + (size_t)i * SLOT;
        b->iov_in[i].iov_len = SLOT;
        memset(&b->in[i], 0, sizeof(b->in[i]));
        b->in[i].msg_hdr.msg_name = &b->names[i];
        b->in[i].msg_hdr.msg_namelen = sizeof(b->names[i]);
        b->in[i].msg_hdr.msg_iov = &b->iov_in[i];
        b->in[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, b->in, TS_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            dp->last_errno = errno;
        return 0;
    }
    pthread_rwlock_rdlock(&dp->lock);
    for (int i = 0; i < n; i++) {
        ts_addr src;
        addr_of(&b->names[i], &src);
        int drop;
        size_t len = b->in[i].msg_len;
        if (b->in[i].msg_hdr.msg_flags & MSG_TRUNC) {
            ts_drop(dp, TS_DROP_MALFORMED);
            continue;
        }
        int r = ts_inbound_locked(dp, b->iov_in[i].iov_base, len, &src, NULL, b->tx, SLOT, &drop);
        ts_drop(dp, drop);
        if (r > 0)
            tun_write(dp, b->tx, (size_t)r);
    }
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

int ts_dp_run(ts_dp *dp) {
    if (!dp->batch && !(dp->batch = batch_new()))
        return TS_ENOMEM;
    struct ts_batch *b = dp->batch;
    struct pollfd pf[4];
    int fds[4] = {dp->wake_fd, dp->tun_fd, dp->udp4_fd, dp->udp6_fd};
    while (!atomic_load(&dp->stop)) {
        nfds_t n = 0;
        int idx[4];
        for (int i = 0; i < 4; i++) {
            if (fds[i] < 0)
                continue;
            pf[n].fd = fds[i];
            pf[n].events = POLLIN;
            pf[n].revents = 0;
            idx[n++] = i;
        }
        int r = poll(pf, n, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            dp->last_errno = errno;
            return TS_EIO;
        }
        for (nfds_t k = 0; k < n; k++) {
            if (!(pf[k].revents & (POLLIN | POLLERR)))
                continue;
            switch (idx[k]) {
            case 0: {
                uint64_t v;
                ssize_t rd = read(dp->wake_fd, &v, sizeof(v));
                (void)rd;
                break;
            }
            case 1: outbound_batch(dp, b); break;
            case 2: inbound_batch(dp, b, dp->udp4_fd); break;
            case 3: inbound_batch(dp, b, dp->udp6_fd); break;
            }
        }
    }
    atomic_store(&dp->stop, false);
    return TS_OK;
}

void ts_dp_stop(ts_dp *dp) {
    atomic_store(&dp->stop, true);
    uint64_t one = 1;
    ssize_t w = write(dp->wake_fd, &one, sizeof(one));
    (void)w;
}
