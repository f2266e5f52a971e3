"""The worker's start-up self-test: AES-GCM known answers through the C path before any packet."""

from __future__ import annotations

from tunsec.dataplane import worker


def test_the_ciphers_pass_their_known_answers_here() -> None:
    assert worker.self_test() is None
    assert [name for name, _, _ in worker.GCM_KATS] == ["AES-128-GCM", "AES-256-GCM"]


def test_a_wrong_answer_is_reported_by_cipher() -> None:
    name, key, sealed = worker.GCM_KATS[1]
    wrong = sealed[:5] + bytes([sealed[5] ^ 0x80]) + sealed[6:]
    assert worker.self_test(((name, key, wrong),)) == "AES-256-GCM sealed a known-answer test vector wrong"


def test_a_key_that_does_not_match_the_vector_is_reported() -> None:
    name, _, sealed = worker.GCM_KATS[0]
    assert worker.self_test(((name, bytes(16), sealed),)) == "AES-128-GCM sealed a known-answer test vector wrong"
