/* libFuzzer target: ts_dp_outbound, an inner packet from the TUN -> ESP,
 * with a round trip through ts_dp_inbound as the oracle.
 *
 * input := mtu:u8 room:u8 packet...
 *   mtu 0: no tunnel MTU; otherwise 500 + 8 * mtu bytes (ICMP too-big path)
 *   room 0: a 64 KiB output buffer; otherwise exactly len + room - 41 bytes
 *   (around what ESP needs: the sender must refuse rather than overrun)
 * SPD (first match wins): 10.0.0.0/8 -> any, UDP to ports 0-5059 PROTECT (reqid 3, keyed, SPI
 * SPI_PORTS: only packets that show their ports, never a later fragment, RFC 4301 §7),
 * 10.0.0.0/8 -> any PROTECT (reqid 1, keyed),
 * fd00::/8 -> any PROTECT (reqid 1), 192.168.0.0/16 BYPASS,
 * 172.16.0.0/12-ish DISCARD, 198.51.100.0/24 PROTECT reqid 2 (no SA: ACQUIRE).
 * Every ESP packet the sender produces must be accepted by a receiver keyed
 * with the same SA (any address, both ways) and give back the inner packet
 * unchanged, but for an ICMP error without a whole quoted IP header; none carries a source route
 * with hops to go (behind AH too, or a spent IPv6 one before an IP header) or an option or header chain
 * cut short (fz_source_routed). */
#include "fuzz_util.h"

#define SPI 0x4000u
#define SPI_PORTS 0x5000u
static const uint8_t KEY[20] = "fedcba9876543210SALT";

static ts_dp *tx, *rx;

static void policy(uint32_t id, uint8_t action, uint32_t reqid, int family, const uint8_t *src, int src_bytes) {
    static const uint8_t z[16];
    ts_policy p;
    memset(&p, 0, sizeof(p));
    p.id = id;
    p.priority = id;
    p.action = action;
    p.reqid = reqid;
    fz_sel(&p.sel, family, src, src_bytes, z, 0);
    if (id == 0) {   /* the port-restricted one */
        p.sel.proto = 17;
        p.sel.dport_hi = 5059;
    }
    FUZZ_SETUP(ts_spd_add(tx, &p) == TS_OK);
}

/* an SA with this SPI, outbound on tx (reqid), inbound on rx, any selectors */
static void keyed(uint32_t spi, uint32_t reqid) {
    ts_sa_params p;
    fz_params(&p, spi, TS_DIR_OUT, KEY, 20, 0, 0);
    p.reqid = reqid;
    p.n_sel = 2;
    fz_sel_any(&p.sel[0], 4);
    fz_sel_any(&p.sel[1], 6);
    FUZZ_SETUP(ts_sad_add(tx, &p) == TS_OK);
    uint32_t got = 0;
    FUZZ_SETUP(ts_sad_getspi(rx, spi, spi, &got) == TS_OK);
    p.dir = TS_DIR_IN;
    FUZZ_SETUP(ts_sad_update(rx, &p) == TS_OK);   /* replay window off: tx numbers are fresh anyway */
}

/* what SPI_PORTS may carry: IPv4 UDP whose header (its ports) is in the packet, to port <= 5059 */
static int shows_port_below_5060(const uint8_t *pkt, size_t len) {
    size_t ihl = (size_t)(pkt[0] & 15) * 4, tot = fz_be16(pkt + 2);
    return len >= 20 && pkt[0] >> 4 == 4 && pkt[9] == 17 && (fz_be16(pkt + 6) & 0x1fff) == 0 && tot <= len &&
           ihl + 4 <= tot && fz_be16(pkt + ihl + 2) <= 5059;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    tx = ts_dp_new();
    rx = ts_dp_new();
    FUZZ_SETUP(tx && rx);
    static const uint8_t n10[1] = {10}, nfd[1] = {0xfd}, n192[2] = {192, 168}, n172[1] = {172},
                         n198[3] = {198, 51, 100};
    policy(0, TS_ACT_PROTECT, 3, 4, n10, 1);
    policy(1, TS_ACT_PROTECT, 1, 4, n10, 1);
    policy(2, TS_ACT_PROTECT, 1, 6, nfd, 1);
    policy(3, TS_ACT_BYPASS, 0, 4, n192, 2);
    policy(4, TS_ACT_DISCARD, 0, 4, n172, 1);
    policy(5, TS_ACT_PROTECT, 2, 4, n198, 3);
    keyed(SPI, 1);
    keyed(SPI_PORTS, 3);
    return 0;
}

static uint8_t inner[TS_MAX_PACKET];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    ts_dp_set_tunnel_mtu(tx, data[0] ? 500u + 8u * data[0] : 0);
    size_t len = size - 2;
    size_t outcap = data[1] ? (len + data[1] > 41 ? len + data[1] - 41 : 0) : TS_MAX_PACKET + 256;
    uint8_t *pkt = fz_dup(data + 2, len);
    uint8_t *esp = malloc(outcap ? outcap : 1);
    FUZZ_SETUP(esp != NULL);
    ts_addr dst;
    int drop = -1;
    size_t icmp = 12345;
    int n = ts_dp_outbound(tx, pkt, len, esp, outcap, &dst, &drop, &icmp);
    if (fz_trace())
        fprintf(stderr, "outbound %zu bytes -> %d, drop %d, icmp %zu\n", len, n, drop, icmp);
    FUZZ_ASSERT(n >= 0 && drop >= 0 && drop < TS_DROP__COUNT);
    FUZZ_ASSERT((n > 0) == (drop == TS_DROP_NONE));
    if (icmp) {
        FUZZ_ASSERT(n == 0 && drop == TS_DROP_TOO_BIG && icmp <= 1280 && icmp <= outcap);
        FUZZ_ASSERT(esp[0] >> 4 == pkt[0] >> 4);
    }
    if (n > 0) {
        FUZZ_ASSERT((size_t)n <= outcap);
        FUZZ_ASSERT((size_t)n >= len + 16 + 2 + 16 && (size_t)n <= len + 16 + 5 + 16 && ((size_t)n - 32) % 4 == 0);
        FUZZ_ASSERT((fz_be32(esp) == SPI || fz_be32(esp) == SPI_PORTS) && dst.family == 4 && dst.port == 4500);
        /* a source route with hops to go, or an option cut short, is never sealed (review revesp F1) */
        FUZZ_ASSERT(fz_source_routed(pkt, len) == 0);
        /* a packet that shows no ports (a later fragment, a cut header) never takes the port-restricted policy */
        FUZZ_ASSERT(fz_be32(esp) != SPI_PORTS || shows_port_below_5060(pkt, len));
        ts_addr src;
        fz_addr4(&src, 192, 0, 2, 2, 4500);
        int rdrop = -1;
        int m = ts_dp_inbound(rx, esp, (size_t)n, &src, NULL, inner, sizeof(inner), &rdrop);
        /* the receiver takes what the sender seals, unchanged (IP length
         * field wins over bytes beyond it, as for TFC padding), but for an
         * ICMP error that quotes no whole IP header of its family */
        int icmp_v4 = pkt[0] >> 4 == 4 && pkt[9] == 1;
        FUZZ_ASSERT((m > 0 && rdrop == TS_DROP_NONE) ||
                    (m == 0 && rdrop == TS_DROP_ICMP_QUOTE && (icmp_v4 || pkt[0] >> 4 == 6)));
        FUZZ_ASSERT(m == 0 || ((size_t)m <= len && memcmp(inner, pkt, (size_t)m) == 0));
    }
    free(esp);
    free(pkt);
    fz_drain_events(tx);
    fz_drain_events(rx);
    return 0;
}
