/* libFuzzer target: ts_dp_inbound, a UDP payload from the peer -> inner packet.
 *
 * Random bytes almost never pass the ICV, so the input is a script of up to
 * MAX_RECORDS datagrams sent one after another to the same context, each
 * either raw (the bytes as they arrive: keepalive, IKE marker, bad lengths,
 * unknown SPIs, ...) or "sealed": the harness encrypts the fuzzed plaintext
 * (inner packet, padding, pad length, next header) under the inbound SA's
 * key, so mutations reach the trailer, inner-header and selector checks, and
 * the fuzzed sequence numbers drive the replay window and ESN inference.
 *
 * record := flags:u8 len:u16be [seq:u64be iv:8]? body[len]
 *   flags bit0  sealed (seq and iv present; body = plaintext)
 *         bit1  SA B (AES-256-GCM, ESN, window 1024, soft/hard packet
 *               limits 3/6, no selectors) instead of SA A (AES-128-GCM,
 *               window 64, selectors 10.0.0.0/8 and fd00::/8 both ways)
 *         bit2  sealed: flip one bit of the tag (must be dropped as AUTH)
 *         bit3  a tight output buffer: (bits 6-7 + 1) quarters of the
 *               datagram's length instead of 64 KiB
 *         bit4  raw: write SA B's SPI over the first 4 bytes
 *         bit5  raw: write the larval SA's SPI over the first 4 bytes
 *         bit2  raw: sent from port 500 instead of 4500 (from either, an unmarked
 *               IKE_SA_INIT request goes up as IKE, said unmarked, never decrypted,
 *               review revcsmall F3; anything else is what it is from 4500: the
 *               marker decides, review revcpath R2)
 *         bit1  raw (review revcpath): IKE after the non-ESP marker that names our SPI
 *               (the harness writes marker, SPI, I flag and length field over the
 *               body, which needs 32 bytes or more): bit4 clear, the SPI of an
 *               established IKE SA (ts_dp_ike_spi_add: the reserve); bit4 set, an
 *               SPI carrying our tag for the sender's address (ts_dp_ike_spi_key,
 *               its high half from the body); bit5 clear: sent by the original
 *               initiator (our SPI is SPIr), set: by the responder (SPIi)
 * Such IKE must go up marked as what it is (known with its peer, or proven), within the
 * shares; anything else never is.  SA B holds a reservation (ts_sad_reserve, LIMIT_B): a number
 * above it is never delivered, and raises at most one RESERVE naming it.
 * An ICMP error that gets through must quote a packet inside A's selectors (an ICMPv6 one
 * found behind any number of extension headers); nothing that gets through carries a source
 * route with hops to go (behind AH too, or a spent IPv6 one before an IP header) or an option or header
 * chain cut short (fz_source_routed).
 * SA A is armed with report_first_use: one FIRST_USE at most per input, never
 * without an untampered record with A's SPI, and always once one got through.
 * Both SAs are re-created before every input, so each input starts from the
 * same state and a crash reproduces from its file alone. */
#include "fuzz_util.h"

#define SPI_A 0x1000u
#define SPI_B 0x2000u
#define SPI_LARVAL 0x3000u
#define MAX_RECORDS 16
#define KNOWN_IKE_SPI 0x0123456789abcdefull
#define KNOWN_PEER 77u
#define LIMIT_B (0x100000000ull + 0x40000000ull)   /* past the seeds' numbers (esn-wrap crosses 2^32) */
static const uint8_t TAG_KEY[16] = "tunsec-tag-key!!";

static const uint8_t KEY_A[20] = "0123456789abcdefSALT";
static const uint8_t KEY_B[36] = "0123456789abcdef0123456789abcdefsalt";

static ts_dp *dp;
static uint8_t datagram[TS_MAX_PACKET + 64];

static void key_in(uint32_t spi, const uint8_t *key, uint8_t keylen, uint8_t esn, uint32_t window) {
    uint32_t got = 0;
    ts_sad_delete(dp, spi, TS_DIR_IN, NULL);
    FUZZ_SETUP(ts_sad_getspi(dp, spi, spi, &got) == TS_OK && got == spi);
    ts_sa_params p;
    fz_params(&p, spi, TS_DIR_IN, key, keylen, esn, window);
    if (spi == SPI_A) {
        static const uint8_t net4[1] = {10}, net6[1] = {0xfd};
        p.n_sel = 2;
        fz_sel(&p.sel[0], 4, net4, 1, net4, 1);
        fz_sel(&p.sel[1], 6, net6, 1, net6, 1);
        p.report_first_use = 1;
    } else {
        p.soft_packets = 3;
        p.hard_packets = 6;
    }
    FUZZ_SETUP(ts_sad_update(dp, &p) == TS_OK);
    if (spi == SPI_B)
        FUZZ_SETUP(ts_sad_reserve(dp, SPI_B, TS_DIR_IN, NULL, LIMIT_B, 0) == TS_OK);
}

static void put64(uint8_t *p, uint64_t v) {
    fz_put32(p, (uint32_t)(v >> 32));
    fz_put32(p + 4, (uint32_t)v);
}

/* raw bit1: marker, our SPI (known or tagged for src) where the I flag says, the length field;
 * 1 = known, 2 = tagged, 0 = too short to be made one */
static int make_ike(uint8_t *d, size_t len, uint8_t flags, const ts_addr *src) {
    if (len < 4 + 28)
        return 0;
    uint8_t *ike = d + 4;
    fz_put32(d, 0);
    uint64_t spi = KNOWN_IKE_SPI;
    if (flags & 0x10) {
        uint32_t r = fz_be32(ike + ((flags & 0x20) ? 0 : 8)) | 1u;   /* nonzero: an SPI */
        spi = (uint64_t)r << 32 | ts_ike_spi_tag(TAG_KEY, r, src);
    }
    if (flags & 0x20)
        ike[19] &= (uint8_t)~0x08;
    else
        ike[19] |= 0x08;
    put64(ike + ((flags & 0x20) ? 0 : 8), spi);
    fz_put32(ike + 24, (uint32_t)(len - 4));
    return (flags & 0x10) ? 2 : 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    dp = ts_dp_new();
    FUZZ_SETUP(dp != NULL);
    uint32_t got = 0;
    FUZZ_SETUP(ts_sad_getspi(dp, SPI_LARVAL, SPI_LARVAL, &got) == TS_OK);
    FUZZ_SETUP(ts_dp_ike_spi_add(dp, KNOWN_IKE_SPI, KNOWN_PEER) == TS_OK);
    FUZZ_SETUP(ts_dp_ike_spi_key(dp, TAG_KEY) == TS_OK);
    return 0;
}

/* SPI | seq_lo | IV | AES-GCM(plaintext) | ICV, as a peer would send it */
static size_t seal(int which_b, uint64_t seq, const uint8_t *iv, const uint8_t *pt, size_t len, int bad_tag) {
    uint32_t spi = which_b ? SPI_B : SPI_A;
    const uint8_t *key = which_b ? KEY_B : KEY_A;
    size_t keylen = which_b ? 32 : 16;
    uint8_t aad[12], nonce[12];
    size_t aadlen;
    fz_put32(aad, spi);
    if (which_b) {    /* ESN: the high half is in the AAD, never on the wire */
        fz_put32(aad + 4, (uint32_t)(seq >> 32));
        fz_put32(aad + 8, (uint32_t)seq);
        aadlen = 12;
    } else {
        fz_put32(aad + 4, (uint32_t)seq);
        aadlen = 8;
    }
    memcpy(nonce, key + keylen, 4);
    memcpy(nonce + 4, iv, 8);
    fz_put32(datagram, spi);
    fz_put32(datagram + 4, (uint32_t)seq);
    memcpy(datagram + 8, iv, 8);
    FUZZ_SETUP(ts_gcm_seal(key, keylen, nonce, aad, aadlen, pt, len, datagram + 16, datagram + 16 + len) == TS_OK);
    if (bad_tag)
        datagram[16 + len + (seq & 15)] ^= (uint8_t)(1u << (iv[0] & 7));
    return 16 + len + 16;
}

/* where an IPv6 packet's upper-layer header starts, past every extension header however many
 * (as Linux walks them), and its protocol; 0 for a chain cut short or a later fragment.  The
 * oracle's own walk, not spd.c's: a cap shared with it would hide what it misses. */
static size_t upper6(const uint8_t *p, size_t n, uint8_t *proto) {
    size_t off = 40;
    uint8_t nh = p[6];
    while (nh == 0 || nh == 43 || nh == 60 || nh == 44) {
        if (off + 8 > n || (nh == 44 && (fz_be16(p + off + 2) & 0xfff8)))
            return 0;
        size_t hl = nh == 44 ? 8 : ((size_t)p[off + 1] + 1) * 8;
        nh = p[off];
        off += hl;
    }
    *proto = nh;
    return off < n ? off : 0;
}

/* an unmarked IKE_SA_INIT request (RFC 7296 §3.1), the oracle's own reading: IKEv2, the
 * initiator's request, the responder's SPI zero, the length field the datagram's */
static int sa_init_request(const uint8_t *p, size_t n) {
    if (n < 28 || p[17] != 0x20 || p[18] != 34 || (p[19] & 0x28) != 0x08 || fz_be32(p + 24) != n)
        return 0;
    for (int i = 8; i < 16; i++)
        if (p[i])
            return 0;
    return 1;
}

static void check_inner(const uint8_t *out, int n, size_t outcap) {
    FUZZ_ASSERT((size_t)n <= outcap);
    FUZZ_ASSERT(out[0] >> 4 == 4 || out[0] >> 4 == 6);
    if (out[0] >> 4 == 4)
        FUZZ_ASSERT(n >= 20 && fz_be16(out + 2) == (uint16_t)n);
    else
        FUZZ_ASSERT(n >= 40 && fz_be16(out + 4) + 40u == (unsigned)n);
    /* no source route with hops to go, no option cut short, gets through (review revesp F1) */
    FUZZ_ASSERT(fz_source_routed(out, (size_t)n) == 0);
    /* an ICMP error that got through (SA A: SA B has no selectors) quotes a whole IP header
     * of its family inside A's selectors (RFC 4301 §6.2; only the simple layouts checked) */
    if (out[0] == 0x45 && out[9] == 1 && (fz_be16(out + 6) & 0x1fff) == 0 && n > 20) {
        uint8_t t = out[20];
        const uint8_t *q = out + 28;
        if (t == 3 || t == 4 || t == 5 || t == 11 || t == 12)
            FUZZ_ASSERT(n >= 48 && q[0] >> 4 == 4 && (q[0] & 15) >= 5 && (q[0] & 15) * 4 <= n - 28 &&
                        q[12] == 10 && q[16] == 10);
    }
    uint8_t proto = 0;
    size_t l4 = out[0] >> 4 == 6 ? upper6(out, (size_t)n, &proto) : 0;
    if (l4 && proto == 58 && out[l4] < 128) {
        const uint8_t *q = out + l4 + 8;
        FUZZ_ASSERT((size_t)n >= l4 + 48 && q[0] >> 4 == 6 && q[8] == 0xfd && q[24] == 0xfd);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    key_in(SPI_A, KEY_A, 20, 0, 64);
    key_in(SPI_B, KEY_B, 36, 1, 1024);
    fz_in in = {data, size};
    ts_addr src, src500, local;
    fz_addr4(&src, 192, 0, 2, 1, 4500);
    fz_addr4(&src500, 192, 0, 2, 1, 500);
    fz_addr4(&local, 192, 0, 2, 2, 4500);
    int a_sent = 0, a_through = 0;   /* records with SA A's SPI (not tampered with): sent, delivered */
    int known_q = 0, proven_q = 0;   /* raw bit1 records queued up: known, tagged */
    for (int r = 0; r < MAX_RECORDS && in.n; r++) {
        uint8_t flags = fz_u8(&in);
        size_t want = fz_u16(&in), len = 0, dlen;
        int sealed = flags & 1, bad_tag = 0, from500 = !sealed && (flags & 4), ike_kind = 0;
        uint64_t seq = 0;
        if (sealed) {
            seq = fz_u64(&in);
            uint8_t iv[8];
            for (int i = 0; i < 8; i++)
                iv[i] = fz_u8(&in);
            const uint8_t *pt = fz_take(&in, want, &len);
            if (len > TS_MAX_PACKET - 32)
                len = TS_MAX_PACKET - 32;
            bad_tag = (flags >> 2) & 1;
            dlen = seal((flags >> 1) & 1, seq, iv, pt, len, bad_tag);
        } else {
            const uint8_t *raw = fz_take(&in, want, &len);
            dlen = len;
            memcpy(datagram, raw, len);
            if (!from500 && (flags & 2))
                ike_kind = make_ike(datagram, len, flags, &src);
            if (!ike_kind && len >= 4 && (flags & 0x10))
                fz_put32(datagram, SPI_B);
            if (!ike_kind && len >= 4 && (flags & 0x20))
                fz_put32(datagram, SPI_LARVAL);
        }
        size_t outcap = (flags & 8) ? dlen * (((flags >> 6) & 3) + 1) / 4 : TS_MAX_PACKET;
        uint8_t *out = malloc(outcap ? outcap : 1);
        FUZZ_SETUP(out != NULL);
        /* the datagram in a buffer of its own size: reads past it are caught */
        uint8_t *udp = fz_dup(datagram, dlen);
        int drop = -1;
        int n = ts_dp_inbound(dp, udp, dlen, from500 ? &src500 : &src, &local, out, outcap, &drop);
        /* raw ones too: the seeds hold sealed packets (from port 500 as well: ESP, unless an
         * unmarked IKE_SA_INIT request, from either port) */
        int init_req = !sealed && sa_init_request(udp, dlen);
        int for_a = !init_req && dlen >= 4 && fz_be32(udp) == SPI_A;
        a_sent += for_a && !bad_tag;
        a_through |= for_a && n > 0;
        if (fz_trace())
            fprintf(stderr, "record %d: %s %zu bytes -> %d, drop %d\n", r, sealed ? "sealed" : "raw", dlen, n, drop);
        FUZZ_ASSERT(n >= 0 && drop >= 0 && drop < TS_DROP__COUNT);
        FUZZ_ASSERT((n > 0) == (drop == TS_DROP_NONE) || (n == 0 && dlen >= 4 && fz_be32(udp) == 0) ||
                    (n == 0 && init_req));
        /* an unmarked IKE_SA_INIT request, from any port, is IKE (an event), or one refused for its
         * sender's share or as too long to go up (TS_IKE_MAX_MESSAGE): never ESP */
        if (init_req)
            FUZZ_ASSERT(n == 0 && (drop == TS_DROP_NONE || drop == TS_DROP_QUEUE_FULL ||
                                   drop == TS_DROP_IKE_SOURCE_LIMIT || drop == TS_DROP_IKE_TOO_BIG));
        if (n > 0) {
            check_inner(out, n, outcap);
            FUZZ_ASSERT(!bad_tag);   /* nothing unauthenticated gets through */
            FUZZ_ASSERT((size_t)n + 2 <= (sealed ? len : dlen));
        }
        if (bad_tag)
            FUZZ_ASSERT(drop != TS_DROP_NONE);
        /* SA B's reservation: nothing above it gets past it (to its selectors: SA B has none, so a
         * number within it ends as a policy drop at best).  The ICV passes only with the harness's
         * number as the one inferred. */
        if (sealed && (flags & 2) && !bad_tag && seq > LIMIT_B)
            FUZZ_ASSERT(n == 0 && drop != TS_DROP_POLICY && drop != TS_DROP_DUMMY && drop != TS_DROP_ICMP_QUOTE);
        /* IKE naming our SPI: queued, or refused for its shares only (or as too big) */
        if (ike_kind == 1)
            FUZZ_ASSERT(drop == TS_DROP_NONE || drop == TS_DROP_IKE_KNOWN_SHARE || drop == TS_DROP_IKE_KNOWN_SOURCE ||
                        drop == TS_DROP_IKE_KNOWN_FULL || drop == TS_DROP_IKE_TOO_BIG);
        if (ike_kind == 2)
            FUZZ_ASSERT(drop == TS_DROP_NONE || drop == TS_DROP_IKE_PROVEN_SOURCE || drop == TS_DROP_IKE_PROVEN_FULL ||
                        drop == TS_DROP_IKE_TOO_BIG);
        known_q += ike_kind == 1 && drop == TS_DROP_NONE;
        proven_q += ike_kind == 2 && drop == TS_DROP_NONE;
        free(udp);
        free(out);
    }
    int first_use = 0, known_up = 0, proven_up = 0, reserves = 0;
    ts_event ev;
    static uint8_t evbuf[TS_MAX_PACKET];
    while (ts_dp_next_event(dp, &ev, evbuf, sizeof(evbuf)) == 1) {
        if (ev.type == TS_EV_FIRST_USE) {
            FUZZ_ASSERT(ev.spi == SPI_A);
            first_use++;
        }
        /* IKE goes up only as a whole header whose length field is the message's */
        if (ev.type == TS_EV_IKE)
            FUZZ_ASSERT(ev.data_len >= 28 && fz_be32(evbuf + 24) == ev.data_len);
        /* said unmarked only of a whole IKE_SA_INIT request (its answer goes back unmarked) */
        if (ev.type == TS_EV_IKE && ev.unmarked)
            FUZZ_ASSERT(sa_init_request(evbuf, ev.data_len));
        /* known only with our established SA's SPI, and then with its peer; proven only if not known */
        if (ev.type == TS_EV_IKE && ev.known) {
            uint64_t ours = fz_be64(evbuf + ((evbuf[19] & 0x08) ? 8 : 0));
            FUZZ_ASSERT(ours == KNOWN_IKE_SPI && ev.peer == KNOWN_PEER && !ev.proven);
            known_up++;
        }
        if (ev.type == TS_EV_IKE && ev.proven) {
            uint64_t ours = fz_be64(evbuf + ((evbuf[19] & 0x08) ? 8 : 0));
            FUZZ_ASSERT((uint32_t)ours == ts_ike_spi_tag(TAG_KEY, (uint32_t)(ours >> 32), &src));
            proven_up++;
        }
        /* one RESERVE per reservation, for a number above it */
        if (ev.type == TS_EV_RESERVE) {
            FUZZ_ASSERT(ev.spi == SPI_B && ev.seq > LIMIT_B);
            reserves++;
        }
    }
    FUZZ_ASSERT(first_use <= 1 && first_use <= a_sent && first_use >= a_through);
    /* every one queued goes up (one peer from one address: its share, 16, is full before its
     * sender's, 32, so none is evicted); other raw records may name these SPIs too */
    FUZZ_ASSERT(known_up >= known_q && proven_up >= proven_q && reserves <= 1);
    fz_drain_events(dp);
    ts_sa_info info;
    FUZZ_ASSERT(ts_sad_get(dp, SPI_B, TS_DIR_IN, NULL, &info) == TS_OK);
    FUZZ_ASSERT(info.counters[TS_CTR_PACKETS] <= 6);    /* the hard limit holds */
    return 0;
}
