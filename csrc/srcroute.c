/* IPv4 source route options in a packet's own header: srcroute.h says why.  Walked as Linux's
 * ip_options_compile reads them: End of Option List ends the list, No Operation is one byte, any
 * other option is type, length (2 or more, within the options) and data; a cut one is malformed. */
#include "srcroute.h"

enum {
    OPT_EOL = 0,
    OPT_NOP = 1,
    OPT_LSRR = 131,   /* copied, control class, number 3 */
    OPT_SSRR = 137,   /* copied, control class, number 9 */
};

int ts_ip4_source_route(const uint8_t *opt, size_t len) {
    int found = TS_SRCROUTE_NONE;
    /* every step takes a byte or more: at most len (40) steps */
    for (size_t i = 0; i < len;) {
        uint8_t type = opt[i];
        if (type == OPT_EOL)
            break;
        if (type == OPT_NOP) {
            i++;
            continue;
        }
        if (len - i < 2)
            return TS_SRCROUTE_BAD;
        size_t olen = opt[i + 1];
        if (olen < 2 || olen > len - i)
            return TS_SRCROUTE_BAD;
        if (type == OPT_LSRR || type == OPT_SSRR) {
            if (olen < 3)   /* no pointer */
                return TS_SRCROUTE_BAD;
            /* the pointer (1-based in the option) at or before its end: an address still to visit
             * (Linux's ip_options_rcv_srr routes on while it is; past it the route is spent) */
            if (opt[i + 2] <= olen)
                found = TS_SRCROUTE_LIVE;
        }
        i += olen;   /* the rest walked too: an option cut short after a route is malformed all the same */
    }
    return found;
}
