/* Anti-replay (replay.c): the SA's window against a reference model, ESN
 * across 2^32, and the ring of words at every offset and slide. */
#include "selftest.h"

/* ---- 4. anti-replay against a reference model -------------------------------- */
struct model {
    uint64_t top;
    uint32_t w;
    uint8_t *seen;    /* bitmap over the numbers the test uses (< 1 << 22) */
};

static int model_recv(struct model *m, uint64_t seq) {
    if (seq == 0)
        return TS_DROP_REPLAY;
    if (m->w && seq <= m->top && (m->top - seq >= m->w || (m->seen[seq >> 3] >> (seq & 7) & 1)))
        return TS_DROP_REPLAY;
    m->seen[seq >> 3] |= (uint8_t)(1 << (seq & 7));
    if (seq > m->top)
        m->top = seq;
    return TS_DROP_NONE;
}

void test_replay(void) {
    static const uint32_t windows[] = {0, 32, 33, 64, 100, 128, 1000, 1024, 4095, 4096, 65536};
    const uint64_t space = 1u << 22;
    uint8_t *seen = calloc(space / 8, 1);
    FATAL_IF(!seen);
    for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++) {
        struct pair pr;
        pair_new(&pr, 20, false, windows[wi], 0);
        struct model m = {0, windows[wi], seen};
        memset(seen, 0, space / 8);
        size_t len = make_inner(4, 16, false, bufA);
        uint32_t w = windows[wi] ? windows[wi] : 64;
        for (int i = 0; i < 4000; i++) {
            uint64_t seq;
            switch (rnd_below(4)) {
            case 0: seq = m.top + 1 + rnd_below(3 * w); break;
            case 1: seq = m.top > w + 8 ? m.top - rnd_below(w + 8) : rnd_below((uint32_t)m.top + 1); break;
            case 2: seq = m.top + 1 + rnd_below(2); break;
            default: seq = m.top - (m.top > w ? w - 1 + rnd_below(3) : 0); break;
            }
            if (seq >= space)
                break;
            bool forged = rnd_below(8) == 0;
            size_t el = ref_seal(pr.key, 20, pr.spi, seq, false, NULL, bufA, len, min_pad(len), NULL, 4, bufB);
            if (forged)
                bufB[el - 1] ^= 0x20;
            int drop;
            int n = in1(pr.rx, bufB, el, bufC, &drop);
            int want;
            if (forged) {
                struct model probe = m;   /* a forgery never changes the model */
                bool fresh = seq != 0 && (!m.w || seq > m.top ||
                                          (m.top - seq < m.w && !(m.seen[seq >> 3] >> (seq & 7) & 1)));
                (void)probe;
                want = fresh ? TS_DROP_AUTH : TS_DROP_REPLAY;
            } else {
                want = model_recv(&m, seq);
            }
            CHECK(drop == want);
            CHECK((n > 0) == (want == TS_DROP_NONE));
        }
        ts_sa_info info;
        CHECK(ts_sad_get(pr.rx, pr.spi, TS_DIR_IN, NULL, &info) == TS_OK && info.seq == m.top);
        pair_free(&pr);
    }
    free(seen);

    /* ESN: crossing 2^32 and a late packet from the previous epoch */
    struct pair pr;
    pair_new(&pr, 36, true, 64, 0);
    size_t len = make_inner(6, 5, false, bufA);
    const uint64_t seqs[] = {(1ull << 32) - 1000, (1ull << 32) - 1, 1ull << 32, (1ull << 32) + 3, (1ull << 32) - 5};
    int drop;
    for (size_t i = 0; i < 5; i++) {
        size_t el = ref_seal(pr.key, 36, pr.spi, seqs[i], true, NULL, bufA, len, min_pad(len), NULL, 41, bufB);
        CHECK(in1(pr.rx, bufB, el, bufC, &drop) == (int)len && drop == TS_DROP_NONE);
    }
    size_t el = ref_seal(pr.key, 36, pr.spi, (1ull << 32) - 5, true, NULL, bufA, len, min_pad(len), NULL, 41, bufB);
    CHECK(in1(pr.rx, bufB, el, bufC, &drop) == 0 && drop == TS_DROP_REPLAY);
    pair_free(&pr);
}

/* The ring is ceil(W/64) + 1 words, not a power of two (replay.c): for windows
 * that are and are not multiples of 64, from every starting offset in a word
 * and after every slide from 1 to past a whole ring, exactly the W numbers
 * top-W+1..top are remembered: each seen one is refused, each unseen one in
 * the window accepted once, top-W and below refused.  ASan watches the slots. */
void test_replay_ring(void) {
    static const uint32_t windows[] = {32, 33, 63, 64, 65, 100, 127, 128, 129, 1000, 1024};
    for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++) {
        uint32_t w = windows[wi];
        ts_replay r;
        CHECK(ts_replay_init(&r, w) == TS_OK);
        CHECK(r.nwords == (w + 63) / 64 + 1);
        for (uint64_t start = 1; start <= 64; start += 7) {
            for (uint64_t slide = 1; slide <= (uint64_t)r.nwords * 64 + 65; slide += (slide < 130 ? 1 : 17)) {
                ts_replay_set_floor(&r, 0);
                r.top = 0;
                for (uint32_t i = 0; i < r.nwords; i++)
                    r.bits[i] = 0;
                /* every other number of a first window seen, then a slide */
                uint64_t top = start + w;
                for (uint64_t s = top; s + w > top && s > 0; s -= 2)
                    CHECK(ts_replay_update(&r, s));
                uint64_t nt = top + slide;
                CHECK(ts_replay_update(&r, nt));
                for (uint64_t s = nt > w + 70 ? nt - w - 70 : 1; s <= nt; s++) {
                    bool in_window = nt - s < w;
                    bool was_seen = s == nt || (s <= top && s + w > top && (top - s) % 2 == 0);
                    CHECK(ts_replay_check(&r, s) == (in_window && !was_seen));
                }
                for (uint64_t s = nt - w + 1; s < nt; s++)
                    if (ts_replay_check(&r, s)) {
                        CHECK(ts_replay_update(&r, s));
                        CHECK(!ts_replay_check(&r, s));
                    }
                CHECK(!ts_replay_check(&r, nt - w));
                CHECK(!ts_replay_update(&r, nt - w));
            }
        }
        ts_replay_free(&r);
    }
    ts_replay r;
    CHECK(ts_replay_init(&r, 31) == TS_EINVAL && ts_replay_init(&r, TS_REPLAY_MAX + 1) == TS_EINVAL);
}
