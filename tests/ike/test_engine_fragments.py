"""IKE fragmentation (RFC 7383) between two engines in memory, on a fake clock.

The link drops every datagram whose IP packet would exceed 1280 bytes (IPv4 + UDP +
non-ESP marker on port 4500), so an IKE_AUTH carrying a certificate chain of several
kilobytes gets through only in fragments. The reassembly bounds are driven with
fragments sealed by the peer's real keys (and forged ones).
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import IKE_HEADER_LEN, ExchangeType, HeaderFlag, PayloadType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, PeerUnreachable
from tunsec.ike.fragments import MAX_MESSAGE, REASSEMBLY_TIMEOUT, FragmentRejected, Reassembly
from tunsec.ike.identity import Identity
from tunsec.ike.message import Header, Message, SkfPayload, VendorIdPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa
from tunsec.ike.sa_responder import MAX_RESENDS
from tunsec.ike.secret import Secret
from tunsec.ike.sk import MAX_FRAGMENTS, SKF_HEADER_LEN, encrypt_fragments
from tunsec.ike.testing import EPOCH, Issued, Network, Sent, make_ca, make_cert

A, B = "192.0.2.1", "192.0.2.2"
PATH_MTU = 1280
# the certificates' validity is checked against this, not the machine's date: the test certificates
# (make_cert: EPOCH + 365 days) run out on 2027-01-01
NOW = EPOCH + datetime.timedelta(days=30)


def _over_mtu(sent: Sent) -> bool:
    """IPv4 (20) + UDP (8) + the non-ESP marker on 4500 (4) + the IKE message."""
    marker = 4 if 4500 in (sent.src[1], sent.dst[1]) else 0
    return 20 + 8 + marker + len(sent.data) > PATH_MTU


@dataclasses.dataclass(frozen=True)
class _Pki:
    root: Issued
    chain: tuple[Issued, ...]  # intermediates, nearest the root first
    moon: Issued
    sun: Issued


@cache
def _pki() -> _Pki:
    """RSA certificates: a root, three intermediates and two end entities (~4 KB of chain each)."""
    root = make_ca("frag root", "rsa")
    chain = [make_ca("frag intermediate 1", "rsa", issuer=root)]
    for n in (2, 3):
        chain.append(make_ca(f"frag intermediate {n}", "rsa", issuer=chain[-1]))
    moon = make_cert(chain[-1], "moon", ["moon"], kind="rsa")
    sun = make_cert(chain[-1], "sun", ["sun"], kind="rsa")
    return _Pki(root, tuple(chain), moon, sun)


def _cert_cfg(initiator: bool, fragmentation: str = "yes", fragment_size: int = 1280) -> IkeConfig:
    pki = _pki()
    me, ids = (pki.moon, ("moon", "sun")) if initiator else (pki.sun, ("sun", "moon"))
    ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    intermediates = tuple(i.cert for i in reversed(pki.chain))
    return IkeConfig(
        "c",
        LocalAuth("pubkey", Identity.parse(ids[0]), me.cert, intermediates, me.key),
        RemoteAuth("pubkey", Identity.parse(ids[1]), (pki.root.cert,)),
        parse_proposals("aes128-sha256-ecp256"),
        (child_config("net", ts[0], ts[1], "aes128gcm16"),),
        local_addr=A if initiator else B,
        remote_addr=B if initiator else None,
        send_cert="always",
        fragmentation=fragmentation,  # type: ignore[arg-type]
        fragment_size=fragment_size,
    )


def _psk_cfg(initiator: bool, proposal: str = "aes128-sha256-ecp256") -> IkeConfig:
    ids = ("moon", "sun") if initiator else ("sun", "moon")
    ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", "10.1.0.0/16")
    return IkeConfig(
        "c",
        LocalAuth("psk", Identity.parse(ids[0])),
        RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals(proposal),
        (child_config("net", ts[0], ts[1], "aes128gcm16"),),
        psk=Secret(b"fragments"),
        local_addr=A if initiator else B,
        remote_addr=B if initiator else None,
    )


def _connect(mode_a: str, mode_b: str) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([_cert_cfg(True, mode_a)], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([_cert_cfg(False, mode_b)], wall_clock=lambda: NOW))
    net.drop = _over_mtu
    a.initiate("c", "net", net.now)
    net.run()
    return net, a, b


def _up(events: list[object]) -> bool:
    return any(isinstance(e, IkeSaUp) for e in events) and any(isinstance(e, ChildSaUp) for e in events)


def test_certificate_chains_pass_a_1280_path_only_in_fragments() -> None:
    net, a, b = _connect("yes", "yes")
    assert _up(net.take(A)) and _up(net.take(B))
    auth = [s for s in net.log if decode_message(s.data).exchange == ExchangeType.IKE_AUTH]
    assert auth and not any(s.dropped for s in net.log)
    assert all(20 + 8 + 4 + len(s.data) <= PATH_MTU for s in auth)
    # both the request (moon's chain) and the response (sun's chain) went in several fragments
    for src in (A, B):
        skf = [decode_message(s.data).payloads[-1] for s in auth if s.src[0] == src]
        assert len(skf) >= 3 and all(isinstance(p, SkfPayload) for p in skf)
    for ep in (a, b):
        assert ep.fragment_stats.messages_fragmented == 1
        assert ep.fragment_stats.messages_reassembled == 1
        assert ep.fragment_stats.fragments_dropped == 0


def test_fragment_size_zero_is_576_on_ipv4() -> None:
    # strongswan.conf's charon.fragment_size = 0: the address family's minimum datagram
    net = Network()
    a = net.add(A, IkeEndpoint([_cert_cfg(True, fragment_size=0)], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([_cert_cfg(False, fragment_size=0)], wall_clock=lambda: NOW))
    net.drop = lambda sent: 20 + 8 + 4 + len(sent.data) > 576
    a.initiate("c", "net", net.now)
    net.run()
    assert _up(net.take(A)) and _up(net.take(B))
    assert not any(s.dropped for s in net.log)
    assert a.fragment_stats.fragments_sent > 6 and b.fragment_stats.messages_reassembled == 1


@pytest.mark.parametrize(
    ("mode_a", "mode_b"),
    [("no", "yes"), ("yes", "no"), ("accept", "yes"), ("yes", "accept")],
)
def test_without_fragments_on_both_sides_the_chain_does_not_pass(mode_a: str, mode_b: str) -> None:
    # no: not announced, so the peer does not fragment; accept: announced, but never sent in fragments
    # (the responder may come up: with "accept" it reassembles, only its answer is too big)
    net, _, _ = _connect(mode_a, mode_b)
    events = net.take(A)
    assert not _up(events) and any(isinstance(e, PeerUnreachable) for e in events)
    assert any(s.dropped for s in net.log)


def test_force_fragments_without_the_peers_notify_and_no_still_reassembles() -> None:
    net, a, b = _connect("force", "no")
    # the peer (no) announced nothing, yet our IKE_AUTH went in fragments and it reassembled them;
    # its own response is not fragmented (no), so it is lost on this path
    assert a.fragment_stats.messages_fragmented == 1
    assert b.fragment_stats.messages_reassembled == 1
    assert b.fragment_stats.messages_fragmented == 0
    assert not _up(net.take(A))


def test_a_lost_fragment_is_recovered_by_the_retransmission_of_all() -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([_cert_cfg(True)], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([_cert_cfg(False)], wall_clock=lambda: NOW))
    lost: list[Sent] = []

    def drop(sent: Sent) -> bool:
        msg = decode_message(sent.data)
        frag = msg.payloads[-1] if msg.payloads else None
        if isinstance(frag, SkfPayload) and sent.src[0] == A and frag.number == 2 and not lost:
            lost.append(sent)
            return True
        return _over_mtu(sent)

    net.drop = drop
    a.initiate("c", "net", net.now)
    net.run()
    assert lost and _up(net.take(A)) and _up(net.take(B))
    requests = [s for s in net.log if s.src[0] == A and isinstance(decode_message(s.data).payloads[-1], SkfPayload)]
    total = decode_message(requests[0].data).payloads[-1]
    assert isinstance(total, SkfPayload)
    assert len(requests) == 2 * total.total  # the retransmission resent every fragment
    # the resent fragment 1 is a duplicate; 2 completes the message; 3 and 4 belong to an answered request
    assert (b.fragment_stats.fragments_received, b.fragment_stats.fragments_dropped) == (total.total, 1)


# ------------------------------------------------------------------ reassembly bounds, with real keys


def _established(proposal: str = "aes128-sha256-ecp256") -> tuple[IkeEndpoint, IkeSa]:
    """The responder endpoint and the initiator's IKE SA, established (over no MTU limit)."""
    net = Network()
    a = net.add(A, IkeEndpoint([_psk_cfg(True, proposal)], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([_psk_cfg(False, proposal)], wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    assert _up(net.take(B))
    return b, a.sas[0]


def _request_fragments(sender: IkeSa, size: int, content_len: int) -> list[bytes]:
    """An INFORMATIONAL request of the sender (a Vendor ID of ``size`` bytes) in fragments."""
    st = sender._st
    assert st.tx is not None
    msg = Message(st.spi_i, st.spi_r, ExchangeType.INFORMATIONAL, int(HeaderFlag.INITIATOR), sender._next_id,
                  (VendorIdPayload(bytes(size)),))
    sender._next_id += 1
    return encrypt_fragments(msg, st.tx, content_len)


def _skf(sender: IkeSa, message_id: int, number: int, total: int, plain: bytes,
         first: int = PayloadType.VENDOR_ID) -> bytes:
    """One fragment with any number and total, sealed with the sender's real keys."""
    st = sender._st
    assert st.tx is not None
    padded = st.tx.pad(plain)
    body_len = st.tx.iv_len + len(padded) + st.tx.icv_len
    first = first if number == 1 else 0
    skf = struct.pack("!BBHHH", first, 0, SKF_HEADER_LEN + body_len, number, total)
    header = Header(st.spi_i, st.spi_r, PayloadType.SKF, ExchangeType.INFORMATIONAL, int(HeaderFlag.INITIATOR),
                    message_id, IKE_HEADER_LEN + SKF_HEADER_LEN + body_len).encode()
    return header + skf + st.tx.seal(header + skf, padded)


def _deliver(b: IkeEndpoint, datagrams: list[bytes], now: float = 1.0) -> int:
    """Hand datagrams to the responder; how many it answered."""
    for data in datagrams:
        b.receive(data, (A, 4500), now, local_addr=(B, 4500))
    return len(b.datagrams_to_send(now))


@pytest.mark.parametrize("proposal", ["aes128-sha256-ecp256", "aes256gcm16-prfsha256-ecp256"])
def test_out_of_order_and_duplicate_fragments_make_one_message(proposal: str) -> None:
    b, sender = _established(proposal)
    frags = _request_fragments(sender, 3000, 700)
    assert len(frags) == 5
    shuffled = [frags[3], frags[0], frags[3], frags[4], frags[0], frags[2]]
    assert _deliver(b, shuffled) == 0  # fragment 2 is still missing
    assert _deliver(b, [frags[1]]) == 1  # complete: answered once
    assert _deliver(b, [frags[4], frags[2]]) == 0  # late duplicates of an answered request: ignored
    assert _deliver(b, [frags[0]]) == 1  # its first fragment again: the retransmitted response (§2.6.1)
    stats = b.fragment_stats
    assert (stats.messages_reassembled, stats.fragments_received, stats.fragments_dropped) == (1, 5, 2)


def test_a_forged_fragment_is_not_stored() -> None:
    b, sender = _established()
    frags = _request_fragments(sender, 3000, 700)
    forged = bytearray(frags[0])
    forged[-20] ^= 1  # in the ciphertext/ICV: the ICV no longer verifies
    assert _deliver(b, [bytes(forged), *frags[1:]]) == 0
    assert b.fragment_stats.fragments_dropped == 1
    # had the forgery been stored as fragment 1, the real one would be a duplicate now
    assert _deliver(b, [frags[0]]) == 1
    assert b.fragment_stats.messages_reassembled == 1


def test_a_forged_first_fragment_of_an_answered_request_gets_no_response() -> None:
    b, sender = _established()
    frags = _request_fragments(sender, 3000, 700)
    assert _deliver(b, frags) == 1
    forged = bytearray(frags[0])
    forged[-1] ^= 1
    assert _deliver(b, [bytes(forged)]) == 0
    assert b.stats.retransmit_not_identical == 1


def test_the_response_to_a_fragmented_request_is_sent_again_at_most_max_resends_times() -> None:
    """Each verified first fragment of the answered request gets the response again, up to the cap
    (a replayed fragment verifies as well as the peer's own retransmission does)."""
    b, sender = _established()
    frags = _request_fragments(sender, 3000, 700)
    assert _deliver(b, frags) == 1
    assert sum(_deliver(b, [frags[0]]) for _ in range(MAX_RESENDS + 2)) == MAX_RESENDS
    assert (b.stats.retransmit_limit, b.stats.retransmit_not_identical) == (2, 0)


def test_more_fragments_than_the_limit_are_refused() -> None:
    b, sender = _established()
    mid = sender._next_id
    too_many = MAX_FRAGMENTS + 1
    assert _deliver(b, [_skf(sender, mid, n, too_many, b"\0" * 10) for n in range(1, too_many + 1)]) == 0
    assert b.fragment_stats.fragments_received == 0
    assert b.fragment_stats.fragments_dropped == too_many


def test_a_message_over_the_size_limit_is_abandoned() -> None:
    b, sender = _established()
    mid = sender._next_id
    piece = 1000
    total = MAX_MESSAGE // piece + 2
    # a valid Vendor ID payload header leads the plaintext, so only the size stops it
    first = struct.pack("!BBH", 0, 0, total * piece) + bytes(piece - 4)
    frags = [_skf(sender, mid, 1, total, first)] + [_skf(sender, mid, n, total, bytes(piece))
                                                    for n in range(2, total + 1)]
    assert _deliver(b, frags) == 0
    stats = b.fragment_stats
    assert stats.messages_reassembled == 0
    assert stats.fragments_received == MAX_MESSAGE // piece
    assert stats.fragments_dropped == total - MAX_MESSAGE // piece


def test_an_incomplete_message_is_dropped_after_the_timeout() -> None:
    b, sender = _established()
    frags = _request_fragments(sender, 2000, 700)
    assert _deliver(b, frags[:-1], now=1.0) == 0
    deadline = b.get_timer()
    assert deadline is not None and deadline <= 1.0 + REASSEMBLY_TIMEOUT
    b.handle_timer(1.0 + REASSEMBLY_TIMEOUT)
    assert b.fragment_stats.fragments_dropped == len(frags) - 1
    # the rest alone does not complete it any more; a full retransmission does
    assert _deliver(b, frags[-1:], now=32.0) == 0
    assert _deliver(b, frags[:-1], now=33.0) == 1


def test_reassembly_restarts_for_a_newer_message_or_a_larger_total() -> None:
    r = Reassembly()

    def frag(number: int, total: int) -> SkfPayload:
        return SkfPayload(PayloadType.NOTIFY if number == 1 else 0, number, total, b"")

    assert r.add(1, frag(1, 2), b"old", 0.0) is None
    assert r.add(2, frag(2, 2), b"-b", 0.0) is None  # message 2 supersedes message 1
    assert r.add(2, frag(1, 2), b"new-a", 0.0) == (PayloadType.NOTIFY, b"new-a-b")
    assert r.add(3, frag(1, 2), b"x", 0.0) is None
    assert r.add(3, frag(2, 3), b"y", 0.0) is None  # re-fragmented smaller: starts over
    with pytest.raises(FragmentRejected):
        r.add(3, frag(1, 2), b"x", 0.0)  # a smaller total than announced
    assert r.add(3, frag(1, 3), b"1", 0.0) is None
    assert r.add(3, frag(3, 3), b"3", 0.0) == (PayloadType.NOTIFY, b"1y3")
    assert r.deadline is None  # nothing held once complete


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.integers(1, 70), st.integers(1, 70), st.binary(max_size=300), st.integers(0, 60)),
                min_size=1, max_size=12))
def test_authenticated_garbage_fragments_never_stall_the_responder(frags: list[tuple[int, int, bytes, int]]) -> None:
    # sealed with the real keys: any number/total, any plaintext (malformed chains once reassembled)
    b, sender = _established()
    mid = sender._next_id
    for number, total, plain, first in frags:
        if number <= total:
            _deliver(b, [_skf(sender, mid, number, total, plain, first=first)])
    assert b.fragment_stats.fragments_received <= MAX_FRAGMENTS
    # whatever happened to that message ID, the window moves on: once an incomplete message timed
    # out (a smaller Total Fragments for it is refused until then, RFC 7383 §2.6), a real request
    # still gets its answer
    later = 2.0 + REASSEMBLY_TIMEOUT
    b.handle_timer(later)
    sender._next_id = mid
    if b.fragment_stats.messages_reassembled:
        sender._next_id = mid + 1  # that one was answered (INVALID_SYNTAX or a real response)
    assert _deliver(b, _request_fragments(sender, 2000, 700), now=later) == 1
