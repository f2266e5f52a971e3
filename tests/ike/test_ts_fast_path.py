"""Children whose traffic selectors give the fast path nothing are refused, never installed.

Two engines wired in memory on a fake clock. Narrowing can leave TSi and TSr
lists whose every pair differs in address family or protocol: such an SA
would carry no fast-path selector (and an SA without selectors admits
nothing), so the responder answers TS_UNACCEPTABLE, and an initiator that gets
such an answer from a peer deletes the child the peer just installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pytest

from tunsec.ike.config import ChildConfig, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, ProtocolId
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason, Event, IkeSaUp, NegotiationFailed, SpiUnused
from tunsec.ike.exchanges import child as childmod
from tunsec.ike.identity import Identity
from tunsec.ike.message import SaPayload, decode_header
from tunsec.ike.proposals import parse_proposals, select_proposal
from tunsec.ike.secret import Secret
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import Network
from tunsec.ike.ts import Ts, narrow, resolve_all
from tunsec.policy.selector import fast_selectors

A, B = "192.0.2.1", "192.0.2.2"
PSK = Secret(b"a shared secret of some length")
E = TypeVar("E")

# what the initiator proposes: one IPv4 and one IPv6 subnet on each side
INIT_LOCAL, INIT_REMOTE = "10.1.0.0/16, fec1::/64", "10.2.0.0/16, fec2::/64"


def only(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def config(initiator: bool, children: tuple[ChildConfig, ...]) -> IkeConfig:
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", "moon.example")
    return IkeConfig(
        "conn",
        LocalAuth("psk", Identity.parse(ids[0])),
        RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals("aes256gcm16-prfsha384-ecp384"),
        children,
        psk=PSK,
        local_addr=A if initiator else B,
        remote_addr=B if initiator else None,
    )


def pair(init_children: tuple[ChildConfig, ...], resp_children: tuple[ChildConfig, ...]) -> tuple[
    Network, IkeEndpoint, IkeEndpoint
]:
    net = Network()
    a = net.add(A, IkeEndpoint([config(True, init_children)]))
    b = net.add(B, IkeEndpoint([config(False, resp_children)]))
    return net, a, b


MIXED_INIT = child_config("mixed", INIT_LOCAL, INIT_REMOTE, "aes128gcm16")
# narrows TSi to the initiator's IPv4 subnet and TSr to its IPv6 one: no pair of one family
CROSSED_RESP = child_config("mixed", "fec2::/64", "10.1.0.0/16", "aes128gcm16")
# a first child apart from the mixed one, so that CREATE_CHILD_SA can carry the mixed one
NET_INIT = child_config("net", "10.5.0.0/16", "10.6.0.0/16", "aes128gcm16")
NET_RESP = child_config("net", "10.6.0.0/16", "10.5.0.0/16", "aes128gcm16")


def _deletes(net: Network, src: str) -> list[bytes]:
    return [s.data for s in net.log if s.src[0] == src and decode_header(s.data).exchange == ExchangeType.INFORMATIONAL]


# ---------------------------------------------------------------- the responder refuses


def test_responder_refuses_crossed_families_in_ike_auth() -> None:
    net, a, b = pair((MIXED_INIT,), (CROSSED_RESP,))
    a.initiate("conn", "mixed", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    (fb,) = only(ev_b, NegotiationFailed)
    assert fb.reason == "TS_UNACCEPTABLE" and fb.child == "mixed"
    assert "no local/remote selector pair of the same address family" in fb.detail
    assert only(ev_a, NegotiationFailed)[0].reason == "TS_UNACCEPTABLE"
    assert not only(ev_a, ChildSaUp) and not only(ev_b, ChildSaUp)
    assert only(ev_a, IkeSaUp) and only(ev_b, IkeSaUp)   # the IKE SA stays
    assert only(ev_a, SpiUnused)                         # the initiator's SPI goes back
    assert not b.sas[0].children and not a.sas[0].children


def test_responder_picks_a_later_child_whose_selectors_fit() -> None:
    fitting = child_config("fits", "fec2::/64", "fec1::/64", "aes128gcm16")
    net, a, _b = pair((MIXED_INIT,), (CROSSED_RESP, fitting))
    a.initiate("conn", "mixed", net.now)
    net.run()
    (cb,) = only(net.take(B), ChildSaUp)
    assert cb.child == "fits"
    assert [str(t) for t in cb.local_ts] == ["fec2::/64"] and [str(t) for t in cb.remote_ts] == ["fec1::/64"]
    assert len(fast_selectors(cb.local_ts, cb.remote_ts).inbound) == 1


def test_responder_refuses_crossed_families_in_create_child_sa() -> None:
    net, a, b = pair((NET_INIT, MIXED_INIT), (NET_RESP, CROSSED_RESP))
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    a.sas[0].initiate("mixed")
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    assert only(ev_b, NegotiationFailed)[0].reason == "TS_UNACCEPTABLE"
    assert only(ev_a, NegotiationFailed)[0].reason == "TS_UNACCEPTABLE"
    assert not only(ev_a, ChildSaUp) and not only(ev_b, ChildSaUp)
    assert [c.name for c in a.sas[0].children] == ["net"] and [c.name for c in b.sas[0].children] == ["net"]


def test_responder_refuses_more_pairs_than_an_sa_holds() -> None:
    nine = ", ".join(f"10.1.{i}.0/24" for i in range(9))
    many = child_config("many", nine, "10.2.0.0/16", "aes128gcm16")
    net, a, _b = pair((many,), (child_config("many", "10.2.0.0/16", "10.1.0.0/16", "aes128gcm16"),))
    a.initiate("conn", "many", net.now)
    net.run()
    (fb,) = only(net.take(B), NegotiationFailed)
    assert fb.reason == "TS_UNACCEPTABLE" and "at most 8 per SA" in fb.detail
    assert not only(net.take(A), ChildSaUp)


# ---------------------------------------------------------------- a peer that answers crossed families


def _lax_select(
    st: IkeSaState,
    sa: SaPayload,
    tsi: Sequence[Ts],
    tsr: Sequence[Ts],
    strip_dh: bool,
    prefer_group: int | None = None,
    only: ChildConfig | None = None,
) -> childmod.Selection | childmod.Refusal:
    """A responder that narrows but never checks the result against a fast path (as tunsec did)."""
    theirs = [p for p in sa.proposals if p.protocol == ProtocolId.ESP and len(p.spi) == 4]
    for cfg in (only,) if only is not None else st.config.children:
        new_tsi = narrow(tsi, resolve_all(cfg.remote_ts, st.remote_addr[0]))
        new_tsr = narrow(tsr, resolve_all(cfg.local_ts, st.local_ip))
        chosen = select_proposal(cfg.esp_proposals, theirs, prefer_group, strip_dh)
        if new_tsi and new_tsr and chosen is not None:
            return childmod.Selection(cfg, chosen, new_tsi, new_tsr)
    raise AssertionError("the lax responder found no child")


@pytest.fixture
def lax_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    # only a responder calls responder_select: the initiator under test keeps every check
    monkeypatch.setattr(childmod, "responder_select", _lax_select)


@pytest.mark.usefixtures("lax_peer")
def test_initiator_refuses_and_deletes_a_crossed_answer_in_ike_auth() -> None:
    net, a, b = pair((MIXED_INIT,), (CROSSED_RESP,))
    a.initiate("conn", "mixed", net.now)
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    # the peer answered TSi = 10.1.0.0/16, TSr = fec2::/64 and installed its half
    (cb,) = only(ev_b, ChildSaUp)
    assert [t.version for t in cb.remote_ts] == [4] and [t.version for t in cb.local_ts] == [6]
    # we never installed ours, said why, returned the SPI and asked the peer to delete its half
    assert not only(ev_a, ChildSaUp)
    (fa,) = only(ev_a, NegotiationFailed)
    assert fa.reason == "TS_UNACCEPTABLE" and fa.child == "mixed"
    assert "no local/remote selector pair of the same address family" in fa.detail
    assert [u.spi for u in only(ev_a, SpiUnused)] == [cb.spi_out]
    assert _deletes(net, A)
    (down,) = only(ev_b, ChildSaDown)
    assert down.spi_in == cb.spi_in and down.reason is DownReason.DELETED_BY_PEER
    assert not a.sas[0].children and not b.sas[0].children
    assert only(ev_a, IkeSaUp) and len(a.sas) == 1   # the IKE SA itself is fine


@pytest.mark.usefixtures("lax_peer")
def test_initiator_refuses_and_deletes_a_crossed_answer_in_create_child_sa() -> None:
    net, a, b = pair((NET_INIT, MIXED_INIT), (NET_RESP, CROSSED_RESP))
    a.initiate("conn", "net", net.now)
    net.run()
    net.take(A), net.take(B)
    a.sas[0].initiate("mixed")
    net.run()
    ev_a, ev_b = net.take(A), net.take(B)
    (cb,) = only(ev_b, ChildSaUp)
    assert cb.child == "mixed"
    assert not only(ev_a, ChildSaUp)
    assert only(ev_a, NegotiationFailed)[0].reason == "TS_UNACCEPTABLE"
    (down,) = only(ev_b, ChildSaDown)
    assert down.spi_in == cb.spi_in
    assert [c.name for c in b.sas[0].children] == [c.name for c in a.sas[0].children]
