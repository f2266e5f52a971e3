"""The control process's start-up self-test of the IKE algorithms its connections can negotiate.

Run once before the daemon reports itself up: every key exchange group, PRF and SK cipher
(with its integrity algorithm) named in a connection's ``proposals`` makes one round trip with
throwaway keys (two key pairs agree on a shared secret, prf+ gives stable output, a sealed
message opens again and a flipped bit does not), and the NAT detection hash that every IKE_SA_INIT
carries (SHA-1, RFC 7296 §2.23) gives a known answer.  Two reasons:

- fail fast: a crypto library that lacks a configured group or cipher (an OpenSSL built
  without X448, a FIPS provider without MODP-1024, ...) stops the start with a message that
  names the connection and the algorithm, instead of failing the first client's IKE_SA_INIT;
- predictable first-client cost: the code of those algorithms in cryptography's Rust module
  and in libcrypto (~1.4 MiB of the control process's RSS on a PSK gateway with x25519 and
  AES-GCM, bench/scale.py) is paged in and their one-time set-ups (OpenSSL's algorithm
  fetches, MODP parameter objects) are done at start-up, not on the first client's
  IKE_SA_INIT.  The memory counts in the start-up RSS, where it belongs.  (SHA-1 alone was
  64 KiB: the kernel maps a library's code 64 KiB around the first instruction used.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tunsec.ike.constants import TransformType
from tunsec.ike.crypto import CryptoError, Prf, encr_key_len, integ_params, is_aead
from tunsec.ike.dh import DhError, generate_key_exchange
from tunsec.ike.message import Transform
from tunsec.ike.proposals import ProposalSpec, describe
from tunsec.ike.secret import Secret
from tunsec.ike.sk import IntegrityError, SkCrypter
from tunsec.ike.state import nat_hash

_AAD = b"tunsec self-test header"
_PLAIN = b"tunsec self-test payload"


class SelfTestError(Exception):
    """A configured algorithm does not work here; the message names it and where it is used."""


@dataclass(frozen=True)
class Check:
    """One algorithm (or cipher + integrity pair) and the first connection that uses it."""

    kind: str            # "key exchange", "PRF", "SK cipher", "NAT detection hash"
    ids: tuple[int, ...]  # transform id (and key bits / integrity id for ciphers)
    name: str            # as a proposal names it (aes128gcm16, curve25519, ...)
    used_by: str         # the connection, for the error message


def checks(proposals_by_connection: Iterable[tuple[str, Iterable[ProposalSpec]]]) -> list[Check]:
    """Every distinct algorithm in the IKE proposals, once, with the first connection naming it."""
    found: dict[tuple[str, tuple[int, ...]], Check] = {}
    for conn, specs in proposals_by_connection:
        found.setdefault(("NAT detection hash", ()), Check("NAT detection hash", (), "sha1", conn))
        for spec in specs:
            for check in _of_spec(spec, conn):
                found.setdefault((check.kind, check.ids), check)
    return list(found.values())


def _of_spec(spec: ProposalSpec, conn: str) -> Iterator[Check]:
    for t in spec.of_type(TransformType.DH):
        if t.id:   # NONE (0): no key exchange to test
            yield Check("key exchange", (t.id,), _name(spec, (t,)), conn)
    for t in spec.of_type(TransformType.PRF):
        yield Check("PRF", (t.id,), _name(spec, (t,)), conn)
    integs = spec.of_type(TransformType.INTEG) or (None,)
    for encr in spec.of_type(TransformType.ENCR):
        for integ in ((None,) if is_aead(encr.id) else integs):
            transforms = (encr,) if integ is None else (encr, integ)
            ids = (encr.id, encr.key_length or 0, integ.id if integ is not None else 0)
            yield Check("SK cipher", ids, _name(spec, transforms), conn)


def _name(spec: ProposalSpec, transforms: tuple[Transform, ...]) -> str:
    return describe(spec.protocol, transforms).partition(":")[2]   # without the "IKE:" prefix


def run(items: Iterable[Check]) -> int:
    """Run the checks; SelfTestError for the first that fails.  Returns how many ran."""
    count = 0
    for check in items:
        try:
            _RUNNERS[check.kind](check.ids)
        except (CryptoError, DhError, IntegrityError, ValueError, TypeError) as err:
            raise _failed(check, str(err)) from err
        except _Mismatch as err:
            raise _failed(check, str(err)) from None
        count += 1
    return count


def _failed(check: Check, what: str) -> SelfTestError:
    fix = ("every IKE_SA_INIT needs it: use a Python whose hashlib (OpenSSL) allows SHA-1"
           if check.kind == "NAT detection hash" else
           "remove it from the connection's proposals or install a cryptography build that supports it")
    return SelfTestError(
        f"start-up self-test of the IKE {check.kind} {check.name} (connection {check.used_by}) failed: {what}; "
        f"this Python's cryptography/OpenSSL cannot do it: {fix}")


class _Mismatch(Exception):
    pass


def _key_exchange(ids: tuple[int, ...]) -> None:
    a, b = generate_key_exchange(ids[0]), generate_key_exchange(ids[0])
    if a.shared_secret(b.public) != b.shared_secret(a.public):
        raise _Mismatch("the two sides' shared secrets differ")


def _prf(ids: tuple[int, ...]) -> None:
    prf = Prf(ids[0])
    key, seed = b"k" * prf.size, b"self-test seed"
    if prf.plus(key, seed, 3 * prf.size) != prf.plus(key, seed, 3 * prf.size):
        raise _Mismatch("prf+ is not deterministic")


def _sk_cipher(ids: tuple[int, ...]) -> None:
    encr_id, bits, integ_id = ids
    integ = integ_id or None
    encr_key = Secret(os.urandom(encr_key_len(encr_id, bits or None)))
    integ_key = Secret(os.urandom(integ_params(integ)[1])) if integ is not None else None
    sender = SkCrypter(encr_id, encr_key, integ, integ_key, os.urandom)
    receiver = SkCrypter(encr_id, encr_key, integ, integ_key, os.urandom)
    sealed = sender.seal(_AAD, sender.pad(_PLAIN))
    if receiver.open(_AAD, sealed) != _PLAIN:
        raise _Mismatch("a sealed message did not open to what was sealed")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    try:
        receiver.open(_AAD, tampered)
    except IntegrityError:
        return
    raise _Mismatch("a tampered message opened")


# SHA-1(SPIi | SPIr | 192.0.2.1 | 4500) with the SPIs 00..07 and 08..0f (sha1sum agrees)
_NAT_KAT = bytes.fromhex("d433ee5a31cc253e9d0c0c0dd800b6ec27f00b6c")


def _nat_detection(ids: tuple[int, ...]) -> None:
    if nat_hash(bytes(range(8)), bytes(range(8, 16)), ("192.0.2.1", 4500)) != _NAT_KAT:
        raise _Mismatch("SHA-1 gave a wrong known answer")


_RUNNERS = {"key exchange": _key_exchange, "PRF": _prf, "SK cipher": _sk_cipher,
            "NAT detection hash": _nat_detection}
