"""Review revreload F5: removing a peer's ``ike-NAME`` entry logs it out on a connection of %any
(reload._removed_psk_users, review revpsk F2: "a group key would prove dave once ike-dave is gone")
but not on a connection that names the peer (``remote.id = site1.example``): there the entry's key
is IkeConfig.psk, the connection has no peer_psks, and _removed_psk_users passes it by; with a
group key in the secrets the connection's PSK merely changes (a credential change), and the
revoked site keeps its IKE SA and Child SAs, rekeying them, for ever (tunsec never reauthenticates).

The gateway of test_reload_ike (a real IkeService fed from the file through the daemon's reload
command, the worker's logic in-process)."""

from __future__ import annotations

import base64
from pathlib import Path

from test_ikeservice_peers import run
from test_reload_ike import SECRET, ConfiguredGateway, conn, down_events

GROUP = "0s" + base64.b64encode(b"the branch offices' group key, long").decode()


def conf(with_site_entry: bool) -> str:
    site = (f"  ike-site1 {{ id-gw = gw.example\n id-user = site1.example\n secret = {SECRET} }}\n"
            if with_site_entry else "")
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\n"
            "connections {\n" + conn("site1", 1) + "}\n"
            "secrets {\n" + site + f"  ike-group {{ secret = {GROUP} }}\n}}\n")


def test_a_named_peer_whose_entry_a_reload_removed_is_logged_out(tmp_path: Path) -> None:
    async def body() -> None:
        gw = ConfiguredGateway(2)
        gw.path = tmp_path / "swanctl.conf"
        gw.path.write_text(conf(True))
        await gw.start()
        gw.connect(1)   # site 1 proves ike-site1's key
        await gw.settle()
        assert gw.children_of(1)

        answer = await gw.reload(conf(False))   # site 1 revoked: its entry taken out of the secrets
        assert answer["ok"], answer
        assert gw.service.connections["site1"].ike.psk is not None   # the group key is the connection's now
        assert down_events(gw, 1), f"site1's entry is gone, its IKE SA stays: {answer}"
        assert gw.children_of(1) == []

    run(body())
