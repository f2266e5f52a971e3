"""The engine against a real strongSwan 5.9 (charon, kernel-libipsec) in two netns.

No daemon and no dataplane: ``tests/ike_driver.py`` runs the engine on
real UDP sockets in one namespace, charon runs in the other. Besides IKE, one
ICMP echo goes through the first Child SA with the engine's keys (and the reply
is decrypted with them), which checks the KEYMAT against strongSwan's.
Needs root, iproute2 and strongSwan's charon, swanctl and pki; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tunsec

pytestmark = [pytest.mark.interop, pytest.mark.netns]

CHARON = Path("/usr/lib/ipsec/charon")
DRIVER = Path(__file__).resolve().parents[1] / "ike_driver.py"   # the engine on real sockets, run in ns A
PSK = "a shared secret for the interop test"
PROPOSALS = "aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048, aes128gcm16-prfsha256-curve25519"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "swanctl", "pki", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} missing"
    if not CHARON.exists():
        return "strongSwan charon missing"
    return None


def _run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=60, **kw)


STRONGSWAN_CONF = """charon {{
  load_modular = no
  load = random nonce openssl aes sha2 sha1 hmac gcm pem pkcs1 pkcs8 x509 pubkey kdf curve25519 \
kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  install_virtual_ip = no
  retransmit_tries = 2
  plugins {{ vici {{ socket = unix://{run}/charon.vici }} }}
  filelog {{ main {{ path = {dir}/charon.log
    default = 1
    ike = 2
    flush_line = yes }} }}
  syslog {{ daemon {{ default = -1 }} auth {{ default = -1 }} }}
}}
"""

SWANCTL_CONF = """connections {{
  psk {{
    local_addrs = {b}
    remote_addrs = {a}
    encap = yes
    proposals = {proposals}
    local {{
      auth = psk
      id = sun.example
    }}
    remote {{
      auth = psk
      id = moon.example
    }}
    children {{
      net {{
        local_ts = 10.2.0.0/16
        remote_ts = 10.1.0.0/16
        esp_proposals = aes128gcm16, aes256gcm16-ecp256
      }}
    }}
  }}
  cert {{
    local_addrs = {b}
    remote_addrs = {a}
    encap = yes
    proposals = {proposals}
    local {{
      auth = pubkey
      certs = sunCert.pem
      id = "C=CH, O=test, CN=sun"
    }}
    remote {{
      auth = pubkey
      id = "C=CH, O=test, CN=moon"
    }}
    children {{
      cnet {{
        local_ts = 10.2.0.0/16
        remote_ts = 10.1.0.0/16
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}
secrets {{
  ike-moon {{
    id-1 = moon.example
    id-2 = sun.example
    secret = "{psk}"
  }}
}}
"""


@dataclass
class Swan:
    ns_a: str
    ns_b: str
    a: str
    b: str
    dir: Path

    @property
    def uri(self) -> str:
        return f"unix://{self.dir}/run/charon.vici"

    def swanctl(self, *args: str, check: bool = True) -> str:
        env = {**os.environ, "SWANCTL_DIR": str(self.dir)}
        r = _run("ip", "netns", "exec", self.ns_b, "swanctl", *args, "--uri", self.uri, check=check, env=env)
        return r.stdout + r.stderr

    def log(self) -> str:
        return (self.dir / "charon.log").read_text(errors="replace")

    def reset(self) -> None:
        """Terminate whatever charon still has and start a fresh log section."""
        out = self.swanctl("--list-sas", check=False)
        for line in out.splitlines():
            if ": #" in line and not line.startswith(" "):
                self.swanctl("--terminate", "--ike-id", line.split("#")[1].split(",")[0], "--force", check=False)
        (self.dir / "charon.log").write_text("")

    def drive(
        self, tmp: Path, scenario: dict[str, Any], during: Sequence[tuple[float, list[str]]] = ()
    ) -> list[dict[str, Any]]:
        """Run the engine driver in ns A; ``during`` runs swanctl commands at given times."""
        sc = {"local": self.a, "remote": self.b, "local_ts": "10.1.0.0/16", "remote_ts": "10.2.0.0/16"} | scenario
        path = tmp / f"scenario-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(sc))
        env = {**os.environ, "PYTHONPATH": str(Path(tunsec.__file__).resolve().parents[1])}
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_a, sys.executable, str(DRIVER), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # the driver's sockets are bound once it says so
            assert "Ready" in first, first + (proc.stderr.read() if proc.stderr else "")
            start = time.monotonic()
            for when, args in during:
                time.sleep(max(0.0, start + when - time.monotonic()))
                self.swanctl(*args, check=False)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines() if line.startswith("{") and "Ready" not in line]


def _pki(swan_dir: Path) -> None:
    """Test CA and certificates made with strongSwan's own pki, as a user would."""

    def pki(*args: str) -> bytes:
        return subprocess.run(["pki", *args], capture_output=True, check=True, timeout=60).stdout

    for sub in ("x509", "x509ca", "private"):
        (swan_dir / sub).mkdir()
    (swan_dir / "caKey.pem").write_bytes(pki("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"))
    ca = pki("--self", "--ca", "--lifetime", "3650", "--in", str(swan_dir / "caKey.pem"), "--type", "ecdsa",
             "--dn", "C=CH, O=test, CN=test CA", "--outform", "pem")  # fmt: skip
    (swan_dir / "x509ca" / "caCert.pem").write_bytes(ca)
    for name, kind, size, key_path in (
        ("sun", "rsa", "2048", swan_dir / "private" / "sunKey.pem"),
        ("moon", "ecdsa", "384", swan_dir / "moonKey.pem"),
    ):
        key_path.write_bytes(pki("--gen", "--type", kind, "--size", size, "--outform", "pem"))
        pub = subprocess.run(["pki", "--pub", "--in", str(key_path), "--type", kind], capture_output=True,
                             check=True, timeout=60).stdout  # fmt: skip
        cert = subprocess.run(
            ["pki", "--issue", "--lifetime", "365", "--cacert", str(swan_dir / "x509ca" / "caCert.pem"),
             "--cakey", str(swan_dir / "caKey.pem"), "--dn", f"C=CH, O=test, CN={name}", "--outform", "pem"],
            input=pub, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        target = swan_dir / "x509" / f"{name}Cert.pem" if name == "sun" else swan_dir / "moonCert.pem"
        target.write_bytes(cert)


@pytest.fixture(scope="module")
def swan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swan]:
    why = _unavailable()
    if why:
        pytest.skip(f"strongSwan interop unavailable: {why}")
    tag = secrets.token_hex(3)
    ns_a, ns_b, veth = f"tsike{tag}a", f"tsike{tag}b", f"tik{tag}"
    net = 16 + secrets.randbelow(200)
    a, b = f"10.231.{net}.1", f"10.231.{net}.2"
    swan_dir = tmp_path_factory.mktemp("swan")
    (swan_dir / "run").mkdir()
    charon: subprocess.Popen[bytes] | None = None
    try:
        for cmd in (
            ["ip", "netns", "add", ns_a],
            ["ip", "netns", "add", ns_b],
            ["ip", "link", "add", f"{veth}a", "netns", ns_a, "type", "veth", "peer", "name", f"{veth}b", "netns", ns_b],
            ["ip", "-n", ns_a, "addr", "add", f"{a}/24", "dev", f"{veth}a"],
            ["ip", "-n", ns_b, "addr", "add", f"{b}/24", "dev", f"{veth}b"],
            ["ip", "-n", ns_b, "addr", "add", "10.2.0.1/16", "dev", "lo"],
            ["ip", "-n", ns_a, "link", "set", f"{veth}a", "up"],
            ["ip", "-n", ns_b, "link", "set", f"{veth}b", "up"],
            ["ip", "-n", ns_a, "link", "set", "lo", "up"],
            ["ip", "-n", ns_b, "link", "set", "lo", "up"],
        ):
            _run(*cmd)
        _pki(swan_dir)
        run = swan_dir / "run"
        (swan_dir / "strongswan.conf").write_text(STRONGSWAN_CONF.format(run=run, dir=swan_dir))
        (swan_dir / "swanctl.conf").write_text(SWANCTL_CONF.format(a=a, b=b, proposals=PROPOSALS, psk=PSK))
        charon = subprocess.Popen(
            ["ip", "netns", "exec", ns_b, "unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {run} /run && exec {CHARON}"],
            env={**os.environ, "STRONGSWAN_CONF": str(swan_dir / "strongswan.conf")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        swan = Swan(ns_a, ns_b, a, b, swan_dir)
        deadline = time.monotonic() + 20
        while not (run / "charon.vici").exists():
            assert time.monotonic() < deadline, "charon did not start"
            time.sleep(0.1)
        out = swan.swanctl("--load-all", "--noprompt")
        assert "successfully loaded 2 connections" in out, out
        yield swan
    finally:
        if charon is not None:
            charon.terminate()
            try:
                charon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                charon.kill()
                charon.wait()
        for ns in (ns_a, ns_b):
            _run("ip", "netns", "del", ns, check=False)


def _names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def _psk_scenario(**kw: Any) -> dict[str, Any]:
    base = {"local_id": "moon.example", "remote_id": "sun.example", "psk": PSK, "esp": "aes128gcm16"}
    return base | kw


@pytest.mark.parametrize(
    "proposals", ["aes256gcm16-prfsha384-ecp384", "aes128-sha256-modp2048", "aes128gcm16-prfsha256-curve25519"]
)
def test_initiator_psk_esp_traffic_and_delete(swan: Swan, tmp_path: Path, proposals: str) -> None:
    swan.reset()
    sc = _psk_scenario(
        initiate="net", proposals=proposals, duration=3.0, inner_src="10.1.0.1", inner_dst="10.2.0.1",
        remote_esp=swan.b, actions=[[0.5, "esp_ping"], [2.0, "delete"]],
    )  # fmt: skip
    events = swan.drive(tmp_path, sc)
    assert _names(events) == ["IkeSaUp", "ChildSaUp", "EspReply", "ChildSaDown", "IkeSaDeleting", "IkeSaDown"], events
    assert events[2]["ok"], "strongSwan's ESP reply did not decrypt with our key_in"
    log = swan.log()
    assert "CHILD_SA net{" in log and "established with SPIs" in log
    assert f"{events[1]['spi_out']:08x}_i" in log  # strongSwan's inbound SPI is our outbound
    assert "IKE_SA deleted" in log


def test_initiator_rekeys_and_pfs(swan: Swan, tmp_path: Path) -> None:
    swan.reset()
    sc = _psk_scenario(
        initiate="net", esp="aes256gcm16-ecp256", duration=4.0,
        actions=[[0.5, "rekey_child"], [1.0, "rekey_ike"], [1.5, "create_child"], [2.0, "liveness"],
                 [2.5, "delete_child"], [3.0, "delete"]],
    )  # fmt: skip
    events = swan.drive(tmp_path, sc)
    assert _names(events) == [
        "IkeSaUp", "ChildSaUp", "ChildSaUp", "ChildSaDown", "IkeSaRekeyed", "ChildSaUp", "ChildSaDown",
        "ChildSaDown", "IkeSaDeleting", "IkeSaDown",
    ], events  # fmt: skip
    assert events[2]["rekey_of"] == events[1]["unique_id"]
    assert "ESP:AES_GCM_16_256/ECP_256" in swan.log()


def test_responder_with_cookie_and_peer_rekeys(swan: Swan, tmp_path: Path) -> None:
    swan.reset()
    sc = _psk_scenario(cookie_threshold=0, duration=5.0)
    during = [
        (0.5, ["--initiate", "--child", "net", "--timeout", "5"]),
        (1.5, ["--rekey", "--child", "net"]),
        (2.5, ["--rekey", "--ike", "psk"]),
        (3.5, ["--terminate", "--ike", "psk", "--timeout", "5"]),
    ]
    events = swan.drive(tmp_path, sc, during)
    assert _names(events) == [
        "IkeSaUp", "ChildSaUp", "ChildSaUp", "ChildSaDown", "IkeSaRekeyed", "ChildSaDown", "IkeSaDown",
    ], events  # fmt: skip
    assert "N(COOKIE)" in swan.log()


def test_certificates_ecdsa_and_rsa(swan: Swan, tmp_path: Path) -> None:
    swan.reset()
    d = swan.dir
    sc = {
        "name": "cert", "child": "cnet", "initiate": "cnet", "esp": "aes256gcm16", "duration": 2.5,
        "local_id": "C=CH, O=test, CN=moon", "remote_id": "C=CH, O=test, CN=sun",
        "cert": str(d / "moonCert.pem"), "key": str(d / "moonKey.pem"), "ca": str(d / "x509ca" / "caCert.pem"),
        "actions": [[1.5, "delete"]],
    }  # fmt: skip
    events = swan.drive(tmp_path, sc)
    assert _names(events) == ["IkeSaUp", "ChildSaUp", "ChildSaDown", "IkeSaDeleting", "IkeSaDown"], events
    log = swan.log()
    assert "authentication of 'C=CH, O=test, CN=moon' with ECDSA_WITH_SHA384_DER successful" in log
    assert "with RSA_EMSA_PKCS1_SHA2_256 successful" in log


def test_wrong_psk_fails_on_both_sides(swan: Swan, tmp_path: Path) -> None:
    swan.reset()
    events = swan.drive(tmp_path, _psk_scenario(initiate="net", psk="not the right one", duration=2.0))
    assert next(e for e in events if e["event"] == "AuthFailed")["by_peer"] is True
    assert "IkeSaUp" not in _names(events)
    log = swan.log()
    assert "MAC mismatched" in log and "N(AUTH_FAILED)" in log


def test_no_proposal_chosen_on_both_sides(swan: Swan, tmp_path: Path) -> None:
    swan.reset()
    events = swan.drive(tmp_path, _psk_scenario(initiate="net", proposals="aes256-sha512-modp4096", duration=2.0))
    failed = [e for e in events if e["event"] == "NegotiationFailed"]
    assert failed and failed[0]["reason"] == "NO_PROPOSAL_CHOSEN"
    log = swan.log()
    assert "received proposals unacceptable" in log and "IKE:AES_CBC_256/HMAC_SHA2_512_256" in log


def test_responder_refuses_wrong_psk_from_strongswan(swan: Swan, tmp_path: Path) -> None:
    swan.reset()
    during = [(0.5, ["--initiate", "--child", "net", "--timeout", "4"])]
    events = swan.drive(tmp_path, _psk_scenario(psk="not the right one", duration=2.5), during)
    assert next(e for e in events if e["event"] == "AuthFailed")["by_peer"] is False
    assert "received AUTHENTICATION_FAILED notify error" in swan.log()


@pytest.mark.parametrize("error", ["NO_PROPOSAL_CHOSEN", "TS_UNACCEPTABLE"])
def test_strongswan_keeps_the_ike_sa_whose_ike_auth_child_sa_we_refuse(swan: Swan, tmp_path: Path,
                                                                       error: str) -> None:
    """Our IKE_AUTH answer rebuilt with the Child SA refused (its install failed: ike/child_refusal.py,
    fixauthchild): charon takes the IKE SA, builds no Child SA, and neither side sends a DELETE."""
    swan.reset()
    sc = _psk_scenario(duration=3.0, refuse_children=error)
    during = [(0.5, ["--initiate", "--child", "net", "--timeout", "5"]), (2.0, ["--list-sas"])]
    events = swan.drive(tmp_path, sc, during)
    assert _names(events)[:3] == ["IkeSaUp", "ChildSaUp", "ChildSaDown"], events
    assert f"refused in our answer ({error})" in events[2]["detail"]
    log = swan.log()
    assert f"received {error} notify, no CHILD_SA built" in log, log
    assert "failed to establish CHILD_SA, keeping IKE_SA" in log, log
    assert "IKE_SA psk[" in log and "established between" in log
    assert "sending DELETE" not in log and "received DELETE" not in log, log
    listed = swan.swanctl("--list-sas")
    assert "ESTABLISHED" in listed and "INSTALLED" not in listed, listed
