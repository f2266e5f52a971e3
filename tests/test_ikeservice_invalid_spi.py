"""INVALID_SPI through the IKE service among many peers: ESP for an unknown SPI (anyone's) finds the
IKE SA established with its source by address, not by a pass over every IKE SA, and what is kept
of a notify goes with its IKE SA.  A real IkeService over the in-process worker (test_ikeservice_peers)."""

from __future__ import annotations

import ipaddress
import logging
import time
import types

import pytest
from test_ikeservice_peers import Gateway, connected, run, site_ip

from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.loglimit import LogLimiter
from tunsec.services.ike import invalid_spi as invalid_spi_module

NAT = "203.0.113.1"   # sites 10 and 11 are behind it, told apart by port


def _esp_from(addr: str, port: int = 4500) -> Endpoint:
    return Endpoint(ipaddress.ip_address(addr), port)


def _notified(gw: Gateway, spi: int, remote: Endpoint) -> list[tuple[str, int]]:
    """Where the INVALID_SPI notify for ESP from ``remote`` went (empty: none was sent)."""
    gw.wire.clear()
    if not gw.service.invalid_spi(spi, remote):
        return []
    return [dst for _, dst, _ in gw.wire]


def test_the_ike_sa_of_the_esps_source_is_found_among_many_and_its_state_goes_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invalid_spi_module, "time", types.SimpleNamespace(monotonic=lambda: 1000.0))

    async def body() -> None:
        gw = Gateway(12)
        gw.nat = {10: (NAT, 40001), 11: (NAT, 40002)}
        await gw.start()
        for i in range(12):
            gw.connect(i)
        await gw.settle()
        index = gw.service.endpoint._by_address
        assert len(index) == 12
        with monkeypatch.context() as m:   # no pass over every IKE SA per event
            m.setattr(IkeEndpoint, "sas", property(lambda _self: pytest.fail("a pass over every IKE SA")))
            assert _notified(gw, 0xC0000005, _esp_from(site_ip(5))) == [(site_ip(5), 4500)]
            assert _notified(gw, 0xC0000006, _esp_from(site_ip(5))) == []      # within the second: once
            assert _notified(gw, 0xC0000007, _esp_from(NAT, 40002)) == [(NAT, 40002)]   # by port behind a NAT
            assert _notified(gw, 0xC0000008, _esp_from(NAT, 9999)) == [(NAT, 40001)]    # else the first there
            assert _notified(gw, 0xC0000009, _esp_from("192.0.2.200")) == []    # no IKE SA with it: nothing
        assert index.notified == 3
        gw.site_sa(5).delete(time.monotonic())
        await gw.settle()
        assert not [sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(5)]
        assert (len(index), index.notified) == (11, 2)     # its index entry and its notify's time are gone
        assert _notified(gw, 0xC000000A, _esp_from(site_ip(5))) == []
    run(body())


@pytest.mark.parametrize("rekeys", [1, 2])
def test_an_ike_rekey_moves_the_index_to_the_new_ike_sa(rekeys: int) -> None:
    """The rekeyed IKE SA leaves the index (and, closed, its notify's time), its successor comes in."""
    async def body() -> None:
        gw = await connected(2)
        index = gw.service.endpoint._by_address
        assert gw.service.invalid_spi(0xC0000001, _esp_from(site_ip(1)))
        for _ in range(rekeys):
            gw.site_sa(1).rekey()
            await gw.settle()
        ours = [sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(1)]
        assert len(ours) == 1 and (len(index), index.notified) == (2, 0)
        assert index.find(ipaddress.ip_address(site_ip(1)), 4500) is ours[0]
    run(body())


@pytest.mark.parametrize("mobike", [False, True])
def test_the_index_follows_a_peer_that_moved(mobike: bool) -> None:
    """NAT rebinding (the IKE SA moves to the address of the peer's latest authenticated request) or
    MOBIKE (its UPDATE_SA_ADDRESSES): ESP from there finds it, ESP from the old address no longer does."""
    async def body() -> None:
        gw = await connected(2, mobike=mobike)
        gw.nat[0] = (NAT, 40000)
        if mobike:
            assert gw.site_sa(0).update_addresses()
        else:
            gw.site_sa(0).send_liveness()
        await gw.settle()
        assert _notified(gw, 0xC0000001, _esp_from(site_ip(0))) == []
        assert _notified(gw, 0xC0000002, _esp_from(NAT, 40000)) == [(NAT, 40000)]
        assert len(gw.service.endpoint._by_address) == 2
    run(body())


def test_esp_for_unknown_spis_to_many_peers_logs_a_few_lines(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """ESP anyone can send, for unknown SPIs from the addresses of 12 peers: each peer is notified
    (once a second per IKE SA), but the service logs 10 lines a period in all, not one per IKE SA
    per second; the next period's first line counts those held back."""
    clock = [1000.0]
    monkeypatch.setattr(invalid_spi_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(invalid_spi_module, "INVALID_SPI_LOG", LogLimiter(clock=lambda: clock[0]))

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "ESP for unknown SPI" in r.getMessage()]

    async def body() -> None:
        gw = await connected(12)
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            for second in range(2):
                clock[0] += second * 1.0
                for i in range(12):
                    assert _notified(gw, 0xC0000000 + i, _esp_from(site_ip(i))) == [(site_ip(i), 4500)]
                    await gw.settle()   # the site answers the notify (one exchange at a time)
            assert len(lines()) == 10
            clock[0] += 10.0
            assert _notified(gw, 0xC00000FF, _esp_from(site_ip(0))) == [(site_ip(0), 4500)]
            await gw.settle()
    run(body())
    assert len(lines()) == 11 and lines()[-1].endswith("(14 more like it suppressed)"), lines()[-1]
