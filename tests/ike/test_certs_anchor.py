"""The trust anchor a peer's certificate verified to (certs.VerifiedPeer.anchor, IkeSaUp.peer_anchor):
what a reload checks its established IKE SAs against when CAs leave (services/ike/revoked.py).  A CA
is known by its subject and public key: a renewal is the same anchor, a new key under the same name
is another; the fingerprint is one object per CA, shared by every peer it certified."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from tunsec.ike.auth import AuthError
from tunsec.ike.certs import ca_fingerprint, verify_peer
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=10)
MOON = Identity.parse("moon.example")


def test_a_chain_through_an_intermediate_the_peer_sent_verifies_to_the_root() -> None:
    root = make_ca("root")
    inter = make_ca("intermediate", issuer=root)
    leaf = make_cert(inter, "moon", san=["moon.example"])
    verified = verify_peer([leaf.cert, inter.cert], [root.cert], NOW, MOON)
    assert verified.anchor == ca_fingerprint(root.cert) != ca_fingerprint(inter.cert)


def test_a_renewed_ca_is_the_same_anchor_and_a_rekeyed_one_another() -> None:
    ca = make_ca("partner CA")
    leaf = make_cert(ca, "moon", san=["moon.example"])
    renewed, rekeyed = make_ca("partner CA", key=ca.key), make_ca("partner CA")
    assert renewed.cert != ca.cert and renewed.cert.subject == rekeyed.cert.subject == ca.cert.subject
    assert ca_fingerprint(renewed.cert) == ca_fingerprint(ca.cert) != ca_fingerprint(rekeyed.cert)
    # what the renewal's anchor promises: the certificates the old one issued verify to it
    assert verify_peer([leaf.cert], [renewed.cert], NOW, MOON).anchor == ca_fingerprint(ca.cert)
    with pytest.raises(AuthError, match="not trusted"):
        verify_peer([leaf.cert], [rekeyed.cert], NOW, MOON)


def test_the_peers_of_one_ca_share_one_fingerprint_object() -> None:
    """32 bytes per CA, not per IKE SA: a gateway keeps one per established client."""
    ca = make_ca("shared CA")
    a = make_cert(ca, "a", san=["a.example"])
    b = make_cert(ca, "b", san=["b.example"])
    first = verify_peer([a.cert], [ca.cert], NOW, Identity.parse("a.example")).anchor
    assert verify_peer([b.cert], [ca.cert], NOW, Identity.parse("b.example")).anchor is first


@dataclass(frozen=True)
class _HalfRead:
    """A configured CA cryptography half reads: a subject it cannot parse (conf/credentials.subject_name's
    case) or a key type it does not support."""

    bad: str   # "subject" or "key"

    def public_key(self) -> Any:
        if self.bad == "key":
            raise UnsupportedAlgorithm("a key of no supported type")
        return make_ca().key.public_key()

    @property
    def subject(self) -> Any:
        raise ValueError("a subject that does not parse")

    def public_bytes(self, encoding: Encoding) -> bytes:
        return f"the certificate's DER ({self.bad})".encode()


@pytest.mark.parametrize("bad", ["subject", "key"])
def test_a_ca_cryptography_half_reads_is_known_by_its_bytes_not_a_traceback(bad: str) -> None:
    """A reload computes the anchors of every configured CA: one of them must not end it."""
    want = hashlib.sha256(f"the certificate's DER ({bad})".encode()).digest()
    assert ca_fingerprint(_HalfRead(bad)) == want   # type: ignore[arg-type]
