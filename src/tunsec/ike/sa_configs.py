"""A reload's connections for a responder IKE SA that is still being set up (``IkeEndpoint.set_configs``).

A responder takes the connections its peer may be using at IKE_SA_INIT (``candidates``) and picks
one of them by the peer's identity in IKE_AUTH, which may come after a reload.  Kept as they were,
a removed connection would still admit its peer, and one whose PSK was rotated (leaked) the old
PSK: the SA would come up under configuration that no longer exists.  So the reload re-points the
SA: a candidate the reload left as it was stays, one that differs only in its credentials is
replaced by its new version (new negotiations use the new credentials: the peer proves them or
fails), one removed or otherwise changed is dropped (its proposals, identities or children may
differ from what IKE_SA_INIT agreed).  The SA goes (False) when nothing is left, or when IKE_AUTH
had chosen its connection already (EAP under way) and that one is dropped, or is EAP-TLS renewed:
its TLS session holds the old CAs.  EAP-MSCHAPv2 looks the user's password up in ``st.config``
when the client answers, so a renewed connection's users count from now on.

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import TYPE_CHECKING

from .config import IkeConfig
from .state import State

if TYPE_CHECKING:
    from .sa import IkeSa


def follow_configs(self: IkeSa, current: Mapping[str, IkeConfig], renewed: Container[str]) -> bool:
    """Re-point a responder still being set up at ``current`` (by name), taking the new version of
    the connections named in ``renewed`` (changed in credentials only); False if it must go.
    Anything else (an initiator, an established SA) is left alone: True."""
    st = self._st
    if st.is_initiator or self._state is not State.CONNECTING:
        return True

    def now_of(cfg: IkeConfig) -> IkeConfig | None:
        new = current.get(cfg.name)
        if new is cfg or (new is not None and cfg.name in renewed):
            return new
        return None

    kept = [new for cfg in st.candidates or (st.config,) if (new := now_of(cfg)) is not None]
    config = now_of(st.config)
    # IKE_AUTH chose it (EAP under way): another would not be what the peer proves itself to, nor
    # would a renewed EAP-TLS's CAs be those its TLS session checks with
    if st.eap is not None and config is not st.config and (config is None or config.remote.method == "eap-tls"):
        return False
    if config is None:
        if not kept:
            return False
        config = kept[0]   # IKE_AUTH picks among the candidates anyway: as if it had been the first
    st.candidates = tuple(kept) if any(c is config for c in kept) else (config, *kept)
    st.config = config
    return True
