"""The peers a reload revokes: established IKE SAs whose proof the new configuration takes away.

A connection whose only change is its credentials keeps its SAs (reload.py, conf/diff.py); tunsec
never reauthenticates, so a peer whose credential left the configuration would otherwise keep its
tunnel for good.  Removing a user, a PSK entry or a CA is how an operator revokes; each step here
deletes (the peer is told) the established IKE SAs that proved what was removed, and nothing else:
a credential renewed in place (a changed password, a rotated key, a CA re-issued with its key and
subject) ends no session.  Each step returns "peer (connection)" once per peer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509

from tunsec.ike.certs import ca_fingerprint
from tunsec.ike.psk import PskEntry
from tunsec.ike.sa import State
from tunsec.ike.state import now_utc

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection
    from tunsec.ike.config import IkeConfig
    from tunsec.ike.identity import Identity
    from tunsec.ike.sa import IkeSa
    from tunsec.services.ike.record import IkeUpRecord
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

Changed = Sequence[tuple["Connection", "Connection"]]


def log_out_revoked(self: IkeService, renewed: Changed, now: float) -> list[str]:
    """The revocations of a reload whose connections ``renewed`` (old, new) changed in credentials
    only: the answer's lines naming the peers logged out, by what they lost."""
    out: list[str] = []
    for what, peers in (("EAP users no longer in the secrets", removed_users(self, renewed, now)),
                        ("PSK users whose key left the secrets", removed_psk_users(self, renewed, now)),
                        ("certificate peers whose CA left the trust anchors", removed_cas(self, renewed, now))):
        if peers:
            out.append(f"{what}, their IKE SAs deleted: {', '.join(peers)}")
    return out


def _established(self: IkeService, name: str) -> Iterator[tuple[IkeSa, IkeUpRecord]]:
    """The connection's established IKE SAs with their IkeSaUp record."""
    for sa in self.endpoint.sas:
        if sa.name == name and sa.state is State.ESTABLISHED and (up := self.ike_up.get(sa.local_spi)) is not None:
            yield sa, up


def _log_out(sa: IkeSa, now: float) -> None:
    """The one place a revoked peer's IKE SA is deleted (the peer gets the DELETE)."""
    sa.delete(now)


def removed_users(self: IkeService, renewed: Changed, now: float) -> list[str]:
    """EAP-MSCHAPv2 users the reload took out of the secrets (the same user's other connections, and
    other users, keep theirs).  A changed password leaves the session alone, as a rotated PSK does."""
    out: list[str] = []
    for _, new in renewed:
        if new.ike.remote.method != "eap-mschapv2":
            continue
        for sa, up in _established(self, new.name):
            if up.ev.peer_eap is None:
                continue
            user = up.ev.peer_eap.user.decode("utf-8", "replace")   # as the EAP server looked it up
            if new.ike.eap_password(user) is None:
                log.info("%s: EAP user %s is no longer in the secrets: deleting its IKE SA with %s", new.name,
                         up.ev.peer_eap.user_text, sa.remote_addr[0])
                _log_out(sa, now)
                out.append(f"{up.ev.peer_eap.user_text} ({new.name})")
    return list(dict.fromkeys(out))


def proved_entry(cfg: IkeConfig, initiator: bool, peer: Identity) -> PskEntry | None:
    """The secrets entry an IKE SA of ``cfg`` with ``peer`` proves: on a connection of %any the one
    the peer's identity picks (ike/psk.py), as the responder; else the connection's own ``psk`` (a
    named peer's entry, or the key we initiate with, which proves both ways: ike_auth._verify_psk)."""
    if cfg.peer_psks and not initiator:
        return cfg.psk_for(peer)
    return PskEntry((), cfg.psk, cfg.psk_name) if cfg.psk is not None else None


def removed_psk_users(self: IkeService, renewed: Changed, now: float) -> list[str]:
    """PSK peers the reload took out of the secrets, as removed_users does for EAP (review revpsk F2,
    revreload F5): the entry the SA proved is gone by name, or another one or none is its now (dave's
    own entry gone, a group key would prove him; an entry added for someone the group key proved:
    it no longer does; a named peer's ``ike-site1`` gone, the group key became the connection's).
    A key changed under the same entry name (rotated), or an entry renamed with its key, ends no
    session.  The entry an SA proved is the one the old configuration gives it (proved_entry: the
    engine keeps no record of it); an SA for which it gives none is left alone."""
    out: list[str] = []
    for old, new in renewed:
        if new.ike.remote.method != "psk":
            continue
        for sa, up in _established(self, new.name):
            was = proved_entry(old.ike, sa.is_initiator, up.ev.remote_id)
            now_is = proved_entry(new.ike, sa.is_initiator, up.ev.remote_id)
            # the same entry (a rotated key), or another one holding the key it proved (a renamed one)
            if was is None or (now_is is not None and (now_is.name == was.name or now_is.secret == was.secret)):
                continue
            log.info("%s: secrets.%s, the pre-shared key of %s, is no longer its: deleting its IKE SA with %s",
                     new.name, was.name or "ike", up.ev.remote_id, sa.remote_addr[0])
            _log_out(sa, now)
            out.append(f"{up.ev.remote_id} ({new.name})")
    return list(dict.fromkeys(out))


def removed_cas(self: IkeService, renewed: Changed, now: float) -> list[str]:
    """Certificate peers (pubkey, EAP-TLS) whose chain verified to a CA the reload took out of the
    connection's CAs (x509ca/, cacerts; review revreload F3).  A CA is known by its subject and public
    key (certs.ca_fingerprint), not its certificate's bytes: one renewed with both (a new validity, a
    new serial) still verifies what it issued, and logs no one out; a CA added does not either.  A
    peer whose chain verified to an intermediate CA that was itself among the CAs is logged out when
    that one goes, even if its root stays (it reconnects through the root if it sends the
    intermediate).  An SA we initiated is judged the same: its peer's certificate proved the responder.
    Where a copy of a CA left and another copy of its name and key stays (review revcert3 F1: two
    certificates of one CA are two trust anchors), the peers stay only if a remaining copy is within
    its validity now: an expired copy verifies no one (still_trusted).  A remaining copy's name
    constraints are not held against the peers' certificates: an IKE SA keeps its anchor, not its
    chain (docs/configuration.md)."""
    out: list[str] = []
    when = now_utc()
    for old, new in renewed:
        if new.ike.remote.method not in ("pubkey", "eap-tls"):
            continue
        trusted = still_trusted(old.ike.remote.cas, new.ike.remote.cas, when)
        for sa, up in _established(self, new.name):
            if up.ev.peer_anchor is None or up.ev.peer_anchor in trusted:
                continue
            log.info("%s: the CA that certified %s is no longer trusted: deleting its IKE SA with %s",
                     new.name, up.ev.remote_id, sa.remote_addr[0])
            _log_out(sa, now)
            out.append(f"{up.ev.remote_id} ({new.name})")
    return list(dict.fromkeys(out))


def still_trusted(old: Sequence[x509.Certificate], new: Sequence[x509.Certificate], when: datetime) -> set[bytes]:
    """The anchors (certs.ca_fingerprint) whose peers a connection's new CAs ``new`` still trust: every
    one of ``new``'s, but of a CA one of whose copies (``old``'s, its name and key) left, only if a
    remaining copy is valid at ``when``."""
    left = {ca_fingerprint(ca) for ca in old if ca not in new}
    return {ca_fingerprint(ca) for ca in new
            if ca_fingerprint(ca) not in left or ca.not_valid_before_utc <= when <= ca.not_valid_after_utc}
