/* The batch loop between the TUN device and the ESP-in-UDP sockets.
 *
 * TUN -> UDP: up to TS_BATCH TUN reads per wakeup (with TUN offloads each
 * read may be a 64 KiB TCP/UDP super-packet, segmented in offload.c); ESP
 * packets are written back to back into an arena, and consecutive equal-size
 * packets to one peer become one UDP_SEGMENT (GSO) message; one sendmmsg per
 * socket sends the batch.
 * UDP -> TUN: recvmmsg, with UDP_GRO the kernel hands us runs of datagrams
 * in one buffer; decrypted TCP segments of one flow are coalesced into one
 * TUN write (offload.c).  Buffers are allocated once, never per packet.
 *
 * One loop (ts_dp_run_queue) per TUN queue, each on its own thread named
 * tunsec-q<N>, polling its TUN queue, its UDP sockets, the wake fd and the hold fd; every batch
 * runs under dp->lock taken for reading (control changes take it for writing between batches).  A packet's way through:
 *
 *   TUN read (TS_BATCH per wakeup)                     outbound_batch
 *     -> [vnet header: segment super-packet]           offload.c ts_vnet_segment
 *     -> parse 5-tuple, SPD lookup (flow cache, index) dp.c ts_outbound_locked, spd.c
 *          no policy / DISCARD / BYPASS: drop
 *          PROTECT, no SA: ACQUIRE, packet held        hold.c (resent by send_held)
 *     -> SA mature?  too big? (ICMP back into TUN)     icmp.c
 *     -> next sequence number (reservation)            dp.c next_seq
 *     -> lifetime accounting, AES-GCM seal            esp.c ts_esp_seal
 *     -> arena; equal-size run to one peer = 1 GSO     queue_esp
 *        (from the SA's local address: IP(V6)_PKTINFO)  cmsg.c ts_pktinfo_put
 *     -> sendmmsg per socket                           flush_out
 *        (a run the kernel refuses: one datagram each)  send_split
 *
 *   recvmmsg (UDP GRO: runs of datagrams)              inbound_batch
 *     -> control data: GRO size, our address it came to cmsg.c ts_rx_meta_parse
 *     -> 0xFF keepalive: drop; non-ESP marker, or a    dp.c ts_inbound_locked
 *        whole unmarked IKE_SA_INIT request (any port): IKE event up the pipe (events.c)
 *     -> SPI lookup (unknown: INVALID_SPI event)       sad.c
 *     -> replay check, AES-GCM open, replay update     replay.c, esp.c ts_esp_open
 *     -> reservation, padding/next header, inner       dp.c check_inner
 *        addresses inside the SA's selectors, and an
 *        ICMP error's quoted packet (reversed) too        icmp.c ts_icmp_quote_ok
 *     -> lifetime accounting
 *     -> TUN write (TCP segments coalesced: GRO)       offload.c ts_gro_*
 *
 * Every drop is counted once by reason (ts_drop, enum ts_drop in tunsec_dp.h);
 * replay, auth and policy drops also on the SA. */
#include "internal.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define RXSLOT (65536 + 256)
#define ARENA (4u << 20)
#define MAX_MSGS 1024
#define MAX_SEGS TS_VNET_MAX_SEGS
#define SEGCAP (TS_MAX_PACKET + MAX_SEGS * TS_VNET_SEG_HDR_MAX)
_Static_assert(TS_VNET_SEG_HDR_MAX == 40 + TS_GSO_V6_EXT_MAX + 60, "the most header bytes a segment repeats");
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES 65000
/* send at least this often: with several loop threads sharing an SA, the
 * sequence numbers one holds back are the reordering the peer's window sees */
#define FLUSH_BYTES 65536
#define PREFAULT_STEP 4096

/* received: UDP_GRO's segment size and IP(V6)_PKTINFO (cmsg.c) */
typedef union {
    char buf[CMSG_SPACE(sizeof(int)) + TS_PKTINFO_SPACE];
    struct cmsghdr align;
} cmsg_space;

/* sent: UDP_SEGMENT (a GSO run) at the front, then the SA's source address
 * (IP(V6)_PKTINFO): msg_control starts at GSO_SPACE until the run needs GSO */
#define GSO_SPACE CMSG_SPACE(sizeof(uint16_t))
typedef union {
    char buf[GSO_SPACE + TS_PKTINFO_SPACE];
    struct cmsghdr align;
} cmsg_out;

typedef struct run {
    int idx;                   /* message being extended, -1 = none */
    const ts_sa *sa;
    size_t seg, count, bytes;
    bool closed;
} run;

typedef struct outq {
    struct mmsghdr m[MAX_MSGS];
    struct iovec iov[MAX_MSGS];
    cmsg_out cm[MAX_MSGS];
    uint16_t seg[MAX_MSGS];            /* each message's GSO segment size, 0 = one datagram (no GSO) */
    ts_sa *sa[MAX_MSGS];               /* each message's SA (its peer address is the message's) */
    unsigned n;
    run r;
} outq;

struct ts_batch {
    ts_queue *q;                       /* this loop's TUN queue and sockets */
    uint8_t *rx;                       /* TS_BATCH slots of RXSLOT */
    uint8_t *seg;                      /* segmentation output */
    uint16_t seg_len[MAX_SEGS];
    uint8_t *arena;                    /* ESP output, back to back */
    size_t used;
    outq q4, q6;
    struct mmsghdr in[TS_BATCH];
    struct iovec iov_in[TS_BATCH];
    struct sockaddr_storage names[TS_BATCH];
    cmsg_space cm_in[TS_BATCH];
    uint8_t *plain;                    /* one decrypted packet (vnet header room in front) */
    ts_flow_cache flows;
    uint8_t *gro_buf;
    ts_gro gro;
};

/* Fault in the pages of [p, p + len) (one write per 4 KiB: enough for any page size). */
static void prefault(void *p, size_t len) {
    volatile uint8_t *v = p;
    for (size_t off = 0; off < len; off += PREFAULT_STEP)
        v[off] = 0;
    if (len)
        v[len - 1] = 0;
}

/* The part of the buffers that every loop uses as soon as it carries small packets in
 * batches (IKE, keepalives, pings, a few dozen flows), faulted in at start: the first
 * page of every receive slot (a datagram of up to ~4 KiB lands there), the flow cache
 * (a flow's slot is hashed, so a hundred flows touch all of it), the receive headers,
 * and a batch's worth of the send queues' headers.  ~0.35 MiB per loop, the same for
 * 1 client or 10,000: paid at start, not by the first clients (bench/mem_stages.py).
 * The rest (a receive slot's other 64 KiB, the ESP arena, the send queues past one
 * batch) is touched only by large packets and big batches, and so left to them. */
static void prefault_outq(outq *q) {
    prefault(q->m, TS_BATCH * sizeof(q->m[0]));
    prefault(q->iov, TS_BATCH * sizeof(q->iov[0]));
    prefault(q->cm, TS_BATCH * sizeof(q->cm[0]));
    prefault(q->seg, TS_BATCH * sizeof(q->seg[0]));
    prefault(q->sa, TS_BATCH * sizeof(q->sa[0]));
}

static void prefault_working_set(struct ts_batch *b, const ts_queue *q) {
    for (size_t i = 0; i < TS_BATCH; i++)
        prefault(b->rx + i * RXSLOT, 1);
    prefault(&b->flows, sizeof(b->flows));
    prefault(b->in, sizeof(b->in));
    prefault(b->iov_in, sizeof(b->iov_in));
    prefault(b->names, sizeof(b->names));
    prefault(b->cm_in, sizeof(b->cm_in));
    if (q->udp4_fd >= 0)
        prefault_outq(&b->q4);
    if (q->udp6_fd >= 0)
        prefault_outq(&b->q6);
}

static struct ts_batch *batch_new(void) {
    struct ts_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->rx = malloc((size_t)TS_BATCH * RXSLOT);
    b->seg = malloc(SEGCAP);
    b->arena = malloc(ARENA);
    b->plain = malloc(RXSLOT);
    b->gro_buf = malloc(TS_VNET_HDR_LEN + 65536);
    if (!b->rx || !b->seg || !b->arena || !b->plain || !b->gro_buf) {
        free(b->rx); free(b->seg); free(b->arena); free(b->plain); free(b->gro_buf);
        free(b);
        return NULL;
    }
    b->q4.r.idx = b->q6.r.idx = -1;
    return b;
}

void ts_loop_free(ts_queue *q) {
    struct ts_batch *b = q->batch;
    if (!b)
        return;
    free(b->rx); free(b->seg); free(b->arena); free(b->plain); free(b->gro_buf);
    free(b);
    q->batch = NULL;
}

int ts_dp_set_offloads(ts_dp *dp, int vnet_hdr) {
    int one = 1, zero = 0, active = 0;
    dp->vnet = vnet_hdr != 0;
    if (dp->vnet)
        active |= TS_OFF_VNET;
    /* UDP GSO/GRO count only if every socket of every queue accepts them */
    bool gso = true, gro = true, any = false;
    for (int q = 0; q < dp->nqueues; q++) {
        int fds[2] = {dp->queues[q].udp4_fd, dp->queues[q].udp6_fd};
        for (int i = 0; i < 2; i++) {
            if (fds[i] < 0)
                continue;
            any = true;
            if (setsockopt(fds[i], SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) < 0)
                gso = false;
            if (setsockopt(fds[i], SOL_UDP, UDP_GRO, &one, sizeof(one)) < 0)
                gro = false;
        }
    }
    dp->udp_gso = gso && any;
    dp->udp_gro = gro && any;
    if (dp->udp_gso)
        active |= TS_OFF_UDP_GSO;
    if (dp->udp_gro)
        active |= TS_OFF_UDP_GRO;
    return active;
}

/* lost: messages [from, to) of m, counted by datagram (a GSO run by its segments) */
static void count_lost(ts_dp *dp, const struct mmsghdr *m, const uint16_t *seg, unsigned from, unsigned to) {
    for (unsigned i = from; i < to; i++) {
        size_t n = m[i].msg_hdr.msg_iov->iov_len, s = seg && seg[i] ? seg[i] : n;
        atomic_fetch_add_explicit(&dp->drops[TS_DROP_IO], (n + s - 1) / s, memory_order_relaxed);
    }
}

/* the source address cmsg (IP(V6)_PKTINFO) comes after UDP_SEGMENT's, if any (queue_esp) */
static bool has_pktinfo(const struct msghdr *h, uint16_t seg) {
    return h->msg_control && h->msg_controllen > (seg ? GSO_SPACE : 0);
}

static void drop_pktinfo(struct msghdr *h, uint16_t seg) {
    h->msg_controllen = seg ? GSO_SPACE : 0;
    if (!seg)
        h->msg_control = NULL;
}

static bool send_msgs(ts_dp *dp, int fd, struct mmsghdr *m, const uint16_t *seg, ts_sa *const *sa, unsigned n);

/* The kernel refused a GSO run whose datagrams it takes one by one: EMSGSIZE (EINVAL on older
 * kernels) when a segment is larger than the path MTU towards the peer -- a PPPoE or mobile
 * client, or a PMTU from an ICMP "fragmentation needed" anyone can forge -- which it fragments
 * in a lone datagram; EIO on an egress without checksum offload.  The run's segments go as
 * datagrams, in order (the peer's replay window), from the run's source address, each counted
 * lost only if it fails.  Their headers point into the run's (its peer address, in the SA: the
 * read lock is still held).  Returns false when the socket is full. */
static bool send_split(ts_dp *dp, int fd, const struct msghdr *h, uint16_t seg, ts_sa *sa) {
    struct mmsghdr m[GSO_MAX_SEGS];
    struct iovec iov[GSO_MAX_SEGS];
    ts_sa *sas[GSO_MAX_SEGS];   /* each datagram's SA, the run's: a refused source is remembered */
    const struct iovec *whole = h->msg_iov;
    void *pktinfo = has_pktinfo(h, seg) ? (char *)h->msg_control + GSO_SPACE : NULL;
    unsigned n = 0;
    for (size_t off = 0; off < whole->iov_len && n < GSO_MAX_SEGS; off += seg, n++) {
        size_t left = whole->iov_len - off;
        iov[n] = (struct iovec){(uint8_t *)whole->iov_base + off, left < seg ? left : seg};
        memset(&m[n], 0, sizeof(m[n]));
        m[n].msg_hdr.msg_name = h->msg_name;
        m[n].msg_hdr.msg_namelen = h->msg_namelen;
        m[n].msg_hdr.msg_iov = &iov[n];
        m[n].msg_hdr.msg_iovlen = 1;
        m[n].msg_hdr.msg_control = pktinfo;
        m[n].msg_hdr.msg_controllen = pktinfo ? h->msg_controllen - GSO_SPACE : 0;
        sas[n] = sa;
    }
    return send_msgs(dp, fd, m, NULL, sas, n);
}

/* After the kernel refused a GSO run to an SA's peer, its packets go as datagrams for a while,
 * rather than every batch paying for a refused run first; then GSO is tried again (the path can
 * grow: a learnt PMTU expires after 10 minutes, routes change).  ts_sad_migrate clears it. */
#define GSO_PAUSE_NS (10ull * 1000000000ull)

/* An SA's source address the kernel refused (taken away, a VIP failed over, renumbering) while
 * the same message without it went out: the SA's ESP leaves without the source cmsg for a while,
 * rather than each message (a lone packet, each GSO run) paying a refused call first; then the
 * source is tried again.  Sooner when the host adds this address back (addrwatch.c, ts_dp_addr_added,
 * told by the control process): the SA's ESP should leave from it at once; ts_sad_migrate clears it
 * (MOBIKE says where we are now). */
#define SOURCE_GONE_NS (10ull * 1000000000ull)

/* an SA's pause (gso_paused_until, source_gone_until): on for ns from now */
static void pause_for(_Atomic uint64_t *until, uint64_t ns) {
    atomic_store_explicit(until, ts_now_ns() + ns, memory_order_relaxed);
}

/* whether the pause is on; the clock is read only while one is set */
static bool paused(_Atomic uint64_t *until_p) {
    uint64_t until = atomic_load_explicit(until_p, memory_order_relaxed);
    if (!until)
        return false;
    if (ts_now_ns() < until)
        return true;
    /* over: the clock is read again only after the next refusal */
    atomic_compare_exchange_strong_explicit(until_p, &until, 0, memory_order_relaxed, memory_order_relaxed);
    return false;
}

static void gso_pause(ts_sa *sa) {
    pause_for(&sa->gso_paused_until, GSO_PAUSE_NS);
}

static bool gso_paused(ts_sa *sa) {
    return paused(&sa->gso_paused_until);
}

/* gen: dp->addr_gen as it was before the refused send: an address added after the kernel refused
 * the source (noted by another loop before this one got here) still counts (review revnatt) */
static void source_gone(ts_sa *sa, uint32_t gen) {
    atomic_store_explicit(&sa->source_gone_gen, gen, memory_order_relaxed);
    pause_for(&sa->source_gone_until, SOURCE_GONE_NS);
}

/* whether the SA's ESP leaves without its source: noted gone, its time not over, and its own
 * address not added since (addrwatch.c; others added: looked at once, then not again) */
static bool source_is_gone(ts_dp *dp, ts_sa *sa) {
    if (!paused(&sa->source_gone_until))
        return false;
    uint32_t since = atomic_load_explicit(&sa->source_gone_gen, memory_order_relaxed), now;
    if (since == atomic_load_explicit(&dp->addr_gen, memory_order_relaxed))
        return true;
    if (!ts_addrwatch_came(dp, &sa->local, since, &now)) {
        atomic_store_explicit(&sa->source_gone_gen, now, memory_order_relaxed);
        return true;
    }
    atomic_store_explicit(&sa->source_gone_until, 0, memory_order_relaxed);
    return false;
}

/* errors of a GSO run that its datagrams sent alone do not share */
static bool gso_refused(int err) {
    return err == EMSGSIZE || err == EINVAL || err == EIO;
}

/* errors a source address cmsg causes (IPv4: ENETUNREACH for an address not ours; IPv6: EINVAL
 * from ip6_datagram_send_ctl, EADDRNOTAVAIL), which every message from that address shares */
static bool source_refused(int err) {
    return err == EINVAL || err == EADDRNOTAVAIL || err == ENETUNREACH;
}

/* m[0, n) in order.  seg[i] (NULL: all 0): message i is a GSO run of seg[i]-byte segments to
 * sa[i]'s peer.  Returns false when the socket is full (the rest counted lost). */
static bool send_msgs(ts_dp *dp, int fd, struct mmsghdr *m, const uint16_t *seg, ts_sa *const *sa, unsigned n) {
    unsigned done = 0;
    /* the GSO run m[bare] was refused with EINVAL and is being retried without its source
     * cmsg, whose length was bare_len (n: none) */
    unsigned bare = n;
    size_t bare_len = 0;
    /* m[unsourced] is being retried without its source cmsg after an error a source causes (n:
     * none): if it goes, the source was the cause, and its SA's next messages leave without it */
    unsigned unsourced = n;
    uint32_t gen = atomic_load_explicit(&dp->addr_gen, memory_order_relaxed);   /* before any send */
    while (done < n) {
        int r = sendmmsg(fd, m + done, n - done, MSG_DONTWAIT);
        if (r >= 0) {
            if (r > 0 && unsourced == done && sa && sa[done])
                source_gone(sa[done], gen);
            done += (unsigned)r;
            continue;
        }
        if (errno == EINTR)
            continue;
        int err = errno;
        dp->last_errno = err;
        /* EAGAIN/ENOBUFS: the rest is lost, like a full NIC queue.  Anything else
         * (unreachable, a source address no longer ours) is this message's own:
         * it is lost, the other peers' messages still go */
        if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
            count_lost(dp, m, seg, done, n);
            return false;
        }
        struct msghdr *h = &m[done].msg_hdr;
        uint16_t s = seg ? seg[done] : 0;
        if (s && err == EINVAL && has_pktinfo(h, s)) {
            /* on IPv6 EINVAL also says the source is no longer ours: try the run once as GSO
             * from the address the route picks before taking it for a GSO refusal */
            bare = done;
            bare_len = h->msg_controllen;
            unsourced = done;
            drop_pktinfo(h, s);
            continue;
        }
        if (s && gso_refused(err)) {
            if (bare == done)   /* refused without the source too: the split keeps it */
                h->msg_controllen = bare_len;
            gso_pause(sa[done]);
            unsourced = n;   /* refused without the source too: not the source's doing */
            bool room = send_split(dp, fd, h, s, sa[done]);
            done++;
            if (!room) {
                count_lost(dp, m, seg, done, n);
                return false;
            }
            continue;
        }
        if (has_pktinfo(h, s)) {
            /* the SA's source address is no longer ours (or not allowed there): send it
             * from the address the route picks, which ESP's receivers accept (they find
             * the SA by SPI); only the IKE SA's next move (MOBIKE) says where to go.
             * The datagrams of a split run share their source address cmsg: all move when
             * the error is one the source causes; any other (a firewall rule's EPERM for
             * this one packet) moves only this datagram, for its lone retry. */
            const void *ctl = h->msg_control;
            bool all = source_refused(err);
            for (unsigned k = done + 1; all && k < n; k++)
                if (m[k].msg_hdr.msg_control == ctl)
                    drop_pktinfo(&m[k].msg_hdr, seg ? seg[k] : 0);
            unsourced = all ? done : n;
            drop_pktinfo(h, s);
            continue;
        }
        count_lost(dp, m, seg, done, done + 1);
        done++;
    }
    return true;
}

static void send_queue(ts_dp *dp, int fd, outq *q) {
    send_msgs(dp, fd, q->m, q->seg, q->sa, q->n);
    q->n = 0;
    q->r.idx = -1;
}

static void flush_out(ts_dp *dp, struct ts_batch *b) {
    if (b->q4.n)
        send_queue(dp, b->q->udp4_fd, &b->q4);
    if (b->q6.n)
        send_queue(dp, b->q->udp6_fd, &b->q6);
    b->used = 0;
}

/* the ESP packet just written at arena + used: extend the peer's GSO run or start a message */
static void queue_esp(ts_dp *dp, struct ts_batch *b, ts_sa *sa, size_t len) {
    outq *q = sa->remote.family == 4 ? &b->q4 : &b->q6;
    uint8_t *p = b->arena + b->used;
    run *r = &q->r;
    if (dp->udp_gso && r->idx >= 0 && !r->closed && r->sa == sa && len <= r->seg &&
        r->count < GSO_MAX_SEGS && r->bytes + len <= GSO_MAX_BYTES &&
        (uint8_t *)q->iov[r->idx].iov_base + q->iov[r->idx].iov_len == p && !gso_paused(sa)) {
        q->iov[r->idx].iov_len += len;
        r->count++;
        r->bytes += len;
        r->closed = len < r->seg;   /* only the last segment may be shorter */
        if (r->count == 2) {
            /* UDP_SEGMENT goes in front of the source address cmsg, if there is one */
            struct msghdr *h = &q->m[r->idx].msg_hdr;
            h->msg_control = q->cm[r->idx].buf;
            h->msg_controllen += GSO_SPACE;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t seg = (uint16_t)r->seg;
            memcpy(CMSG_DATA(c), &seg, sizeof(seg));
            q->seg[r->idx] = seg;
        }
    } else {
        unsigned i = q->n++;
        q->iov[i].iov_base = p;
        q->iov[i].iov_len = len;
        memset(&q->m[i], 0, sizeof(q->m[i]));
        q->m[i].msg_hdr.msg_name = (void *)&sa->peer;   /* valid while the read lock is held */
        q->m[i].msg_hdr.msg_namelen = sa->peer_len;
        q->m[i].msg_hdr.msg_iov = &q->iov[i];
        q->m[i].msg_hdr.msg_iovlen = 1;
        q->seg[i] = 0;
        q->sa[i] = sa;
        /* from the SA's local address: a socket bound to the wildcard would otherwise leave
         * from whichever address the route prefers, not the one the peer talks to */
        if (sa->local.family == sa->remote.family && (sa->remote.family == 4 ? b->q->any4 : b->q->any6) &&
            !source_is_gone(dp, sa)) {
            size_t n = ts_pktinfo_put(q->cm[i].buf + GSO_SPACE, TS_PKTINFO_SPACE, &sa->local);
            if (n) {
                q->m[i].msg_hdr.msg_control = q->cm[i].buf + GSO_SPACE;
                q->m[i].msg_hdr.msg_controllen = n;
            }
        }
        *r = (run){.idx = (int)i, .sa = sa, .seg = len, .count = 1, .bytes = len};
    }
    b->used += len;
}

static void tun_write(ts_dp *dp, int fd, const uint8_t *p, size_t n) {
    if (write(fd, p, n) < 0) {
        dp->last_errno = errno;
        ts_drop(dp, TS_DROP_IO);
    }
}

/* a complete packet for the TUN: with offloads it needs its (empty) virtio header */
static void tun_write_packet(ts_dp *dp, int fd, const uint8_t *p, size_t n) {
    if (!dp->vnet) {
        tun_write(dp, fd, p, n);
        return;
    }
    uint8_t hdr[TS_VNET_HDR_LEN] = {0};
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)p, n}};
    if (writev(fd, iov, 2) < 0) {
        dp->last_errno = errno;
        ts_drop(dp, TS_DROP_IO);
    }
}

/* a PROTECT policy without SA (ACQUIRE raised): the packet waits in the policy's hold */
static bool hold(ts_dp *dp, struct ts_batch *b, const uint8_t *pkt, size_t len, uint64_t held_ns) {
    ts_flow f;
    if (!ts_flow_parse(pkt, len, &f))
        return false;
    ts_spd_entry *e = ts_spd_lookup_cached(&dp->spd, &b->flows, &f);
    return e && !e->out_sa && ts_hold_push(dp, e->hold, pkt, len, held_ns ? held_ns : ts_now_ns());
}

/* held_ns: when the packet was first held (0 = it is new) */
static void outbound_one_at(ts_dp *dp, struct ts_batch *b, const uint8_t *pkt, size_t len, uint64_t held_ns) {
    if (ARENA - b->used < RXSLOT || b->q4.n >= MAX_MSGS || b->q6.n >= MAX_MSGS)
        flush_out(dp, b);
    ts_sa *sa = NULL;
    int drop;
    size_t icmp = 0;
    int r = ts_outbound_locked(dp, &b->flows, pkt, len, b->arena + b->used, ARENA - b->used, &sa, &drop, &icmp);
    if (drop == TS_DROP_NO_SA && hold(dp, b, pkt, len, held_ns))
        return;
    ts_drop(dp, drop);
    if (icmp)
        tun_write_packet(dp, b->q->tun_fd, b->arena + b->used, icmp);
    if (r > 0)
        queue_esp(dp, b, sa, (size_t)r);
}

static void outbound_one(ts_dp *dp, struct ts_batch *b, const uint8_t *pkt, size_t len) {
    outbound_one_at(dp, b, pkt, len, 0);
}

/* TUN -> ESP: returns the number of TUN reads */
static int outbound_batch(ts_dp *dp, struct ts_batch *b) {
    int nread = 0;
    pthread_rwlock_rdlock(&dp->lock);
    for (int i = 0; i < TS_BATCH; i++) {
        uint8_t *rx = b->rx;
        ssize_t n = read(b->q->tun_fd, rx, RXSLOT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                dp->last_errno = errno;
            break;
        }
        nread++;
        if (!dp->vnet) {
            outbound_one(dp, b, rx, (size_t)n);
            if (b->used >= FLUSH_BYTES)
                flush_out(dp, b);
            continue;
        }
        int nseg = ts_vnet_segment(rx, (size_t)n, b->seg, SEGCAP, b->seg_len, MAX_SEGS);
        if (nseg < 0) {
            ts_drop(dp, TS_DROP_MALFORMED);
            continue;
        }
        size_t off = 0;
        for (int s = 0; s < nseg; s++) {
            outbound_one(dp, b, b->seg + off, b->seg_len[s]);
            off += b->seg_len[s];
        }
        if (b->used >= FLUSH_BYTES)
            flush_out(dp, b);
    }
    flush_out(dp, b);
    pthread_rwlock_unlock(&dp->lock);
    return nread;
}

/* an SA was bound or a policy added: every waiting packet takes the outbound
 * path again; those still without an SA wait again, keeping their first hold
 * time.  Each is copied out of its hold first, as the path may hold it again. */
static void send_held(ts_dp *dp, struct ts_batch *b) {
    /* the holds that have packets, not every policy's (review revspd R1) */
    for (bool go = ts_held_begin(&dp->spd.busy); go; go = ts_held_end(&dp->spd.busy)) {
        pthread_rwlock_rdlock(&dp->lock);
        uint64_t now = ts_now_ns();
        for (ts_hold *h; (h = ts_held_next(&dp->spd.busy));)
            for (size_t k = ts_hold_count(h); k > 0; k--) {
                uint64_t held_ns = 0;
                size_t len = ts_hold_pop(dp, h, b->rx, RXSLOT, now, &held_ns);
                if (!len)
                    break;
                outbound_one_at(dp, b, b->rx, len, held_ns);
            }
        flush_out(dp, b);
        pthread_rwlock_unlock(&dp->lock);
    }
    if (ts_held_owed(&dp->spd.busy))
        ts_hold_kick(&dp->spd);   /* a kick came during the pass: its pass after a poll, maybe another loop's */
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

typedef struct gro_target {
    ts_dp *dp;
    int fd;
} gro_target;

static void gro_emit(void *ctx, const uint8_t *p, size_t len) {
    gro_target *t = ctx;
    tun_write(t->dp, t->fd, p, len);
}

static void inbound_one(ts_dp *dp, struct ts_batch *b, uint8_t *udp, size_t len, const ts_addr *src,
                        const ts_addr *local) {
    int drop;
    int r = ts_inbound_locked(dp, udp, len, src, local, b->plain, RXSLOT, &drop);
    ts_drop(dp, drop);
    if (r <= 0)
        return;
    if (dp->vnet)
        ts_gro_add(&b->gro, b->plain, (size_t)r);
    else
        tun_write(dp, b->q->tun_fd, b->plain, (size_t)r);
}

/* UDP -> TUN: returns the number of messages received */
/* bound: where the socket is bound (the local address of IKE events, unless the wildcard:
 * then the kernel tells each datagram's) */
static int inbound_batch(ts_dp *dp, struct ts_batch *b, int fd, const ts_addr *bound) {
    for (int i = 0; i < TS_BATCH; i++) {
        b->iov_in[i].iov_base = b->rx + (size_t)i * RXSLOT;
        b->iov_in[i].iov_len = RXSLOT;
        memset(&b->in[i], 0, sizeof(b->in[i]));
        struct msghdr *h = &b->in[i].msg_hdr;
        h->msg_name = &b->names[i];
        h->msg_namelen = sizeof(b->names[i]);
        h->msg_iov = &b->iov_in[i];
        h->msg_iovlen = 1;
        h->msg_control = b->cm_in[i].buf;
        h->msg_controllen = sizeof(b->cm_in[i].buf);
    }
    int n = recvmmsg(fd, b->in, TS_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            dp->last_errno = errno;
        return 0;
    }
    pthread_rwlock_rdlock(&dp->lock);
    gro_target target = {dp, b->q->tun_fd};
    ts_gro_init(&b->gro, b->gro_buf, TS_VNET_HDR_LEN + 65536, gro_emit, &target);
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &b->in[i].msg_hdr;
        size_t len = b->in[i].msg_len;
        if (h->msg_flags & MSG_TRUNC) {
            ts_drop(dp, TS_DROP_MALFORMED);
            continue;
        }
        ts_addr src;
        addr_of(&b->names[i], &src);
        ts_rx_meta meta;
        ts_rx_meta_parse(h->msg_control, h->msg_controllen, bound->port, &meta);
        size_t seg = meta.gro_seg ? meta.gro_seg : len;
        const ts_addr *local = meta.local.family ? &meta.local : ts_addr_is_specific(bound) ? bound : NULL;
        uint8_t *base = b->iov_in[i].iov_base;
        if (len == 0) {
            /* the loop below would not run for it: an empty datagram gets the verdict (MALFORMED)
             * and the count that ts_dp_inbound gives it, as every drop must be counted */
            inbound_one(dp, b, base, 0, &src, local);
            continue;
        }
        for (size_t off = 0; off < len; off += seg)
            inbound_one(dp, b, base + off, len - off < seg ? len - off : seg, &src, local);
    }
    ts_gro_flush(&b->gro);
    pthread_rwlock_unlock(&dp->lock);
    return n;
}

int ts_dp_run_queue(ts_dp *dp, int queue) {
    if (queue < 0 || queue >= dp->nqueues)
        return TS_EINVAL;
    ts_queue *q = &dp->queues[queue];
    if (!q->batch) {
        if (!(q->batch = batch_new()))
            return TS_ENOMEM;
        prefault_working_set(q->batch, q);
    }
    struct ts_batch *b = q->batch;
    b->q = q;
    ts_set_thread_slot((unsigned)queue + 1);
    /* the thread's name says which queue it serves: the control process reads
     * each queue's CPU time from /proc/PID/task/TID/{comm,stat} (its load metric) */
    char name[24];   /* the kernel keeps 15 bytes: "tunsec-q" and up to 7 digits */
    snprintf(name, sizeof name, "tunsec-q%d", queue);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    struct pollfd pf[5];
    int fds[5] = {dp->wake_fd, q->tun_fd, q->udp4_fd, q->udp6_fd, dp->spd.hold_fd};
    int rc = TS_OK;
    /* the wake fd is never read here: it stays readable after ts_dp_stop so
     * that every queue's loop sees it */
    while (!atomic_load(&dp->stop)) {
        nfds_t n = 0;
        int idx[5];
        for (int i = 0; i < 5; i++) {
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
            rc = TS_EIO;
            break;
        }
        for (nfds_t k = 0; k < n && !atomic_load(&dp->stop); k++) {
            if (!(pf[k].revents & (POLLIN | POLLERR)))
                continue;
            switch (idx[k]) {
            case 1: outbound_batch(dp, b); break;
            case 2: inbound_batch(dp, b, q->udp4_fd, &q->bound4); break;
            case 3: inbound_batch(dp, b, q->udp6_fd, &q->bound6); break;
            case 4:
                if (ts_hold_take_kick(&dp->spd))
                    send_held(dp, b);
                break;
            default: break;
            }
        }
    }
    ts_set_thread_slot(0);
    return rc;
}

static bool resident(const void *p) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    unsigned char in = 0;
    return mincore((void *)((uintptr_t)p & ~(page - 1)), 1, &in) == 0 && (in & 1);
}

int ts_test_loop_resident(ts_dp *dp, int queue, int *flow_pages_missing) {
    if (queue < 0 || queue >= dp->nqueues)
        return -1;
    pthread_rwlock_wrlock(&dp->lock);   /* after the loop's batches: it made its buffers before the first */
    struct ts_batch *b = dp->queues[queue].batch;
    int slots = -1;
    if (b) {
        slots = 0;
        for (size_t i = 0; i < TS_BATCH; i++)
            slots += resident(b->rx + i * RXSLOT);
        int missing = 0;
        for (size_t off = 0; off < sizeof(b->flows); off += PREFAULT_STEP)
            missing += !resident((const uint8_t *)&b->flows + off);
        *flow_pages_missing = missing;
    }
    pthread_rwlock_unlock(&dp->lock);
    return slots;
}

int ts_dp_run(ts_dp *dp) {
    if (dp->nqueues < 1)
        dp->nqueues = 1;
    return ts_dp_run_queue(dp, 0);
}

void ts_dp_stop(ts_dp *dp) {
    atomic_store(&dp->stop, true);
    uint64_t one = 1;
    ssize_t w = write(dp->wake_fd, &one, sizeof(one));
    (void)w;
}
