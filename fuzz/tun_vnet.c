/* libFuzzer target: ts_vnet_segment, one TUN read with IFF_VNET_HDR (a
 * virtio_net_hdr then a packet, maybe a TSO/USO super-packet) -> segments.
 *
 * input := caps:u8 vnet_hdr[10] packet...
 *   caps low nibble: 0 -> max_segs 128, else max_segs = nibble (1..15)
 *   caps high nibble: 0 -> output room 2 * 64 KiB + 8 KiB, else the input
 *   length * nibble / 4 (tight buffers: segments must never spill over)
 * The output buffer and segment-length array are heap blocks of exactly
 * that size, so ASan catches any write past them. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    uint8_t caps = data[0];
    size_t len = size - 1;
    size_t max_segs = caps & 15 ? (size_t)(caps & 15) : 128;
    size_t cap = caps >> 4 ? len * (caps >> 4) / 4 : 2 * TS_MAX_PACKET + 8192;
    uint8_t *buf = fz_dup(data + 1, len);
    uint8_t *out = malloc(cap ? cap : 1);
    uint16_t *seg_len = malloc(max_segs * sizeof(*seg_len));
    FUZZ_SETUP(out && seg_len);
    int n = ts_vnet_segment(buf, len, out, cap, seg_len, max_segs);
    if (fz_trace())
        fprintf(stderr, "segment %zu bytes, cap %zu, max %zu -> %d\n", len, cap, max_segs, n);
    FUZZ_ASSERT(n >= -1 && n <= (int)max_segs && n != 0);
    size_t sum = 0;
    for (int i = 0; i < n; i++) {
        sum += seg_len[i];
        FUZZ_ASSERT(sum <= cap);
    }
    if (n > 1) {
        /* a real segmentation: every segment is a whole IP packet whose
         * length field says how long it is */
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            const uint8_t *s = out + off;
            FUZZ_ASSERT(seg_len[i] >= 28);
            if (s[0] >> 4 == 4)
                FUZZ_ASSERT(fz_be16(s + 2) == seg_len[i]);
            else
                FUZZ_ASSERT(s[0] >> 4 == 6 && fz_be16(s + 4) + 40u == seg_len[i]);
            off += seg_len[i];
        }
        /* no payload byte lost or invented: segments hold the input's payload once,
         * each repeating the headers (IPv4 and TCP options: 120 bytes at most; IPv6,
         * its extension headers and TCP options: 40 + TS_GSO_V6_EXT_MAX + 60) */
        size_t most_hdr = out[0] >> 4 == 4 ? 120 : 40 + TS_GSO_V6_EXT_MAX + 60;
        FUZZ_ASSERT(sum <= len - TS_VNET_HDR_LEN + (size_t)(n - 1) * most_hdr);
    }
    if (n == 1)
        FUZZ_ASSERT(seg_len[0] > 0 || len == TS_VNET_HDR_LEN);
    free(seg_len);
    free(out);
    free(buf);
    return 0;
}
