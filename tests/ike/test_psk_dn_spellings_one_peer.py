"""Review revsweep2 F1: one PSK holder named by a DN is a peer per spelling of that DN.

A per-user PSK entry (``secrets.ike-carol { id = "O=Example, CN=carol" }``), or a connection whose
``remote.id`` is that DN, accepts the DN in any ASN.1 string type and length (dn_equal: the entry is
looked up by dn_key, identity_allowed matches by dn_equal).  The IKE SA's peer is then the IDi as sent
(ike_auth._verify_peer keeps ``peer_id`` for a PSK; h/capfix made a certificate's the certificate's
subject, review S1), and Identity's equality and hash take the DN's bytes.  So the one key holder picks a
new peer per spelling: a share of the refusal and churn lines each (refusal_log.peer_key keeps a
per-peer PSK's identity, h/fixlog: "names the administrator gave keep their identity's share"), an
IKE SA each beyond max_ike_sas_per_identity (ike_sa_cap.cap_key), a lease each, and neither unique nor
INITIAL_CONTACT sees the others.  Seven string types read "carol" (UTF8, Printable, Teletex, IA5, Visible,
Universal, BMP), with non-minimal lengths more: 7^n spellings of a DN of n attributes, each a peer.

The client is an engine of its own whose configured identity is the DN spelled its way (a client sends
its ``local.id`` bytes as they are); the gateway and the pools are the real ones, over the in-memory
network (as ike/test_engine_cert_identity.py for certificates)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from test_engine_more import NOW, cfg, only

from tunsec.ike._der import encode_tlv
from tunsec.ike.config import LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity, dn_equal
from tunsec.ike.psk import PskEntry
from tunsec.ike.sa import State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.services.ike import refusal_log

GW = "192.0.2.2"
GW_ID = Identity.parse("sun.example")
CAROL_KEY = Secret(b"carol's own pre-shared key, long")
ANY4 = ipaddress.ip_address("0.0.0.0")
OID_O, OID_CN = bytes([0x55, 0x04, 0x0A]), bytes([0x55, 0x04, 0x03])
UTF8, PRINTABLE, IA5, BMP = 0x0C, 0x13, 0x16, 0x1E
CAROL_DN = Identity.parse("O=Example, CN=carol")


def _spelled(tag: int, long_length: bool = False) -> Identity:
    """O=Example, CN=carol with both values in string type ``tag``; ``long_length``: the Name's own
    length in a non-minimal form (0x81 nn), which read_tlv accepts."""
    def value(text: str) -> bytes:
        return encode_tlv(tag, text.encode("utf-16-be" if tag == BMP else "ascii"))
    body = b"".join(encode_tlv(0x31, encode_tlv(0x30, encode_tlv(0x06, oid) + value(text)))
                    for oid, text in ((OID_O, "Example"), (OID_CN, "carol")))
    der = bytes([0x30, 0x81, len(body)]) + body if long_length else encode_tlv(0x30, body)
    return Identity(IdType.DER_ASN1_DN, der)


def spellings() -> list[Identity]:
    ids = [_spelled(UTF8), _spelled(PRINTABLE), _spelled(IA5), _spelled(BMP), _spelled(UTF8, long_length=True)]
    assert len(set(ids)) == len(ids) and all(dn_equal(CAROL_DN.data, i.data) for i in ids), "(the premise)"
    return ids


def _gateway(net: Network, remote: RemoteAuth, **kw: Any) -> tuple[IkeEndpoint, AddressPools]:
    gw_cfg = dataclasses.replace(cfg(False), local=LocalAuth("psk", GW_ID), remote=remote, max_ike_sas=1,
                                 pools=("v4",), children=(child_config("net", "10.2.0.0/16", "dynamic"),), **kw)
    pools = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    return net.add(GW, IkeEndpoint([gw_cfg], address_pool=pools, wall_clock=lambda: NOW)), pools


def _connect(net: Network, ident: Identity, addr: str) -> None:
    c = dataclasses.replace(cfg(True), local=LocalAuth("psk", ident), remote=RemoteAuth("psk", GW_ID),
                            psk=CAROL_KEY, local_addr=addr, remote_addr=GW, vips=(ANY4,), initial_contact=False,
                            children=(child_config("net", "dynamic", "10.2.0.0/16"),))
    node = net.add(addr, IkeEndpoint([c], wall_clock=lambda: NOW))
    node.initiate("conn", "net", net.now)
    net.run()


def _per_user_gateway(net: Network) -> tuple[IkeEndpoint, AddressPools]:
    return _gateway(net, RemoteAuth("psk"), psk=None,
                    peer_psks=(PskEntry((CAROL_DN,), CAROL_KEY, "ike-carol"),
                               PskEntry((Identity.parse("dave.example"),), Secret(b"dave's own key, long enough"),
                                        "ike-dave")))


def _held(gateway: Callable[[Network], tuple[IkeEndpoint, AddressPools]], ids: list[Identity]) -> tuple[int, int]:
    """(IKE SAs established, leases) at the gateway once carol's key connected with each of ``ids``,
    each from an address of its own."""
    net = Network()
    gw, pools = gateway(net)
    for i, ident in enumerate(ids):
        _connect(net, ident, f"192.0.2.{10 + i}")
    assert len(only(net.take(GW), IkeSaUp)) >= 1, "(the premise: carol's key authenticates)"
    return sum(sa.state is State.ESTABLISHED for sa in gw.sas), len(pools.leases())


def test_one_per_user_psk_named_by_a_dn_is_one_peer_whichever_spelling_it_sends() -> None:
    """carol's key, five spellings of her DN from five addresses, max_ike_sas_per_identity = 1: on main
    five IKE SAs stay up and five leases are taken (one spelling from three addresses: one of each)."""
    ids = spellings()
    assert _held(_per_user_gateway, [ids[1]] * 3) == (1, 1), "(the premise: one spelling is one peer)"
    held = _held(_per_user_gateway, ids)
    assert held == (1, 1), (
        f"one holder of carol's per-user key held (IKE SAs up, leases) = {held} with "
        f"max_ike_sas_per_identity = 1, one per spelling of her DN")


def test_a_connection_naming_its_peer_by_a_dn_sees_one_peer_whichever_spelling_it_sends() -> None:
    """The same through ``remote.id = "O=Example, CN=carol"`` and the connection's one key."""
    def named(net: Network) -> tuple[IkeEndpoint, AddressPools]:
        return _gateway(net, RemoteAuth("psk", CAROL_DN), psk=CAROL_KEY)
    ids = spellings()
    assert _held(named, [ids[0]] * 3) == (1, 1), "(the premise: one spelling is one peer)"
    held = _held(named, ids)
    assert held == (1, 1), f"(IKE SAs up, leases) = {held}: a peer per spelling of the named DN"


def test_the_spellings_of_a_per_user_psks_dn_share_one_share_of_the_refusal_lines() -> None:
    """h/fixlog's refusal_log.peer_key: a per-peer PSK's identity keeps its share wherever it comes from;
    a share per spelling lets carol's one key write BURST lines a minute per kind per spelling, and take
    a kind's ceiling alone (CEILING / BURST = 20 spellings of the 7^2 = 49 of this DN: every other peer's
    lines of that kind only counted for the minute).  The gateway's own IKE SAs and IkeSaUp events (its
    limit raised so that each spelling's IKE SA stays up), established and not yet (its record away)."""
    net = Network()
    gw, _ = _gateway(net, RemoteAuth("psk"), psk=None, peer_psks=(PskEntry((CAROL_DN,), CAROL_KEY, "ike-carol"),))
    gw.set_configs([dataclasses.replace(c, max_ike_sas=100) for c in gw._configs.values()])
    for i, ident in enumerate(spellings()):
        _connect(net, ident, f"192.0.2.{10 + i}")
    ups = {ev.spi_r: SimpleNamespace(ev=ev) for ev in only(net.take(GW), IkeSaUp)}
    sas = [sa for sa in gw.sas if sa.state is State.ESTABLISHED]
    assert len(sas) == len(ups) == len(spellings()), "(the premise: each spelling's IKE SA is up)"
    limits = SimpleNamespace(limits=SimpleNamespace(ipv6_source_prefix=64))
    up: Any = SimpleNamespace(ike_up=ups, endpoint=limits)
    not_up: Any = SimpleNamespace(ike_up={}, endpoint=limits)
    keys = {refusal_log.peer_key(service, sa, "conn") for sa in sas for service in (up, not_up)}
    assert len(keys) == 1, f"carol's one key is {len(keys)} peers of the refusal lines, one per spelling of her DN"


def test_the_peer_is_known_by_the_configured_dn_and_what_it_sent_is_kept() -> None:
    """The fix's other half: IkeSaUp's remote_id is the DN as the entry names it (one identity for
    unique, INITIAL_CONTACT, leases, the worker's reserve), and remote_sent_id is the spelling that came
    (`tunsec status`'s remote_ike_id); a spelling equal to the configured one has nothing to keep."""
    sent = spellings()[3]   # BMPString: what the entry's text never parses to
    net = Network()
    _per_user_gateway(net)
    _connect(net, sent, "192.0.2.10")
    (up,) = only(net.take(GW), IkeSaUp)
    assert up.remote_id == CAROL_DN and up.remote_id.data == CAROL_DN.data and up.remote_sent_id == sent
    net = Network()
    _per_user_gateway(net)
    _connect(net, CAROL_DN, "192.0.2.10")
    (up,) = only(net.take(GW), IkeSaUp)
    assert up.remote_id.data == CAROL_DN.data and up.remote_sent_id is None
