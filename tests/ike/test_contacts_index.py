"""An initiator's INITIAL_CONTACT question (IkeEndpoint._has_contact, strongSwan's has_contact) is
answered from indexes (ike/contacts.py EstablishedByIdentity, by_address.py), not by comparing the
connection's remote id with every established IKE SA's peer (review revperf R2: 143 ms per
initiator IKE_AUTH at 10,000 road warriors with DNs).  Its meaning is the scan's: the index's
answer is checked against the scan over made-up IKE SAs, and Identity.match_key against
Identity.matches."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from test_engine_vips import GW, PSK, connect, gateway_cfg, pools

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.contacts import EstablishedByIdentity
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import State
from tunsec.ike.testing import Network

PEER = "192.0.2.50"   # a gateway our gateway also initiates to (a site connection)

_PRINTABLE = bytes.fromhex("3021310b300906035504061302434831123010060355040313096761746577"
                           "61792e6368")   # C=CH, CN=gateway.ch (PrintableString)


def _identities() -> list[Identity]:
    utf8 = bytearray(_PRINTABLE)
    utf8[utf8.index(b"gateway.ch") - 2] = 0x0C   # the same name as a UTF8String
    names = [Identity.parse(t) for t in ("gw.example", "GW.example", "carol@example", "Carol@Example",
                                         "192.0.2.1", "2001:db8::1", "@#0a0b", "C=CH, CN=gateway.ch",
                                         "C=CH, CN=other.ch", "%any")]
    names += [Identity(8, _PRINTABLE), Identity(8, bytes(utf8)), Identity(8, b"\x30\x03junk")]
    return names + [n.unproven() for n in names[:2]]   # a name nothing vouched for: itself only


def test_match_key_is_what_matches_compares() -> None:
    ids = _identities()
    for configured, other in itertools.product(ids, ids):
        if configured.is_any or configured.tag:
            continue   # %any matches all (any_up asks it apart); a configured id has no tag
        assert configured.matches(other) == (configured.match_key() == other.match_key()), (configured, other)


def _scan(sas: list[Any], local: Identity, remote: Identity, version: int) -> bool:
    """The second half of _has_contact before the index: every IKE SA compared."""
    return any(sa.state is State.ESTABLISHED and sa.config.local.id == local and (sent := sa.peer_sent_id) is not None
               and remote.matches(sent) and (":" in sa.remote_addr[0]) == (version == 6) for sa in sas)


def _made_up(rng: random.Random, ids: list[Identity], n: int) -> Iterator[Any]:
    for i in range(n):
        local = rng.choice(ids[:3])
        yield SimpleNamespace(local_spi=i.to_bytes(8, "big"), state=State.ESTABLISHED, peer_sent_id=rng.choice(ids),
                              config=SimpleNamespace(local=SimpleNamespace(id=local)),
                              remote_addr=(rng.choice(["198.51.100.7", "2001:db8::7"]), 4500))


def test_the_index_answers_as_the_scan_does_through_changes() -> None:
    rng, ids = random.Random(5), _identities()
    index, sas = EstablishedByIdentity(), list(_made_up(rng, ids, 40))
    for sa in sas:
        index.follow(sa)
    for step in range(400):
        sa = rng.choice(sas)
        change = rng.randrange(5)
        if change == 0:
            sa.state = rng.choice([State.ESTABLISHED, State.DELETING])
        elif change == 1:
            sa.remote_addr = (rng.choice(["198.51.100.8", "2001:db8::8"]), 4500)
        elif change == 2:
            sa.peer_sent_id = rng.choice(ids)
        if change == 3:
            index.forget(sa.local_spi)
            sa.state = State.CLOSED
        elif sa.state is not State.CLOSED:
            index.follow(sa)
        live = [s for s in sas if s.state is not State.CLOSED]
        configured = [r for r in ids if not r.tag]   # a connection's remote id (%any too)
        for local, remote, version in itertools.product(ids[:3], configured, (4, 6)):
            assert index.any_up(local, remote, version) == _scan(live, local, remote, version), (step, local, remote)


def _site(net: Network) -> IkeEndpoint:
    """Our gateway: road warriors of any identity (``rw``), and a site connection to PEER (``site``),
    with the same local identity."""
    site = IkeConfig("site", LocalAuth("psk", Identity.parse("gw.example")),
                     RemoteAuth("psk", Identity.parse("peer.example")),
                     parse_proposals("aes128gcm16-prfsha256-curve25519"),
                     (child_config("net", "10.9.0.0/16", "10.8.0.0/16", "aes128gcm16"),),
                     psk=PSK, local_addr=GW, remote_addr=PEER)
    gw = net.add(GW, IkeEndpoint([gateway_cfg(), site], address_pool=pools("10.3.0.0/24", "fd00:3::/112")))
    partner = IkeConfig("site", LocalAuth("psk", Identity.parse("peer.example")),
                        RemoteAuth("psk", Identity.parse("gw.example")),
                        parse_proposals("aes128gcm16-prfsha256-curve25519"),
                        (child_config("net", "10.8.0.0/16", "10.9.0.0/16", "aes128gcm16"),),
                        psk=PSK, local_addr=PEER)
    net.add(PEER, IkeEndpoint([partner]))
    return gw


def test_initial_contact_is_decided_without_a_pass_over_the_road_warriors(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Network()
    gw = _site(net)
    for i in range(1, 31):
        connect(net, f"c{i}.example", f"198.51.100.{i}")
    assert sum(sa.state is State.ESTABLISHED for sa in gw.sas) == 30
    compared = []
    asking = [False]
    matches = Identity.matches

    def counted(self: Identity, other: Identity) -> bool:
        if asking[0]:
            compared.append(other)
        return matches(self, other)
    monkeypatch.setattr(Identity, "matches", counted)
    has_contact = gw._has_contact

    def asked(st: Any) -> bool:
        asking[0] = True
        try:
            return has_contact(st)
        finally:
            asking[0] = False
    monkeypatch.setattr(gw, "_has_contact", asked)
    net.take(PEER)
    gw.initiate("site", "net", net.now)
    net.run(until=net.now + 5)
    ups = [e for e in net.take(PEER) if isinstance(e, IkeSaUp)]
    assert [e.initial_contact for e in ups] == [True]   # no IKE SA with the partner: INITIAL_CONTACT
    assert compared == [], f"the site's IKE_AUTH compared its remote id with {len(compared)} road warriors'"


