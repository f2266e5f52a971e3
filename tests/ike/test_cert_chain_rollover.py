"""Review revcertfix F2: the intermediate pruning of h/fixcerts refuses legitimate chains sent
during a CA key rollover.

certs._path_candidates keeps one intermediate per subject name (the first whose issuer *name* is a
configured CA's) and drops every self-issued one. Names are not keys:

- root key rollover: the root is re-keyed under the same name, and the intermediate re-issued
  under the new root key (same subject and key, new signature). A peer that sends both issues of
  its intermediate, so that gateways trusting either root accept it, is refused by a gateway that
  trusts the root whose issue comes second: both issues' issuer is "the root" by name, the first
  is kept, its signature does not verify under the configured key, and the other is never tried.
- intermediate key rollover: two issues of one intermediate name with different keys, both
  issued by the configured root; the leaf was issued by the second.
- RFC 4158 §2.4 / RFC 5280 §6.1 rollover link certificate (NewWithOld: subject = issuer = the
  root, the new root key, signed by the old): self-issued but not a trust anchor, it is how a
  relying party that still trusts only the old root reaches certificates of the new one.

Each verified before h/fixcerts (cryptography's path builder tries every candidate issuer); the
peer's own chain is refused, no other peer is affected.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tunsec.ike.auth import PrivateKey
from tunsec.ike.certs import verify_peer
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, Issued, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)


def _reissue(subject: Issued, issuer_name: x509.Name, signer: PrivateKey) -> x509.Certificate:
    """``subject``'s CA certificate (its name and key) issued again, by ``signer`` in the name of ``issuer_name``."""
    return (x509.CertificateBuilder().subject_name(subject.cert.subject).issuer_name(issuer_name)
            .public_key(subject.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))


def _verifies(chain: list[x509.Certificate], cas: list[x509.Certificate]) -> None:
    verify_peer(chain, cas, NOW, Identity.from_name(chain[0].subject))


def test_an_intermediate_sent_under_both_root_keys_verifies_with_the_new_root() -> None:
    old_root = make_ca("revcertfix rollover root")
    new_root = make_ca("revcertfix rollover root")            # same name, new key
    sub = make_ca("revcertfix rollover sub", issuer=old_root)   # issued under the old root key
    sub_by_new = _reissue(sub, new_root.cert.subject, new_root.key)
    alice = make_cert(sub, "alice")
    # the peer sends both issues of its intermediate, old first: a gateway that still trusts only the
    # old root and one that trusts only the new root should both accept it
    chain = [alice.cert, sub.cert, sub_by_new]
    _verifies(chain, [old_root.cert])
    _verifies(chain, [new_root.cert])


def test_the_leafs_own_issue_of_a_rekeyed_intermediate_is_used() -> None:
    root = make_ca("revcertfix rekeyed root")
    sub_old = make_ca("revcertfix rekeyed sub", issuer=root)
    sub_new = make_ca("revcertfix rekeyed sub", issuer=root)    # same name, new key
    bob = make_cert(sub_new, "bob")
    _verifies([bob.cert, sub_old.cert, sub_new.cert], [root.cert])


def test_a_rollover_link_certificate_reaches_the_old_root() -> None:
    old_root = make_ca("revcertfix linked root")
    new_root = make_ca("revcertfix linked root")              # same name, new key
    new_with_old = _reissue(new_root, old_root.cert.subject, old_root.key)   # self-issued, not self-signed
    sub = make_ca("revcertfix linked sub", issuer=new_root)
    carol = make_cert(sub, "carol")
    _verifies([carol.cert, sub.cert, new_with_old], [old_root.cert])
