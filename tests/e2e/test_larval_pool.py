"""The IKE service's pool of larval inbound SPIs, end to end between two
tunsec with larval_timeout = 1 s: the pool does not churn (no SPI expires,
no log line per SPI), and SPIs that waited in it far longer than the larval
timeout still serve the next negotiation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from ike_peers import CHILD, CONN, Conn, TunsecIke, ping_both_ways

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.services.ike import SPI_POOL

EXTRA = "  larval_timeout = 1\n"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def larval(side: TunsecIke) -> int:
    n: int = side.status()["larval_sas"]
    return n


def test_the_spi_pool_is_kept_without_churn_and_serves_after_the_timeout(topo: TwoHosts) -> None:
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start"), tunsec_extra=EXTRA)
    b = TunsecIke(topo, Conn(topo.b, topo.a), tunsec_extra=EXTRA)
    a.write()
    b.write()
    b.start()
    a.start()
    a.wait_established()
    b.wait_established()
    ping_both_ways(topo, count=1)
    assert wait_until(lambda: larval(a) == SPI_POOL and larval(b) == SPI_POOL, 10)
    # three larval timeouts: the old pool expired every SPI each second, logged
    # "larval SA ... never completed; removed" and took a new one
    time.sleep(3.5)
    assert larval(a) == SPI_POOL and larval(b) == SPI_POOL
    for side in (a, b):
        assert "never completed" not in side.log_text()
    # a new negotiation takes SPIs that waited longer than the larval timeout
    r = a.cli("terminate", "--ike", CONN)
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: a.ike_sas() == [] and b.ike_sas() == [], 10)
    r = a.cli("initiate", "--child", CHILD)
    assert r.returncode == 0, r.stderr
    a.wait_established()
    b.wait_established()
    ping_both_ways(topo, count=2)
    for side in (a, b):
        assert "never completed" not in side.log_text()
