/* Standalone self-test of the C fast path, meant to run under
 * -fsanitize=address,undefined -fno-sanitize-recover=all (make sanitize) and
 * under ThreadSanitizer.
 *
 * Exercises the public API (tunsec_dp.h) end to end: AES-GCM known answers,
 * outbound -> inbound round trips, packets from an ESP implementation of its
 * own (OpenSSL EVP used directly, not csrc/esp.c) in both directions,
 * anti-replay, sequence overflow, SAD/SPD errors, ICMP too-big, ~200k random
 * and mutated packets with a fixed seed, and the batch loop over real
 * sockets.  Exits non-zero on any failure.
 *
 * One file per unit under test: test_esp.c, test_replay.c, test_seq.c
 * (sequence numbers), test_sad.c (SAD/SPD API, events), test_sad_hash.c (the keyed hash of outbound SAs),
 * test_secret_wipe.c (the tables' SipHash keys and the whole context wiped at free), test_dead_sa.c
 * (SAs at a hard byte/packet limit, removed and freed), test_icmp.c, test_icmp_quote.c (ICMP errors
 * checked by the packet they quote), test_frag_ports.c (packets that show no ports, such as
 * later fragments, and port selectors),
 * test_ike_port.c (the NAT-T port's IKE/ESP split), test_ike_queue.c (IKE after the marker, each
 * sender's share of the event queue), test_source_prefix.c (the IPv6 prefix a sender counts
 * under, dos.ipv6_source_prefix), test_own_esp.c (our own ESP read back from the TUN, whichever
 * SA it would enter), test_ike_trust.c (the reserve of established IKE SAs and
 * their SPI set), test_invalid_spi.c (its rate limits), test_fuzz.c,
 * test_offload.c, test_loop.c, test_hold.c, test_cmsg.c (socket control
 * data: the local address a datagram came to, the source ESP leaves from), test_gso_split.c (a GSO
 * run the kernel refuses sent as datagrams), test_spd.c and
 * test_spd_range.c (the SPD's index against the ordered scan), test_spd_oom.c (the SPD and
 * the flow caches when an allocation fails), test_spd_churn.c (the SPD under churn against a
 * model of its own, and what a change leaves of the flow caches), test_review_revspd.c (review
 * revspd: a range policy's delete cost, a shared dgen counter), test_spd_upkeep.c (what a held
 * packet's retry and deletes walk), test_sandbox.c (the worker's seccomp filter), test_addrwatch.c
 * (the addresses the host added: which end a gone source, and for which SA), test_srcroute.c
 * (source routes past the selectors, TFC dummies in the lifetime); what they share is
 * in selftest.h (harness.c, ref_esp.c).  An argument sets the fuzz
 * iterations (default 200000).
 */
#include "selftest.h"

int main(int argc, char **argv) {
    long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    test_kat();
    test_round_trips();
    test_bad_inner();
    test_replay();
    test_replay_ring();
    test_overflow();
    test_seq_soft();
    test_reservation();
    test_reservation_threads();
    test_esn_end_threads();
    test_first_use();
    test_first_use_threads();
    test_sad_errors();
    test_shared_out_spi();
    test_migrate();
    test_migrate_local();
    test_lifetimes();
    test_dead_sa();
    test_ike_port500();
    test_ike_marker();
    test_ike_source_share();
    test_ike_source_share_threads();
    test_source_prefix_mask();
    test_source_prefix_slots();
    test_source_prefix_shares();
    test_source_prefix_threads();
    test_ike_known_reserve();
    test_ike_known_one_peer();
    test_ike_known_share_per_address();
    test_ike_known_source_biggest_pays();
    test_ike_spi_set();
    test_ike_spi_tag_vectors();
    test_ike_spi_tag_shares();
    test_ike_spi_tag_reserve();
    test_ike_spi_tag_floods_of_real_addresses();
    test_ike_spi_tag_ipv6_prefix();
    test_ike_spi_tag_key_epochs();
    test_siphash_vector();
    test_invalid_spi_per_source();
    test_invalid_spi_clock_behind();
    test_invalid_spi_threads();
    test_invalid_spi_race_refund();
    test_invalid_spi_ipv6_prefix();
    test_icmp();
    test_icmp_limits();
    test_icmp_quote();
    test_frag_ports_outbound();
    test_frag_ports_acquire();
    test_frag_ports_dccp();
    test_frag_ports_inbound();
    test_key_wipe();
    test_table_keys_wiped();
    test_context_wiped();
    test_sad_chain_keyed();
    test_sad_chain_peer();
    test_sad_migrate_rehash();
    test_fuzz(iterations);
    test_segment_64k();
    test_segment_v6_exthdrs();
    test_offload_fuzz(iterations / 10);
    test_loop();
    test_loop_two_queues();
    test_hold_unit();
    test_hold_policy_gone();
    test_hold_loop();
    test_cmsg_parse();
    test_cmsg_pktinfo_put();
    test_cmsg_loop();
    test_gso_split();
    test_gso_split_source_gone();
    test_spd_index_diff();
    test_spd_index_threads();
    test_spd_index_10k();
    test_spd_range_diff();
    test_spd_range_10k();
    test_spd_range_fallback();
    test_spd_range_churn();
    test_own_esp_ends();
    test_own_esp_pair();
    test_sandbox_seccomp();
    test_spd_grow_oom();
    test_spd_index_oom();
    test_spd_churn_model();
    test_spd_churn_keeps_cache();
    test_spd_churn_held();
    test_review_revspd_range_delete_cost();
    test_review_revspd_shared_dgen_wrap();
    test_spd_held_pass_visits();
    test_spd_delete_compacts();
    test_spd_held_two_loops();
    test_review_revspd2_lost_kick();
    test_review_revspd2_pass_bounded();
    test_addrwatch_ring();
    test_addrwatch_refused_then_added();
    test_srcroute_options();
    test_srcroute_v6_walk();
    test_srcroute_path();
    test_dummy_lifetime();
    printf("selftest: %lu checks, %lu failures\n", checks, failures);
    return failures ? 1 : 0;
}
