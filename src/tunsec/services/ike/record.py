"""What the IKE service keeps of each established IKE SA for `status` and updown: :class:`IkeUpRecord`.

A gateway holds one per client for hours, so it is the engine's IkeSaUp event (whose strings,
identities and addresses the IKE SA shares) and the time it came up, not a dict of strings made
from them (~0.9 KiB per client). The strings are made when asked for, which is rare.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tunsec.ike.events import IkeSaUp

KEYS = ("name", "remote", "proposal", "local_id", "remote_id", "remote_id_proven", "remote_ike_id", "remote_eap_id",
        "groups", "spi_i", "spi_r", "established", "local_vips", "remote_vips", "vips")


class IkeUpRecord(Mapping[str, Any]):
    """The status record of one established IKE SA, read as a mapping with :data:`KEYS`."""

    __slots__ = ("_spis", "established", "ev")

    def __init__(self, ev: IkeSaUp, established: float) -> None:
        self.ev = ev
        self.established = established
        self._spis: tuple[bytes, bytes] | None = None   # the SPIs after IKE rekeys (update)

    def __getitem__(self, key: str) -> Any:
        ev = self.ev
        match key:
            case "name":
                return ev.name
            case "remote":
                return ev.remote_addr[0]
            case "proposal":
                return ev.proposal
            case "local_id":
                return str(ev.local_id)
            case "remote_id":
                return str(ev.remote_id)
            case "remote_id_proven":   # false: eap-radius whose Accept named no user (Identity.tag)
                return not ev.remote_id.tag
            case "remote_ike_id":   # the identity it sent: not remote_id if EAP or its certificate proved another
                return str(ev.peer_eap.ike_id if ev.peer_eap else ev.remote_sent_id or ev.remote_id)
            case "remote_eap_id":
                return ev.peer_eap.user_text if ev.peer_eap else None
            case "groups":
                return list(ev.peer_eap.groups) if ev.peer_eap else []
            case "spi_i" | "spi_r":
                spi_i, spi_r = self._spis or (ev.spi_i, ev.spi_r)
                return (spi_i if key == "spi_i" else spi_r).hex()
            case "established":
                return self.established
            case "local_vips":
                return [str(a) for a in ev.own_vips]
            case "remote_vips":
                return [str(a) for a in ev.peer_vips]
            case "vips":
                return ev.own_vips, ev.peer_vips, ev.dns
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    def update(self, *, spi_i: str, spi_r: str, established: float) -> None:
        """After an IKE rekey: the new SA's SPIs (hex, as read) and the time it came up."""
        self._spis = (bytes.fromhex(spi_i), bytes.fromhex(spi_r))
        self.established = established
