"""Review revreload F1: a connection a reload removes keeps its Child SAs in force in the worker
until its peer answers the DELETE.  docs/operations.md says "removed ones are deleted: ... their
Child SAs ... leave the worker"; an operator removes a connection to revoke a peer, and that peer
need only not answer: its SAs carry the site's traffic both ways until our DELETE's retransmissions
give up (~165 s with the default retransmit settings), and its selector claims refuse a
replacement peer for that network meanwhile.  The gateway of test_reload_ike (a real IkeService,
the worker's logic and C fast path in-process, the daemon's reload command)."""

from __future__ import annotations

from pathlib import Path

from test_ikeservice_peers import run
from test_reload_ike import ConfiguredGateway, conf, conn

from tunsec.dataplane.fastpath import Drop
from tunsec.ike.sa import State


def test_a_removed_connection_whose_peer_does_not_answer_the_delete_carries_no_more_traffic(
        tmp_path: Path) -> None:
    async def body() -> None:
        gw = ConfiguredGateway(2)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn("keep", 0), conn("gone", 1)))
        await gw.start()
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        assert gw.send_to_site(1)[2] is Drop.NONE
        gw.drop = lambda site, data: site == 1   # the revoked peer no longer answers (its DELETE reply lost)

        answer = await gw.reload(conf(conn("keep", 0)))
        assert answer == {"ok": True, "message": "IKE connections removed: gone"}
        sa = next(s for s in gw.service.endpoint.sas if s.name == "gone")
        assert sa.state is State.DELETING   # our DELETE is out, retransmitted until it gives up
        # the removed connection's policy and SA must no longer take the site's traffic
        _esp, dst, drop = gw.send_to_site(1)
        assert drop is not Drop.NONE, f"traffic of removed connection 'gone' still sent to {dst}"
        assert gw.children_of(1) == [], "removed connection's Child SAs still booked (their claims held)"

    run(body())
