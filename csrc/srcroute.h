/* Source routes in a packet's own IP header (review revesp F1).  An IPv4 Loose or Strict Source
 * Route option (RFC 791 §3.1, types 131 and 137) with hops to go, or an IPv6 Routing header
 * (RFC 8200 §4.4, any type: a segment routing header, RPL, ...) with Segments Left above 0, names
 * destinations beyond the header's.  A host that honours the route (accept_source_route,
 * seg6_enabled) forwards the packet there, with its source, so a selector check of the header's
 * destination alone would let a peer past its Child SA's selectors: such packets are dropped as
 * `source_route`, both ways (dp.c).  Only a packet's own header: a quote in an ICMP error is never
 * walked (its route is the original packet's). */
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

/* an IPv6 Routing header (8 bytes of it at least, checked by the caller) with segments to go */
static inline bool ts_ip6_route_live(const uint8_t *rh) {
    return rh[3] != 0;   /* Segments Left */
}

#endif
