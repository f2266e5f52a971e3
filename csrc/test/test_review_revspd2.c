/* Review revspd2 (of h/fixspd2): proofs.  F2 (test_review_revspd2_pass_bounded, below): a
 * loop kept passing while others take kicks.  F1: a kick that lands while the loop that ends a
 * pass has found no kick (take_pass: exchange gave false) and not yet unlocked the pass lock is
 * lost: its trylock fails, it returns, and the ending loop unlocks without looking again.  The
 * packet held for the SA that kick announced stays held although its SA is in. */
#include "selftest.h"
#include <pthread.h>
#include <stdatomic.h>

#define KICK_ROUNDS 100000u

struct kick_race {
    ts_holds hs;
    _Atomic unsigned go, done;     /* a spin barrier: the round both threads start, and finish */
    _Atomic bool sa_in, sent;      /* the SA a kick announces; a pass that saw it sent the packet */
    _Atomic unsigned delay;        /* spins before the kicker's kick, swept over the rounds */
};

/* what send_held does with ts_held_begin/end: each pass that sees the SA sends the packet */
static void passes(struct kick_race *k) {
    for (bool go = ts_held_begin(&k->hs); go; go = ts_held_end(&k->hs))
        if (atomic_load(&k->sa_in))
            atomic_store(&k->sent, true);
}

static void wait_round(_Atomic unsigned *c, unsigned round) {
    while (atomic_load(c) < round)
        ;
}

/* the other loop: woken by an earlier kick, it runs passes (which find no SA yet) */
static void *ending_loop(void *arg) {
    struct kick_race *k = arg;
    for (unsigned r = 1; r <= KICK_ROUNDS; r++) {
        wait_round(&k->go, r);
        passes(k);
        atomic_fetch_add(&k->done, 1);
    }
    return NULL;
}

/* The SA comes (under the write lock in the product, then ts_hold_kick) while the other loop
 * ends its pass; after both return no pass runs, so the packet must have been sent. */
void test_review_revspd2_lost_kick(void) {
    struct kick_race *k = calloc(1, sizeof(*k));
    CHECK(k != NULL);
    if (!k)
        return;
    ts_holds_init(&k->hs);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, ending_loop, k) == 0);
    unsigned lost = 0, first_lost = 0;
    for (unsigned r = 1; r <= KICK_ROUNDS; r++) {
        atomic_store(&k->sa_in, false);
        atomic_store(&k->sent, false);
        atomic_store(&k->hs.again, false);
        unsigned spins = (r * 7u) % 200u;   /* land the kick at every point of the other's pass */
        atomic_store(&k->go, r);
        for (unsigned s = 0; s < spins; s++)
            atomic_fetch_add(&k->delay, 1);
        atomic_store(&k->sa_in, true);   /* the SA is in, then the kick */
        passes(k);
        wait_round(&k->done, r);         /* the other loop returned too: no pass runs now */
        if (ts_held_owed(&k->hs))        /* a wakeup of the loops was armed (ts_hold_kick): its pass */
            passes(k);
        if (!atomic_load(&k->sent)) {
            if (!lost)
                first_lost = r;
            lost++;
        }
    }
    pthread_join(t, NULL);
    if (lost)
        printf("  lost kick: %u of %u rounds (first at %u): the held packet stays although its SA is in\n",
               lost, KICK_ROUNDS, first_lost);
    CHECK(lost == 0);
    ts_holds_destroy(&k->hs);
    free(k);
}

/* F2: one loop's send_held keeps passing as long as another loop takes a kick during each
 * of its passes (ts_held_end finds again): it does not go back to poll for its own TUN queue and
 * UDP sockets while changes come.  Before h/fixspd2 a wakeup cost one pass. */
#define STARVE_KICKS 200u

struct starve {
    ts_holds hs;
    _Atomic unsigned want, kicked;   /* kicks asked for by the passing loop, made by the other */
    _Atomic bool stop;
};

/* the other loop: each change's kick, taken while the first loop passes */
static void *kicking_loop(void *arg) {
    struct starve *s = arg;
    for (unsigned i = 1; i <= STARVE_KICKS; i++) {
        while (atomic_load(&s->want) < i && !atomic_load(&s->stop))
            ;
        if (atomic_load(&s->stop))
            break;
        for (bool go = ts_held_begin(&s->hs); go; go = ts_held_end(&s->hs))
            ;   /* not taken: the first loop's pass runs */
        atomic_store(&s->kicked, i);
    }
    return NULL;
}

void test_review_revspd2_pass_bounded(void) {
    struct starve *s = calloc(1, sizeof(*s));
    CHECK(s != NULL);
    if (!s)
        return;
    ts_holds_init(&s->hs);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, kicking_loop, s) == 0);
    unsigned npasses = 0;
    /* one wakeup of this loop (loop.c: case 5, send_held); a change comes during each pass */
    for (bool go = ts_held_begin(&s->hs); go; go = ts_held_end(&s->hs)) {
        npasses++;
        if (npasses <= STARVE_KICKS) {
            atomic_store(&s->want, npasses);
            while (atomic_load(&s->kicked) < npasses)
                ;
        }
    }
    atomic_store(&s->stop, true);
    pthread_join(t, NULL);
    if (npasses > 2)
        printf("  one send_held ran %u passes without returning to poll\n", npasses);
    CHECK(npasses <= 2);
    ts_holds_destroy(&s->hs);
    free(s);
}
