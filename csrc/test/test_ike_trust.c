/* IKE of established IKE SAs (ikespi.c, events.c): a datagram whose header names one of our SPIs
 * the control process added has a reserve in the event queue that datagrams of unknown SPIs, from
 * any number of spoofed senders, cannot take; within it each peer (all its IKE SAs) and each
 * sender address has a share; an SPI removed loses the reserve.  The set itself: bounded, and
 * correct through deletes (backward shift). */
#include "selftest.h"

#define UNKNOWN_ROOM (TS_EVENT_CAP / 2 - TS_IKE_RESERVED - TS_IKE_PROVEN_RESERVED)
#define OURS 0x1122334455667788ull

/* marker + an IKE header of len - 4 bytes: from the initiator (I flag) our SPI is SPIr, from
 * the responder SPIi; the other SPI is the peer's */
static size_t ike_msg(uint8_t *p, size_t len, uint64_t ours, bool from_initiator) {
    put32(p, 0);
    uint8_t *h = p + 4;
    memset(h, 0, len - 4);
    for (int i = 0; i < 8; i++) {
        h[(from_initiator ? 8 : 0) + i] = (uint8_t)(ours >> (56 - 8 * i));
        h[(from_initiator ? 0 : 8) + i] = (uint8_t)(0xc0 + i);
    }
    h[16] = 0;      /* no payload: a DPD's empty INFORMATIONAL (encrypted in real life) */
    h[17] = 0x20;
    h[18] = 37;     /* INFORMATIONAL */
    h[19] = from_initiator ? 0x08 : 0x20;
    put32(h + 24, (uint32_t)(len - 4));
    return len;
}

static int from(ts_dp *dp, const uint8_t *p, size_t len, const ts_addr *src) {
    int drop = -1;
    CHECK(ts_dp_inbound(dp, p, len, src, NULL, bufC, CAP, &drop) == 0);
    return drop;
}

/* spoofed senders 10.66.x.y, as many as it takes, each up to its share: the unknown room full */
static void flood(ts_dp *dp, const uint8_t *junk, size_t len, int *queued, int *full) {
    for (int i = 0; i < 64 * TS_IKE_PER_SOURCE; i++) {
        ts_addr a;
        addr4(&a, (uint8_t)(1 + i % 250), 4500);
        a.addr[1] = 66;
        a.addr[2] = (uint8_t)(i / 250);
        int drop = from(dp, junk, len, &a);
        *queued += drop == TS_DROP_NONE;
        *full += drop == TS_DROP_QUEUE_FULL;
        CHECK(drop == TS_DROP_NONE || drop == TS_DROP_QUEUE_FULL || drop == TS_DROP_IKE_SOURCE_LIMIT);
    }
}

/* pops every event: how many IKE ones, and of those how many flagged known */
static int drain(ts_dp *dp, int *known) {
    ts_event ev;
    int n = 0;
    *known = 0;
    while (ts_dp_next_event(dp, &ev, bufC, CAP) == 1)
        if (ev.type == TS_EV_IKE) {
            n++;
            *known += ev.known;
        }
    return n;
}

void test_ike_known_reserve(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_ike_spi_add(dp, OURS, 0) == TS_OK);
    static uint8_t junk[304], mine[120];
    size_t jlen = 304;
    put32(junk, 0);
    ike_hdr(junk + 4, jlen - 4, (uint32_t)(jlen - 4));   /* IKE_SA_INIT requests: SPIr 0, unknown */
    int queued = 0, full = 0;
    flood(dp, junk, jlen, &queued, &full);
    CHECK(queued == UNKNOWN_ROOM && full > 0);
    uint64_t full_before = drop_count(dp, TS_DROP_QUEUE_FULL);
    /* the established peer's DPD, both ways round, from its own address or one of the flood's */
    ts_addr peer, spoofed;
    addr4(&peer, 200, 4500);
    addr4(&spoofed, 1, 4500);
    spoofed.addr[1] = 66;
    size_t mlen = ike_msg(mine, 80, OURS, false);
    CHECK(from(dp, mine, mlen, &peer) == TS_DROP_NONE);
    CHECK(from(dp, mine, mlen, &spoofed) == TS_DROP_NONE);   /* its source's share spent: not its own */
    ike_msg(mine, 80, OURS, true);
    CHECK(from(dp, mine, mlen, &peer) == TS_DROP_NONE);
    /* our SPI on the wrong side for the I flag is no one's: the unknown room is full */
    ike_msg(mine, 80, OURS, false);
    mine[4 + 19] = 0x08;
    CHECK(from(dp, mine, mlen, &peer) == TS_DROP_QUEUE_FULL);
    CHECK(drop_count(dp, TS_DROP_QUEUE_FULL) == full_before + 1);
    /* one SA (a peer of its own) may fill its peer's share of the reserve, no more, counted apart
     * from the unknown ones */
    ike_msg(mine, 80, OURS, false);
    int more = 0;
    while (from(dp, mine, mlen, &peer) == TS_DROP_NONE)
        more++;
    CHECK(more == TS_IKE_PER_PEER - 3 && drop_count(dp, TS_DROP_IKE_KNOWN_SHARE) == 1);
    /* other peers, each from an address of its own, fill the rest of the reserve, and then find it full */
    int sas = 0, known_queued = TS_IKE_PER_PEER;
    for (uint64_t spi = OURS + 1; drop_count(dp, TS_DROP_IKE_KNOWN_FULL) == 0; spi++) {
        FATAL_IF(++sas > 64);
        CHECK(ts_dp_ike_spi_add(dp, spi, 0) == TS_OK);
        ike_msg(mine, 80, spi, sas % 2);
        ts_addr own;
        addr4(&own, (uint8_t)(100 + sas), 4500);
        /* up to its peer's share; if three of the addresses share a slot, the third pushes the
         * biggest peer's oldest out of the source's share (counted) and may never reach its own */
        int d = TS_DROP_NONE;
        for (int i = 0; i <= TS_IKE_PER_PEER && d == TS_DROP_NONE; i++, known_queued += d == TS_DROP_NONE) {
            d = from(dp, mine, mlen, &own);
            CHECK(d == TS_DROP_NONE || d == TS_DROP_IKE_KNOWN_SHARE || d == TS_DROP_IKE_KNOWN_FULL);
        }
    }
    /* the reserve, and the tagged datagrams' reserve while they leave it free */
    CHECK(known_queued - (int)drop_count(dp, TS_DROP_IKE_KNOWN_SOURCE) == TS_IKE_RESERVED + TS_IKE_PROVEN_RESERVED
          && drop_count(dp, TS_DROP_QUEUE_FULL) == full_before + 1);
    /* the rest of the queue is still EXPIRE's and ACQUIRE's: an INVALID_SPI goes up */
    uint8_t esp[48];
    memset(esp, 0x5a, sizeof(esp));
    put32(esp, 0x7777);
    CHECK(from(dp, esp, sizeof(esp), &peer) == TS_DROP_NO_SA);
    int known, ike = drain(dp, &known);
    CHECK(ike == TS_EVENT_CAP / 2 && known == TS_IKE_RESERVED + TS_IKE_PROVEN_RESERVED);
    /* every share came back with the pops: the SA's whole share again */
    ike_msg(mine, 80, OURS, false);
    for (int i = 0; i < TS_IKE_PER_PEER; i++)
        CHECK(from(dp, mine, mlen, &peer) == TS_DROP_NONE);
    CHECK(from(dp, mine, mlen, &peer) == TS_DROP_IKE_KNOWN_SHARE);
    drain(dp, &known);
    CHECK(known == TS_IKE_PER_PEER);
    /* removed (the IKE SA deleted): its datagrams are anyone's again, and the flood's room is full */
    CHECK(ts_dp_ike_spi_delete(dp, OURS) == TS_OK && ts_dp_ike_spi_delete(dp, OURS) == TS_ENOENT);
    queued = full = 0;
    flood(dp, junk, jlen, &queued, &full);
    CHECK(queued == UNKNOWN_ROOM);
    uint64_t share = drop_count(dp, TS_DROP_IKE_KNOWN_SHARE), kfull = drop_count(dp, TS_DROP_IKE_KNOWN_FULL);
    CHECK(from(dp, mine, mlen, &peer) == TS_DROP_QUEUE_FULL);
    CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_SHARE) == share && drop_count(dp, TS_DROP_IKE_KNOWN_FULL) == kfull);
    ike = drain(dp, &known);
    CHECK(ike == UNKNOWN_ROOM && known == 0);
    ts_dp_free(dp);
}

/* 40 datagrams for each of 40 IKE SAs, all from one source; returns how many more wait (queued,
 * less those they pushed out of their source's share) */
static int forty_by_forty(ts_dp *dp, uint64_t first_spi, uint64_t peer_id, const ts_addr *src, bool spoof) {
    static uint8_t msg[84];
    int queued = (int)drop_count(dp, TS_DROP_IKE_KNOWN_SOURCE);
    for (uint64_t spi = first_spi; spi < first_spi + 40; spi++) {
        CHECK(ts_dp_ike_spi_add(dp, spi, peer_id) == TS_OK);
        ike_msg(msg, sizeof(msg), spi, true);
        for (int i = 0; i < 40; i++) {
            ts_addr a = *src;
            if (spoof)
                a.addr[3] = (uint8_t)(i + 1);   /* a new spoofed address each time */
            int d = from(dp, msg, sizeof(msg), &a);
            CHECK(d == TS_DROP_NONE || d == TS_DROP_IKE_KNOWN_SHARE);
            queued += d == TS_DROP_NONE;
        }
    }
    return queued - (int)drop_count(dp, TS_DROP_IKE_KNOWN_SOURCE);
}

static unsigned peer_slot(ts_dp *dp, uint64_t peer) {
    return (unsigned)(ts_ike_spi_hash(&dp->ike_spis, peer) >> 32) & (TS_IKE_PEER_SLOTS - 1);
}

/* ids from first on whose peer slots are apart from each other and from the n_taken in taken[]
 * (keyed hashes, random per context: peers in one slot share one share) */
static void peers_apart(ts_dp *dp, uint64_t first, uint64_t *ids, int n, int n_taken) {
    for (int i = n_taken; i < n_taken + n; i++) {
        bool clash;
        do {
            ids[i] = first++;
            clash = false;
            for (int j = 0; j < i; j++)
                clash |= ts_test_ike_peer_slot(dp, ids[j]) == ts_test_ike_peer_slot(dp, ids[i]);
        } while (clash);
    }
}

/* the victims still pass: another peer's known datagram from its own address, and a new client's
 * IKE_SA_INIT.  Their slots (keyed hashes, random per context) picked apart from the attacker's:
 * one that shares a slot shares its fate, which is what the slots' number makes rare */
static bool shares_slot(ts_dp *dp, uint64_t peer, uint64_t first, uint64_t n) {
    for (uint64_t p = first; p < first + n; p++)
        if (peer_slot(dp, peer) == peer_slot(dp, p))
            return true;
    return false;
}

/* the first of 40 SPIs in a row whose peer slots (keyed hashes, random per context) are all
 * apart, so each is its own peer's share; about half of all runs of 40 are */
static uint64_t forty_apart(ts_dp *dp, uint64_t first) {
    for (;; first += 40) {
        bool apart = true;
        for (uint64_t p = first + 1; p < first + 40 && apart; p++)
            apart = !shares_slot(dp, p, first, p - first);
        if (apart)
            return first;
    }
}

static void others_pass(ts_dp *dp, const ts_addr *attacker, uint64_t attacker_peers, uint64_t n) {
    static uint8_t msg[84], init[84];
    ts_addr victim, client;
    addr4(&victim, 9, 4500);
    victim.addr[0] = 203;
    while (ts_test_ike_known_source_slot(dp, &victim) == ts_test_ike_known_source_slot(dp, attacker))
        victim.addr[3]++;
    addr4(&client, 44, 4500);
    client.addr[0] = 192;
    uint64_t vpeer = 0x7777;
    while (shares_slot(dp, vpeer, attacker_peers, n))
        vpeer++;
    CHECK(ts_dp_ike_spi_add(dp, 0x7777777777777777ull, vpeer) == TS_OK);
    ike_msg(msg, sizeof(msg), 0x7777777777777777ull, false);
    CHECK(from(dp, msg, sizeof(msg), &victim) == TS_DROP_NONE);
    put32(init, 0);
    ike_hdr(init + 4, sizeof(init) - 4, (uint32_t)(sizeof(init) - 4));
    CHECK(from(dp, init, sizeof(init), &client) == TS_DROP_NONE);
}

/* An authenticated peer floods with its own SPIs from one address: IKE SAs of their own peer each
 * (no identity named) are held to the address's known share; those of one peer to the peer's share
 * whatever the address, spoofed ones too.  The others' IKE still goes up. */
void test_ike_known_one_peer(void) {
    ts_addr attacker;
    addr4(&attacker, 7, 4500);
    attacker.addr[0] = 198;
    for (int round = 0; round < 3; round++) {
        ts_dp *dp = ts_dp_new();
        FATAL_IF(!dp);
        int queued, known;
        uint64_t first = round ? 0x1000 : forty_apart(dp, 0x1000);
        if (round == 0) {   /* 40 peers of their own, one address */
            queued = forty_by_forty(dp, first, 0, &attacker, false);
            CHECK(queued == TS_IKE_KNOWN_PER_SOURCE);
            /* the first two fill their peers' shares and then the address's; each datagram of the
             * other 38 finds the address's share full and pushes out the oldest of the peer with
             * the most waiting, never reaching its own peer's share (a slot shared with the first
             * two would have been full first, which forty_apart rules out: it made this check fail
             * 1 run in 14) */
            CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_SHARE) == 2 * (40 - TS_IKE_PER_PEER));
            CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_SOURCE) == 38 * 40);
        } else {            /* one peer's 40 IKE SAs, from one address or spoofed ones */
            queued = forty_by_forty(dp, 0x1000, 0xabcdef, &attacker, round == 2);
            CHECK(queued == TS_IKE_PER_PEER);
            CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_SHARE) == 40 * 40 - TS_IKE_PER_PEER);
        }
        CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_FULL) == 0 && drop_count(dp, TS_DROP_QUEUE_FULL) == 0);
        others_pass(dp, &attacker, round ? 0xabcdef : first, round ? 1 : 40);
        CHECK(drain(dp, &known) == queued + 2 && known == queued + 1);
        /* the shares came back: the address (or the peer) may queue as many again */
        CHECK(forty_by_forty(dp, first + 0x1000, round ? 0xabcdef : 0, &attacker, round == 2) == queued);
        ts_dp_free(dp);
    }
}

/* The known share counts an IPv6 sender by its whole address, where the unknown ones' count its
 * /64 (review revfastfix F1): 40 road warriors of one LAN, 40 identities, each with one DPD waiting,
 * all go up (by /64 the 33rd on found the LAN's share full); and a peer with two identities filling
 * one address's share from the LAN leaves the others theirs. */
void test_ike_known_share_per_address(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    static uint8_t msg[84];
    ts_addr lan[40], spoofed = {.family = 6, .port = 4500};
    bool used[TS_IKE_SOURCE_SLOTS] = {false};
    for (int k = 0; k < 40; k++) {
        lan[k] = (ts_addr){.family = 6, .port = 4500};
        memcpy(lan[k].addr, A6, 16);
        put16(lan[k].addr + 14, (uint16_t)(0x1000 + k));
        used[ts_test_ike_known_source_slot(dp, &lan[k])] = true;
        CHECK(ts_test_ike_source_slot(dp, &lan[k]) == ts_test_ike_source_slot(dp, &lan[0]));   /* one /64 */
    }
    /* the attacker's address, of the same /64, in a slot none of theirs has (a keyed hash: a slot
     * shared by chance shares its share, which is what the 256 slots make rare) */
    memcpy(spoofed.addr, A6, 16);
    put16(spoofed.addr + 14, 0xf000);
    for (int i = 0; i < 255 && used[ts_test_ike_known_source_slot(dp, &spoofed)]; i++)
        spoofed.addr[15]++;
    uint64_t peers[43];   /* the attacker's three identities, the 40 clients', each its own share */
    peers_apart(dp, 1000, peers, 3, 0);
    peers_apart(dp, 1, peers, 40, 3);
    for (uint64_t a = 0; a < 2; a++) {
        CHECK(ts_dp_ike_spi_add(dp, 0x9000 + a, peers[a]) == TS_OK);
        ike_msg(msg, sizeof(msg), 0x9000 + a, true);
        for (int n = 0; n < TS_IKE_PER_PEER; n++)
            CHECK(from(dp, msg, sizeof(msg), &spoofed) == TS_DROP_NONE);
    }
    CHECK(ts_dp_ike_spi_add(dp, 0x9002, peers[2]) == TS_OK);   /* a third identity: the address's share is full */
    ike_msg(msg, sizeof(msg), 0x9002, true);
    CHECK(from(dp, msg, sizeof(msg), &spoofed) == TS_DROP_NONE);   /* the first identity's oldest out */
    CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_SOURCE) == 1);
    for (int k = 0; k < 40; k++) {
        CHECK(ts_dp_ike_spi_add(dp, 0x5000 + (uint64_t)k, peers[3 + k]) == TS_OK);
        ike_msg(msg, sizeof(msg), 0x5000 + (uint64_t)k, true);
        CHECK(from(dp, msg, sizeof(msg), &lan[k]) == TS_DROP_NONE);
    }
    int known;
    CHECK(drain(dp, &known) == 2 * TS_IKE_PER_PEER + 40 && known == 2 * TS_IKE_PER_PEER + 40);
    ts_dp_free(dp);
}

/* One address's share full, the biggest peer pays (events.c evict_known): two identities of an
 * insider fill a NAT's address; its other clients' datagrams then each push out the insider's
 * oldest (with the newcomer paying, every one of them was dropped), in order, and the share's
 * places stay right through pops and pushes in turn. */
void test_ike_known_source_biggest_pays(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    static uint8_t msg[84];
    ts_addr nat;
    addr4(&nat, 9, 4500);
    nat.addr[0] = 203;
    uint64_t peers[62];   /* the insider's two identities, the 20 clients', 40 more: each its own share */
    peers_apart(dp, 1000, peers, 2, 0);
    peers_apart(dp, 1, peers, 20, 2);
    for (uint64_t a = 0; a < 2; a++) {   /* 16 each, numbered in the message id */
        CHECK(ts_dp_ike_spi_add(dp, 0x9000 + a, peers[a]) == TS_OK);
        ike_msg(msg, sizeof(msg), 0x9000 + a, true);
        for (uint32_t n = 0; n < TS_IKE_PER_PEER; n++) {
            put32(msg + 4 + 20, (uint32_t)(a << 8 | n));
            CHECK(from(dp, msg, sizeof(msg), &nat) == TS_DROP_NONE);
        }
    }
    /* 20 clients behind the NAT, one DPD each: each pushes out the biggest identity's oldest */
    for (uint32_t k = 0; k < 20; k++) {
        CHECK(ts_dp_ike_spi_add(dp, 0x5000 + k, peers[2 + k]) == TS_OK);
        ike_msg(msg, sizeof(msg), 0x5000 + k, true);
        put32(msg + 4 + 20, 0x10000 | k);
        CHECK(from(dp, msg, sizeof(msg), &nat) == TS_DROP_NONE);
    }
    CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_SOURCE) == 20);
    /* with the IKE half full (other peers, each from its own address), the next of the NAT's pushes
     * out no one: it is dropped, counted ike_known_full, not ike_known_source */
    uint64_t *more = peers + 22;
    peers_apart(dp, 5000, peers, 40, 22);
    uint8_t last = 10;
    bool taken[TS_IKE_SOURCE_SLOTS] = {false};
    taken[ts_test_ike_known_source_slot(dp, &nat)] = true;
    for (int p = 0; p < 40 && drop_count(dp, TS_DROP_IKE_KNOWN_FULL) == 0; p++) {
        ts_addr own;   /* each in a slot of its own (keyed hash: a shared slot shares its share) */
        do
            addr4(&own, last++, 4500);
        while (taken[ts_test_ike_known_source_slot(dp, &own)]);
        taken[ts_test_ike_known_source_slot(dp, &own)] = true;
        CHECK(ts_dp_ike_spi_add(dp, 0xa000 + (uint64_t)p, more[p]) == TS_OK);
        ike_msg(msg, sizeof(msg), 0xa000 + (uint64_t)p, true);
        for (int i = 0; i < TS_IKE_PER_PEER && drop_count(dp, TS_DROP_IKE_KNOWN_FULL) == 0; i++)
            from(dp, msg, sizeof(msg), &own);
    }
    CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_FULL) == 1);
    ike_msg(msg, sizeof(msg), 0x5000, true);
    CHECK(from(dp, msg, sizeof(msg), &nat) == TS_DROP_IKE_KNOWN_FULL);
    CHECK(drop_count(dp, TS_DROP_IKE_KNOWN_SOURCE) == 20 && drop_count(dp, TS_DROP_IKE_KNOWN_FULL) == 2);
    /* what waits, in order: each identity's newest 6, then the 20 clients' */
    ts_event ev;
    uint32_t ids[64];
    int n = 0;
    while (n < 64 && ts_dp_next_event(dp, &ev, bufC, CAP) == 1 && ev.addr.addr[0] == 203)
        ids[n++] = ts_be32(bufC + 20);
    CHECK(n == TS_IKE_KNOWN_PER_SOURCE);
    int known;
    drain(dp, &known);   /* the other peers' */
    for (int i = 0; i < n; i++)
        CHECK(ids[i] == (i < 6 ? (uint32_t)(10 + i) : i < 12 ? (uint32_t)(0x100 | (10 + i - 6)) : (uint32_t)(0x10000 | (i - 12))));
    /* pops and pushes in turn keep the places right: the share refills and pushes out again */
    for (int round = 0; round < 3 * TS_IKE_KNOWN_PER_SOURCE; round++) {
        ike_msg(msg, sizeof(msg), 0x5000 + (uint64_t)(round % 20), true);
        put32(msg + 4 + 20, (uint32_t)round);
        CHECK(from(dp, msg, sizeof(msg), &nat) == TS_DROP_NONE);
        if (round % 3 == 0)
            CHECK(ts_dp_next_event(dp, &ev, bufC, CAP) == 1);
    }
    CHECK(drain(dp, &known) == TS_IKE_KNOWN_PER_SOURCE && known == TS_IKE_KNOWN_PER_SOURCE);
    ts_dp_free(dp);
}

void test_ike_spi_set(void) {
    ts_dp *dp = ts_dp_new();
    FATAL_IF(!dp);
    CHECK(ts_dp_ike_spi_add(dp, 0, 0) == TS_EINVAL);
    CHECK(ts_dp_ike_spi_delete(dp, 5) == TS_ENOENT);   /* nothing yet: no table */
    CHECK(ts_dp_ike_spi_add(dp, 5, 0) == TS_OK && ts_dp_ike_spi_add(dp, 5, 0) == TS_EEXIST);
    /* up to the bound, then no more: that SA just has no reserve */
    static uint64_t spis[TS_IKE_SPI_MAX];
    spis[0] = 5;
    for (size_t i = 1; i < TS_IKE_SPI_MAX; i++) {
        do
            spis[i] = rnd();
        while (spis[i] == 0 || spis[i] == 5);
        int rc = ts_dp_ike_spi_add(dp, spis[i], 0);
        CHECK(rc == TS_OK || rc == TS_EEXIST);   /* a 64-bit repeat: not in 2^16 draws, but harmless */
        if (rc == TS_EEXIST)
            i--;
    }
    CHECK(ts_dp_ike_spi_count(dp) == TS_IKE_SPI_MAX);
    CHECK(ts_dp_ike_spi_add(dp, 7, 0) == TS_ENOSPC && ts_dp_ike_spi_count(dp) == TS_IKE_SPI_MAX);
    /* every other one removed: the rest are all still found, the removed ones not (backward shift
     * keeps each probe sequence whole) */
    for (size_t i = 0; i < TS_IKE_SPI_MAX; i += 2)
        CHECK(ts_dp_ike_spi_delete(dp, spis[i]) == TS_OK);
    size_t found = 0, lost = 0;
    for (size_t i = 0; i < TS_IKE_SPI_MAX; i++) {
        bool has = ts_ike_spis_has(&dp->ike_spis, spis[i], NULL);
        found += has && i % 2;
        lost += !has && i % 2;
        CHECK(has == (i % 2 == 1));
    }
    CHECK(found == TS_IKE_SPI_MAX / 2 && lost == 0 && ts_dp_ike_spi_count(dp) == TS_IKE_SPI_MAX / 2);
    CHECK(ts_dp_ike_spi_add(dp, 7, 0) == TS_OK);
    ts_dp_free(dp);
}
