"""Review revchild F1: a peer's ESP SPI 0..255 (reserved, RFC 4303 §2.1: 0 is never sent, 1..255 are
IANA's) was agreed to, in IKE_AUTH and CREATE_CHILD_SA, as responder and as initiator.  The engine
reported the Child SA up with that outbound SPI; the worker's SAD refuses it (csrc/sad.c: spi < 256 ->
EINVAL), so the Child SA was torn down after the fact (services/ike/install_failed.py), and again for each
retry; after a rekey like that the old Child SA waited for good (rekeyed_by_peer).  Now refused in the
exchange: as responder only proposals with a usable SPI are chosen (NO_PROPOSAL_CHOSEN if none is
left), as initiator an answer with one is refused like any bad answer (and its half deleted).

Also the peer's new IKE SPI in an IKE SA rekey: all zeros is refused (RFC 7296 §3.1, "MUST NOT be zero")."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from test_engine_more import A, B, cfg, only

from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.exchanges import child as childmod
from tunsec.ike.exchanges import rekey_ike
from tunsec.ike.message import Proposal, SaPayload, decode_header
from tunsec.ike.sa import State
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import EPOCH, Network

PROPS = "aes256gcm16-prfsha256-curve25519"
MARK = 0x7E570000   # the liar's SPIs: its allocator hands out MARK + n, the other's are random


def _with_spi(sa: Any, spi: int) -> SaPayload:
    assert isinstance(sa, SaPayload)
    return SaPayload(tuple(Proposal(p.num, p.protocol, spi.to_bytes(4, "big"), p.transforms) for p in sa.proposals))


def _lying_requests(reserved: int, monkeypatch: pytest.MonkeyPatch, lie_from: int) -> None:
    """The liar puts ``reserved`` in its proposals instead of its inbound SPI, from its ``lie_from``-th
    Child SA on (0: IKE_AUTH's)."""
    real = childmod.sa_payloads

    def sa_payloads(child: Any, proposals: Sequence[Any], *rest: Any, **kw: Any) -> list[Any]:
        out = real(child, proposals, *rest, **kw)
        if MARK + lie_from <= child.spi_in < MARK + 0x100:
            out[0] = _with_spi(out[0], reserved)
        return out

    monkeypatch.setattr(childmod, "sa_payloads", sa_payloads)


def _lying_answers(reserved: int, monkeypatch: pytest.MonkeyPatch, lie_from: int) -> None:
    """The liar answers with ``reserved`` instead of its inbound SPI, from its ``lie_from``-th Child SA on."""
    real = childmod.response_payloads

    def response_payloads(selection: Any, child: Any) -> list[Any]:
        out = real(selection, child)
        if MARK + lie_from <= child.spi_in < MARK + 0x100:
            out[0] = _with_spi(out[0], reserved)
        return out

    monkeypatch.setattr(childmod, "response_payloads", response_payloads)


def _pair(liar: str) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    """A initiates to B; ``liar``'s SPIs are MARK + n."""
    counter = iter(range(MARK, MARK + 0x100))
    net = Network()

    def marked() -> int:
        return next(counter)

    a = net.add(A, IkeEndpoint([cfg(True, PROPS)], random.Random(1).randbytes, wall_clock=lambda: EPOCH,
                               spi_allocator=marked if liar == A else None))
    b = net.add(B, IkeEndpoint([cfg(False, PROPS)], random.Random(2).randbytes, wall_clock=lambda: EPOCH,
                               spi_allocator=marked if liar == B else None))
    return net, a, b


def _events(net: Network, ip: str, kind: type[Any]) -> list[Any]:
    return only([e for _, e in net.events[ip]], kind)


@pytest.mark.parametrize("reserved", [0, 7, 255])
def test_responder_refuses_a_reserved_spi_in_create_child_sa(reserved: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _lying_requests(reserved, monkeypatch, lie_from=1)
    net, a, _ = _pair(A)
    sa = a.initiate("conn", "net", net.now)
    net.run()
    assert [u.spi_out for u in _events(net, B, ChildSaUp)] == [MARK]   # IKE_AUTH's Child SA: honest
    sa.initiate("web")
    a.collect(net.now)
    net.run()
    bad = [u.spi_out for u in _events(net, B, ChildSaUp) if u.spi_out < 256]
    assert bad == [], f"B agreed to a Child SA whose outbound SPI is the reserved {reserved}"
    assert any(f.reason == "NO_PROPOSAL_CHOSEN" for f in _events(net, B, NegotiationFailed))


@pytest.mark.parametrize("reserved", [0, 255])
def test_responder_refuses_a_reserved_spi_in_ike_auth(reserved: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _lying_requests(reserved, monkeypatch, lie_from=0)
    net, a, _ = _pair(A)
    a.initiate("conn", "net", net.now)
    net.run()
    bad = [u.spi_out for u in _events(net, B, ChildSaUp) if u.spi_out < 256]
    assert bad == [], f"B agreed to a Child SA whose outbound SPI is the reserved {reserved}"


def test_responder_refuses_a_child_sa_rekey_to_a_reserved_spi(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rekey is refused, not agreed to and failed at the install: the old Child SA stays, not
    left waiting for a DELETE (rekeyed_by_peer) with its own rekey timer off."""
    _lying_requests(9, monkeypatch, lie_from=1)
    net, a, b = _pair(A)
    sa = a.initiate("conn", "net", net.now)
    net.run()
    (old,) = sa.children
    sa.rekey_child(old.unique_id)
    a.collect(net.now)
    net.run(until=net.now + 1)
    (b_old,) = b.sas[0].children
    assert not [u.spi_out for u in _events(net, B, ChildSaUp) if u.spi_out < 256], "B agreed to the reserved 9"
    assert not b_old.rekeyed_by_peer and b_old.rekey_at != float("inf")


@pytest.mark.parametrize("exchange", ["IKE_AUTH", "CREATE_CHILD_SA"])
def test_initiator_refuses_an_answer_with_a_reserved_spi(exchange: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As initiator: the answer's SPI < 256 is refused like any bad answer, and the peer asked to
    delete its half (an INFORMATIONAL with our DELETE)."""
    _lying_answers(42, monkeypatch, lie_from=0 if exchange == "IKE_AUTH" else 1)
    net, a, _ = _pair(B)
    sa = a.initiate("conn", "net", net.now)
    net.run()
    if exchange == "CREATE_CHILD_SA":
        assert [u.spi_out for u in _events(net, A, ChildSaUp)] == [MARK]
        sa.initiate("web")
        a.collect(net.now)
    mark = len(net.log)
    net.run(until=net.now + 1)
    bad = [u.spi_out for u in _events(net, A, ChildSaUp) if u.spi_out < 256]
    assert bad == [], "A installed a Child SA whose outbound SPI is the reserved 42"
    assert any(f.reason == "NO_PROPOSAL_CHOSEN" for f in _events(net, A, NegotiationFailed))
    sent = [decode_header(s.data).exchange for s in net.log[mark if exchange != "IKE_AUTH" else 0:] if s.src[0] == A]
    assert ExchangeType.INFORMATIONAL in sent


def _zero_for(liar: str) -> Any:
    real = rekey_ike.new_ike_spi

    def new_ike_spi(st: IkeSaState) -> bytes:
        return bytes(8) if st.remote_addr[0] != liar else real(st)   # the liar's own draws are zero

    return new_ike_spi


@pytest.mark.parametrize("liar", ["initiator", "responder"])
def test_an_ike_sa_rekey_to_a_zero_spi_is_refused(liar: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b = _pair(B)
    sa = a.initiate("conn", "net", net.now)
    net.run()
    (peer,) = b.sas
    # the rekey's initiator is A; the liar draws its new IKE SPI as zero
    monkeypatch.setattr(rekey_ike, "new_ike_spi", _zero_for(A if liar == "initiator" else B))
    sa.rekey()
    a.collect(net.now)
    net.run(until=net.now + 1)
    honest, honest_sa = (b, peer) if liar == "initiator" else (a, sa)
    assert honest_sa.heir is None and honest_sa.state is State.ESTABLISHED, "a rekey to a zero IKE SPI was taken"
    assert honest.sa_by_spi(bytes(8)) is None
    assert all(s.spi_i != bytes(8) and s.spi_r != bytes(8) for s in honest.sas)
