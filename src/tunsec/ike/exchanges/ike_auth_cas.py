"""The responder's connection chosen by the CA that trusts the peer's certificate.

IDi, IDr and the AUTH method choose a connection (``ike_auth._select_config``) before the
certificate is looked at. Of connections alike in all that, in what we already sent and in
what we prove ourselves with (the peer's method, our identity and certificate), and told apart
only by their ``cacerts`` (staff and contractors, each ``remote.id = %any``), the first would
take every client, and refuse the other CA's as untrusted (counted towards the auth ban).
Like strongSwan, which moves on to the next candidate whose CA constraint the chain meets
(ike_auth.c, update_cfg_candidates), the chain is tried against each alike candidate's CAs in
the order ``_select_config`` ranks them, and the first that trusts it is taken.

Each try is bounded (certs.py: a chain's path is built in at most a few signature checks), and
a CA set is tried once however many connections share it; only a chain no CA of theirs trusts
is tried again (certs.NotTrusted), any other refusal (identity, key usage, size) ends the
search: it is the same for every candidate. A chain none trusts fails once, in the first
candidate's name, as before: one failed authentication, counted once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography import x509

from ..certs import NotTrusted, VerifiedPeer, subject_text, verify_peer
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
    """The key of the peer's certificate and the CA it verified to, verified with the CAs of the first of ``candidates``
    (``st.config`` first) that trusts it; ``st.config`` becomes that connection. Raises the first
    candidate's AuthError if none trusts it."""
    refused: NotTrusted | None = None
    tried: set[tuple[x509.Certificate, ...]] = set()
    for cfg in candidates or (st.config,):
        cas = cfg.remote.cas
        if cas in tried:
            continue
        tried.add(cas)
        try:
            verified = verify_peer(chain, cas, st.wall_clock(), peer_id)
        except NotTrusted as exc:
            refused = refused or exc
            continue
        if cfg is not st.config:
            log.info("%s: switching to connection %s: its CAs trust the certificate of %s", st.name, cfg.name,
                     subject_text(chain[0]))
            st.config = cfg
        return verified
    assert refused is not None   # at least st.config's CAs were tried
    raise refused
