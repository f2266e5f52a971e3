"""Helpers for tests of the engine and of its users: test PKI material.

Kept in the package (not in tests/) so every test module can import it without
a conftest and whatever pytest import mode CI uses.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .auth import PrivateKey
from .endpoint import IkeEndpoint
from .events import Event
from .sa import IkeSa

EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey


def new_key(kind: str) -> PrivateKey:
    """``rsa`` (2048 bits), ``ecdsa`` (P-256), ``ecdsa384`` or ``ecdsa521``."""
    if kind == "rsa":
        return rsa.generate_private_key(65537, 2048)
    curve = {"ecdsa": ec.SECP256R1(), "ecdsa384": ec.SECP384R1(), "ecdsa521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tunsec test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.RFC822Name(name) if "@" in name else x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


def make_ca(cn: str = "tunsec test CA", kind: str = "ecdsa", issuer: Issued | None = None,
            key: PrivateKey | None = None) -> Issued:
    """A self-signed CA, or an intermediate CA when ``issuer`` is given; with ``key``, a CA of that
    key (the same ``cn`` and key as another: that one renewed, a new serial and signature)."""
    key = key if key is not None else new_key(kind)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(EPOCH)
        .not_valid_after(EPOCH + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def make_cert(
    ca: Issued,
    cn: str,
    san: Sequence[str] = (),
    kind: str = "ecdsa",
    days: int = 3650,
    not_before: datetime.datetime = EPOCH,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> Issued:
    """An end-entity certificate signed by ``ca`` (no EKU, like ``pki --issue`` by default), valid
    as long as make_ca's CAs unless ``days`` says otherwise: tests that hand it to daemons reading the
    real clock (strongSwan, tunsec up) must not fail a year after EPOCH;
    ``extensions``: more (extension, critical) pairs, e.g. keyUsage or extendedKeyUsage."""
    key = new_key(kind)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=days))
    )
    if san:
        builder = builder.add_extension(_san(san), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


# --------------------------------------------------------------------------
# an in-memory network of endpoints with a fake clock
# --------------------------------------------------------------------------


@dataclass
class Sent:
    """One datagram on the fake wire."""

    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    data: bytes
    dropped: bool = False


class Network:
    """Endpoints keyed by IP address, a fake clock, and a packet filter to lose datagrams.

    ``drop(sent)`` returning True loses that datagram. :meth:`run` delivers
    datagrams and fires timers (jumping the clock) until nothing is left to do.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.nodes: dict[str, IkeEndpoint] = {}
        self.log: list[Sent] = []
        self.drop: Callable[[Sent], bool] | None = None
        self.events: dict[str, list[tuple[IkeSa, Event]]] = {}

    def add(self, ip: str, endpoint: IkeEndpoint) -> IkeEndpoint:
        self.nodes[ip] = endpoint
        self.events[ip] = []
        return endpoint

    def _flush(self) -> list[Sent]:
        flight: list[Sent] = []
        for ip, node in self.nodes.items():
            for dgram in node.datagrams_to_send(self.now):
                sent = Sent(self.now, (ip, dgram.local_port), dgram.addr, dgram.data)
                sent.dropped = bool(self.drop and self.drop(sent))
                self.log.append(sent)
                if not sent.dropped:
                    flight.append(sent)
            while (ev := node.next_event()) is not None:
                self.events[ip].append(ev)
        return flight

    def collect(self) -> list[Sent]:
        """What the endpoints send now (logged, filtered by ``drop``), for a test that delivers the
        datagrams itself, in an order of its choosing (:meth:`deliver`)."""
        return self._flush()

    def deliver(self, sent: Sent) -> None:
        node = self.nodes.get(sent.dst[0])
        if node is not None:
            node.receive(sent.data, sent.src, self.now, local_addr=sent.dst)

    def step(self) -> bool:
        """Deliver the datagrams in flight now (one hop); False if there were none."""
        flight = self._flush()
        for sent in flight:
            self.deliver(sent)
        return bool(flight)

    def run(self, until: float | None = None, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if self.step():
                continue
            timers = [t for t in (n.get_timer() for n in self.nodes.values()) if t is not None]
            if not timers or (until is not None and min(timers) > until):
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.now = max(self.now, min(timers))
            for node in self.nodes.values():
                node.handle_timer(self.now)
        raise RuntimeError("network did not settle")

    def take(self, ip: str) -> list[Event]:
        """The events ``ip`` reported so far (and forget them)."""
        events = [ev for _, ev in self.events[ip]]
        self.events[ip] = []
        return events
