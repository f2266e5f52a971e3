"""Our IKE SPIs in use on an endpoint: those of its IKE SAs, and those drawn for IKE SAs not routed yet.

An endpoint routes every IKE datagram by our SPI in it (IkeEndpoint._sas), so no two of its IKE SAs
may have one SPI.  A new SA's SPI is drawn again if it is taken (IkeEndpoint._new_sa); so is the new
SPI of an IKE SA rekey, ours as initiator (RekeyIkeTask) or as responder (rekey_ike.respond), and that
of a new IKE SA an IKE_AUTH redirect starts.  Those are drawn while an exchange is under way and routed
only once it is through (the endpoint registers the successor): until then the SPI is *reserved* here,
so no other draw (another peer's rekey in flight, a new SA) is offered it.  A reservation ends when
the SA it was drawn for is registered (``release``), when its rekey fails (``release``), or at the
latest when the IKE SA that drew it closes (``release_all``): a rekey task dropped unanswered
(the SA replaced meanwhile) leaves nothing behind for longer than that SA lives.

Why it matters although a clash is one in 2^32 per pair: half an SPI is random and half a tag of the
peer's address (spi_tag.py), so all clients behind one public address (a CGNAT) draw from the same 2^32,
and a peer decides how often it rekeys.  An unchecked successor took another peer's entry: that peer's
datagrams went to the successor (ICV failure) and it was declared dead with its Child SAs.
"""

from __future__ import annotations

from collections.abc import Callable, Container


class IkeSpiBook:
    def __init__(self, registered: Container[bytes]) -> None:
        """``registered``: the SPIs of the endpoint's IKE SAs (its routing dict, read only here)."""
        self._registered = registered
        self._owner: dict[bytes, bytes] = {}          # reserved SPI -> the SPI of the IKE SA that drew it
        self._drawn: dict[bytes, list[bytes]] = {}    # an IKE SA's SPI -> the SPIs it reserved
        # `tunsec status`'s ike_spis, the metrics' tunsec_ike_spis_redrawn_total and
        # tunsec_ike_successors_refused_total:
        self.redrawn = 0      # draws that hit an SPI in use or reserved, drawn again (a new SA's too)
        self.refused = 0      # successors whose SPI was taken all the same (a bug): dropped (IkeEndpoint)

    def __len__(self) -> int:
        return len(self._owner)

    def taken(self, spi: bytes) -> bool:
        return spi in self._registered or spi in self._owner

    def reserve(self, owner: bytes, draw: Callable[[], bytes]) -> bytes:
        """An SPI from ``draw`` that no IKE SA has and nobody reserved, reserved for the IKE SA whose
        SPI is ``owner`` (its rekey or redirect) until it is registered or released."""
        while self.taken(spi := draw()):
            self.redrawn += 1
        self._owner[spi] = owner
        self._drawn.setdefault(owner, []).append(spi)
        return spi

    def release(self, spi: bytes) -> None:
        """The SA ``spi`` was drawn for is registered now, or will never be (nothing if not reserved)."""
        owner = self._owner.pop(spi, None)
        if owner is None:
            return
        drawn = self._drawn[owner]
        drawn.remove(spi)
        if not drawn:
            del self._drawn[owner]

    def release_all(self, owner: bytes) -> None:
        """The IKE SA whose SPI is ``owner`` is gone: whatever it drew and did not hand on is free."""
        for spi in self._drawn.pop(owner, ()):
            del self._owner[spi]
