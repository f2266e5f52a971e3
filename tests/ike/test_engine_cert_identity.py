"""One certificate is one peer, whichever of its identities it sends as IDi.

A certificate certifies its subject DN in any ASN.1 string types and lengths (dn_equal), each of
its key ids and subjectAltNames.  A gateway knows the peer by the certificate (the subject DN,
re-encoded: identity.certified_identity), so max_ike_sas_per_identity, INITIAL_CONTACT, unique
and leases see one peer, not one per spelling.  The client here is an attacker's own software
that sends the IDi it likes (``ike_auth._id_payload`` replaced).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from test_engine_more import NOW, B, only, pubkey_cfg

from tunsec.ike._der import encode_tlv, parse_name, spki_key_bits
from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaLimit, IkeSaUp
from tunsec.ike.exchanges import ike_auth
from tunsec.ike.identity import Identity, _key_ids, certificate_has_identity, certified_identity
from tunsec.ike.message import IdPayload
from tunsec.ike.sa import State
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import EPOCH, Issued, Network, make_ca, make_cert, new_key
from tunsec.policy.pools import AddressPools, PoolConfig

ANY4 = ipaddress.ip_address("0.0.0.0")
UTF8, PRINTABLE = 0x0C, 0x13


def _subject(cert: Issued, tag: int, long_lengths: bool = False) -> bytes:
    """``cert``'s subject DN with every value in string type ``tag``; ``long_lengths``: the Name's
    own length in a non-minimal form (0x81 nn), which DER forbids and read_tlv accepts."""
    rdns = []
    for rdn in parse_name(cert.cert.subject.public_bytes()):
        (attr,) = rdn
        atv = encode_tlv(0x30, encode_tlv(0x06, attr.oid) + encode_tlv(tag, attr.value))
        rdns.append(encode_tlv(0x31, atv))
    body = b"".join(rdns)
    assert len(body) < 0x80
    return bytes([0x30, 0x81, len(body)]) + body if long_lengths else encode_tlv(0x30, body)


def spellings(moon: Issued) -> list[Identity]:
    ids = [Identity(IdType.DER_ASN1_DN, _subject(moon, PRINTABLE)),
           Identity(IdType.DER_ASN1_DN, _subject(moon, UTF8)),
           Identity(IdType.DER_ASN1_DN, _subject(moon, UTF8, long_lengths=True)),
           *(Identity(IdType.KEY_ID, k) for k in sorted(_key_ids(moon.cert))),
           Identity(IdType.FQDN, b"moon.example")]
    assert len(set(ids)) == len(ids) and all(certificate_has_identity(moon.cert, i) for i in ids)
    return ids


@pytest.fixture()
def idi(monkeypatch: pytest.MonkeyPatch) -> dict[str, Identity]:
    """The IDi each client (by its address) sends instead of its configured one."""
    sent: dict[str, Identity] = {}
    own = ike_auth._id_payload

    def attacker(st: IkeSaState, initiator: bool) -> IdPayload:
        ident = sent.get(st.config.local_addr or "") if initiator else None
        return IdPayload(True, ident.type, ident.data) if ident is not None else own(st, initiator)
    monkeypatch.setattr(ike_auth, "_id_payload", attacker)
    return sent


def gateway(net: Network, ca: Issued) -> tuple[IkeEndpoint, AddressPools]:
    sun = make_cert(ca, "sun", ["sun.example"])
    cfg = dataclasses.replace(pubkey_cfg(False, sun, ca, "sun.example", "%any"), max_ike_sas=1, pools=("v4",),
                              children=(child_config("net", "10.2.0.0/16", "dynamic"),))
    pools = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    return net.add(B, IkeEndpoint([cfg], address_pool=pools, wall_clock=lambda: NOW)), pools


def client(ca: Issued, moon: Issued, addr: str, initial_contact: bool) -> IkeConfig:
    return dataclasses.replace(pubkey_cfg(True, moon, ca, "moon.example", "sun.example"), local_addr=addr,
                               vips=(ANY4,), initial_contact=initial_contact,
                               children=(child_config("net", "dynamic", "10.2.0.0/16"),))


def connect(net: Network, ca: Issued, moon: Issued, addr: str, initial_contact: bool = False) -> None:
    node = net.add(addr, IkeEndpoint([client(ca, moon, addr, initial_contact)], wall_clock=lambda: NOW))
    node.initiate("conn", "net", net.now)
    net.run()


def test_each_spelling_of_one_certificates_identity_is_the_same_peer(idi: dict[str, Identity]) -> None:
    ca = make_ca(kind="ecdsa")
    moon = make_cert(ca, "moon", ["moon.example"])
    net = Network()
    gw, pools = gateway(net, ca)
    ids = spellings(moon)
    for i, ident in enumerate(ids):
        idi[addr := f"192.0.2.{10 + i}"] = ident
        connect(net, ca, moon, addr)
    events = net.take(B)
    (up,) = only(events, IkeSaUp)
    assert up.remote_id == certified_identity(moon.cert) == Identity.parse("C=CH, O=tunsec test, CN=moon")
    assert up.remote_sent_id == ids[0]   # (what it sent, for status and logs)
    assert len(only(events, IkeSaLimit)) == len(ids) - 1 == gw.stats.ike_sa_limit
    assert sum(sa.state is State.ESTABLISHED for sa in gw.sas) == 1
    assert len(pools.leases()) == 1 and len(up.peer_vips) == 1


def test_initial_contact_under_one_spelling_replaces_the_ike_sa_of_another(idi: dict[str, Identity]) -> None:
    ca = make_ca(kind="ecdsa")
    moon = make_cert(ca, "moon", ["moon.example"])
    net = Network()
    gw, pools = gateway(net, ca)
    ids = spellings(moon)
    idi["192.0.2.10"], idi["192.0.2.11"] = ids[0], ids[-2]   # its DN, then its key id
    connect(net, ca, moon, "192.0.2.10")
    (first,) = only(net.take(B), IkeSaUp)
    connect(net, ca, moon, "192.0.2.11", initial_contact=True)
    (second,) = only(net.take(B), IkeSaUp)
    (alive,) = [sa for sa in gw.sas if sa.state is State.ESTABLISHED]
    assert alive.remote_addr[0] == "192.0.2.11" and gw.stats.ike_sa_limit == 0
    assert second.peer_vips == first.peer_vips and len(pools.leases()) == 1   # its lease, not a second one


def _issue(ca: Issued, subject: x509.Name, san: str) -> x509.Certificate:
    key = new_key("ecdsa")
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=True)
            .sign(ca.key, hashes.SHA256()))


def test_the_certified_identity_is_the_subject_in_the_string_types_a_configured_dn_has() -> None:
    ca = make_ca(kind="ecdsa")
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corp", _type=_ASN1Type.PrintableString),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Jürgen", _type=_ASN1Type.BMPString)])
    cert = _issue(ca, subject, "j.example")
    ident = certified_identity(cert)
    assert ident == Identity.parse("C=CH, O=corp, CN=Jürgen") and ident.data != subject.public_bytes()


def test_a_certificate_without_subject_is_known_by_its_key_id() -> None:
    cert = _issue(make_ca(kind="ecdsa"), x509.Name([]), "nameless.example")
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert certified_identity(cert) == Identity(IdType.KEY_ID, hashlib.sha1(spki_key_bits(spki)).digest())

