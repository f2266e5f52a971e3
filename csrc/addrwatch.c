/* The host's addresses coming back, for the SAs whose source the kernel refused (loop.c
 * source_gone).  An address added (a VIP failed back, an IPv6 address out of DAD, renumbering
 * undone) is noted with a new generation (dp->addr_gen) in a small ring, dp->addr_seen, and an SA
 * noted gone tries its source again with its next message if its own address is among those noted
 * since (review revcsmall F2): before, it waited out its SOURCE_GONE_NS, its ESP leaving from
 * whatever address the route picked meanwhile.  Only its own: an address changed or tentative is no
 * address added (review revnatt F2).
 *
 * The worker holds no route netlink socket (review revlate4 F1: one it holds, whatever it was
 * opened with, takes route changes and forged notices sent with sendto() to the kernel's address
 * from a worker that keeps capabilities, and answers dumps of the routes and neighbours Landlock
 * hides from one that keeps none).  The control process watches the host's addresses and tells the
 * worker each one added (the pipe's ADDR_ADDED, services/addr_feed.py): ts_dp_addr_added. */
#include "internal.h"
#include <string.h>

void ts_addrwatch_note(ts_dp *dp, const ts_addr *added) {
    pthread_mutex_lock(&dp->addr_lock);
    uint32_t gen = atomic_load_explicit(&dp->addr_gen, memory_order_relaxed) + 1;
    dp->addr_seen[gen % TS_ADDRS_SEEN] = *added;
    atomic_store_explicit(&dp->addr_gen, gen, memory_order_relaxed);
    pthread_mutex_unlock(&dp->addr_lock);
}

int ts_dp_addr_added(ts_dp *dp, int family, const uint8_t *addr) {
    ts_addr a = {0};   /* family 0: any (the control process lost notices) */
    if (family == 4 || family == 6) {
        if (!addr)
            return TS_EINVAL;
        a.family = (uint8_t)family;
        memcpy(a.addr, addr, family == 4 ? 4 : 16);
    } else if (family != 0) {
        return TS_EINVAL;
    }
    ts_addrwatch_note(dp, &a);
    return TS_OK;
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
