"""A client's certificate, signed by the gateway's CA, whose subject DN cryptography cannot read (it
parses lazily: the certificate loads, its subject raises), and one whose subject is empty.

After its AUTH verifies, a certificate is one peer, known by its subject DN (identity.certified_identity),
or by its key id when the subject is empty.  A subject that does not parse must end the IKE_AUTH
with AUTHENTICATION_FAILED and one clear log line naming the client's address and what is wrong:
no traceback, no internal error, and nothing kept (no IKE SA, lease, Child SA, policy, claim or
SA in the worker).  An empty subject is a peer like any other, known by its key id.

A real IkeService (the worker's request handling and the C fast path in process) with a pool,
remote.id %any by a CA; the clients are IKE engines wired to it (test_ikeservice_peers.Gateway)
whose certificates are made here, their TBS re-signed by the CA with the subject replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from test_ikeservice_peers import GW, FakeSocket, Gateway, InProcessWorker, run, site_ip

from tunsec.conf.connections import Connection
from tunsec.dataplane.pipe import Direction
from tunsec.ike._der import encode_oid, encode_tlv, read_all, read_tlv
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity, certified_identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.testing import Issued, Network, make_ca, make_cert
from tunsec.policy.ids import IdSpace
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.services.ike import IkeService

POOL = PoolConfig.parse_addrs("rw", "10.3.0.0/24")
PROPOSALS = parse_proposals("aes128gcm16-prfsha256-curve25519")
CN, C = "2.5.4.3", "2.5.4.6"
UTF8, PRINTABLE, INTEGER = 0x0C, 0x13, 0x02


def _atv(oid: str, tag: int, value: bytes) -> bytes:
    return encode_tlv(0x30, encode_tlv(0x06, encode_oid(oid)) + encode_tlv(tag, value))


def _name(*rdns: bytes) -> bytes:
    return encode_tlv(0x30, b"".join(encode_tlv(0x31, rdn) for rdn in rdns))


# subjects DER lets through but cryptography refuses when the subject is read
UNREADABLE = {
    "an attribute twice in one RDN": _name(_atv(CN, UTF8, b"moon") + _atv(CN, UTF8, b"moon")),
    "the same attribute in two string types in one RDN": _name(_atv(CN, UTF8, b"moon") + _atv(CN, PRINTABLE, b"moon")),
    "an empty RDN": _name(b""),
    "a value that is no string": _name(_atv(C, PRINTABLE, b"CH"), _atv(CN, INTEGER, b"\x01")),
    "a UTF8String that is not UTF-8": _name(_atv(CN, UTF8, b"moo\xffn")),
}


def with_subject(ca: Issued, holder: Issued, subject: bytes) -> Issued:
    """``holder``'s certificate with its subject replaced by ``subject`` (DER), signed by ``ca``."""
    tag, body, _ = read_tlv(holder.cert.public_bytes(Encoding.DER))
    (_, tbs), (alg_tag, alg), _sig = read_all(body)
    fields = read_all(tbs)
    # [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, [3] extensions
    assert fields[0][0] == 0xA0
    parts = [encode_tlv(t, v) for t, v in fields]
    parts[5] = subject
    new_tbs = encode_tlv(0x30, b"".join(parts))
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    sig = ca.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    der = encode_tlv(tag, new_tbs + encode_tlv(alg_tag, alg) + encode_tlv(0x03, b"\x00" + sig))
    return Issued(x509.load_der_x509_certificate(der), holder.key)   # loads: the subject is read lazily


@dataclasses.dataclass(frozen=True)
class Client:
    cert: Issued
    ident: Identity             # what it sends as IDi
    initial_contact: bool = False


@dataclasses.dataclass
class CertGateway(Gateway):
    """An IkeService on GW: certificates of ``ca`` from anyone (remote.id %any), a virtual IP each from
    POOL; client i authenticates with ``clients[i]`` and asks for a virtual IP."""

    ca: Issued = dataclasses.field(default_factory=lambda: make_ca(kind="ecdsa"))
    clients: tuple[Client, ...] = ()

    async def start(self) -> None:
        gw = gateway_config(self.ca, make_cert(self.ca, "sun", ["gw.example"]))
        self.worker = worker = InProcessWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService([Connection(gw.name, gw)], lambda: worker, {4: GW}, IdSpace(),  # type: ignore[arg-type,return-value]
                                  pools=[POOL])
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        for i, c in enumerate(self.clients):
            self.sites.append(IkeEndpoint([client_config(i, c, self.ca)]))
            self.site_events.append([])
        self.n = len(self.clients)


def gateway_config(ca: Issued, sun: Issued) -> IkeConfig:
    """Certificates of ``ca`` from anyone (remote.id %any), a virtual IP each from POOL."""
    return IkeConfig("gw", LocalAuth("pubkey", Identity.parse("gw.example"), sun.cert, (), sun.key),
                     RemoteAuth("pubkey", Identity.parse("%any"), (ca.cert,)), PROPOSALS,
                     (child_config("net", "10.1.0.0/16", "dynamic", "aes128gcm16"),), local_addr=GW,
                     pools=(POOL.name,))


def client_config(i: int, c: Client, ca: Issued) -> IkeConfig:
    """Client i: to the gateway gw.example (a certificate of ``ca``), asking for a virtual IP."""
    return IkeConfig(f"site{i}", LocalAuth("pubkey", c.ident, c.cert.cert, (), c.cert.key),
                     RemoteAuth("pubkey", Identity.parse("gw.example"), (ca.cert,)), PROPOSALS,
                     (child_config("net", "dynamic", "10.1.0.0/16", "aes128gcm16"),),
                     local_addr=site_ip(i), remote_addr=GW, mobike=False,
                     vips=(ipaddress.ip_address("0.0.0.0"),), initial_contact=c.initial_contact)


def assert_nothing_kept(gw: CertGateway) -> None:
    svc = gw.service
    assert svc.endpoint.sas == []
    assert svc.endpoint._ike_sa_counts._key_of == {}   # counted for no identity (max_ike_sas_per_identity)
    assert svc.endpoint.half_open == 0
    assert svc.ike_up == {} and svc.children == {} and len(svc.ts_claims) == 0
    assert svc.pools.leases() == []
    assert gw.worker.dp.policies() == []
    assert not [s for s in gw.worker.dp.sas() if s.state == "mature"]


@pytest.mark.parametrize("subject", list(UNREADABLE.values()), ids=list(UNREADABLE))
def test_a_certificate_whose_subject_does_not_parse_is_refused_with_one_clear_line(
        subject: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tunsec")
    ca = make_ca(kind="ecdsa")
    good = make_cert(ca, "moon", ["moon.example"])
    bad = with_subject(ca, good, subject)
    with pytest.raises(ValueError):
        _ = bad.cert.subject   # (what the gateway meets once the chain is checked)

    async def body() -> None:
        moon = Identity.parse("moon.example")
        gw = CertGateway(0, ca=ca, clients=(Client(bad, moon), Client(good, moon)))
        await gw.start()
        gw.connect(0)
        await gw.settle()
        (failed,) = [e for e in gw.site_events[0] if isinstance(e, AuthFailed)]
        assert failed.by_peer   # the client was told AUTHENTICATION_FAILED
        assert not [e for e in gw.site_events[0] if isinstance(e, IkeSaUp)]
        assert gw.service.event_errors == 0
        assert_nothing_kept(gw)
        # the same holder with its certificate as issued is served: nothing of the refusal is in its way
        gw.connect(1)
        await gw.settle()
        (up,) = gw.service.ike_up.values()
        assert up["remote_id"] == str(certified_identity(good.cert)) == "C=CH, O=tunsec test, CN=moon"
        assert len(gw.service.pools.leases()) == 1 and len(gw.service.children) == 1
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "AUTHENTICATION_FAILED" in r.getMessage()]
    assert line.startswith(f"gw: AUTHENTICATION_FAILED from {site_ip(0)}[")
    assert "the peer failed authentication ('peer certificate unusable, its subject does not parse: " in line
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


def test_a_certificate_with_an_empty_subject_is_one_peer_known_by_its_key_id() -> None:
    """Sent as its subjectAltName or as its (empty) subject DN, the certificate is one peer, its key
    id: the second IKE SA (INITIAL_CONTACT) replaces the first and keeps its virtual IP."""
    ca = make_ca(kind="ecdsa")
    nameless = with_subject(ca, make_cert(ca, "x", ["nameless.example"]), _name())
    key_id = certified_identity(nameless.cert)
    assert key_id.type == IdType.KEY_ID
    empty_dn = Identity(IdType.DER_ASN1_DN, _name())

    async def body() -> None:
        gw = CertGateway(0, ca=ca, clients=(Client(nameless, Identity.parse("nameless.example")),
                                            Client(nameless, empty_dn, initial_contact=True)))
        await gw.start()
        gw.connect(0)
        await gw.settle()
        (first,) = gw.service.ike_up.values()
        assert first["remote_id"] == str(key_id) and first["remote_ike_id"] == "nameless.example"
        (lease,) = gw.service.pools.leases()
        assert lease.identity == str(key_id)
        gw.connect(1)
        await gw.settle()
        (second,) = gw.service.ike_up.values()
        assert second["remote"] == site_ip(1) and second["remote_id"] == str(key_id)
        assert second["remote_ike_id"] == str(empty_dn)
        assert [x.address for x in gw.service.pools.leases()] == [lease.address]
        assert [sa.remote_addr[0] for sa in gw.service.endpoint.sas if sa.state.value == "established"] \
            == [site_ip(1)]
        assert [str(c.remote.addr) for c in gw.service.children.values()] == [site_ip(1)]
        assert [p for p in gw.worker.dp.policies()]   # its Child SA's
        assert len({s.spi for s in gw.worker.dp.sas() if s.state == "mature" and s.direction is Direction.IN}) == 1
    run(body())


def test_a_gateway_whose_certificate_subject_does_not_parse_is_refused_by_the_client() -> None:
    """tunsec as the client: the gateway's AUTH verifies against the CA, its subject does not parse:
    the client's IKE SA fails with that reason (no Child SA, nothing left open)."""
    ca = make_ca(kind="ecdsa")
    sun = with_subject(ca, make_cert(ca, "sun", ["gw.example"]), UNREADABLE["an empty RDN"])
    net = Network()
    net.add(GW, IkeEndpoint([gateway_config(ca, sun)], address_pool=AddressPools([POOL])))
    client = net.add(site_ip(0), IkeEndpoint([client_config(0, Client(make_cert(ca, "moon", ["moon.example"]),
                                                                       Identity.parse("moon.example")), ca)]))
    client.initiate("site0", "net", net.now)
    net.run()
    events = net.take(site_ip(0))
    (failed,) = [e for e in events if isinstance(e, AuthFailed)]
    assert not failed.by_peer
    assert failed.reason.startswith("peer certificate unusable, its subject does not parse: ")
    assert not [e for e in events if isinstance(e, (IkeSaUp, ChildSaUp))]
    assert all(sa.is_closed for sa in client.sas)
