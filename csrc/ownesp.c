/* Our own ESP read back from the TUN, whichever SA it is about to enter (review revmobfix F2).
 *
 * dp.c's own_esp compares a packet with the SA it is about to enter only: two SAs whose peers lie
 * in each other's selectors (A to PA, PA in B's; B to PB, PB in A's), both peers routed into the
 * TUN, seal each other's ESP round after round.  Nothing legitimate sends from our ESP socket's
 * address and port but the worker itself, so any UDP from one of our ESP ends is dropped
 * (esp_loop), whatever its destination.  The ends are learnt under the write lock: from the
 * sockets bound to a specific address (ts_dp_set_fds, ts_dp_add_queue) and from every SA's local
 * end (ts_sad_add, ts_sad_update, ts_sad_migrate): our address ESP leaves from, or the wildcard with
 * our port when an SA's is (the route picks the address: any source with that port is ours then,
 * which a LAN host's own NAT-T from that port shares).  A few distinct ends exist (one per address
 * the host is reached at, per ESP port), at most TS_OWN_ENDS kept (more: own_esp still guards each
 * SA's own); they stay (an address of ours we no longer have is nobody's ESP either).  A packet pays one comparison of its protocol, and
 * for UDP one port comparison per end. */
#include "internal.h"
#include <string.h>

static size_t addr_len(uint8_t family) {
    return family == 4 ? 4 : 16;
}

static bool same_end(const ts_addr *a, const ts_addr *b) {
    return a->family == b->family && a->port == b->port && memcmp(a->addr, b->addr, addr_len(a->family)) == 0;
}

void ts_own_end_note(ts_dp *dp, const ts_addr *local) {
    if (!local || local->port == 0 || (local->family != 0 && local->family != 4 && local->family != 6))
        return;
    ts_addr end = {.family = local->family, .port = local->port};
    if (local->family != 0 && ts_addr_is_specific(local))
        memcpy(end.addr, local->addr, addr_len(local->family));
    for (int i = 0; i < dp->n_own_ends; i++)
        if (same_end(&dp->own_ends[i], &end))
            return;
    if (dp->n_own_ends < TS_OWN_ENDS)
        dp->own_ends[dp->n_own_ends++] = end;
}

bool ts_own_end_from(const ts_dp *dp, const ts_flow *f) {
    if (f->proto != 17 || f->opaque || (f->family != 4 && f->family != 6))
        return false;
    for (int i = 0; i < dp->n_own_ends; i++) {
        const ts_addr *e = &dp->own_ends[i];
        if (e->port != f->sport)
            continue;
        if (e->family == 0)
            return true;   /* an SA of no family's address: any source with our port */
        if (e->family == f->family &&
            (!ts_addr_is_specific(e) || memcmp(e->addr, f->src, addr_len(f->family)) == 0))
            return true;
    }
    return false;
}
