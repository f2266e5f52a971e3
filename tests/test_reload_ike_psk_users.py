"""``tunsec reload`` and per-user PSKs (review revpsk F2): removing a user's ``ike-USER`` entry is how
an operator revokes that user, as removing ``eap-USER`` is for EAP, so the reload deletes the IKE SAs
it proved (services/ike/revoked.removed_psk_users); a key changed under the same entry name is a
rotation and ends no session.  Before, the removed user kept the tunnel, and rekeyed it, until a
reauthentication (by default never).

The gateway of test_reload_ike (a real IkeService fed from the file through the daemon's reload
command, the worker's logic in-process); the sites are engines, each with an entry of its own."""

from __future__ import annotations

import base64
from pathlib import Path

from test_ikeservice_peers import GW, PSK, run
from test_reload_ike import ConfiguredGateway, down_events

from tunsec.ike.events import DownReason

SECRET = "0s" + base64.b64encode(PSK.reveal()).decode()
ROTATED = "0s" + base64.b64encode(b"site0's rotated key, long enough").decode()


def conf(users: dict[int, str], names: dict[int, str] | None = None) -> str:
    """Site i's entry holds users[i] as its key, named ``ike-`` + names[i] (default ``site{i}``)."""
    names = names or {}
    entries = "".join(f"  ike-{names.get(i, f'site{i}')} {{ id-gw = gw.example\n id-user = site{i}.example\n"
                      f" secret = {s} }}\n" for i, s in users.items())
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\n"
            "connections {\n  rw { local_addrs = " + GW + "\n"
            "  local { auth = psk\n id = gw.example }\n"
            "  remote { auth = psk }\n"
            "  children { net { local_ts = 10.1.0.0/16\n remote_ts = 10.2.0.0/16\n"
            "  esp_proposals = aes128gcm16 } } }\n}\n"
            "secrets {\n" + entries + "}\n")


async def psk_users(tmp_path: Path) -> ConfiguredGateway:
    """The gateway with three users, each with an entry of its own (the same key), all connected."""
    gw = ConfiguredGateway(3)
    gw.path = tmp_path / "swanctl.conf"
    gw.path.write_text(conf({0: SECRET, 1: SECRET, 2: SECRET}))
    await gw.start()
    for i in range(3):
        gw.connect(i)
    await gw.settle()
    return gw


def test_a_psk_user_taken_out_of_the_secrets_is_logged_out_and_a_rotated_key_logs_out_no_one(
        tmp_path: Path) -> None:
    async def body() -> None:
        gw = await psk_users(tmp_path)
        assert all(gw.children_of(i) for i in range(3))     # all three users are in

        # site0's key rotated under the same entry name: a credential change, every session stays
        answer = await gw.reload(conf({0: ROTATED, 1: SECRET, 2: SECRET}))
        assert answer["ok"] and "PSK users" not in answer["message"], answer
        assert all(down_events(gw, i) == [] for i in range(3))

        answer = await gw.reload(conf({0: ROTATED, 2: SECRET}))     # site1 revoked
        assert answer["ok"], answer
        assert "PSK users whose key left the secrets, their IKE SAs deleted: site1.example (rw)" \
            in answer["message"], answer
        # as for EAP users: the removed user's IKE SA is deleted (the peer told), the others' kept
        assert down_events(gw, 0) == [] and down_events(gw, 2) == []
        assert [e.reason for e in down_events(gw, 1)] == [DownReason.DELETED_BY_PEER]
        assert gw.children_of(1) == [] and gw.children_of(0) and gw.children_of(2)

    run(body())


def test_renaming_an_entry_keeping_ids_and_key_logs_no_one_out(tmp_path: Path) -> None:
    """Review revpsk2 F1: the logout decided by the entry's *name*, not by whether the key the user
    proved still proves it: renaming ``ike-site1`` to ``ike-site1-laptop`` (same ids, same secret)
    logged site1 out, though its key would prove it again at once."""
    async def body() -> None:
        gw = ConfiguredGateway(2)
        gw.path = tmp_path / "swanctl.conf"
        gw.path.write_text(conf({0: SECRET, 1: SECRET}))
        await gw.start()
        for i in range(2):
            gw.connect(i)
        await gw.settle()
        assert all(gw.children_of(i) for i in range(2))

        answer = await gw.reload(conf({0: SECRET, 1: SECRET}, {1: "site1-laptop"}))   # renamed only
        assert answer["ok"], answer
        assert "PSK users" not in answer["message"], answer
        assert down_events(gw, 1) == [] and gw.children_of(1)

    run(body())
