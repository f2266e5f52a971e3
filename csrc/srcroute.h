/* Source routes in a packet's own IP header (review revesp F1).  An IPv4 Loose or Strict Source
 * Route option (RFC 791 §3.1, types 131 and 137) with hops to go, or an IPv6 Routing header
 * (RFC 8200 §4.4, any type: a segment routing header, RPL, ...) with Segments Left above 0, names
 * destinations beyond the header's.  A host that honours the route (accept_source_route,
 * seg6_enabled) forwards the packet there, with its source, so a selector check of the header's
 * destination alone would let a peer past its Child SA's selectors: such packets are dropped as
 * `source_route`, both ways (dp.c).  Only a packet's own header: a quote in an ICMP error is never
 * walked (its route is the original packet's).
 *
 * A Routing header with no segments left is spent, unless an IP header follows it straight (next
 * header 41 or 4): a segment routing host (ipv6_srh_rcv; RPL's ipv6_rpl_srh_rcv for 41) then strips
 * the outer header and re-injects the inner packet, which goes wherever its own header says, from
 * whatever source it names (review revesp2 F1).  Any type counts: a Routing header straight before
 * an IP header has no other use.
 *
 * spd.c's walk of a packet's own chain steps over AH (the host resubmits the header behind it once
 * the AH is verified: review revesp2 F2), the flow's protocol staying 51.  A Routing header behind
 * an ESP header (nested ESP, the host's own SA) is encrypted: it cannot be seen here, and is not. */
#ifndef TUNSEC_SRCROUTE_H
#define TUNSEC_SRCROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ts_srcroute {
    TS_SRCROUTE_BAD = -1,   /* an option cut short or of a length that does not fit: malformed */
    TS_SRCROUTE_NONE = 0,   /* no source route, or only spent ones */
    TS_SRCROUTE_LIVE = 1,   /* a source route with hops to go */
};

/* IPv4 options, the len bytes after the fixed header (IHL * 4 - 20, at most 40) */
int ts_ip4_source_route(const uint8_t *opt, size_t len);

enum {
    TS_NH_IPV4 = 4,    /* IPv4 in IPv6 */
    TS_NH_IPV6 = 41,   /* IPv6 in IPv6 */
};

/* an IPv6 Routing header (8 bytes of it at least, checked by the caller) with segments to go, or
 * spent with a packet straight behind it (above) */
static inline bool ts_ip6_route_live(const uint8_t *rh) {
    return rh[3] != 0 || rh[0] == TS_NH_IPV4 || rh[0] == TS_NH_IPV6;   /* Segments Left; next header */
}

#endif
