/* The host's addresses coming back, for the SAs whose source the kernel refused (loop.c
 * source_gone): a route netlink socket subscribed to the address groups, which every loop polls.
 * An address added (RTM_NEWADDR: a VIP failed back, an IPv6 address out of DAD, renumbering
 * undone) is noted with a new generation (dp->addr_gen) in a small ring, dp->addr_seen, and an SA
 * noted gone tries its source again with its next message if its own address is among those noted
 * since (review revcsmall F2): before, it waited out its SOURCE_GONE_NS, its ESP leaving from
 * whatever address the route picked meanwhile.  Only its own: the kernel sends RTM_NEWADDR for an
 * address changed too (`ip addr change`, every IPv6 router advertisement that renews a SLAAC
 * address's lifetimes, which anyone on the link may send), and a tentative one, and each such notice
 * cost every SA whose source stays gone one more refused send (review revnatt F2).  No syscall per
 * packet: the socket is read only when poll says so. */
#include "internal.h"
#include <errno.h>
#include <linux/capability.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* notifications read per wakeup at most: a burst (an interface's hundred addresses) is read over
 * a few wakeups rather than keeping a loop from its packets */
#define ADDRWATCH_READS 16
/* addresses taken from one read (the kernel sends one a notice; more: the rest count as any) */
#define ADDRWATCH_PER_READ 16

/* The socket is opened without CAP_NET_ADMIN in this thread's effective set: the kernel checks the
 * opener's capabilities (the file's) as well as the sender's for a route change, so a worker taken
 * over (one that keeps its capabilities: user = root) cannot add or remove the host's addresses or
 * routes through it inside its sandbox, which refuses it a socket of its own (review revnatt F1). */
int ts_addrwatch_open(void) {
    struct __user_cap_header_struct hd = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct old[2], dropped[2];
    bool have = syscall(SYS_capget, &hd, old) == 0;
    if (have) {
        memcpy(dropped, old, sizeof(old));
        dropped[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
        syscall(SYS_capset, &hd, dropped);
    }
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (have)
        syscall(SYS_capset, &hd, old);
    if (fd < 0)
        return -1;   /* no watch: a gone source is tried again after SOURCE_GONE_NS alone */
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* an address that is none yet: its DAD under way or failed.  An optimistic one (RFC 4429) is
 * tentative too, and may be a source already (the kernel's ipv6_chk_addr_and_flags) */
static bool tentative(uint32_t flags) {
    return (flags & IFA_F_DADFAILED) || ((flags & IFA_F_TENTATIVE) && !(flags & IFA_F_OPTIMISTIC));
}

typedef enum { NOTICE_NONE, NOTICE_ADDR, NOTICE_ANY } notice;

/* One RTM_NEWADDR, m[0, n) from its nlmsghdr on (n: its nlmsg_len, inside the read): the address
 * it adds into *out.  NOTICE_NONE: none (tentative, another family); NOTICE_ANY: unreadable.  Every
 * field is bounds-checked and copied out (the buffer need not be aligned: fuzzing). */
static notice new_address(const uint8_t *m, size_t n, ts_addr *out) {
    struct ifaddrmsg ifa;
    size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(ifa));
    if (n < off)
        return NOTICE_ANY;
    memcpy(&ifa, m + NLMSG_HDRLEN, sizeof(ifa));
    size_t want = ifa.ifa_family == AF_INET ? 4 : ifa.ifa_family == AF_INET6 ? 16 : 0;
    if (!want)
        return NOTICE_NONE;
    uint32_t flags = ifa.ifa_flags;   /* the low 8 bits; IFA_FLAGS has them all */
    const uint8_t *local = NULL, *address = NULL;
    while (n - off >= sizeof(struct rtattr)) {
        struct rtattr rta;
        memcpy(&rta, m + off, sizeof(rta));
        if (rta.rta_len < sizeof(rta) || rta.rta_len > n - off)
            return NOTICE_ANY;
        const uint8_t *v = m + off + RTA_LENGTH(0);
        size_t vlen = rta.rta_len - RTA_LENGTH(0);
        if ((rta.rta_type == IFA_LOCAL || rta.rta_type == IFA_ADDRESS) && vlen != want)
            return NOTICE_ANY;
        if (rta.rta_type == IFA_LOCAL)
            local = v;
        else if (rta.rta_type == IFA_ADDRESS)
            address = v;
        else if (rta.rta_type == IFA_FLAGS && vlen == sizeof(flags))
            memcpy(&flags, v, sizeof(flags));
        size_t step = RTA_ALIGN(rta.rta_len);
        if (step >= n - off)
            break;
        off += step;
    }
    if (tentative(flags))
        return NOTICE_NONE;
    /* ours: IFA_LOCAL where there is one (IFA_ADDRESS is then a point-to-point link's far end) */
    const uint8_t *a = local ? local : address;
    if (!a)
        return NOTICE_ANY;
    *out = (ts_addr){.family = want == 4 ? 4 : 6};
    memcpy(out->addr, a, want);
    return NOTICE_ADDR;
}

int ts_addrwatch_parse(const uint8_t *buf, size_t len, ts_addr *out, size_t max) {
    size_t k = 0, off = 0;
    bool any = false;   /* something unreadable: an address added maybe */
    if (!max)
        return 0;
    while (off < len) {
        struct nlmsghdr h;
        if (len - off < sizeof(h)) {
            any = true;
            break;
        }
        memcpy(&h, buf + off, sizeof(h));
        if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > len - off) {   /* cut (a read too short) or malformed */
            any = true;
            break;
        }
        ts_addr a = {0};
        if (h.nlmsg_type == RTM_NEWADDR && new_address(buf + off, h.nlmsg_len, &a) != NOTICE_NONE) {
            if (k == max) {   /* more than the caller takes: the last stands for any */
                out[max - 1] = (ts_addr){0};
                return (int)max;
            }
            out[k++] = a;     /* family 0 if it was NOTICE_ANY */
        }
        size_t step = NLMSG_ALIGN(h.nlmsg_len);
        if (step >= len - off)   /* the last (its padding may be left out) */
            break;
        off += step;
    }
    if (any) {
        if (k == max)
            k--;
        out[k++] = (ts_addr){0};
    }
    return (int)k;
}

void ts_addrwatch_note(ts_dp *dp, const ts_addr *added) {
    pthread_mutex_lock(&dp->addr_lock);
    uint32_t gen = atomic_load_explicit(&dp->addr_gen, memory_order_relaxed) + 1;
    dp->addr_seen[gen % TS_ADDRS_SEEN] = *added;
    atomic_store_explicit(&dp->addr_gen, gen, memory_order_relaxed);
    pthread_mutex_unlock(&dp->addr_lock);
}

static bool same_or_any(const ts_addr *seen, const ts_addr *addr) {
    if (!seen->family)
        return true;
    return seen->family == addr->family && memcmp(seen->addr, addr->addr, addr->family == 4 ? 4 : 16) == 0;
}

/* Called only by an SA noted gone whose generation is behind (a rare path: the lock is no cost
 * per packet) */
bool ts_addrwatch_came(ts_dp *dp, const ts_addr *addr, uint32_t since, uint32_t *now) {
    pthread_mutex_lock(&dp->addr_lock);
    uint32_t gen = atomic_load_explicit(&dp->addr_gen, memory_order_relaxed);
    *now = gen;
    uint32_t count = gen - since;   /* generations since + 1 .. gen (they wrap: unsigned) */
    /* more than the ring keeps: one overwritten may have been it */
    bool came = count > TS_ADDRS_SEEN;
    for (uint32_t k = 1; !came && k <= count; k++)
        came = same_or_any(&dp->addr_seen[(since + k) % TS_ADDRS_SEEN], addr);
    pthread_mutex_unlock(&dp->addr_lock);
    return came;
}

void ts_addrwatch_read(ts_dp *dp) {
    /* aligned for the notices' structs; notifications are small (one address each) */
    static _Thread_local uint64_t buf[1024];
    static const ts_addr any = {0};
    ts_addr added[ADDRWATCH_PER_READ];
    for (int i = 0; i < ADDRWATCH_READS; i++) {
        ssize_t r = read(dp->addr_fd, buf, sizeof(buf));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != ENOBUFS)
                break;
            ts_addrwatch_note(dp, &any);   /* notifications were lost, an addition among them maybe */
            continue;
        }
        int n = ts_addrwatch_parse((const uint8_t *)buf, (size_t)r, added, ADDRWATCH_PER_READ);
        for (int k = 0; k < n; k++)
            ts_addrwatch_note(dp, &added[k]);
    }
}
