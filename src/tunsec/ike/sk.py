"""The Encrypted payload (SK, RFC 7296 §3.14) with AES-GCM or AES-CBC + HMAC-SHA2.

AES-GCM follows RFC 5282: nonce = 4-byte salt (the tail of SK_e) || 8-byte IV,
16-byte ICV, and the associated data is everything before the IV (the IKE header
and the SK payload header). The IV is a per-direction counter, not random,
because a GCM nonce must never repeat under one key.

AES-CBC uses a random 16-byte IV (it must be unpredictable) and an HMAC-SHA2
ICV truncated as RFC 4868 says, computed over the whole message up to the ICV.

IKE fragmentation (RFC 7383 §2.5): :func:`encrypt_fragments` splits the inner
payload chain into pieces that are each padded and sealed on their own in an
Encrypted Fragment payload (SKF). Its associated data is the IKE header and the
SKF header including Fragment Number and Total Fragments, which is again everything
before the IV, so :func:`open_sealed` opens an SK and an SKF payload alike.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .constants import IKE_HEADER_LEN, PayloadType
from .crypto import GCM_SALT_LEN, CryptoError, integ_params, is_aead
from .message import (
    DecodeError,
    Message,
    Payload,
    Sealed,
    SkfPayload,
    SkPayload,
    decode_payloads,
    encode_header,
    encode_payloads,
)
from .secret import Secret

Rng = Callable[[int], bytes]

SKF_HEADER_LEN = 8  # generic payload header, Fragment Number, Total Fragments
# fragments of one message we send or reassemble at most (a 10000-byte message in
# fragments for a 576-byte IPv4 path needs 21)
MAX_FRAGMENTS = 64


class IntegrityError(Exception):
    """The ICV did not verify or the plaintext is malformed: drop the message silently."""


class SkCrypter:
    """Seals or opens SK payloads for one direction of an IKE SA."""

    # two per IKE SA, for its lifetime
    __slots__ = (
        "_aead",
        "_cbc_key",
        "_counter",
        "_gcm_key",
        "_hash",
        "_integ_key",
        "_rng",
        "_salt",
        "block",
        "icv_len",
        "iv_len",
    )

    def __init__(
        self, encr_id: int, encr_key: Secret, integ_id: int | None, integ_key: Secret | None, rng: Rng
    ) -> None:
        self._aead = is_aead(encr_id)
        self._rng = rng
        self._counter = 0
        raw = encr_key.reveal()
        if self._aead:
            # the key, not an AESGCM object: cryptography's keeps two OpenSSL contexts (~2.4 KiB
            # outside the Python heap) for its lifetime, and an IKE SA seals or opens a message
            # every few minutes once it is up. Making one per message costs ~4 us (as many as
            # before during setup, one seal or open per direction).
            self._gcm_key = raw[:-GCM_SALT_LEN]
            self._salt = raw[-GCM_SALT_LEN:]
            self.iv_len, self.icv_len, self.block = 8, 16, 1
        else:
            if integ_id is None or integ_key is None:
                raise CryptoError("AES-CBC needs an integrity algorithm")
            self._cbc_key = raw
            self._hash, _, self.icv_len = integ_params(integ_id)
            self._integ_key = integ_key.reveal()
            self.iv_len, self.block = 16, 16

    def __repr__(self) -> str:
        return f"SkCrypter(aead={self._aead})"

    def overhead(self) -> int:
        """Bytes an SK/SKF payload adds around its padded plaintext (IV and ICV)."""
        return self.iv_len + self.icv_len

    def pad(self, plain: bytes) -> bytes:
        """Append padding and the pad-length byte so the result fills whole blocks."""
        pad_len = (-(len(plain) + 1)) % self.block
        return plain + b"\0" * pad_len + bytes([pad_len])

    def seal(self, aad: bytes, padded: bytes) -> bytes:
        """IV || ciphertext || ICV for a padded plaintext."""
        if self._aead:
            self._counter += 1
            iv = self._counter.to_bytes(8, "big")
            return iv + AESGCM(self._gcm_key).encrypt(self._salt + iv, padded, aad)
        iv = self._rng(16)
        enc = Cipher(algorithms.AES(self._cbc_key), modes.CBC(iv)).encryptor()
        ct = enc.update(padded) + enc.finalize()
        icv = hmac.new(self._integ_key, aad + iv + ct, self._hash).digest()[: self.icv_len]
        return iv + ct + icv

    def open(self, aad: bytes, body: bytes) -> bytes:
        """The plaintext without padding; IntegrityError if anything does not check out."""
        if len(body) < self.iv_len + self.icv_len + 1:
            raise IntegrityError("SK payload too short")
        iv = body[: self.iv_len]
        if self._aead:
            try:
                padded = AESGCM(self._gcm_key).decrypt(self._salt + iv, body[self.iv_len :], aad)
            except InvalidTag:
                raise IntegrityError("SK payload ICV mismatch") from None
        else:
            ct, icv = body[self.iv_len : -self.icv_len], body[-self.icv_len :]
            mac = hmac.new(self._integ_key, aad + iv + ct, self._hash).digest()[: self.icv_len]
            if not hmac.compare_digest(mac, icv):
                raise IntegrityError("SK payload ICV mismatch")
            if not ct or len(ct) % 16:
                raise IntegrityError("SK ciphertext is not whole blocks")
            dec = Cipher(algorithms.AES(self._cbc_key), modes.CBC(iv)).decryptor()
            padded = dec.update(ct) + dec.finalize()
        if not padded or padded[-1] >= len(padded):
            raise IntegrityError("SK padding length out of range")
        return padded[: -1 - padded[-1]]


def encrypt_message(msg: Message, crypter: SkCrypter, inner: bytes | None = None) -> bytes:
    """Encode ``msg`` with all its payloads inside one SK payload; ``inner`` is their encoding
    if the caller has it already (``encode_payloads(msg.payloads)``)."""
    if inner is None:
        inner = encode_payloads(msg.payloads)
    padded = crypter.pad(inner)
    first = msg.payloads[0].ptype if msg.payloads else PayloadType.NONE
    body_len = crypter.iv_len + len(padded) + crypter.icv_len
    sk_header = struct.pack("!BBH", first, 0, 4 + body_len)
    aad = encode_header(msg.spi_i, msg.spi_r, PayloadType.SK, msg.exchange, msg.flags, msg.message_id,
                        IKE_HEADER_LEN + 4 + body_len) + sk_header
    return aad + crypter.seal(aad, padded)


def sealed_len(inner_len: int, crypter: SkCrypter) -> int:
    """The length :func:`encrypt_message` would give a message whose payloads encode to
    ``inner_len`` bytes (without encrypting it)."""
    inner = inner_len
    padded = inner + 1 + (-(inner + 1)) % crypter.block
    return IKE_HEADER_LEN + 4 + crypter.overhead() + padded


def fragment_content_len(crypter: SkCrypter, max_message: int) -> int:
    """The most plaintext one fragment may carry so that its IKE message stays within
    ``max_message`` bytes (as strongSwan computes it: header, SKF header, IV, ICV, whole
    blocks, pad length byte); at least 1."""
    room = max_message - IKE_HEADER_LEN - SKF_HEADER_LEN - crypter.overhead()
    room -= room % crypter.block
    return max(1, room - 1)


def encrypt_fragments(msg: Message, crypter: SkCrypter, content_len: int, inner: bytes | None = None) -> list[bytes]:
    """Encode ``msg`` as Encrypted Fragment messages of at most ``content_len`` plaintext
    bytes each (RFC 7383 §2.5); the first names the first inner payload.  ``inner`` as for
    :func:`encrypt_message`."""
    if inner is None:
        inner = encode_payloads(msg.payloads)
    first = msg.payloads[0].ptype if msg.payloads else PayloadType.NONE
    content_len = max(content_len, -(-len(inner) // MAX_FRAGMENTS))  # never more than the peer takes
    chunks = [inner[i : i + content_len] for i in range(0, len(inner), content_len)] or [b""]
    out = []
    for number, chunk in enumerate(chunks, 1):
        padded = crypter.pad(chunk)
        body_len = crypter.iv_len + len(padded) + crypter.icv_len
        skf = struct.pack("!BBHHH", first if number == 1 else 0, 0, SKF_HEADER_LEN + body_len, number, len(chunks))
        aad = encode_header(msg.spi_i, msg.spi_r, PayloadType.SKF, msg.exchange, msg.flags, msg.message_id,
                            IKE_HEADER_LEN + SKF_HEADER_LEN + body_len) + skf
        out.append(aad + crypter.seal(aad, padded))
    return out


def open_sealed(datagram: bytes, msg: Message, crypter: SkCrypter) -> bytes:
    """The verified plaintext of ``msg``'s SK or SKF payload (which the codec guarantees is
    last); IntegrityError if it does not verify."""
    sealed = _find_sealed(msg.payloads)
    aad = datagram[: len(datagram) - len(sealed.body)]
    if len(aad) < IKE_HEADER_LEN + 4:
        raise IntegrityError("no room for the SK payload header")
    return crypter.open(aad, sealed.body)


def decrypt_message(datagram: bytes, msg: Message, crypter: SkCrypter) -> tuple[Payload, ...]:
    """The payloads inside ``msg``'s SK payload (which the codec guarantees is last).

    Raises IntegrityError (drop silently) or DecodeError (the authenticated
    plaintext is malformed: answer INVALID_SYNTAX).
    """
    sk = msg.payloads[-1] if msg.payloads else None
    if not isinstance(sk, SkPayload):
        raise DecodeError("message has no SK payload")
    return decode_payloads(sk.first_payload, open_sealed(datagram, msg, crypter))


def _find_sealed(payloads: Sequence[Payload]) -> Sealed:
    if not payloads or not isinstance(payloads[-1], SkPayload | SkfPayload):
        raise DecodeError("message has no SK or SKF payload")
    return payloads[-1]
