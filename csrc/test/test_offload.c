/* The offload parsers (offload.c): TUN super-packet segmentation and GRO on
 * random input. */
#include "selftest.h"

/* ---- 8b. offload parsers (TUN super-packets, GRO) on random input ------------------ */
/* found by fuzz/tun_vnet.c: a 64 KiB TSO read whose gso_size covers it all
 * made one 65536-byte segment, its 16-bit length wrapped to 0 */
void test_segment_64k(void) {
    static uint8_t in[TS_VNET_HDR_LEN + TS_MAX_PACKET], seg[TS_MAX_PACKET + 1024];
    uint16_t seg_len[4];
    memset(in, 0, sizeof(in));
    in[0] = 1;                                 /* NEEDS_CSUM */
    in[1] = 1;                                 /* TCPV4 */
    in[4] = 0xff; in[5] = 0xff;                /* gso_size 65535 */
    uint8_t *ip = in + TS_VNET_HDR_LEN;
    ip[0] = 0x45; ip[9] = 6; ip[20 + 12] = 0x50; ip[20 + 13] = 0x10;
    CHECK(ts_vnet_segment(in, sizeof(in), seg, sizeof(seg), seg_len, 4) == -1);
    int n = ts_vnet_segment(in, sizeof(in) - 1, seg, sizeof(seg), seg_len, 4);   /* 65535 bytes: fits */
    CHECK(n == 1 && seg_len[0] == 65535);
}

void test_offload_fuzz(long iterations) {
    static uint8_t in[TS_VNET_HDR_LEN + TS_MAX_PACKET + 64], seg[2 * TS_MAX_PACKET + 8192];
    static uint16_t seg_len[128];
    static uint32_t lens[64], out_lens[64];
    long produced = 0;
    for (long it = 0; it < iterations; it++) {
        size_t len;
        uint8_t *pkt = in + TS_VNET_HDR_LEN;
        rnd_fill(in, TS_VNET_HDR_LEN);
        in[1] = (uint8_t)(rnd_below(2) ? rnd_below(6) : in[1]);   /* mostly known GSO types */
        if (rnd_below(2)) {
            /* a plausible TCP or UDP super-packet, then damaged a little */
            int family = rnd_below(2) ? 4 : 6;
            size_t dlen = rnd_below(rnd_below(8) ? 3000 : 66000);
            len = make_inner(family, dlen > 65000 ? 65000 : dlen, false, pkt);
            if (rnd_below(2)) {
                size_t hl = family == 4 ? 20 : 40;
                pkt[family == 4 ? 9 : 6] = 6;
                pkt[hl + 12] = (uint8_t)((5 + rnd_below(11)) << 4);
            }
            for (uint32_t k = rnd_below(4); k > 0; k--)
                pkt[rnd_below(len < 64 ? (uint32_t)len : 64)] = (uint8_t)rnd();
            uint16_t gs = (uint16_t)(rnd_below(3) ? 500 + rnd_below(1500) : rnd());
            in[4] = (uint8_t)gs;
            in[5] = (uint8_t)(gs >> 8);
        } else {
            len = rnd_below(400);
            rnd_fill(pkt, len);
        }
        size_t total = TS_VNET_HDR_LEN + len;
        if (rnd_below(4) == 0)
            total = rnd_below((uint32_t)total + 1);
        size_t cap = rnd_below(2) ? sizeof(seg) : rnd_below(70000);
        size_t max_segs = 1 + rnd_below(128);
        int n = ts_vnet_segment(in, total, seg, cap, seg_len, max_segs);
        CHECK(n >= -1 && n <= (int)max_segs);
        size_t sum = 0;
        for (int i = 0; i < n; i++)
            sum += seg_len[i];
        CHECK(n <= 0 || sum <= cap);
        produced += n > 0 ? n : 0;

        /* GRO over a run of random or TCP-like packets */
        size_t cnt = 1 + rnd_below(64), off = 0;
        for (size_t i = 0; i < cnt && off + 2000 < sizeof(seg); i++) {
            lens[i] = (uint32_t)make_inner(rnd_below(2) ? 4 : 6, rnd_below(1500), false, seg + off);
            if (rnd_below(2)) {
                size_t hl = seg[off] >> 4 == 4 ? 20 : 40;
                seg[off + (hl == 20 ? 9 : 6)] = 6;
                seg[off + hl + 12] = 0x50;
                seg[off + hl + 13] = rnd_below(2) ? 0x10 : (uint8_t)rnd();
            }
            if (rnd_below(4) == 0)
                seg[off + rnd_below(lens[i])] ^= (uint8_t)rnd();
            off += lens[i];
            cnt = i + 1;
        }
        size_t ocap = rnd_below(2) ? 70000 : rnd_below(5000);
        static uint8_t gout[70000 + 64];
        size_t max_out = 1 + rnd_below(64);
        int m = ts_gro_run(seg, lens, cnt, gout, ocap, out_lens, max_out);
        CHECK(m >= 0 && m <= (int)max_out);
        size_t gsum = 0;
        for (int i = 0; i < m; i++)
            gsum += out_lens[i];
        CHECK(gsum <= ocap);
    }
    CHECK(produced > 0);
}
