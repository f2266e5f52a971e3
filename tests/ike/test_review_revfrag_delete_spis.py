"""Review revfrag (s20) F1: a Delete payload whose SPIs take no bytes names up to 65,535 of them,
and the codec makes every one before anything is authenticated.

message.DeletePayload.decode_body checks only that the SPIs fill the payload (``len(data) - 4 ==
spi_size * count``): with SPI Size 0 any count passes, and a tuple of ``count`` empty SPIs is built.
decode_message decodes every payload of an IKE_SA_INIT request before init_request.init_request
looks at what it holds, so an 8-byte Delete payload costs a 65,535-entry tuple (~0.5 MiB, ~5 ms),
and a 380-byte datagram of 44 of them (MAX_INIT_PAYLOADS) ~23 MiB and ~200 ms of the control
process's one thread, from any source, stateless, before any COOKIE check.  A datagram naming an
SA's SPIs costs 64 of them (IkeSa.receive decodes before anything else).  strongSwan keeps the
SPIs as one chunk and enumerates none unless the SPI size is 4 (delete_payload.c).
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_engine_init_skf import A, B, _cfg

from tunsec.ike.constants import PayloadType, ProtocolId
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.message import (
    MAX_INIT_PAYLOADS,
    DecodeError,
    DeletePayload,
    decode_message,
    decode_payloads,
    encode_payloads,
)

_DELETE = int(PayloadType.DELETE)


def _empty_spis_delete(nxt: int, count: int = 0xFFFF) -> bytes:
    """A Delete payload (generic header included) of SPI Size 0 that says it names ``count`` SPIs."""
    return struct.pack("!BBHBBH", nxt, 0, 8, ProtocolId.IKE, 0, count)


def _init_request_with_deletes() -> tuple[bytes, int]:
    """A real IKE_SA_INIT request (SA, KE, Nonce, its notifies) with as many such Delete payloads
    after it as MAX_INIT_PAYLOADS leaves room for; and how many that is."""
    a = IkeEndpoint([_cfg(True)])
    a.initiate("c", "net", 0.0)
    raw = a.datagrams_to_send(0.0)[0].data
    request = decode_message(raw)
    n = MAX_INIT_PAYLOADS - len(request.payloads)
    body = encode_payloads(request.payloads)
    # the last payload of the request now points at the first Delete: patch its Next Payload byte
    last = len(body) - _last_payload_len(body, raw[16])
    body = body[:last] + bytes([_DELETE]) + body[last + 1:]
    body += b"".join(_empty_spis_delete(_DELETE if i < n - 1 else 0) for i in range(n))
    return raw[:24] + struct.pack("!I", 28 + len(body)) + body, n


def _last_payload_len(body: bytes, first: int) -> int:
    pos, ptype, length = 0, first, 0
    while ptype:
        ptype, _, length = struct.unpack_from("!BBH", body, pos)
        pos += length
    return length


def test_a_delete_payload_names_no_more_spis_than_its_bytes_hold() -> None:
    """Refused, or decoded with no SPIs (strongSwan enumerates none of SPI Size 0): either way no
    65,535-entry tuple from 4 bytes."""
    try:
        (delete,) = decode_payloads(_DELETE, _empty_spis_delete(0))
    except DecodeError:
        return
    assert isinstance(delete, DeletePayload)
    assert len(delete.spis) <= 4, f"{len(delete.spis)} SPIs decoded from a 4-byte Delete body"


def test_an_unauthenticated_ike_sa_init_costs_no_more_memory_than_a_few_times_its_bytes() -> None:
    """The endpoint, as a datagram from anyone reaches it: 36 such Delete payloads after a real
    request's SA, KE, Nonce and notifies (44 payloads, MAX_INIT_PAYLOADS).  On main the decode alone
    holds ~18 MiB (36 tuples of 65,535 entries) at once; a bound in MiB, not in time."""
    datagram, _ = _init_request_with_deletes()
    assert len(datagram) < 1000
    b = IkeEndpoint([_cfg(False)])
    tracemalloc.start()
    try:
        b.receive(datagram, (A, 500), 1.0, local_addr=(B, 500))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"a {len(datagram)}-byte IKE_SA_INIT from anyone held {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("delete", [
    DeletePayload(ProtocolId.IKE, 0),
    DeletePayload(ProtocolId.ESP, 4, (b"\x01\x02\x03\x04", b"\x05\x06\x07\x08")),
])
def test_the_deletes_peers_send_still_decode(delete: DeletePayload) -> None:
    """Guard (passes on main): what a fix must keep, the IKE SA's Delete and an ESP one."""
    assert decode_payloads(_DELETE, encode_payloads([delete])) == (delete,)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFF), st.binary(max_size=120))
@example(_DELETE, _empty_spis_delete(0, 9))
def test_decoding_makes_no_more_spis_than_bytes(first: int, raw: bytes) -> None:
    """An independent property (the review's fuzzer, bounded): whatever a chain decodes to, its
    Delete payloads hold no more SPIs than the chain has bytes (the work per byte is bounded)."""
    try:
        payloads = decode_payloads(first, raw)
    except DecodeError:
        return
    spis = sum(len(p.spis) for p in payloads if isinstance(p, DeletePayload))
    assert spis <= len(raw)


def test_a_valid_request_with_deletes_of_no_spis_is_decoded_at_all() -> None:
    """Guard (passes on main): the proof's datagram is an IKE_SA_INIT the codec takes (so the
    memory above is the codec's, not a refusal's)."""
    datagram, n = _init_request_with_deletes()
    msg = decode_message(datagram)
    assert sum(isinstance(p, DeletePayload) for p in msg.payloads) == n > 30
