"""The IKE SPI book's counters (ike/spi_book.py) in `tunsec status` and the metrics: our IKE SPIs
drawn again because the one drawn was in use or reserved (a new IKE SA's and a rekey's), and new IKE
SAs of rekeys dropped because their SPI was taken all the same (only a bug gets there).  Until
h/fixobs neither was shown anywhere (review revspis; h/fixspis counted them in the engine only).

The gateway is a real IkeService over the in-process worker (test_ikeservice_peers.Gateway); its
random source is faked to give the random half of an SPI it holds (spi_tag.make_ike_spi) once more,
as os.urandom would one time in 2^32 for one peer address."""

from __future__ import annotations

import os

import pytest
from test_ikeservice_peers import Gateway, run

from tunsec import metrics
from tunsec.dataplane import pipe
from tunsec.ike.sa import IkeSa
from tunsec.ike.spi_book import IkeSpiBook
from tunsec.status import render

BASE = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
        "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {}}


class ReplayingRandom:
    """os.urandom, but the next 4-byte draw after again(spi) is spi's random half: that SPI drawn anew."""

    def __init__(self) -> None:
        self._next: bytes | None = None

    def again(self, spi: bytes) -> None:
        self._next = spi[:4]

    def __call__(self, n: int) -> bytes:
        if n == 4 and self._next is not None:
            out, self._next = self._next, None
            return out
        return os.urandom(n)


async def _gateway() -> tuple[Gateway, ReplayingRandom]:
    gw = Gateway(1, mobike=False)
    await gw.start()
    rng = ReplayingRandom()
    gw.service.endpoint._rng = rng   # every IKE SA the gateway makes from now on draws from it
    gw.connect(0)
    await gw.settle()
    return gw, rng


def _gw_sa(gw: Gateway) -> IkeSa:
    (sa,) = [s for s in gw.service.endpoint.sas if s.state.value == "established"]
    return sa


def _shown(gw: Gateway) -> tuple[dict[str, int], list[str], dict[str, float]]:
    """ike_spis of the status document, its text lines about them, and the two metrics."""
    doc = gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
    text = [x for x in render({**BASE, **doc}).splitlines() if x.startswith("IKE SPIs")]
    families = {f.name: f.samples[0].value for f in metrics.state_families(doc, True)
                if f.name in ("tunsec_ike_spis_redrawn", "tunsec_ike_successors_refused")}
    return doc["ike_spis"], text, families


def test_spis_drawn_again_are_shown_in_status_and_metrics() -> None:
    async def body() -> None:
        gw, rng = await _gateway()
        assert _shown(gw) == ({"redrawn": 0, "successors_refused": 0}, [],
                              {"tunsec_ike_spis_redrawn": 0, "tunsec_ike_successors_refused": 0})
        first = _gw_sa(gw)
        # the site rekeys its IKE SA: the gateway's first draw for the new SPI is the one it has
        rng.again(first.local_spi)
        gw.site_sa(0).rekey()
        await gw.settle()
        heir = _gw_sa(gw)
        assert heir is not first and heir.local_spi != first.local_spi
        assert gw.service.endpoint.spi_book.redrawn == 1
        # a second IKE SA of the site: the new SA's first draw is the SPI the rekey's heir has
        rng.again(heir.local_spi)
        gw.connect(0)
        await gw.settle()
        assert len({s.local_spi for s in gw.service.endpoint.sas}) == len(gw.service.endpoint.sas) >= 2
        assert _shown(gw) == (
            {"redrawn": 2, "successors_refused": 0},
            ["IKE SPIs drawn again (in use or reserved): 2, new IKE SAs of rekeys or redirects dropped, their "
             "SPI taken (an internal error): 0"],
            {"tunsec_ike_spis_redrawn": 2, "tunsec_ike_successors_refused": 0})

    run(body())


def test_a_successor_refused_for_its_spi_is_shown_in_status_and_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line: the draw's check broken (as a bug would), the rekey's new SPI is the one the old
    IKE SA has; the endpoint drops the successor (logged as an internal error: the old SA then goes with
    the site's DELETE of it), and status and metrics say so."""
    async def body() -> None:
        gw, rng = await _gateway()
        first = _gw_sa(gw)
        monkeypatch.setattr(IkeSpiBook, "taken", lambda self, spi: False)   # the check that should redraw
        rng.again(first.local_spi)
        gw.site_sa(0).rekey()
        await gw.settle()
        assert all(s.local_spi != first.local_spi or s is first for s in gw.service.endpoint.sas)
        spis, text, families = _shown(gw)
        assert spis == {"redrawn": 0, "successors_refused": 1}
        assert text == ["IKE SPIs drawn again (in use or reserved): 0, new IKE SAs of rekeys or redirects "
                        "dropped, their SPI taken (an internal error): 1"]
        assert families == {"tunsec_ike_spis_redrawn": 0, "tunsec_ike_successors_refused": 1}

    run(body())
