/* How many ICMP "too big" answers the fast path sends (review revpeerdos F2).  These answers are
 * the only signal that shrinks a sender's packets to what the tunnel carries (PMTU discovery);
 * with one bucket for every sender, one source sending oversized DF packets at 100/s (a LAN host,
 * or a road warrior looping them through its own tunnel) took every answer and left the others'
 * flows black-holed.  So each sender has a share first, in slots the keyed hash of its whole address
 * picks, and then all together a larger budget, near Linux's icmp_msgs_per_sec (1000/s, burst 50).
 * Not by dos.ipv6_source_prefix as the INVALID_SPI limiter counts outer sources: these senders are
 * the hosts whose packets enter the tunnel, a protected LAN's, all of one /64, so by prefix one host
 * took every IPv6 neighbour's answers (review revcfg F3).  A host that makes up source addresses
 * gets more shares, but never more than the budget of all.  Both are GCRA buckets on one _Atomic
 * each: the loop threads share them without a lock, nothing is allocated. */
#include "internal.h"
#include "limit.h"

#include <string.h>

#define ICMP_SOURCE_INTERVAL_NS 100000000ull   /* one sender: 10 answers a second ... */
#define ICMP_SOURCE_BURST 10                   /* ... after a burst of 10 (new flows to several tunnels) */
#define ICMP_INTERVAL_NS 1000000ull            /* all senders: 1000 answers a second ... */
#define ICMP_BURST 50                          /* ... after a burst of 50 */

/* the high bits: a sender that shares a known-IKE slot (bits 32..) need not share this one */
static unsigned source_slot(const ts_dp *dp, const ts_addr *src) {
    return (unsigned)(ts_address_hash(dp, src) >> 40) & (TS_ICMP_SOURCE_SLOTS - 1);
}

unsigned ts_test_icmp_source_slot(ts_dp *dp, const ts_addr *src) {
    return source_slot(dp, src);
}

bool ts_icmp_limit_ok(ts_dp *dp, const ts_flow *f) {
    ts_addr src = {.family = f->family};
    memcpy(src.addr, f->src, f->family == 4 ? 4 : 16);
    _Atomic uint64_t *slot = &dp->icmp_src_tat_ns[source_slot(dp, &src)];
    uint64_t now = limiter_now(dp);
    /* the sender's own share first, so a sender over it takes nothing from the others' budget */
    if (!bucket_ok(slot, now, ICMP_SOURCE_INTERVAL_NS, ICMP_SOURCE_BURST))
        return false;
    if (bucket_ok(&dp->icmp_tat_ns, now, ICMP_INTERVAL_NS, ICMP_BURST))
        return true;
    bucket_refund(slot, ICMP_SOURCE_INTERVAL_NS);   /* nothing was sent: the sender's share is not spent */
    return false;
}
