"""Established IKE SAs by their peer's IP address, and the INVALID_SPI notifies sent in them.

ESP for an SPI the worker does not know names only its source address; the INVALID_SPI notify
(RFC 7296 §2.21.3) may go only inside an IKE SA established with that address.  Such ESP is
anyone's (unauthenticated, spoofable), so finding that IKE SA must not cost a pass over every
IKE SA per event: the endpoint keeps this index up to date as its SAs change (IkeEndpoint's
_collect_one: established or not, the peer's address now, closed)."""

from __future__ import annotations

from tunsec.policy.selector import IPAddress, parse_ip

from .sa import IkeSa, State


class EstablishedByAddress:
    """IKE SAs that were established when last collected, under their peer's IP address."""

    def __init__(self) -> None:
        # local SPI -> (the peer's address as the SA had it, parsed): what changed is seen without a parse
        self._at: dict[bytes, tuple[str, IPAddress]] = {}
        # address -> its IKE SA, or (several peers behind one NAT, a rekey's overlap) local SPI -> IKE SA
        # (a dict is ~200 bytes, and nearly every address has one IKE SA)
        self._by_ip: dict[IPAddress, IkeSa | dict[bytes, IkeSa]] = {}
        self._notified: dict[bytes, float] = {}   # local SPI -> when it last sent INVALID_SPI

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, ip: IPAddress) -> bool:
        return ip in self._by_ip

    @property
    def notified(self) -> int:
        """IKE SAs with an INVALID_SPI notify on record (at most those that exist)."""
        return len(self._notified)

    def follow(self, sa: IkeSa) -> None:
        """``sa`` changed: indexed while it is established, under the address its peer has now
        (NAT rebinding and MOBIKE move it)."""
        spi = sa.local_spi
        text = sa.remote_addr[0] if sa.state is State.ESTABLISHED else None
        old = self._at.get(spi)
        if (old[0] if old is not None else None) == text:
            return
        if old is not None:
            self._remove(spi, old[1])
        if text is None:
            return
        try:
            # cached: a burst's clients come from a few addresses (one NAT), each parse ~3 us
            ip = parse_ip(text)
        except ValueError:
            return   # not an address: no ESP comes from it
        self._at[spi] = (text, ip)
        there = self._by_ip.get(ip)
        if there is None:
            self._by_ip[ip] = sa
        elif isinstance(there, dict):
            there[spi] = sa
        else:
            self._by_ip[ip] = {there.local_spi: there, spi: sa}

    def forget(self, spi: bytes) -> None:
        """The IKE SA closed: nothing of it is kept."""
        if (old := self._at.get(spi)) is not None:
            self._remove(spi, old[1])
        self._notified.pop(spi, None)

    def _remove(self, spi: bytes, ip: IPAddress) -> None:
        del self._at[spi]
        there = self._by_ip[ip]
        if not isinstance(there, dict):
            del self._by_ip[ip]
            return
        del there[spi]
        if len(there) == 1:
            self._by_ip[ip] = next(iter(there.values()))

    def at(self, ip: IPAddress) -> list[IkeSa]:
        """The established IKE SAs with the peer at ``ip`` (address_role.py: whose peer it is)."""
        there = self._by_ip.get(ip)
        sas = () if there is None else there.values() if isinstance(there, dict) else (there,)
        return [sa for sa in sas if sa.state is State.ESTABLISHED]

    def find(self, ip: IPAddress, port: int) -> IkeSa | None:
        """The established IKE SA with the peer at ``ip``: the one whose port is ``port`` if there
        is one (peers behind one NAT differ by port), else the first.  O(IKE SAs at ``ip``)."""
        there = self._by_ip.get(ip)
        sas = () if there is None else there.values() if isinstance(there, dict) else (there,)
        first = None
        for sa in sas:
            if sa.state is not State.ESTABLISHED:
                continue   # changed since it was collected (a delete just started)
            if sa.remote_addr[1] == port:
                return sa
            first = first or sa
        return first

    def may_notify(self, sa: IkeSa, now: float, interval: float) -> bool:
        """Whether ``sa`` may send an INVALID_SPI notify now (none within ``interval``)."""
        last = self._notified.get(sa.local_spi)
        return last is None or now - last >= interval

    def notified_at(self, sa: IkeSa, now: float) -> None:
        self._notified[sa.local_spi] = now   # until it closes (forget)
