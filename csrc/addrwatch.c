/* The host's addresses coming back, for the SAs whose source the kernel refused (loop.c
 * source_gone): a route netlink socket subscribed to the address groups, which every loop polls.
 * An address added (RTM_NEWADDR: a VIP failed back, an IPv6 address out of DAD, renumbering
 * undone) moves dp->addr_gen on, and an SA noted gone under an older generation tries its source
 * again with its next message (review revcsmall F2): before, it waited out its SOURCE_GONE_NS,
 * its ESP leaving from whatever address the route picked meanwhile.  No syscall per packet: the
 * socket is read only when poll says so. */
#include "internal.h"
#include <errno.h>
#include <linux/capability.h>
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

/* whether buf[0, n) holds an address added */
static bool address_added(const uint8_t *buf, size_t n) {
    for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n))
        if (h->nlmsg_type == RTM_NEWADDR)
            return true;
    return false;
}

void ts_addrwatch_read(ts_dp *dp) {
    /* aligned for the nlmsghdr walk; notifications are small (one address each) */
    static _Thread_local uint64_t buf[1024];
    bool added = false;
    for (int i = 0; i < ADDRWATCH_READS; i++) {
        ssize_t r = read(dp->addr_fd, buf, sizeof(buf));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* ENOBUFS: notifications were lost, an addition among them maybe */
            added |= errno == ENOBUFS;
            if (errno != ENOBUFS)
                break;
            continue;
        }
        added |= address_added((const uint8_t *)buf, (size_t)r);
    }
    if (added)
        atomic_fetch_add_explicit(&dp->addr_gen, 1, memory_order_relaxed);
}
