"""Key exchange groups of IKEv2: MODP 14/15/16, ECP 19/20/21, Curve25519/448.

Wire formats: MODP public values and shared secrets are big-endian and padded to
the prime's length (RFC 7296 §3.4); ECP public values are x || y without the
0x04 prefix and the shared secret is x only (RFC 5903 §7, §9); Curve25519/448
use the raw 32/56-byte strings (RFC 8031). Peer values are checked before use,
and every failure is a :class:`DhError` so the engine can answer INVALID_SYNTAX.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cache

# X25519/X448 generate() import the OpenSSL backend on first use.  Load it with
# this module: the control process gives up root before IKE runs, and a Python
# installed under /root (mode 0700) is then out of reach (ModuleNotFoundError
# on the first x25519 negotiation).
from cryptography.hazmat.backends.openssl import backend as _openssl_backend  # noqa: F401
from cryptography.hazmat.primitives.asymmetric import dh, ec, x448, x25519

from .constants import DhGroup
from .dh_pool import KeyPairPool

# RFC 3526 primes, generator 2.
_MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
_MODP_3072 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C"
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)
_MODP_4096 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C"
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6"
    "287C59474E6BC05D99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
    16,
)
_MODP = {DhGroup.MODP_2048: _MODP_2048, DhGroup.MODP_3072: _MODP_3072, DhGroup.MODP_4096: _MODP_4096}
_ECP: dict[int, tuple[type[ec.EllipticCurve], int]] = {
    DhGroup.ECP_256: (ec.SECP256R1, 32),
    DhGroup.ECP_384: (ec.SECP384R1, 48),
    DhGroup.ECP_521: (ec.SECP521R1, 66),
}

SUPPORTED_GROUPS = frozenset(DhGroup) - {DhGroup.NONE}


class DhError(Exception):
    """A group we do not implement or a peer public value that is invalid."""


class KeyExchange(ABC):
    """One ephemeral private key; the private part never leaves this object."""

    group: int

    @property
    @abstractmethod
    def public(self) -> bytes:
        """Our KE payload data."""

    @abstractmethod
    def shared_secret(self, peer: bytes) -> bytes:
        """g^ir from the peer's KE data; raises DhError if the value is invalid."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(group={self.group})"


@cache
def _modp_parameters(group: int) -> dh.DHParameters:
    return dh.DHParameterNumbers(_MODP[DhGroup(group)], 2).parameters()


class _Modp(KeyExchange):
    def __init__(self, group: int) -> None:
        self.group = group
        self._p = _MODP[DhGroup(group)]
        self._size = (self._p.bit_length() + 7) // 8
        self._key = _modp_parameters(group).generate_private_key()

    @property
    def public(self) -> bytes:
        return self._key.public_key().public_numbers().y.to_bytes(self._size, "big")

    def shared_secret(self, peer: bytes) -> bytes:
        if len(peer) != self._size:
            raise DhError(f"MODP public value of {len(peer)} bytes, expected {self._size}")
        y = int.from_bytes(peer, "big")
        # 1 and p-1 generate trivial subgroups (RFC 7296 §5, "small subgroup" note)
        if not 1 < y < self._p - 1:
            raise DhError("MODP public value out of range")
        pub = dh.DHPublicNumbers(y, _modp_parameters(self.group).parameter_numbers()).public_key()
        try:
            secret = self._key.exchange(pub)
        except ValueError:
            raise DhError("MODP key exchange failed") from None
        return secret.rjust(self._size, b"\0")


class _Ecp(KeyExchange):
    def __init__(self, group: int) -> None:
        self.group = group
        curve, self._coord = _ECP[group]
        self._curve = curve()
        self._key = ec.generate_private_key(self._curve)

    @property
    def public(self) -> bytes:
        nums = self._key.public_key().public_numbers()
        return nums.x.to_bytes(self._coord, "big") + nums.y.to_bytes(self._coord, "big")

    def shared_secret(self, peer: bytes) -> bytes:
        if len(peer) != 2 * self._coord:
            raise DhError(f"ECP public value of {len(peer)} bytes, expected {2 * self._coord}")
        try:
            pub = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer)
            return self._key.exchange(ec.ECDH(), pub).rjust(self._coord, b"\0")
        except ValueError:
            raise DhError("ECP public value is not a point on the curve") from None


class _X25519(KeyExchange):
    def __init__(self) -> None:
        self.group = DhGroup.CURVE25519
        self._key = x25519.X25519PrivateKey.generate()

    @property
    def public(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def shared_secret(self, peer: bytes) -> bytes:
        if len(peer) != 32:
            raise DhError(f"Curve25519 public value of {len(peer)} bytes")
        try:
            return self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        except ValueError:  # all-zero output from a low-order point (RFC 8031 §2)
            raise DhError("Curve25519 key exchange failed") from None


class _X448(KeyExchange):
    def __init__(self) -> None:
        self.group = DhGroup.CURVE448
        self._key = x448.X448PrivateKey.generate()

    @property
    def public(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def shared_secret(self, peer: bytes) -> bytes:
        if len(peer) != 56:
            raise DhError(f"Curve448 public value of {len(peer)} bytes")
        try:
            return self._key.exchange(x448.X448PublicKey.from_public_bytes(peer))
        except ValueError:
            raise DhError("Curve448 key exchange failed") from None


def check_public(group: int, peer: bytes) -> None:
    """DhError unless ``peer`` has the length of a public value of ``group`` (and, for MODP, lies in
    1 < y < p-1): the checks ``shared_secret`` makes first, asked before a responder spends a key pair
    on a peer's KE (a point off the curve is still found by the exchange itself)."""
    if group in _MODP:
        p = _MODP[DhGroup(group)]
        size = (p.bit_length() + 7) // 8
        if len(peer) != size:
            raise DhError(f"MODP public value of {len(peer)} bytes, expected {size}")
        if not 1 < int.from_bytes(peer, "big") < p - 1:
            raise DhError("MODP public value out of range")
    elif group in _ECP:
        if len(peer) != 2 * _ECP[group][1]:
            raise DhError(f"ECP public value of {len(peer)} bytes, expected {2 * _ECP[group][1]}")
    elif (raw := _RAW_SIZE.get(group)) is not None:
        if len(peer) != raw:
            raise DhError(f"{DhGroup(group).name} public value of {len(peer)} bytes, expected {raw}")
    else:
        raise DhError(f"unsupported key exchange group {group}")


_RAW_SIZE: dict[int, int] = {DhGroup.CURVE25519: 32, DhGroup.CURVE448: 56}


def init_key_exchange(group: int) -> KeyExchange:
    """A fresh ephemeral key pair for ``group`` for an IKE_SA_INIT (either role): a ready one from
    the pool (handed out once, never to another SA), else one generated now.  Only IKE_SA_INIT:
    the pool is for the burst of new clients a reconnect storm brings.  An authenticated peer's
    rekeys (CREATE_CHILD_SA with PFS, IKE rekeys) generate theirs (generate_key_exchange): it may
    rekey as often as it likes, and taking from the pool each time, it kept the pool empty (the
    refill waits for dh_pool.CALM with nothing taken) and made the new clients pay the generation
    (review revpeerdos R2)."""
    ke = POOL.take(group)
    return ke if ke is not None else generate_key_exchange(group)


def generate_key_exchange(group: int) -> KeyExchange:
    """A key pair for ``group`` generated now."""
    if group in _MODP:
        return _Modp(group)
    if group in _ECP:
        return _Ecp(group)
    if group == DhGroup.CURVE25519:
        return _X25519()
    if group == DhGroup.CURVE448:
        return _X448()
    raise DhError(f"unsupported key exchange group {group}")


# The process's pool of ready key pairs: off (no groups) until the IKE service configures it
# (services/ike/keypool.py); see tunsec.ike.dh_pool.
POOL = KeyPairPool(generate_key_exchange)
