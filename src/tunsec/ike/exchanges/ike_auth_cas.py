"""The responder's connection chosen by the CA that trusts the peer's certificate.

IDi, IDr and the AUTH method choose a connection (``ike_auth._select_config``) before the
certificate is looked at. Of connections alike in all that, in what we already sent and in
what we prove ourselves with (the peer's method, our identity and certificate), and told apart
only by their ``cacerts`` (staff and contractors, each ``remote.id = %any``), the first would
take every client, and refuse the other CA's as untrusted (counted towards the auth ban).
Like strongSwan, which moves on to the next candidate whose CA constraint the chain meets
(ike_auth.c, update_cfg_candidates), the first of the alike candidates, in the order
``_select_config`` ranks them, whose CAs trust the chain is taken.

The chain is verified once, with the CAs of all the alike candidates (de-duplicated), and the
first candidate whose CAs hold the CA certificate it verified to takes the peer: an
unauthenticated peer's chain costs one path build however many connections there are (review
revcertfix F1), bounded as certs.py bounds it. The CA is matched as the certificate itself, not
by its name and key (certs.ca_fingerprint): two copies of one CA (one expired, or issued with
name constraints, in one connection; the current one in another) are two trust anchors, and the
chain may verify only to the second (review revcert3 F1). Only when that CA is a later
candidate's is the chain built once more, with the earlier candidates' CAs: if the peer sent
intermediates (a sub-CA of one under the root of another: the path builder takes the CA it
finds first), or if an earlier candidate holds another copy of that CA (which may trust the
chain as well). At most two path builds. A refusal (untrusted, identity, key usage, size) is
the same for every candidate: a chain none trusts fails once, in the first candidate's name, as
before: one failed authentication, counted once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography import x509

from ..certs import NotTrusted, VerifiedPeer, ca_fingerprint, subject_text, verify_peer
from ..config import IkeConfig
from ..identity import Identity
from ..state import IkeSaState

log = logging.getLogger(__name__)


def alike_by_ca(st: IkeSaState, ranked: Sequence[IkeConfig]) -> list[IkeConfig]:
    """The connection in use first, then those of ``ranked`` (the responder's candidates that fit
    the peer's identities, best first) a chain trusted by their CAs may move the peer to."""
    current = st.config

    def alike(cfg: IkeConfig) -> bool:
        mine, theirs = cfg.local, current.local
        return (cfg.remote.method, mine.id, mine.cert) == (current.remote.method, theirs.id, theirs.cert) \
            and cfg.remote.cas != current.remote.cas
    if current.remote.method != "pubkey":
        return [current]
    return [current, *(c for c in ranked if c is not current and alike(c))]


def verified_key(
    st: IkeSaState, chain: Sequence[x509.Certificate], peer_id: Identity, candidates: Sequence[IkeConfig]
) -> VerifiedPeer:
    """The key of the peer's certificate and the CA it verified to, verified with the CAs of all of
    ``candidates`` (``st.config`` first) at once; ``st.config`` becomes the first of them whose CAs
    hold that CA. Raises the AuthError of that one build if none trusts it (in ``st.config``'s name)."""
    ranked = list(candidates or (st.config,))
    verified = verify_peer(chain, _union(ranked), st.wall_clock(), peer_id)
    chosen = _trusting(ranked, verified.anchor_cert)
    if chosen > 0 and (len(chain) > 1 or _copy_earlier(ranked[:chosen], verified)):
        # the builder looks in its store first: a chain through a CA of a later candidate (a sub-CA,
        # sent along) may reach an earlier one's too (its root), or an earlier one's copy of the same
        # CA; the earlier one keeps the peer, as when each set was tried in turn. (A leaf alone
        # reaches only the CAs of its issuer's name and key: the copies of one CA.)
        try:
            earlier = verify_peer(chain, _union(ranked[:chosen]), st.wall_clock(), peer_id)
        except NotTrusted:
            pass
        else:
            verified, chosen = earlier, _trusting(ranked, earlier.anchor_cert)
    cfg = ranked[chosen]
    if cfg is not st.config:
        log.info("%s: switching to connection %s: its CAs trust the certificate of %s", st.name, cfg.name,
                 subject_text(chain[0]))
        st.config = cfg
    return verified


def _union(ranked: Sequence[IkeConfig]) -> tuple[x509.Certificate, ...]:
    """The CAs of ``ranked``, each once, in rank order."""
    return tuple(dict.fromkeys(ca for cfg in ranked for ca in cfg.remote.cas))


def _trusting(ranked: Sequence[IkeConfig], anchor: x509.Certificate) -> int:
    """The index of the first of ``ranked`` that has the CA certificate ``anchor`` (equal as DER: not
    another certificate of its name and key)."""
    return next(i for i, cfg in enumerate(ranked) if anchor in cfg.remote.cas)


def _copy_earlier(earlier: Sequence[IkeConfig], verified: VerifiedPeer) -> bool:
    """Whether one of ``earlier`` holds another certificate of the CA ``verified`` ends in (its name
    and key): the path builder took one copy, the other may trust the chain too."""
    return any(ca_fingerprint(ca) == verified.anchor and ca != verified.anchor_cert
               for cfg in earlier for ca in cfg.remote.cas)
