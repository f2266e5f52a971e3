/* The NAT-T port's classification (dp.c): the non-ESP marker decides, from any port, but for a
 * whole unmarked IKE_SA_INIT request, from any port (review revcsmall F3: a NAT may give a client's
 * port 500 another), whose event says it came unmarked; ESP, whatever its SPI looks like, from any
 * port, 500 too (a NAT that maps a client's 4500 there: review revcpath R2). */
#include "selftest.h"

/* ---- 8a. IKE_SA_INIT from port 500 on the NAT-T port (no marker), ESP from anywhere ---- */
/* an IKE header of `len` bytes (length field = `hlen`), IKE_SA_INIT request */
void ike_hdr(uint8_t *p, size_t len, uint32_t hlen) {
    memset(p, 0, len);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(0xa0 + i);   /* initiator SPI; the responder's is zero */
    p[16] = 33;                       /* SA payload */
    p[17] = 0x20;                     /* IKEv2 */
    p[18] = 34;                       /* IKE_SA_INIT */
    p[19] = 0x08;                     /* initiator */
    put32(p + 24, hlen);
}

void test_ike_port500(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    uint8_t key[20];
    rnd_fill(key, sizeof(key));
    ts_sa_params p;
    /* SPIs whose first bytes look like a marker, an IKE SPI or anything */
    static const uint32_t spis[] = {0x100, 0xa0a1a2a3u, 0x20222008u};
    for (size_t i = 0; i < 3; i++) {
        uint32_t spi;
        CHECK(ts_sad_getspi(dp, spis[i], spis[i], &spi) == TS_OK && spi == spis[i]);
        params(&p, spi, TS_DIR_IN, key, 20, false, 64, 0);
        CHECK(ts_sad_update(dp, &p) == TS_OK);
    }
    ts_addr from500, other;
    addr4(&from500, 7, 500);
    int drop;
    uint64_t d0[TS_DROP__COUNT], d1[TS_DROP__COUNT];
    ts_event ev;
    uint8_t got[512];

    /* an unmarked IKE_SA_INIT from port 500: the whole datagram up, sender's port kept */
    ike_hdr(bufA, 300, 300);
    CHECK(ts_dp_inbound(dp, bufA, 300, &from500, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 300 &&
          memcmp(got, bufA, 300) == 0 && ev.addr.port == 500 && ev.addr.addr[3] == 7 && ev.unmarked);
    /* from port 500 the marker is not one: four zero bytes are the start of the message */
    ike_hdr(bufA, 40, 40);
    memset(bufA, 0, 4);
    CHECK(ts_dp_inbound(dp, bufA, 40, &from500, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 40 &&
          memcmp(got, bufA, 40) == 0 && ev.unmarked);
    /* no whole header, or a length field that is not the datagram's: ESP, too short (counted) or
     * of one of our SPIs (its first word) that fails authentication; nothing up */
    ts_dp_drops(dp, d0);
    static const size_t lens[][2] = {{0, 0}, {27, 27}, {28, 29}, {29, 28}, {300, 0}, {300, 0xffffffffu}};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        if (lens[i][0] >= 28)
            ike_hdr(bufA, lens[i][0], (uint32_t)lens[i][1]);
        else
            rnd_fill(bufA, lens[i][0]);
        CHECK(ts_dp_inbound(dp, bufA, lens[i][0], &from500, NULL, bufC, CAP, &drop) == 0 &&
              drop == (lens[i][0] < 300 ? TS_DROP_MALFORMED : TS_DROP_AUTH));
    }
    /* an unmarked header that is no IKE_SA_INIT request (a response, another exchange, a responder
     * SPI, the response flag): ESP from port 500 too, here of our SPI 0xa0a1a2a3 */
    static const struct { size_t off; uint8_t val; } not_init[] = {{18, 35}, {19, 0x28}, {19, 0x20}, {12, 1}, {17, 0x10}};
    for (size_t i = 0; i < sizeof(not_init) / sizeof(not_init[0]); i++) {
        ike_hdr(bufA, 300, 300);
        bufA[not_init[i].off] = not_init[i].val;
        CHECK(ts_dp_inbound(dp, bufA, 300, &from500, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_AUTH);
    }
    /* longer than TS_IKE_MAX_MESSAGE, from port 500 or marked from anywhere: counted, nothing up
     * (the control process would drop it unparsed); the longest one allowed goes up */
    ts_addr natt;
    addr4(&natt, 7, 4500);
    uint8_t big[TS_IKE_MAX_MESSAGE + 1];
    ike_hdr(bufA, TS_IKE_MAX_MESSAGE + 1, TS_IKE_MAX_MESSAGE + 1);
    CHECK(ts_dp_inbound(dp, bufA, TS_IKE_MAX_MESSAGE + 1, &from500, NULL, bufC, CAP, &drop) == 0 &&
          drop == TS_DROP_IKE_TOO_BIG);
    memset(bufA, 0, 4);   /* the non-ESP marker, then the message */
    ike_hdr(bufA + 4, TS_IKE_MAX_MESSAGE + 1, TS_IKE_MAX_MESSAGE + 1);
    CHECK(ts_dp_inbound(dp, bufA, TS_IKE_MAX_MESSAGE + 5, &natt, NULL, bufC, CAP, &drop) == 0 &&
          drop == TS_DROP_IKE_TOO_BIG);
    CHECK(ts_dp_next_event(dp, &ev, big, sizeof(big)) == 0);
    ike_hdr(bufA + 4, TS_IKE_MAX_MESSAGE, TS_IKE_MAX_MESSAGE);
    CHECK(ts_dp_inbound(dp, bufA, TS_IKE_MAX_MESSAGE + 4, &natt, NULL, bufC, CAP, &drop) == 0 &&
          drop == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, big, sizeof(big)) == 1 && ev.type == TS_EV_IKE &&
          ev.data_len == TS_IKE_MAX_MESSAGE && memcmp(big, bufA + 4, TS_IKE_MAX_MESSAGE) == 0 && !ev.unmarked);
    /* a keepalive from port 500 is still a keepalive */
    CHECK(ts_dp_inbound(dp, (const uint8_t *)"\xff", 1, &from500, NULL, bufC, CAP, &drop) == 0 &&
          drop == TS_DROP_KEEPALIVE);
    ts_dp_drops(dp, d1);
    CHECK(d1[TS_DROP_MALFORMED] - d0[TS_DROP_MALFORMED] == 4);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 0);

    /* a client whose port 4500 a NAT maps to public port 500: its marked IKE goes up without the
     * marker, whatever its exchange, and its ESP is decrypted, whatever its SPI looks like */
    ike_hdr(bufA + 4, 200, 200);
    bufA[4 + 12] = 0x5a;   /* the responder's SPI: an established IKE SA */
    bufA[4 + 18] = 37;     /* INFORMATIONAL */
    memset(bufA, 0, 4);
    CHECK(ts_dp_inbound(dp, bufA, 204, &from500, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.type == TS_EV_IKE && ev.data_len == 200 &&
          memcmp(got, bufA + 4, 200) == 0 && ev.addr.port == 500 && !ev.unmarked);
    uint32_t seq500 = 20;   /* ahead of the 1-15 below, within their window */
    for (size_t k = 0; k < 3; k++) {
        size_t len = make_inner(4, 10, false, bufA);
        size_t el = ref_seal(key, 20, spis[k], seq500++, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
        int m = ts_dp_inbound(dp, bufB, el, &from500, NULL, bufC, CAP, &drop);
        CHECK(m == (int)len && drop == TS_DROP_NONE && memcmp(bufC, bufA, len) == 0);
    }

    /* from any other port: the same unmarked IKE_SA_INIT request is IKE too (said unmarked), a
     * header that is no such request is ESP (its first word one of our ESP SPIs: it fails
     * authentication), and genuine ESP, whatever its SPI looks like, is decrypted */
    static const uint16_t ports[] = {4500, 501, 1, 5000, 40500, 65535};
    uint32_t seq = 1;
    for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
        addr4(&other, 7, ports[i]);
        ike_hdr(bufA, 300, 300);
        CHECK(ts_dp_inbound(dp, bufA, 300, &other, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NONE);
        CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.type == TS_EV_IKE && ev.unmarked &&
              ev.data_len == 300 && ev.addr.port == ports[i]);
        for (size_t j = 0; j < sizeof(not_init) / sizeof(not_init[0]); j++) {
            ike_hdr(bufA, 300, 300);
            bufA[not_init[j].off] = not_init[j].val;
            CHECK(ts_dp_inbound(dp, bufA, 300, &other, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_AUTH);
        }
        CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 0);
        for (size_t k = 0; k < 3; k++) {
            size_t len = make_inner(4, 10, false, bufA);
            size_t el = ref_seal(key, 20, spis[k], seq++, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
            int m = ts_dp_inbound(dp, bufB, el, &other, NULL, bufC, CAP, &drop);
            CHECK(m == (int)len && drop == TS_DROP_NONE && memcmp(bufC, bufA, len) == 0);
        }
    }
    /* without a sender (single packets in benchmarks) too */
    ike_hdr(bufA, 300, 300);
    CHECK(ts_dp_inbound(dp, bufA, 300, NULL, NULL, bufC, CAP, &drop) == 0 && drop == TS_DROP_NONE);
    CHECK(ts_dp_next_event(dp, &ev, got, sizeof(got)) == 1 && ev.unmarked);
    ts_dp_free(dp);
}
