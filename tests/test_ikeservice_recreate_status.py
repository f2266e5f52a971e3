"""A child created again after our failed rekey (services/ike/recreate.py) is shown: its tries
(``child_recreate``) in ``tunsec status`` (JSON and text) and scraped as
tunsec_child_sa_recreate_tries_total, by connection and child.

Two real IkeServices with in-process workers (test_ikeservice_install_failed.TwoChildPair), the
re-creation driven in memory; the scrape is a real one over loopback."""

from __future__ import annotations

from test_ikeservice_install_failed import TwoChildPair, ike_up, our_rekey_fails, refuse_next
from test_ikeservice_peers import run
from test_ikeservice_rekey import fire_timers
from test_metrics_events import scrape

from tunsec.dataplane import pipe
from tunsec.services.ike import recreate

LINE = "Child SAs created again after our rekey's failed install (tries): "
METRIC = 'tunsec_child_sa_recreate_tries_total{child="net",connection="tun"}'


def json_status(pair: TwoChildPair) -> list[dict[str, object]]:
    doc = pair.svc["a"].status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
    return doc["child_recreate"]   # type: ignore[no-any-return]


def test_a_child_created_again_shows_its_try_in_status_and_the_scrape() -> None:
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        # the failure is known, no try made yet: nothing to show
        assert json_status(pair) == []
        assert not [x for x in (await pair.status_text("a")).splitlines() if x.startswith(LINE)]
        assert METRIC not in await scrape(a)
        fire_timers(a)
        await pair.settle()
        assert [c.name for c in ike_up(pair, "a").children] == ["net"] and a._recreating == {}
        assert json_status(pair) == [{"connection": "tun", "child": "net", "count": 1}]
        assert f"{LINE}tun/net 1" in (await pair.status_text("a")).splitlines()
        assert (await scrape(a))[METRIC] == 1
        # B did not create anything again: it shows none
        assert pair.svc["b"].status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))["child_recreate"] == []
    run(body())


def test_every_try_of_a_re_creation_that_gives_up_is_shown() -> None:
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        for _ in range(recreate.TRIES):
            refuse_next(pair.workers["a"].dp, "add")
            fire_timers(a)
            await pair.settle()
        assert a._recreating == {}
        assert json_status(pair) == [{"connection": "tun", "child": "net", "count": recreate.TRIES}]
        assert f"{LINE}tun/net {recreate.TRIES}" in (await pair.status_text("a")).splitlines()
        assert (await scrape(a))[METRIC] == recreate.TRIES
    run(body())
