"""``tunsec reload`` and the PSK entries of named peers (review revreload F5): a connection whose
``remote.id`` names the peer takes its key from the entry of the two identities (``ike-site1``);
removing that entry revokes the peer even where a group key takes its place as the connection's
key, as it does on a connection of %any (services/ike/revoked.removed_psk_users).  A key rotated
under the same entry name, or an entry renamed with its ids and key, ends no session; nor does
the loss of the entry a peer never proved.

The gateway of test_reload_ike (a real IkeService fed from the file through the daemon's reload
command, the worker's logic in-process)."""

from __future__ import annotations

import base64
from pathlib import Path

from test_ikeservice_peers import run
from test_reload_ike import SECRET, ConfiguredGateway, conn, down_events
from test_reload_named_psk_removed import GROUP

from tunsec.ike.events import DownReason

ROTATED = "0s" + base64.b64encode(b"site0's key, rotated, long enough").decode()
GONE = "PSK users whose key left the secrets, their IKE SAs deleted: "


def entry(name: str, site: int, secret: str = SECRET) -> str:
    return f"  {name} {{ id-gw = gw.example\n id-user = site{site}.example\n secret = {secret} }}\n"


def conf(*entries: str, start2: str = "none") -> str:
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\n"
            "connections {\n" + conn("site0", 0) + conn("site1", 1) + conn("site2", 2, start2) + "}\n"
            "secrets {\n" + "".join(entries) + f"  ike-group {{ secret = {GROUP} }}\n}}\n")


ALL = (entry("ike-site0", 0), entry("ike-site1", 1), entry("ike-site2", 2))


async def gateway(tmp_path: Path, start2: str = "none") -> ConfiguredGateway:
    gw = ConfiguredGateway(3)
    gw.path = tmp_path / "swanctl.conf"
    gw.path.write_text(conf(*ALL))
    await gw.start()
    if start2 == "start":   # added by a reload, when the sockets are the test's: the gateway initiates
        assert (await gw.reload(conf(*ALL, start2="start")))["ok"]
    for i in (0, 1) if start2 == "start" else (0, 1, 2):
        gw.connect(i)
    await gw.settle()
    assert all(gw.children_of(i) for i in range(3))
    return gw


def test_a_removed_named_entry_logs_its_peer_out_and_a_rotated_or_renamed_one_does_not(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await gateway(tmp_path)
        kept = {i: gw.site_sa(i) for i in (0, 2)}
        # site 0's key rotated, site 1's entry gone (the group key is its connection's now), site 2's renamed
        answer = await gw.reload(conf(entry("ike-site0", 0, ROTATED), entry("ike-branch2", 2)))
        assert answer["ok"], answer
        assert answer["message"].splitlines()[-1] == GONE + "site1.example (site1)", answer
        assert [e.reason for e in down_events(gw, 1)] == [DownReason.DELETED_BY_PEER] and gw.children_of(1) == []
        for i, sa in kept.items():
            assert down_events(gw, i) == [] and gw.site_sa(i) is sa and gw.children_of(i), i
        assert gw.service.connections["site2"].ike.psk_name == "ike-branch2"

    run(body())


def test_a_named_peer_we_initiated_to_is_logged_out_when_its_entry_goes(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await gateway(tmp_path, "start")
        (sa,) = [sa for sa in gw.service.endpoint.sas if sa.name == "site2"]
        assert sa.is_initiator
        answer = await gw.reload(conf(*ALL[:2], start2="start"))
        assert answer["ok"], answer
        assert answer["message"].splitlines()[-1] == GONE + "site2.example (site2)", answer
        assert gw.children_of(2) == [] and all(gw.children_of(i) for i in (0, 1))

    run(body())
