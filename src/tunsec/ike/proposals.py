"""Proposals in strongSwan's notation and the responder's selection.

``aes256gcm16-prfsha384-ecp384`` (IKE), ``aes128-sha256-modp2048`` (IKE; the
PRF follows the integrity algorithm when none is given), ``aes128gcm16`` (ESP)
and ``aes128gcm16-ecp256`` (ESP with PFS). Several algorithms of one kind in
one proposal (``aes128gcm16-aes256gcm16-prfsha256-ecp256-modp2048``) are
alternatives, as in strongSwan.

Selection follows strongSwan's default (``prefer_configured_proposals``): the
responder walks its *own* proposals in order and takes the first of the
initiator's proposals that matches, picking within each transform type the
first of its own algorithms that the initiator also offered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from tunsec.immutable import immutable

from .constants import DhGroup, EncrId, EsnId, IntegId, PrfId, ProtocolId, TransformType
from .crypto import encr_key_len, integ_params, is_aead
from .message import Proposal, Transform

_TYPE_ORDER = (
    TransformType.ENCR,
    TransformType.PRF,
    TransformType.INTEG,
    TransformType.DH,
    TransformType.ESN,
)

_INTEG_TOKENS = {
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha2_256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha2_384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
    "sha2_512": IntegId.HMAC_SHA2_512_256,
}
_PRF_TOKENS = {
    "prfsha256": PrfId.HMAC_SHA2_256,
    "prfsha384": PrfId.HMAC_SHA2_384,
    "prfsha512": PrfId.HMAC_SHA2_512,
}
_INTEG_TO_PRF = {
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}
_DH_TOKENS = {
    "modp2048": DhGroup.MODP_2048,
    "modp3072": DhGroup.MODP_3072,
    "modp4096": DhGroup.MODP_4096,
    "ecp256": DhGroup.ECP_256,
    "ecp384": DhGroup.ECP_384,
    "ecp521": DhGroup.ECP_521,
    "curve25519": DhGroup.CURVE25519,
    "x25519": DhGroup.CURVE25519,
    "curve448": DhGroup.CURVE448,
    "x448": DhGroup.CURVE448,
}
_ESN_TOKENS = {"esn": EsnId.ESN, "noesn": EsnId.NO_ESN}
_GCM_RE = re.compile(r"^aes(128|192|256)gcm(16|128)?$")
_CBC_RE = re.compile(r"^aes(128|192|256)?$")

DEFAULT_IKE = (
    "aes256gcm16-aes128gcm16-prfsha256-prfsha384-prfsha512-curve25519-ecp256-ecp384-modp3072-modp2048",
    "aes256-aes128-sha256-sha384-sha512-curve25519-ecp256-ecp384-modp3072-modp2048",
)
DEFAULT_ESP = ("aes128gcm16-aes256gcm16",)
ESP_KEY_BITS = (128, 256)   # the AES-GCM key sizes the fast path does (pipe.Alg)


class ProposalError(ValueError):
    """A proposal string that cannot be parsed or that the engine cannot use."""


@immutable
class ProposalSpec:
    """A configured proposal: the acceptable transforms of each type, in preference order."""

    protocol: int
    transforms: tuple[Transform, ...]

    # A configured proposal is a key of the match cache (_match_transforms) at every client's
    # IKE_SA_INIT and IKE_AUTH: its hash, the fields' tuple's as the dataclass's own, is made once
    # (a default proposal's ten transforms took ~25 Python calls to hash each time), and so is the
    # proposal without key exchange transforms that a first Child SA's match keys on.
    def __hash__(self) -> int:
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.protocol, self.transforms))

    def of_type(self, ttype: int) -> tuple[Transform, ...]:
        return tuple(t for t in self.transforms if t.type == ttype)

    def without_dh(self) -> ProposalSpec:
        return self._without_dh

    @functools.cached_property
    def _without_dh(self) -> ProposalSpec:
        return ProposalSpec(self.protocol, tuple(t for t in self.transforms if t.type != TransformType.DH))

    @property
    def dh_groups(self) -> tuple[int, ...]:
        return tuple(t.id for t in self.of_type(TransformType.DH) if t.id != DhGroup.NONE)

    def to_wire(self, num: int, spi: bytes = b"") -> Proposal:
        return Proposal(num, self.protocol, spi, self.transforms)

    def __str__(self) -> str:
        return describe(self.protocol, self.transforms)


def _encr_token(token: str) -> Transform | None:
    if m := _GCM_RE.match(token):
        return Transform.make(TransformType.ENCR, EncrId.AES_GCM_16, int(m.group(1)))
    if m := _CBC_RE.match(token):
        return Transform.make(TransformType.ENCR, EncrId.AES_CBC, int(m.group(1) or 128))
    return None


def _token(token: str) -> Transform:
    if (encr := _encr_token(token)) is not None:
        return encr
    for table, ttype in (
        (_INTEG_TOKENS, TransformType.INTEG),
        (_PRF_TOKENS, TransformType.PRF),
        (_DH_TOKENS, TransformType.DH),
        (_ESN_TOKENS, TransformType.ESN),
    ):
        if token in table:
            return Transform.make(ttype, table[token])
    raise ProposalError(f"unknown or unsupported algorithm {token!r}")


def _dedup(items: Iterable[Transform]) -> tuple[Transform, ...]:
    return tuple(dict.fromkeys(items))


def parse_proposal(text: str, protocol: int = ProtocolId.IKE) -> ProposalSpec:
    """One proposal in strongSwan notation for IKE or ESP."""
    tokens = [t for t in text.strip().lower().split("-") if t]
    if not tokens:
        raise ProposalError("empty proposal")
    transforms = [_token(t) for t in tokens]
    by_type = {tt: [t for t in transforms if t.type == tt] for tt in _TYPE_ORDER}
    encrs = by_type[TransformType.ENCR]
    if not encrs:
        raise ProposalError(f"proposal {text!r} has no encryption algorithm")
    aead = {is_aead(t.id) for t in encrs}
    if len(aead) > 1:
        raise ProposalError(f"proposal {text!r} mixes AEAD and non-AEAD algorithms")
    if protocol == ProtocolId.IKE:
        _complete_ike(text, by_type, aead.pop())
    else:
        _complete_esp(text, by_type, aead.pop())
    ordered = [t for tt in _TYPE_ORDER for t in by_type[tt]]
    return ProposalSpec(protocol, _dedup(ordered))


def _complete_ike(text: str, by_type: dict[TransformType, list[Transform]], aead: bool) -> None:
    if by_type[TransformType.ESN]:
        raise ProposalError(f"IKE proposal {text!r} cannot contain ESN")
    if aead and by_type[TransformType.INTEG]:
        raise ProposalError(f"AEAD proposal {text!r} must not contain an integrity algorithm")
    if not aead and not by_type[TransformType.INTEG]:
        raise ProposalError(f"proposal {text!r} needs an integrity algorithm")
    if not by_type[TransformType.PRF]:
        if aead:
            raise ProposalError(f"AEAD proposal {text!r} needs a PRF (e.g. prfsha256)")
        # strongSwan derives the PRF from the integrity algorithm when none is given
        by_type[TransformType.PRF] = [
            Transform.make(TransformType.PRF, _INTEG_TO_PRF[IntegId(t.id)]) for t in by_type[TransformType.INTEG]
        ]
    if not by_type[TransformType.DH]:
        raise ProposalError(f"IKE proposal {text!r} needs a key exchange method")


def _complete_esp(text: str, by_type: dict[TransformType, list[Transform]], aead: bool) -> None:
    if by_type[TransformType.PRF]:
        raise ProposalError(f"ESP proposal {text!r} cannot contain a PRF")
    if not aead:
        # the tunsec dataplane implements ESP with AES-GCM only (shared/DESIGN.md)
        raise ProposalError(f"ESP proposal {text!r}: tunsec's dataplane supports only AES-GCM")
    if any(t.key_length not in ESP_KEY_BITS for t in by_type[TransformType.ENCR]):
        # and 128- or 256-bit keys only (services/ike/install_requests.ALGS): a Child SA negotiated with
        # another would be answered and then fail its install; refused here, it is never selected (the
        # peer that offers nothing else gets NO_PROPOSAL_CHOSEN)
        raise ProposalError(f"ESP proposal {text!r}: tunsec's dataplane supports AES-GCM with 128- or "
                            "256-bit keys only (aes128gcm16, aes256gcm16)")
    if by_type[TransformType.INTEG]:
        raise ProposalError(f"AEAD proposal {text!r} must not contain an integrity algorithm")
    if not by_type[TransformType.ESN]:
        by_type[TransformType.ESN] = [Transform.make(TransformType.ESN, EsnId.NO_ESN)]


def parse_proposals(texts: str | Sequence[str], protocol: int = ProtocolId.IKE) -> tuple[ProposalSpec, ...]:
    """A proposal list; a string may hold several, comma-separated, as in swanctl.conf."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    specs: list[ProposalSpec] = []
    for item in (i.strip() for i in items):
        if item == "default":
            specs += [parse_proposal(d, protocol) for d in (DEFAULT_IKE if protocol == ProtocolId.IKE else DEFAULT_ESP)]
        elif item:
            specs.append(parse_proposal(item, protocol))
    if not specs:
        raise ProposalError("no proposals given")
    return tuple(specs)


# --------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------


def _pick(
    ttype: int, ours: Sequence[Transform], theirs: Sequence[Transform], prefer: int | None
) -> Transform | bool | None:
    """The selected transform of one type; None if the type is absent on both sides, False on mismatch."""
    if ttype == TransformType.ESN and (ours or theirs):
        # one side without ESN transforms means "no ESN" (never added to IKE proposals)
        ours = ours or (Transform.make(ttype, EsnId.NO_ESN),)
        theirs = theirs or (Transform.make(ttype, EsnId.NO_ESN),)
    if not ours and not theirs:
        return None
    if ttype == TransformType.DH and (not ours or not theirs):
        # a missing DH type is the same as only NONE (RFC 7296 §3.3.2)
        other = ours or theirs
        return None if any(t.id == DhGroup.NONE for t in other) else False
    offered = set(theirs)   # hashed once: a peer may send 256 transforms, each compared with ours
    common = [t for t in ours if t in offered]
    if not common:
        return False
    if prefer is not None:
        for t in common:
            if t.id == prefer:
                return t
    return common[0]


def _match(ours: ProposalSpec, theirs: Proposal, prefer_group: int | None) -> Proposal | None:
    if ours.protocol != theirs.protocol:
        return None
    # a peer's outsized proposals are matched without keeping them
    match = _match_transforms if _cacheable(theirs.transforms) else _match_transforms.__wrapped__
    chosen = match(ours, theirs.transforms, prefer_group)
    return None if chosen is None else Proposal(theirs.num, theirs.protocol, theirs.spi, chosen)


def _cacheable(transforms: tuple[Transform, ...]) -> bool:
    """Whether a peer's transforms are small enough to be kept as a cache key: a few, each with
    at most the one TV attribute IKEv2 defines (Key Length).  An IKE_SA_INIT request (anyone's)
    can carry 60 KiB of attributes in one transform: 64 of them kept took 113 MiB."""
    if len(transforms) > 32:
        return False
    for t in transforms:   # a loop, not all(genexpr): this runs for every proposal matched
        attrs = t.attributes
        if attrs and (len(attrs) != 1 or type(attrs[0].value) is not int):
            return False
    return True


# A gateway's clients offer the same transforms again and again (in IKE_SA_INIT byte for byte;
# a Child SA's proposal differs only in its SPI, which the match does not look at): the outcome
# of a match is a pure function of immutable values, kept for the combinations seen last.
@functools.lru_cache(maxsize=64)
def _match_transforms(
    ours: ProposalSpec, theirs: tuple[Transform, ...], prefer_group: int | None
) -> tuple[Transform, ...] | None:
    chosen: list[Transform] = []
    for ttype in _TYPE_ORDER:
        picked = _pick(
            ttype,
            ours.of_type(ttype),
            [t for t in theirs if t.type == ttype],
            prefer_group if ttype == TransformType.DH else None,
        )
        if picked is False:
            return None
        if isinstance(picked, Transform) and not (ttype == TransformType.DH and picked.id == DhGroup.NONE):
            chosen.append(picked)
    if any(t.type not in _TYPE_ORDER for t in theirs):
        return None  # a transform type we do not know cannot be left unselected
    return tuple(chosen)


def select_proposal(
    ours: Sequence[ProposalSpec],
    theirs: Sequence[Proposal],
    prefer_group: int | None = None,
    strip_dh: bool = False,
) -> Proposal | None:
    """The responder's choice (one transform per type), or None: NO_PROPOSAL_CHOSEN.

    ``prefer_group`` is the group of the initiator's KE payload: among equally
    acceptable groups it wins, so no INVALID_KE_PAYLOAD round trip is needed.
    ``strip_dh`` drops key exchange transforms first (the first Child SA in IKE_AUTH).
    """
    for spec in ours:
        mine = spec.without_dh() if strip_dh else spec
        for prop in theirs:
            cand = _strip_wire_dh(prop) if strip_dh else prop
            chosen = _match(mine, cand, prefer_group)
            if chosen is not None:
                return chosen
    return None


def _strip_wire_dh(prop: Proposal) -> Proposal:
    kept = tuple([t for t in prop.transforms if t.type != TransformType.DH])   # (no generator: ~1k instructions)
    return Proposal(prop.num, prop.protocol, prop.spi, kept)


def accepts(ours: Sequence[ProposalSpec], chosen: Proposal, strip_dh: bool = False) -> bool:
    """Whether the responder's chosen proposal is one we offered (initiator side check)."""
    if len({t.type for t in chosen.transforms}) != len(chosen.transforms):
        return False
    selected = select_proposal(ours, [chosen], strip_dh=strip_dh)
    expected = _strip_wire_dh(chosen) if strip_dh else chosen
    # the peer may order the transforms differently (strongSwan puts INTEG before PRF)
    return selected is not None and set(selected.transforms) == set(expected.transforms)


# --------------------------------------------------------------------------
# properties of a selected proposal
# --------------------------------------------------------------------------


def transform_id(prop: Proposal, ttype: int) -> int | None:
    for t in prop.transforms:
        if t.type == ttype:
            return t.id
    return None


@immutable(slots=True)   # two per client on a gateway (IKE SA, Child SA)
class Suite:
    """The algorithms of a selected proposal and the key lengths they need."""

    encr_id: int
    encr_bits: int
    integ_id: int | None
    prf_id: int | None
    dh_group: int | None
    esn: bool

    @classmethod
    def of(cls, prop: Proposal) -> Suite:
        # one pass, not one each (nor next(genexpr), whose unfinished generator is closed with a
        # GeneratorExit raised in it): the first of a type counts, as in transform_id
        first: dict[int, Transform] = {}
        for t in prop.transforms:
            first.setdefault(t.type, t)
        get = first.get
        if (encr := get(TransformType.ENCR)) is None:
            raise ValueError("a selected proposal without an encryption transform")
        integ, prf, dh, esn = get(TransformType.INTEG), get(TransformType.PRF), get(TransformType.DH), get(
            TransformType.ESN)
        return cls(
            encr.id,
            encr.key_length or 0,
            None if integ is None else integ.id,
            None if prf is None else prf.id,
            None if dh is None else dh.id,
            esn is not None and esn.id == EsnId.ESN,
        )

    @property
    def encr_key_len(self) -> int:
        return encr_key_len(self.encr_id, self.encr_bits)

    @property
    def integ_key_len(self) -> int:
        return 0 if self.integ_id is None else integ_params(self.integ_id)[1]

    @property
    def esp_name(self) -> str:
        """The dataplane's algorithm name: ``aes128gcm16`` or ``aes256gcm16``."""
        return _encr_name(self.encr_id, self.encr_bits)


def _encr_name(encr_id: int, bits: int | None) -> str:
    return f"aes{bits}gcm16" if encr_id == EncrId.AES_GCM_16 else f"aes{bits}"


_NAMES: dict[int, dict[int, str]] = {
    TransformType.PRF: {v: k for k, v in _PRF_TOKENS.items()},
    TransformType.INTEG: {v: k for k, v in reversed(list(_INTEG_TOKENS.items()))},
    TransformType.DH: {v: k for k, v in reversed(list(_DH_TOKENS.items()))},
    TransformType.ESN: {v: k for k, v in _ESN_TOKENS.items()},
}


def _transform_name(t: Transform) -> str:
    if t.type == TransformType.ENCR and t.id in (EncrId.AES_CBC, EncrId.AES_GCM_16):
        return _encr_name(t.id, t.key_length)
    return _NAMES.get(t.type, {}).get(t.id, f"{t.type}:{t.id}")


_PROTO_NAMES: dict[int, str] = {ProtocolId.IKE: "IKE", ProtocolId.ESP: "ESP", ProtocolId.AH: "AH"}


def describe(protocol: int, transforms: Sequence[Transform]) -> str:
    """strongSwan-like text of a proposal for logs: ``IKE:aes256gcm16-prfsha384-ecp384``."""
    global _last_described
    transforms = tuple(transforms)
    last = _last_described
    if last is not None and last[1] is transforms and last[0] == protocol:
        return last[2]
    # a peer's proposals are described too (NO_PROPOSAL_CHOSEN): outsized ones are not kept
    if not _cacheable(transforms):
        return _describe.__wrapped__(protocol, transforms)
    text = _describe(protocol, transforms)
    _last_described = (protocol, transforms, text)
    return text


# Every IkeSaUp names the chosen proposal, whose transforms are the very tuple _match_transforms
# keeps for a gateway's clients: known by identity, it is not hashed again (a Python __hash__ per
# Transform and Attribute, ~19k instructions a client).  One entry, holding the tuple so its id
# stays its own.
_last_described: tuple[int, tuple[Transform, ...], str] | None = None


# every IKE SA's IkeSaUp names its proposal, and a gateway's are all alike: one string for them
@functools.lru_cache(maxsize=64)
def _describe(protocol: int, transforms: tuple[Transform, ...]) -> str:
    proto = _PROTO_NAMES.get(protocol, str(protocol))
    return f"{proto}:" + "-".join(_transform_name(t) for t in transforms)


# a peer's proposals named in a log line (NO_PROPOSAL_CHOSEN): anyone may send 32 of 256 transforms
_DESCRIBED_PROPOSALS = 8
_DESCRIBED_TRANSFORMS = 32


def describe_all(props: Iterable[Proposal | ProposalSpec]) -> str:
    props = list(props)
    text = [str(p) if isinstance(p, ProposalSpec) else _describe_peer(p) for p in props[:_DESCRIBED_PROPOSALS]]
    if len(props) > _DESCRIBED_PROPOSALS:
        text.append(f"and {len(props) - _DESCRIBED_PROPOSALS} more")
    return ", ".join(text)


def _describe_peer(p: Proposal) -> str:
    more = len(p.transforms) - _DESCRIBED_TRANSFORMS
    text = describe(p.protocol, p.transforms[:_DESCRIBED_TRANSFORMS])
    return text if more <= 0 else f"{text}-(and {more} more)"
