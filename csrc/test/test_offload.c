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

/* review revipv6 F3: a TSO6 read whose TCP follows IPv6 extension headers (GRO
 * merges them, a socket with IPV6_DSTOPTS sends them) is segmented, each segment
 * with the headers; a Fragment header, a Routing header with segments left and
 * a chain running past the read stay refused */
static size_t tso6_read(uint8_t *in, uint8_t first_nh, const uint8_t *ext, size_t ext_len, size_t payload) {
    memset(in, 0, TS_VNET_HDR_LEN + 40 + ext_len + 20 + payload);
    size_t l4 = 40 + ext_len;
    in[0] = 1;                                             /* NEEDS_CSUM */
    in[1] = 4;                                             /* TCPV6 */
    in[2] = (uint8_t)(l4 + 20);                            /* hdr_len */
    in[4] = (uint8_t)(1000 & 0xff); in[5] = (uint8_t)(1000 >> 8);   /* gso_size */
    in[6] = (uint8_t)l4;                                   /* csum_start */
    in[8] = 16;                                            /* csum_offset */
    uint8_t *ip = in + TS_VNET_HDR_LEN;
    ip[0] = 0x60;
    size_t plen = ext_len + 20 + payload;
    ip[4] = (uint8_t)(plen >> 8); ip[5] = (uint8_t)plen;
    ip[6] = first_nh;
    ip[7] = 64;
    ip[8] = 0xfd; ip[23] = 1; ip[24] = 0xfd; ip[39] = 2;
    memcpy(ip + 40, ext, ext_len);
    ip[l4 + 12] = 0x50;
    ip[l4 + 13] = 0x18;                                    /* ACK PSH */
    return TS_VNET_HDR_LEN + 40 + plen;
}

void test_segment_v6_exthdrs(void) {
    static uint8_t in[TS_VNET_HDR_LEN + 4096], seg[8192];
    uint16_t seg_len[8];
    uint8_t dest_opts[8] = {6, 0, 1, 4, 0, 0, 0, 0};      /* Next Header TCP, PadN */
    size_t len = tso6_read(in, 60, dest_opts, 8, 3000);
    int n = ts_vnet_segment(in, len, seg, sizeof(seg), seg_len, 8);
    CHECK(n == 3);
    for (int i = 0, off = 0; i < n && n == 3; off += seg_len[i++]) {
        CHECK(seg_len[i] == 40 + 8 + 20 + 1000);
        CHECK(seg[off + 6] == 60 && seg[off + 40] == 6);   /* the extension header in each */
        CHECK(ts_be16(seg + off + 4) == seg_len[i] - 40);
    }
    uint8_t hop_then_rt[16] = {43, 0, 1, 4, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};   /* routing, 0 left */
    len = tso6_read(in, 0, hop_then_rt, 16, 3000);
    CHECK(ts_vnet_segment(in, len, seg, sizeof(seg), seg_len, 8) == 3);
    hop_then_rt[11] = 1;                                   /* segments left: refused */
    len = tso6_read(in, 0, hop_then_rt, 16, 3000);
    CHECK(ts_vnet_segment(in, len, seg, sizeof(seg), seg_len, 8) == -1);
    uint8_t frag[8] = {6, 0, 0, 0, 0, 0, 0, 1};
    len = tso6_read(in, 44, frag, 8, 3000);
    CHECK(ts_vnet_segment(in, len, seg, sizeof(seg), seg_len, 8) == -1);
    uint8_t long_opts[8] = {6, 255, 1, 4, 0, 0, 0, 0};    /* 2048 bytes claimed, the read is shorter */
    len = tso6_read(in, 60, long_opts, 8, 1000);
    CHECK(ts_vnet_segment(in, len, seg, sizeof(seg), seg_len, 8) == -1);
    static uint8_t big_opts[TS_GSO_V6_EXT_MAX + 8];       /* Pad1 options after the header */
    memset(big_opts, 0, sizeof(big_opts));
    big_opts[0] = 6;
    big_opts[1] = (uint8_t)(sizeof(big_opts) / 8 - 1);   /* within the read, over the cap: refused */
    len = tso6_read(in, 60, big_opts, sizeof(big_opts), 3000);
    CHECK(ts_vnet_segment(in, len, seg, sizeof(seg), seg_len, 8) == -1);
    big_opts[1]--;                                         /* exactly the cap: segmented */
    len = tso6_read(in, 60, big_opts, sizeof(big_opts) - 8, 3000);
    CHECK(ts_vnet_segment(in, len, seg, sizeof(seg), seg_len, 8) == 3);
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
