"""An internal error on one peer's IKE datagram costs only that datagram: it does not escape into
the worker's event batch (the other peers' IKE, EXPIREs, ACQUIREs read with it would be lost) and
is counted and logged. The error is a stand-in for an engine bug (one was the EAP-MSCHAPv2 hashing
of a password that is not UTF-8: a client naming the user raised out of the engine)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_ikeservice_peers import connected, run, site_ip

from tunsec.ike.sa import IkeSa

QUOTED = "".join(("what the error ", "text quoted"))   # not in any source line the traceback shows


def test_an_engine_error_on_one_peers_datagram_leaves_the_others_served(monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        gw = await connected(2)
        broken = next(sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(0))
        real = IkeSa.receive

        def receive(sa: IkeSa, *args: Any, **kwargs: Any) -> None:
            if sa is broken:
                raise RuntimeError(QUOTED)
            real(sa, *args, **kwargs)

        monkeypatch.setattr(IkeSa, "receive", receive)
        with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
            for i in (0, 1):
                gw.site_sa(i).send_liveness()
            await gw.settle()
        assert gw.service.receive_errors == 1
        (line,) = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
        assert line.startswith(f"IKE datagram from {site_ip(0)}[4500] dropped: internal error RuntimeError\n")
        assert "in receive" in line and QUOTED not in line   # where, not the text (it may quote data)
        # the other site's DPD was answered: its request left, its answer came (nothing pending)
        assert gw.site_sa(1)._pending is None
        assert gw.site_sa(0)._pending is not None   # the broken one's still waits, as for a lost datagram

    run(body())
