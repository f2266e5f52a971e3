"""``tunsec reload`` and the EAP users in ``secrets``: each EAP-MSCHAPv2 connection gets every
``eap-*`` entry, so a user added or a password changed is a change of every such connection, in
its credentials only: the clients' IKE SAs stay, new logins use the new secrets (those in the
middle of one too), and a user taken out of the secrets is logged out, by identity, alone.

The gateway of test_reload_ike (a real IkeService fed from the file through the daemon's reload
command, the worker's logic in-process) with a certificate, and EAP-MSCHAPv2 clients as engines."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from test_ikeservice_peers import GW, SHARED_SPI, run, site_ip
from test_reload_ike import ConfiguredGateway, down_events

from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, DownReason, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import make_ca, make_cert

CA = make_ca()
GW_CERT = make_cert(CA, "gw.example", san=["gw.example"])
USERS = {"u0": "pw-u0-xxxx", "u1": "pw-u1-xxxx", "u2": "pw-u2-xxxx"}


def conf(users: dict[str, str]) -> str:
    secrets = "".join(f"  eap-{u} {{ id = {u}\n secret = \"{p}\" }}\n" for u, p in users.items())
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\n"
            "connections {\n  rw { local_addrs = " + GW + "\n remote_addrs = %any\n"
            "  local { auth = pubkey\n id = gw.example\n certs = gw.pem }\n"
            "  remote { auth = eap-mschapv2\n eap_id = %any }\n"
            "  children { net { local_ts = 10.1.0.0/16\n remote_ts = 10.2.0.0/16\n"
            "  esp_proposals = aes128gcm16 } } }\n}\n"
            "secrets {\n" + secrets + "}\n")


def write_credentials(d: Path) -> None:
    for sub in ("x509", "x509ca", "private"):
        (d / sub).mkdir()
    (d / "x509" / "gw.pem").write_bytes(GW_CERT.cert.public_bytes(serialization.Encoding.PEM))
    (d / "x509ca" / "ca.pem").write_bytes(CA.cert.public_bytes(serialization.Encoding.PEM))
    (d / "private" / "gw.pem").write_bytes(GW_CERT.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def client(i: int, password: str) -> IkeEndpoint:
    """Site i logs in as user u<i> with ``password``."""
    user = f"u{i}"
    cfg = IkeConfig(f"site{i}", LocalAuth("eap-mschapv2", Identity.parse(f"site{i}.example"), eap_id=user),
                    RemoteAuth("pubkey", Identity.parse("gw.example"), cas=(CA.cert,)),
                    parse_proposals("aes128gcm16-prfsha256-curve25519"),
                    (child_config("net", f"10.2.{i + 1}.0/24", "10.1.0.0/16", "aes128gcm16"),),
                    eap_secrets=(EapSecret((user,), Secret(password.encode())),), local_addr=site_ip(i),
                    remote_addr=GW, force_encap=True)
    return IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI + 16 * i)))


class EapGateway(ConfiguredGateway):
    async def start(self) -> None:
        await super().start()
        self.sites = [client(i, USERS[f"u{i}"]) for i in range(self.n)]

    def relogin(self, i: int, password: str) -> None:
        """Site i's client starts afresh (its old IKE SA forgotten) with ``password``."""
        self.sites[i] = client(i, password)
        self.site_events[i] = []
        self.connect(i)


async def eap_gateway(tmp_path: Path, users: dict[str, str], n: int = 3) -> EapGateway:
    write_credentials(tmp_path)
    gw = EapGateway(n)
    gw.path = tmp_path / "swanctl.conf"
    gw.path.write_text(conf(users))
    await gw.start()
    return gw


def spis(gw: EapGateway, i: int) -> list[tuple[int, int]]:
    return sorted((c.spi_in, c.spi_out) for c in gw.children_of(i))


def up(gw: EapGateway, i: int) -> bool:
    return any(sa.state is State.ESTABLISHED for sa in gw.sites[i].sas)


def refused(gw: EapGateway, i: int) -> bool:
    """The gateway answered site i's login with AUTHENTICATION_FAILED."""
    return any(isinstance(e, AuthFailed) and e.by_peer for e in gw.site_events[i]) and not up(gw, i)


def test_adding_a_user_or_changing_a_password_keeps_every_eap_client_and_the_new_secrets_count(
        tmp_path: Path) -> None:
    async def body() -> None:
        gw = await eap_gateway(tmp_path, {u: USERS[u] for u in ("u0", "u1")})
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        before = {i: (gw.site_sa(i).spi_i, spis(gw, i)) for i in (0, 1)}
        assert all(before[i][1] for i in (0, 1))

        answer = await gw.reload(conf(USERS))   # u2 onboarded
        assert answer == {"ok": True, "message": "IKE connections with new credentials (for new negotiations): rw"}
        gw.connect(2)
        await gw.settle()
        assert up(gw, 2) and spis(gw, 2)

        changed = {**USERS, "u1": "pw-u1-changed"}
        answer = await gw.reload(conf(changed))
        assert answer == {"ok": True, "message": "IKE connections with new credentials (for new negotiations): rw"}
        for i in (0, 1):   # the same IKE and Child SAs: never torn down
            assert down_events(gw, i) == [] and (gw.site_sa(i).spi_i, spis(gw, i)) == before[i]
        # the new password logs u1 in, the old one no longer does
        gw.relogin(1, "pw-u1-xxxx")
        await gw.settle()
        assert refused(gw, 1)
        gw.relogin(1, "pw-u1-changed")
        await gw.settle()
        assert up(gw, 1)

    run(body())


def test_a_user_taken_out_of_the_secrets_is_logged_out_and_can_no_longer_log_in(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await eap_gateway(tmp_path, USERS)
        for i in range(3):
            gw.connect(i)
        await gw.settle()
        kept = {i: (gw.site_sa(i).spi_i, spis(gw, i)) for i in (0, 2)}

        answer = await gw.reload(conf({u: USERS[u] for u in ("u0", "u2")}))
        assert answer == {"ok": True, "message": "IKE connections with new credentials (for new negotiations): rw\n"
                                                 "EAP users no longer in the secrets, their IKE SAs deleted: u1 (rw)"}
        assert [e.reason for e in down_events(gw, 1)] == [DownReason.DELETED_BY_PEER] and gw.children_of(1) == []
        assert [str(r.ev.remote_id) for r in gw.service.ike_up.values()] == ["u0", "u2"]
        for i in (0, 2):
            assert down_events(gw, i) == [] and (gw.site_sa(i).spi_i, spis(gw, i)) == kept[i]
        gw.relogin(1, USERS["u1"])
        await gw.settle()
        assert refused(gw, 1) and gw.children_of(1) == []

    run(body())


def hold_from(gw: EapGateway, site: int, nth: int) -> list[bytes]:
    """Hold back what ``site`` sends from its ``nth`` datagram on (1: its IKE_SA_INIT), as if in flight."""
    held: list[bytes] = []
    sent = itertools.count(1)

    def drop(i: int, data: bytes) -> bool:
        if i != site or next(sent) < nth:
            return False
        held.append(data)
        return True
    gw.drop = drop
    return held


async def release(gw: EapGateway, site: int, held: list[bytes]) -> None:
    gw.drop = None
    gw.wire += [((site_ip(site), 4500), (GW, 4500), data) for data in held]
    await gw.settle()


# the client's 4th datagram is its MSCHAPv2 response (after IKE_SA_INIT, IKE_AUTH without AUTH, the
# EAP-Identity response): the gateway looks the password up when it reads it
MSCHAP_RESPONSE = 4


def test_a_login_under_way_across_a_reload_is_checked_against_the_new_users(tmp_path: Path) -> None:
    async def body() -> None:
        gw = await eap_gateway(tmp_path, {u: USERS[u] for u in ("u0", "u1")})
        # u0 is half-way through EAP when u2 is added: it logs in all the same
        held = hold_from(gw, 0, MSCHAP_RESPONSE)
        gw.connect(0)
        await gw.settle()
        assert held and gw.service.endpoint.half_open == 1
        assert (await gw.reload(conf(USERS)))["ok"]
        await release(gw, 0, held)
        assert up(gw, 0) and spis(gw, 0)
        # u1 is half-way through when it is removed: refused, as a new login would be
        held = hold_from(gw, 1, MSCHAP_RESPONSE)
        gw.connect(1)
        await gw.settle()
        assert held
        assert (await gw.reload(conf({u: USERS[u] for u in ("u0", "u2")})))["ok"]
        await release(gw, 1, held)
        assert refused(gw, 1) and gw.children_of(1) == []
        assert up(gw, 0) and [e for e in gw.site_events[0] if isinstance(e, IkeSaUp)]

    run(body())



def test_a_reload_adding_an_account_that_differs_only_in_case_is_refused_and_the_user_keeps_his_sa(
        tmp_path: Path) -> None:
    """Review reveapid F2: "U0" with a password of its own would be u0 for leases, ``unique`` and
    INITIAL_CONTACT (user names compare regardless of ASCII case): the reload is refused, naming
    both entries, and u0's IKE and Child SAs stay as they were."""
    async def body() -> None:
        gw = await eap_gateway(tmp_path, {"u0": USERS["u0"]}, n=1)
        gw.connect(0)
        await gw.settle()
        before = (gw.site_sa(0).spi_i, spis(gw, 0))
        assert before[1]
        answer = await gw.reload(conf({"u0": USERS["u0"], "U0": "pw-another-U0"}))
        assert answer["ok"] is False and "nothing changed" in answer["error"]
        assert "secrets.eap-U0: EAP user 'U0' is the user 'u0' of secrets.eap-u0" in answer["error"]
        assert "pw-another-U0" not in answer["error"]
        assert down_events(gw, 0) == [] and (gw.site_sa(0).spi_i, spis(gw, 0)) == before

    run(body())
