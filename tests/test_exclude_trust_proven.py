"""Review revfull3 F2: the exclude gate trusts only an address an authenticated peer has proven
(services/ike/exclude_trust.py), not every address its authenticated requests come from: a MOBIKE move
once its return routability check succeeded, a peer without MOBIKE at the address it authenticated from.
A NAT float (sa_responder._float: the IKE SA follows an authenticated request) is a request from that
address, which the peer, holding the keys, may send from any source: it gets no exclude route.

The engine's IKE SA is stood in for by its fields the trust reads (remote_addr, esp_remote, mobike); the
service's ike_up holds the IkeSaUp of each SA, as IkeService._event fills it."""

from __future__ import annotations

from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any

from tunsec.ike.constants import HeaderFlag
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.record import IkeUpRecord

SPI = bytes.fromhex("8a3f01c27d5e9b10")
AUTHENTICATED = ("198.51.100.5", 4500)   # where the peer authenticated from
ELSEWHERE = ("203.0.113.9", 4500)        # where a later authenticated request (or update) came from


def _sa(remote: tuple[str, int], esp: tuple[str, int], mobike: bool) -> Any:
    return SimpleNamespace(is_closed=False, remote_addr=remote, esp_remote=esp, mobike=mobike, local_spi=SPI,
                           _st=SimpleNamespace(authenticated_target=False))


def _trusted(sa: Any, to: tuple[str, int]) -> bool:
    endpoint = SimpleNamespace(sa_by_spi=lambda spi: sa if spi == SPI else None)
    up = {SPI: IkeUpRecord(SimpleNamespace(remote_addr=AUTHENTICATED), 0.0)}  # type: ignore[arg-type]
    # a message we send as the original initiator: our SPI is the initiator's
    data = SPI + bytes(11) + bytes([HeaderFlag.INITIATOR]) + bytes(8)
    return authenticated_peer(endpoint, up, ip_address(to[0]), data)  # type: ignore[arg-type]


def test_a_peer_without_mobike_is_trusted_where_it_authenticated_and_not_where_it_floated() -> None:
    assert _trusted(_sa(AUTHENTICATED, AUTHENTICATED, mobike=False), AUTHENTICATED)
    assert not _trusted(_sa(ELSEWHERE, ELSEWHERE, mobike=False), ELSEWHERE), (
        "a NAT float to an address the peer never proved got that address an exclude route")


def test_a_mobike_move_is_trusted_only_once_its_check_succeeded() -> None:
    checking = _sa(ELSEWHERE, AUTHENTICATED, mobike=True)   # the update moved IKE; ESP waits for the check
    assert not _trusted(checking, ELSEWHERE)
    assert _trusted(checking, AUTHENTICATED)
    checked = _sa(ELSEWHERE, ELSEWHERE, mobike=True)        # the check succeeded: ESP moved too
    assert _trusted(checked, ELSEWHERE)
