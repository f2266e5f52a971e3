/* libFuzzer target: ts_gro_run, a batch of decrypted inner packets ->
 * coalesced TUN writes, each with its virtio_net_hdr.
 *
 * input := caps:u8 (len:u16be packet[len])...
 *   caps low nibble: 0 -> max_out 64, else max_out = nibble (1..15)
 *   caps high nibble: 0 -> output room 70000 bytes, else 600 * nibble
 * At most 64 packets (one loop batch).  The packets, their lengths, the
 * output and its length array are heap blocks of exactly their size. */
#include "fuzz_util.h"

#define MAX_PKTS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    fz_in in = {data + 1, size - 1};
    uint8_t caps = data[0];
    size_t max_out = caps & 15 ? (size_t)(caps & 15) : 64;
    size_t cap = caps >> 4 ? 600 * (size_t)(caps >> 4) : 70000;
    uint32_t tmp_lens[MAX_PKTS];
    size_t n = 0, total = 0;
    const uint8_t *start = in.p;
    while (in.n && n < MAX_PKTS) {
        size_t got;
        size_t want = fz_u16(&in);
        fz_take(&in, want, &got);
        tmp_lens[n++] = (uint32_t)got;
        total += got;
    }
    uint8_t *pkts = malloc(total ? total : 1);
    uint32_t *lens = malloc((n ? n : 1) * sizeof(*lens));
    uint8_t *out = malloc(cap);
    uint32_t *out_lens = malloc(max_out * sizeof(*out_lens));
    FUZZ_SETUP(pkts && lens && out && out_lens);
    /* second pass: copy the packets back to back */
    fz_in again = {start, (size_t)(in.p - start)};
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t got;
        size_t want = fz_u16(&again);
        const uint8_t *p = fz_take(&again, want, &got);
        memcpy(pkts + off, p, got);
        lens[i] = (uint32_t)got;
        off += got;
    }
    int m = ts_gro_run(pkts, lens, n, out, cap, out_lens, max_out);
    if (fz_trace())
        fprintf(stderr, "gro %zu packets, cap %zu, max %zu -> %d\n", n, cap, max_out, m);
    FUZZ_ASSERT(m >= 0 && (size_t)m <= max_out && (size_t)m <= n);
    size_t sum = 0, o = 0;
    for (int i = 0; i < m; i++) {
        FUZZ_ASSERT(out_lens[i] >= TS_VNET_HDR_LEN);
        sum += out_lens[i];
        FUZZ_ASSERT(sum <= cap);
        const uint8_t *w = out + o;
        if (w[1] != 0) {
            /* a coalesced TCP super-packet: whole IP packet, length fields right */
            const uint8_t *ip = w + TS_VNET_HDR_LEN;
            size_t plen = out_lens[i] - TS_VNET_HDR_LEN;
            FUZZ_ASSERT(plen <= 65535 + 40);
            if (ip[0] >> 4 == 4)
                FUZZ_ASSERT(fz_be16(ip + 2) == plen);
            else
                FUZZ_ASSERT(ip[0] >> 4 == 6 && fz_be16(ip + 4) + 40u == plen);
        }
        o += out_lens[i];
    }
    /* GRO adds headers, never payload: at most one vnet header per packet more */
    FUZZ_ASSERT(sum <= total + n * TS_VNET_HDR_LEN);
    free(out_lens);
    free(out);
    free(lens);
    free(pkts);
    return 0;
}
