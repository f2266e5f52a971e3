"""The IKE service under max_ike_sas (tunsec { max_ike_sas_per_identity }): road warriors of one
identity beyond the limit are refused in IKE_AUTH; nothing of theirs reaches the worker; the
refusals are counted in status and metrics and logged, naming the identity and address."""
from __future__ import annotations

import dataclasses
import logging

import pytest
from test_ikeservice_peers import GW, Gateway, psk_ike, run, site_ip, site_net
from test_ikeservice_unique import downs, gateway_peers, pool_changes

from tunsec import metrics
from tunsec.dataplane import pipe
from tunsec.ike.config import RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.sa import State

LIMIT = 2


async def one_identity(n: int) -> Gateway:
    """A gateway with max_ike_sas = LIMIT and n road warriors that all authenticate as road.example."""
    gw = Gateway(n)
    await gw.start()
    conn = gw.service.connections["gw"]
    ike = dataclasses.replace(conn.ike, max_ike_sas=LIMIT)
    conn = gw.service.connections["gw"] = dataclasses.replace(conn, ike=ike)
    gw.service.endpoint.set_configs([conn.ike])
    for i in range(n):
        cfg = psk_ike(f"site{i}", "road.example", RemoteAuth("psk", Identity.parse("gw.example")),
                      site_ip(i), GW, site_net(i), "10.1.0.0/16")
        gw.sites[i] = IkeEndpoint([dataclasses.replace(cfg, initial_contact=False)])
    return gw


def test_the_identitys_ike_sa_beyond_the_limit_is_refused_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        gw = await one_identity(LIMIT + 1)
        for i in range(LIMIT):
            gw.connect(i)
            await gw.settle()
        before = len(gw.worker.log)
        with caplog.at_level(logging.WARNING):
            gw.connect(LIMIT)
            await gw.settle()
        assert gateway_peers(gw) == [site_ip(i) for i in range(LIMIT)]
        refused = [e for e in gw.site_events[LIMIT] if isinstance(e, AuthFailed)]
        assert len(refused) == 1 and refused[0].by_peer
        assert not any(isinstance(e, (IkeSaUp, ChildSaUp)) for e in gw.site_events[LIMIT])
        assert pool_changes(gw.worker.log[before:]) == []      # no SA, policy or lease of it in the worker
        assert not gw.children_of(LIMIT) and all(len(gw.children_of(i)) == 1 for i in range(LIMIT))
        (line,) = [r.getMessage() for r in caplog.records if "max_ike_sas_per_identity" in r.getMessage()]
        assert "road.example" in line and site_ip(LIMIT) in line and "holds 2 IKE SAs" in line

        doc = gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
        assert doc["ike_refused"]["ike_sa_limit"] == 1 and "ike_sa_limit" not in doc["ike_drops"]
        families = {f.name: f for f in metrics.state_families(doc, True)}
        refused_metric = {s.labels["reason"]: s.value for s in families["tunsec_ike_authenticated_refused"].samples}
        assert refused_metric["ike_sa_limit"] == 1

        # one of them leaves: the next IKE SA of that identity is taken
        gw.site_sa(0).delete()
        await gw.settle()
        assert downs(gw, 0) and gateway_peers(gw) == [site_ip(1)]
        gw.connect(LIMIT)
        await gw.settle()
        assert gateway_peers(gw) == [site_ip(1), site_ip(LIMIT)]
        assert sum(sa.state is State.ESTABLISHED for sa in gw.service.endpoint.sas) == LIMIT
    run(go())
