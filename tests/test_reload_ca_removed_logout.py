"""Review revreload F3: a CA a reload takes out of the trust anchors (x509ca/) is a credential
change (conf/diff.py CREDENTIAL_FIELDS "cas"): the connection keeps its SAs, and the peers that
CA vouched for stay connected, for ever if nothing reauthenticates them (IKE rekeys do not).  A
user taken out of the EAP secrets and a PSK entry taken out of the secrets are logged out
(reload._removed_users, _removed_psk_users); a certificate peer whose only proof was the removed
CA is not: removing a CA (a compromised one, a partner no longer trusted) does not revoke.

The gateway of test_reload_ike (a real IkeService fed from the file through the daemon's reload
command, the worker's logic in-process) with certificate clients as engines."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from test_ikeservice_peers import GW, SHARED_SPI, run, site_ip
from test_reload_ike import ConfiguredGateway

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import State
from tunsec.ike.testing import Issued, make_ca, make_cert

CA_A = make_ca("partner A CA")   # the gateway's own CA and site 0's
CA_B = make_ca("partner B CA")   # site 1's: the one the reload stops trusting
GW_CERT = make_cert(CA_A, "gw.example", san=["gw.example"])
SITES = [make_cert(CA_A, "site0.example", san=["site0.example"]),
         make_cert(CA_B, "site1.example", san=["site1.example"])]

CONF = ("tunsec { control_socket = /nonexistent/tunsec.sock }\n"
        "connections {\n  rw { local_addrs = " + GW + "\n remote_addrs = %any\n"
        "  local { auth = pubkey\n id = gw.example\n certs = gw.pem }\n"
        "  remote { auth = pubkey }\n"
        "  children { net { local_ts = 10.1.0.0/16\n remote_ts = 10.2.0.0/16\n"
        "  esp_proposals = aes128gcm16 } } }\n}\n")


def pem(c: Issued) -> bytes:
    return c.cert.public_bytes(serialization.Encoding.PEM)


def write_credentials(d: Path) -> None:
    for sub in ("x509", "x509ca", "private"):
        (d / sub).mkdir()
    (d / "x509" / "gw.pem").write_bytes(pem(GW_CERT))
    (d / "x509ca" / "a.pem").write_bytes(pem(CA_A))
    (d / "x509ca" / "b.pem").write_bytes(pem(CA_B))
    (d / "private" / "gw.pem").write_bytes(GW_CERT.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def client(i: int) -> IkeEndpoint:
    me = SITES[i]
    cfg = IkeConfig(f"site{i}", LocalAuth("pubkey", Identity.parse(f"site{i}.example"), me.cert, (), me.key),
                    RemoteAuth("pubkey", Identity.parse("gw.example"), (CA_A.cert,)),
                    parse_proposals("aes128gcm16-prfsha256-curve25519"),
                    (child_config("net", f"10.2.{i + 1}.0/24", "10.1.0.0/16", "aes128gcm16"),),
                    local_addr=site_ip(i), remote_addr=GW, force_encap=True)
    return IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI + 16 * i)))


class CertGateway(ConfiguredGateway):
    async def start(self) -> None:
        await super().start()
        self.sites = [client(i) for i in range(self.n)]


def up(gw: CertGateway, i: int) -> bool:
    return any(sa.state is State.ESTABLISHED for sa in gw.sites[i].sas)


def test_a_peer_whose_ca_a_reload_removed_is_logged_out(tmp_path: Path) -> None:
    async def body() -> None:
        write_credentials(tmp_path)
        gw = CertGateway(2)
        gw.path = tmp_path / "swanctl.conf"
        gw.path.write_text(CONF)
        await gw.start()
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        assert up(gw, 0) and up(gw, 1) and gw.children_of(0) and gw.children_of(1)

        (tmp_path / "x509ca" / "b.pem").unlink()   # partner B's CA is no longer trusted
        answer = await gw.reload(CONF)
        assert answer["ok"], answer
        assert gw.service.connections["rw"].ike.remote.cas == (CA_A.cert,)
        assert up(gw, 0) and gw.children_of(0)   # site 0's CA is still trusted: it stays
        assert gw.children_of(1) == [] and not up(gw, 1), \
            "site1, proven by a CA the reload removed, still holds its IKE SA and Child SAs"

    run(body())
