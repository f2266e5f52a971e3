"""The PAD (tunsec.policy.pad): who may use a connection, and which traffic selectors it may claim.

Unit decisions first, then the same decisions as two engines (in memory, fake clock) meet them.
"""

from __future__ import annotations

import socket

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import AuthMethod
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pad import AddressMatch, PadEntry, Refused, candidates, check_unique_keep
from tunsec.policy.selector import Ts
from tunsec.services.base import StartupError, bind_udp

A, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"
PSK = Secret(b"a shared secret of some length")
MOON = Identity.parse("moon.example")


def entry(remote_id: str = "moon.example", auth: str = "psk", remote_addr: str | None = A) -> PadEntry:
    return PadEntry("conn", Identity.parse(remote_id), auth, remote_addr)


# ---------------------------------------------------------------------- decisions


def test_the_configured_peer_is_authorized() -> None:
    entry().authorize(MOON, AuthMethod.PSK, A)            # no exception
    entry(remote_id="%any", remote_addr="%any").authorize(Identity.parse("anyone.example"), AuthMethod.PSK, C)


def test_an_identity_other_than_the_configured_one_is_refused() -> None:
    with pytest.raises(Refused, match=r"peer identity sun\.example is not the configured moon\.example"):
        entry().authorize(Identity.parse("sun.example"), AuthMethod.PSK, A)


def test_an_address_not_in_remote_addrs_is_refused() -> None:
    with pytest.raises(Refused, match=f"peer address {C} is not its remote address {A}"):
        entry().authorize(MOON, AuthMethod.PSK, C)
    assert entry().address_match(C) is AddressMatch.NONE
    assert entry().address_match(A) is AddressMatch.EXACT
    assert entry(remote_addr=None).address_match(C) is AddressMatch.ANY


def test_an_auth_method_the_connection_does_not_accept_is_refused() -> None:
    with pytest.raises(Refused, match="expected a shared key"):
        entry().authorize(MOON, AuthMethod.DIGITAL_SIGNATURE, A)
    with pytest.raises(Refused, match="expected a signature"):
        entry(auth="pubkey").authorize(MOON, AuthMethod.PSK, A)
    entry(auth="pubkey").authorize(MOON, AuthMethod.ECDSA_SHA256_P256, A)


def test_selectors_outside_the_allowed_ones_are_refused_and_overlaps_narrowed() -> None:
    allowed = (Ts.parse("10.2.0.0/16"),)
    assert entry().selectors([Ts.parse("10.9.0.0/24")], allowed) == ()            # nothing of it allowed
    assert entry().selectors([Ts.parse("10.0.0.0/8")], allowed) == allowed        # narrowed to what is allowed
    assert entry().selectors([Ts.parse("10.2.3.0/24"), Ts.parse("10.9.0.0/24")], allowed) == (
        Ts.parse("10.2.3.0/24"),)                                                  # the outside part dropped


def test_candidates_are_exact_addresses_first_then_wildcards_never_others() -> None:
    entries = [PadEntry("any", MOON, "psk", "%any"), PadEntry("other", MOON, "psk", C),
               PadEntry("exact", MOON, "psk", A)]
    assert candidates(entries, A) == ["exact", "any"]
    assert candidates(entries, B) == ["any"]


# ---------------------------------------------------------------------- the engine asks the PAD


def cfg(initiator: bool, remote_id: str = "moon.example", remote_addr: str | None = None,
        remote_ts: str = "10.1.0.0/16") -> IkeConfig:
    local_ts, their_ts = ("10.1.0.0/16", "10.2.0.0/16") if initiator else ("10.2.0.0/16", remote_ts)
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", remote_id)
    return IkeConfig("conn", LocalAuth("psk", Identity.parse(ids[0])), RemoteAuth("psk", Identity.parse(ids[1])),
                     parse_proposals("aes128gcm16-prfsha256-curve25519"),
                     (child_config("net", local_ts, their_ts, "aes128gcm16"),), psk=PSK,
                     local_addr=A if initiator else B, remote_addr=B if initiator else remote_addr)


def meet(responder: IkeConfig) -> tuple[Network, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)]))
    b = net.add(B, IkeEndpoint([responder]))
    a.initiate("conn", "net", net.now)
    net.run(until=60.0)
    return net, b


def test_engine_pad_entry_is_made_from_the_connection() -> None:
    e = PadEntry.of(cfg(False, remote_addr=A))
    assert (e.name, e.remote_id, e.auth, e.remote_addr) == ("conn", MOON, "psk", A)


def test_engine_admits_the_configured_peer() -> None:
    net, _ = meet(cfg(False, remote_addr=A))
    assert any(isinstance(e, ChildSaUp) for e in net.take(B))


def test_engine_refuses_an_identity_mismatch() -> None:
    net, _ = meet(cfg(False, remote_id="sun-or-someone.example"))
    events = net.take(B)
    assert not any(isinstance(e, IkeSaUp) for e in events)
    assert any(isinstance(e, AuthFailed) and "moon.example" in str(e) for e in events), events


def test_engine_keeps_no_state_for_an_address_outside_remote_addrs() -> None:
    net, b = meet(cfg(False, remote_addr=C))
    assert b.sa_count == 0 and not net.take(B)


def test_engine_refuses_selectors_outside_the_allowed_ones() -> None:
    net, _ = meet(cfg(False, remote_ts="10.77.0.0/16"))   # A proposes 10.1.0.0/16 as its side
    events = net.take(B)
    assert any(isinstance(e, IkeSaUp) for e in events)     # the IKE SA is fine, the Child SA is not
    assert not any(isinstance(e, ChildSaUp) for e in events)


# ---------------------------------------------------------------------- socket errors name the fix


def test_a_bind_conflict_names_operation_address_cause_and_fix() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as err:
            bind_udp(4, "127.0.0.1", port, purpose="IKE")
    text = str(err.value)
    assert f"cannot bind UDP (IKE) 127.0.0.1 port {port}" in text and "another program" in text


def test_unique_keep_refuses_the_identity_from_any_address_of_the_family() -> None:
    """As strongSwan's IKEv2 check_uniqueness: even from the same address (no IKEv1-style
    reauthentication exception); another identity or address family is no duplicate."""
    road, other = Identity.parse("road.example"), Identity.parse("other.example")
    established = [(road, "198.51.100.1"), (other, "198.51.100.2")]
    for addr in ("198.51.100.9", "198.51.100.1"):
        with pytest.raises(Refused, match=r"road\.example already has an IKE SA from 198\.51\.100\.1"):
            check_unique_keep(road, addr, established)
    check_unique_keep(road, "2001:db8::1", established)
    check_unique_keep(Identity.parse("new.example"), "198.51.100.9", established)
