"""The Encrypted payload (SK, RFC 7296 §3.14) with AES-GCM or AES-CBC + HMAC-SHA2.

AES-GCM follows RFC 5282: nonce = 4-byte salt (the tail of SK_e) || 8-byte IV,
16-byte ICV, and the associated data is everything before the IV (the IKE header
and the SK payload header). The IV is a per-direction counter, not random,
because a GCM nonce must never repeat under one key.

AES-CBC uses a random 16-byte IV (it must be unpredictable) and an HMAC-SHA2
ICV truncated as RFC 4868 says, computed over the whole message up to the ICV.
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
from .message import DecodeError, Message, Payload, SkPayload, decode_payloads, encode_payloads
from .secret import Secret

Rng = Callable[[int], bytes]


class IntegrityError(Exception):
    """The ICV did not verify or the plaintext is malformed: drop the message silently."""


class SkCrypter:
    """Seals or opens SK payloads for one direction of an IKE SA."""

    def __init__(
        self, encr_id: int, encr_key: Secret, integ_id: int | None, integ_key: Secret | None, rng: Rng
    ) -> None:
        self._aead = is_aead(encr_id)
        self._rng = rng
        self._counter = 0
        raw = encr_key.reveal()
        if self._aead:
            self._gcm = AESGCM(raw[:-GCM_SALT_LEN])
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

    def pad(self, plain: bytes) -> bytes:
        """Append padding and the pad-length byte so the result fills whole blocks."""
        pad_len = (-(len(plain) + 1)) % self.block
        return plain + b"\0" * pad_len + bytes([pad_len])

    def seal(self, aad: bytes, padded: bytes) -> bytes:
        """IV || ciphertext || ICV for a padded plaintext."""
        if self._aead:
            self._counter += 1
            iv = self._counter.to_bytes(8, "big")
            return iv + self._gcm.encrypt(self._salt + iv, padded, aad)
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
                padded = self._gcm.decrypt(self._salt + iv, body[self.iv_len :], aad)
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


def encrypt_message(msg: Message, crypter: SkCrypter) -> bytes:
    """Encode ``msg`` with all its payloads inside one SK payload."""
    inner = encode_payloads(msg.payloads)
    padded = crypter.pad(inner)
    first = msg.payloads[0].ptype if msg.payloads else PayloadType.NONE
    body_len = crypter.iv_len + len(padded) + crypter.icv_len
    sk_header = struct.pack("!BBH", first, 0, 4 + body_len)
    shell = Message(msg.spi_i, msg.spi_r, msg.exchange, msg.flags, msg.message_id, (SkPayload(first, b""),))
    aad = shell.header(4 + body_len).encode() + sk_header
    return aad + crypter.seal(aad, padded)


def decrypt_message(datagram: bytes, msg: Message, crypter: SkCrypter) -> tuple[Payload, ...]:
    """The payloads inside ``msg``'s SK payload (which the codec guarantees is last).

    Raises IntegrityError (drop silently) or DecodeError (the authenticated
    plaintext is malformed: answer INVALID_SYNTAX).
    """
    sk = _find_sk(msg.payloads)
    aad = datagram[: len(datagram) - len(sk.body)]
    if len(aad) < IKE_HEADER_LEN + 4:
        raise IntegrityError("no room for the SK payload header")
    plain = crypter.open(aad, sk.body)
    return decode_payloads(sk.first_payload, plain)


def _find_sk(payloads: Sequence[Payload]) -> SkPayload:
    if not payloads or not isinstance(payloads[-1], SkPayload):
        raise DecodeError("message has no SK payload")
    return payloads[-1]
