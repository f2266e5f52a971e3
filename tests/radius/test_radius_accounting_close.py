"""accounting_close_on_timeout (strongSwan's key, default yes) against an accounting server on
loopback (real UDP, a port the kernel picks): a session whose Start or Interim-Update no server
took has its IKE SA closed and its Stop says NAS-Error; with the key off (read from the config)
nothing is closed; a lost Stop closes nothing. And the Acct-Terminate-Cause of every reason an
IKE SA goes down, against strongSwan's (eap_radius_accounting.c: User-Request unless
ALERT_IKE_SA_EXPIRED, Session-Timeout, or ALERT_RETRANSMIT_SEND_TIMEOUT, Lost-Service)."""
from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest
from test_radius_accounting import AcctServer, Worker, serve, settings, until
from test_radius_messages import SECRET, STATION

from tunsec.conf.config import parse_config
from tunsec.ike.events import DownReason
from tunsec.radius.accounting import Accounting
from tunsec.radius.causes import Cause, cause_of
from tunsec.radius.settings import RadiusSettings


def silent_then(settings_: RadiusSettings, interval: float = 0) -> RadiusSettings:
    return RadiusSettings(settings_.servers, retransmit_timeout=0.05, retransmit_base=1.0, retransmit_tries=1,
                          accounting=True, accounting_interval=interval,
                          accounting_close_on_timeout=settings_.accounting_close_on_timeout)


async def run(radius: RadiusSettings, server: AcctServer, answer_start: bool) -> tuple[list[Hashable], Accounting]:
    """A session whose Start is (or is not) answered; then the server falls silent. Returns the
    IKE SAs accounting asked to close, once the service has stopped the session (as it does when
    it deletes the IKE SA) and the Stop has reached the server."""
    closed: list[Hashable] = []
    worker = Worker()
    acct = Accounting(radius, worker.dump, worker.children, close=closed.append)
    acct.start("ike-1", "alice", STATION, [])
    if answer_start:
        await until(lambda: acct.stats.responses == 1)
    server.mode = "silent"
    await until(lambda: acct.stats.failed >= 1)
    await asyncio.sleep(0)   # the record's task ends after it counted the loss
    acct.stop("ike-1", Cause.ADMIN_RESET)   # the service deleted the IKE SA (or a user did)
    await until(lambda: server.of("Stop") and acct.stats.failed >= 2)
    acct.close()
    server.transport.close()
    return closed, acct


@pytest.mark.parametrize("lost", ["Start", "Interim-Update"])
def test_an_ike_sa_whose_start_or_interim_no_server_took_is_closed_and_its_stop_says_nas_error(lost: str) -> None:
    async def main() -> tuple[list[Hashable], AcctServer]:
        server, port = await serve("answer" if lost == "Interim-Update" else "silent")
        radius = silent_then(settings(port), interval=0.2 if lost == "Interim-Update" else 0)
        closed, _ = await run(radius, server, answer_start=lost == "Interim-Update")
        return closed, server

    closed, server = asyncio.run(main())
    assert closed == ["ike-1"]
    assert server.of(lost)
    (stop, *_) = server.of("Stop")
    assert stop["Acct-Terminate-Cause"] == Cause.NAS_ERROR and int(Cause.NAS_ERROR) == 9   # RFC 2866 §5.10


def test_with_accounting_close_on_timeout_no_a_lost_start_closes_nothing() -> None:
    async def main() -> tuple[list[Hashable], AcctServer]:
        server, port = await serve("silent")
        text = (f"radius {{\n  servers {{ r0 {{ address = 127.0.0.1\n secret = \"{SECRET.decode()}\"\n"
                f" acct_port = {port} }} }}\n  accounting = yes\n  accounting_close_on_timeout = no\n}}\n")
        radius = parse_config(text, "tunsec.conf").radius
        assert radius is not None
        closed, _ = await run(silent_then(radius), server, answer_start=False)
        return closed, server

    closed, server = asyncio.run(main())
    assert closed == []
    (stop, *_) = server.of("Stop")
    assert stop["Acct-Terminate-Cause"] == Cause.ADMIN_RESET


def test_a_lost_stop_closes_nothing() -> None:
    async def main() -> list[Hashable]:
        server, port = await serve("answer")
        closed: list[Hashable] = []
        worker = Worker()
        acct = Accounting(silent_then(settings(port)), worker.dump, worker.children, close=closed.append)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: acct.stats.responses == 1)
        server.mode = "silent"
        acct.stop("ike-1", Cause.USER_REQUEST)
        await until(lambda: acct.stats.failed == 1)
        await asyncio.sleep(0.05)
        acct.close()
        server.transport.close()
        return closed

    assert asyncio.run(main()) == []


# strongSwan: Session-Timeout on ALERT_IKE_SA_EXPIRED, Lost-Service on ALERT_RETRANSMIT_SEND_TIMEOUT
# (any request's retransmissions exhausted, DPD's included), User-Request for all else; tunsec
# splits strongSwan's User-Request by who ended it
STRONGSWAN = {DownReason.EXPIRED: Cause.SESSION_TIMEOUT, DownReason.PEER_UNREACHABLE: Cause.LOST_SERVICE,
              DownReason.DEAD_PEER: Cause.LOST_SERVICE, DownReason.UNANSWERED: Cause.LOST_SERVICE}
TUNSEC_FINER = {DownReason.DELETED: Cause.ADMIN_RESET, DownReason.REPLACED: Cause.NAS_REQUEST,
                DownReason.DUPLICATE: Cause.NAS_REQUEST}


@pytest.mark.parametrize("reason", list(DownReason))
def test_every_down_reason_maps_to_strongswans_cause_or_a_finer_one_of_what_it_calls_user_request(
        reason: DownReason) -> None:
    expected = STRONGSWAN.get(reason, TUNSEC_FINER.get(reason, Cause.USER_REQUEST))
    assert cause_of(reason) == expected
    assert cause_of(reason, shutting_down=True) == (Cause.NAS_REBOOT if reason is DownReason.DELETED else expected)


def test_the_service_deletes_the_ike_sa_accounting_closes_and_only_a_live_one() -> None:
    """The glue (radius_edge): the accounting a config creates closes an IKE SA by its handle,
    deleting it (the peer is told); one already closed, or a handle of none, is left alone."""
    from tunsec.services.ike import radius_edge

    class FakeSa:
        def __init__(self, closed: bool = False) -> None:
            self.is_closed = closed
            self.deleted = 0

        def delete(self, now: float) -> None:
            self.deleted += 1

    live, gone = FakeSa(), FakeSa(closed=True)
    pumped = []
    svc = type("Svc", (), {})()
    svc.accounting, svc.acct_retiring = None, set()
    svc._acct_dump, svc._acct_children = Worker().dump, Worker().children
    svc._ike_sa = {1: live, 2: gone}.get
    svc._pump = lambda: pumped.append(1)
    radius_edge._acct_configure(svc, RadiusSettings(settings(1813).servers, accounting=True))
    for handle in (1, 2, 3):
        svc.accounting._close_session(handle)
    assert (live.deleted, gone.deleted, len(pumped)) == (1, 0, 1)
