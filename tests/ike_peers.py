"""IKEv2 peers for the netns tests: tunsec running IKE, and strongSwan's charon.

Both read the same swanctl.conf ``connections``/``secrets`` text (tunsec adds
its ``tunsec { }`` section), and both find certificates the swanctl way in
x509/, x509ca/ and private/ next to that file, so one :class:`Conn` describes a
side for either implementation.

charon runs with its kernel-libipsec plugin (userspace ESP in UDP over a TUN
``ipsec0``, routes in table 220) in a private mount namespace, started with the
helpers of :mod:`tunsec.bench.systems.strongswan`; it logs ike/cfg/knl at level
2 (proposals, payloads) to ``charon.log`` in its directory.
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import control
import pytest
from daemon import Daemon, requires
from reachable import python_argv

from tunsec.bench.netns import Host, TwoHosts, wait_until
from tunsec.bench.systems.base import Unavailable, missing_commands
from tunsec.bench.systems.strongswan import (
    CHARON,
    LIBIPSEC_PLUGIN,
    Instance,
    start_charon,
    strongswan_conf,
    swanctl,
)

CONN, CHILD = "tun", "net"
# debug lines of pyroute2 that drown tunsec's own in a log tail
_NOISE = re.compile(r"DEBUG (message \{|yield \{|SOCK_DGRAM|await data|preventing override|Using selector|get: )")
PSK = "tunsec interop secret 0123456789"


def strongswan_missing() -> str | None:
    """Why charon cannot be a test peer here, or None."""
    missing = missing_commands(CHARON, "swanctl", "pki", "unshare", "iperf3")
    if missing:
        return missing
    if not Path(LIBIPSEC_PLUGIN).is_file():
        return "kernel-libipsec plugin missing (apt install libcharon-extra-plugins)"
    return None


# the mark of every test with charon as its peer: `pytestmark = [pytest.mark.interop, requires_strongswan]`
requires_strongswan = requires(strongswan_missing(), "strongSwan interop")


def ident(host: Host) -> str:
    """The FQDN identity of a side (also the subjectAltName of its certificate)."""
    return f"{host.ns[:4]}.tunsec.test"     # ts-a-xxxxxx -> "ts-a.tunsec.test"


@dataclass(frozen=True)
class Conn:
    """One side's connection ``tun`` with child ``net``, in swanctl.conf syntax."""

    me: Host
    peer: Host
    proposals: str = "aes128gcm16-prfsha256-curve25519"
    esp_proposals: str = "aes128gcm16"
    local_ts: str = ""                  # default: my inner IPv4 network
    remote_ts: str = ""                 # default: the peer's
    auth: str = "psk"                   # psk | pubkey
    psk: str = PSK
    cert: str = ""                      # with auth = pubkey: the file in x509/
    start_action: str = "none"
    extra_conn: str = ""                # more lines in the connection
    extra_child: str = ""               # more lines in the child

    # The text is made of the parts below; the remote-access connections of roadwarrior.py
    # (a gateway with pools and EAP, its road warriors) change some of them.

    def swanctl_text(self) -> str:
        return f"{self.sections()}connections {{\n{self.connections()}}}\n{self.secrets()}"

    def connections(self) -> str:
        """What ``connections { }`` holds: the connection ``tun``."""
        return self.connection(CONN)

    def connection(self, name: str) -> str:
        local_ts, remote_ts = self.traffic_selectors()
        return f"""  {name} {{
    version = 2
{self.conn_lines()}{self.extra_conn}    local {{
{self.local_lines()}    }}
    remote {{
{self.remote_lines()}    }}
    children {{
      {CHILD} {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = {self.esp_proposals}
        mode = tunnel
        start_action = {self.start_action}
{self.extra_child}      }}
    }}
  }}
"""

    def sections(self) -> str:
        """Sections before ``connections`` (pools, radius)."""
        return ""

    def conn_lines(self) -> str:
        return (f"    local_addrs = {self.me.outer4}\n    remote_addrs = {self.peer.outer4}\n"
                f"    encap = yes\n    proposals = {self.proposals}\n")

    def my_id(self) -> str:
        return ident(self.me)

    def peer_id(self) -> str:
        return ident(self.peer)

    def local_lines(self) -> str:
        certs = f"      certs = {self.cert}\n" if self.auth == "pubkey" else ""
        return f"      auth = {self.auth}\n      id = {self.my_id()}\n{certs}"

    def remote_lines(self) -> str:
        return f"      auth = {self.auth}\n      id = {self.peer_id()}\n"

    def traffic_selectors(self) -> tuple[str, str]:
        """The child's local_ts and remote_ts: by default my inner IPv4 network and the peer's."""
        return self.local_ts or self.me.inner_net4, self.remote_ts or self.peer.inner_net4

    def secrets(self) -> str:
        if self.auth != "psk":
            return ""
        return f"""secrets {{
  ike-peers {{
    id-me = {self.my_id()}
    id-peer = {self.peer_id()}
    secret = "{self.psk}"
  }}
}}
"""

    def charon_conf(self, inst: Instance) -> str:
        """charon's strongswan.conf for this side (ike and cfg at log level 2): the plugins and
        settings its authentication needs come with the connection."""
        return strongswan_conf(inst, level=2)


@dataclass(frozen=True)
class PortConn(Conn):
    """A connection on custom IKE ports (swanctl local_port/remote_port); for charon also its
    sockets (strongswan.conf charon.port and port_nat_t), which a custom local_port must be one of."""

    local_port: int = 500
    remote_port: int = 500
    charon_ports: tuple[int, int] = (500, 4500)

    def conn_lines(self) -> str:
        return super().conn_lines() + f"    local_port = {self.local_port}\n    remote_port = {self.remote_port}\n"

    def charon_conf(self, inst: Instance) -> str:
        port, natt = self.charon_ports
        return strongswan_conf(inst, level=2, extra=f"  port = {port}\n  port_nat_t = {natt}\n")


# --------------------------------------------------------------------------
# Certificates, made with strongSwan's pki
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A test CA and end-entity certificates for ``<ns[:4]>.tunsec.test``, made by ``pki``."""

    dir: Path
    kind: str                           # rsa | ecdsa

    def _pki(self, *args: str, out: Path) -> None:
        with open(out, "wb") as f:
            r = subprocess.run(["pki", *args], stdout=f, stderr=subprocess.PIPE, timeout=60, check=False)
        assert r.returncode == 0, f"pki {' '.join(args)}: {r.stderr.decode(errors='replace')}"

    @classmethod
    def new_ca(cls, factory: pytest.TempPathFactory, name: str, kind: str = "ecdsa") -> Pki:
        """A new CA in a new temporary directory named after ``name`` (for a module-scoped fixture)."""
        pki = cls(Path(factory.mktemp(name)), kind)
        pki.make_ca()
        return pki

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    def make_ca(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key = self.dir / "ca.key"
        size = ["--size", "3072"] if self.kind == "rsa" else ["--size", "384"]
        self._pki("--gen", "--type", self.kind, *size, "--outform", "pem", out=key)
        self._pki("--self", "--ca", "--lifetime", "30", "--in", str(key), "--type", self.kind,
                  "--dn", f"C=CH, O=tunsec test, CN=tunsec {self.kind} test CA", "--outform", "pem",
                  out=self.ca_cert)

    def issue(self, name: str) -> tuple[Path, Path]:
        """Key and certificate with subjectAltName ``name`` (cached in the CA's directory)."""
        key, cert = self.dir / f"{name}.key", self.dir / f"{name}.crt"
        if cert.exists():
            return key, cert
        size = ["--size", "2048"] if self.kind == "rsa" else ["--size", "256"]
        self._pki("--gen", "--type", self.kind, *size, "--outform", "pem", out=key)
        pub = self.dir / f"{name}.pub"
        self._pki("--pub", "--in", str(key), "--type", self.kind, out=pub)
        self._pki("--issue", "--lifetime", "30", "--cacert", str(self.ca_cert), "--cakey", str(self.dir / "ca.key"),
                  "--type", "pub", "--in", str(pub), "--dn", f"C=CH, O=tunsec test, CN={name}",
                  "--san", name, "--flag", "serverAuth", "--outform", "pem", out=cert)
        return key, cert

    def install(self, confdir: Path, host: Host) -> str:
        """Copy the CA, the host's certificate and key where swanctl (and tunsec) look; the cert's file name."""
        key, cert = self.issue(ident(host))
        for sub in ("x509", "x509ca", "private"):
            (confdir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca_cert, confdir / "x509ca" / "ca.crt")
        shutil.copy(cert, confdir / "x509" / cert.name)
        shutil.copy(key, confdir / "private" / key.name)
        (confdir / "private" / key.name).chmod(0o600)
        return cert.name


# --------------------------------------------------------------------------
# tunsec with IKE
# --------------------------------------------------------------------------


@dataclass
class TunsecIke(Daemon):
    """tunsec in one namespace with the connection ``conn`` (debug log)."""

    topo: TwoHosts
    conn: Conn
    pki: Pki | None = None
    dir: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    tunsec_extra: str = ""              # more lines in the tunsec { } section

    def __post_init__(self) -> None:
        self.dir = self.topo.workdir / f"tunsec-{self.host.ns}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # its own (the record of its prohibit routes): the default /var/lib/tunsec is the host's, shared by
        # every test daemon and handed to whichever user one drops to
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self.write()

    @property
    def host(self) -> Host:
        return self.conn.me

    @property
    def label(self) -> str:
        return f"tunsec in {self.host.ns}"

    @property
    def conf(self) -> Path:
        return self.dir / "tunsec.conf"

    @property
    def log(self) -> Path:
        return self.dir / "tunsec.log"

    @property
    def sock(self) -> Path:
        return self.dir / "tunsec.sock"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    def write(self, **changes: Any) -> None:
        if changes:
            self.conn = replace(self.conn, **changes)
        if self.conn.auth == "pubkey" and self.pki is not None:
            self.conn = replace(self.conn, cert=self.pki.install(self.dir, self.host))
        self.conf.write_text(f"""# tunsec IKE test, {self.host.ns}
tunsec {{
  tun = tunsec0
  control_socket = {self.sock}
  state_dir = {self.state_dir}
  log_level = debug
{self.tunsec_extra}}}
{self.conn.swanctl_text()}""")
        self.conf.chmod(0o600)

    def start(self) -> None:
        argv = [*python_argv(), "-m", "tunsec", "up", "-c", str(self.conf)]
        offset = control.log_size(self.log)
        self.spawn(self.host, argv, lambda: control.is_up(self.log, offset, self.sock))

    def readable_by_tunsec(self) -> None:
        """Its directory and configuration readable by the tunsec group: the daemon reads its configuration
        as its own user since it started (a reload, SIGHUP)."""
        gid = grp.getgrnam("tunsec").gr_gid
        for path in (self.dir, self.conf):
            os.chown(path, -1, gid)
            path.chmod(path.stat().st_mode | (0o050 if path.is_dir() else 0o040))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tunsec", *args, "-c", str(self.conf)]
        return self.topo.run(self.host, argv, check=False, timeout=20)

    def status(self) -> dict[str, Any]:
        """``tunsec status --json``, asked from this process (control.py: no interpreter per poll)."""
        return control.status(self.sock)

    def ike_sas(self) -> list[dict[str, Any]]:
        sas: list[dict[str, Any]] = self.status()["ike_sas"]
        return sas

    def established(self) -> list[dict[str, Any]]:
        """IKE SAs that are up and carry at least one child."""
        return [sa for sa in self.ike_sas() if sa["state"] == "established" and sa["children"]]

    def wait_established(self, timeout: float = 15) -> dict[str, Any]:
        assert wait_until(lambda: bool(self.established()), timeout), \
            f"no IKE SA with a child in {self.host.ns}:\n{self.log_tail()}"
        (sa,) = self.established()
        return sa

    def log_lines(self) -> list[str]:
        """The log without pyroute2's netlink chatter (debug level logs everything)."""
        return [ln for ln in self.log_text().splitlines() if not _NOISE.search(ln)]


# --------------------------------------------------------------------------
# strongSwan's charon
# --------------------------------------------------------------------------


@dataclass
class Charon(Daemon):
    """charon (kernel-libipsec) in one namespace, configured with ``conn``, driven by swanctl."""

    topo: TwoHosts
    conn: Conn
    pki: Pki | None = None
    inst: Instance = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    tail_lines = 60

    def __post_init__(self) -> None:
        self.inst = Instance(host=self.conn.me, dir=self.topo.workdir / f"strongswan-{self.conn.me.ns}")
        (self.inst.dir / "run").mkdir(parents=True, exist_ok=True)
        (self.inst.dir / "strongswan.conf").write_text(self.conn.charon_conf(self.inst))
        self.write()

    @property
    def host(self) -> Host:
        return self.conn.me

    @property
    def log(self) -> Path:
        return self.inst.log

    @property
    def label(self) -> str:
        return f"charon in {self.host.ns}"

    def write(self, **changes: Any) -> None:
        if changes:
            self.conn = replace(self.conn, **changes)
        if self.conn.auth == "pubkey" and self.pki is not None:
            self.conn = replace(self.conn, cert=self.pki.install(self.inst.dir, self.host))
        path = self.inst.dir / "swanctl.conf"
        path.write_text(self.conn.swanctl_text())
        path.chmod(0o600)

    def start(self) -> None:
        try:
            self.proc = start_charon(self.topo, self.inst)
        except Unavailable as exc:
            raise AssertionError(str(exc)) from exc
        self.swanctl_ok("--load-all", "--noprompt")

    def swanctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return swanctl(self.topo, self.inst, *args, timeout=timeout)

    def swanctl_ok(self, *args: str) -> str:
        r = self.swanctl(*args)
        assert r.returncode == 0, f"swanctl {' '.join(args)}: {r.stdout}{r.stderr}\n{self.log_tail()}"
        return r.stdout

    def initiate(self, timeout: int = 15) -> subprocess.CompletedProcess[str]:
        return self.swanctl("--initiate", "--child", CHILD, "--timeout", str(timeout), timeout=timeout + 15)

    def list_sas(self) -> str:
        return self.swanctl_ok("--list-sas")

    def sas(self) -> dict[str, Any]:
        """``swanctl --list-sas --raw`` parsed into {ike name: {key: value or dict}} (vici's tree)."""
        out = self.swanctl_ok("--list-sas", "--raw")
        return {k: v for line in out.splitlines() if line.strip() for k, v in _vici_raw(line).items()}



def _vici_raw(line: str) -> dict[str, Any]:
    """One line of ``swanctl --raw`` output (``list-sa event {tun {k=v sub {..} list [a b]}}``) as a dict."""
    tokens = re.findall(r"\{|\}|\[|\]|[^\s{}\[\]=]+=[^\s{}\[\]]*|[^\s{}\[\]]+", line)
    pos = 0

    def parse_block() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != "}":
            tok = tokens[pos]
            pos += 1
            nxt = tokens[pos] if pos < len(tokens) else ""
            if tok.endswith("=") and nxt == "[":      # key=[a b]
                pos += 1
                items = []
                while pos < len(tokens) and tokens[pos] != "]":
                    items.append(tokens[pos])
                    pos += 1
                pos += 1     # ']'
                out[tok[:-1]] = items
            elif "=" in tok:
                k, _, v = tok.partition("=")
                out[k] = v
            elif nxt == "{":
                pos += 1
                out[tok] = parse_block()
                pos += 1     # '}'
        return out

    # skip the "list-sa event" prefix up to the first '{'
    while pos < len(tokens) and tokens[pos] != "{":
        pos += 1
    pos += 1
    return parse_block()


# --------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------


def ping_both_ways(topo: TwoHosts, count: int = 3) -> None:
    a, b = topo.a, topo.b
    assert topo.wait_ping(a, b.inner4, src=a.inner4, timeout=10), "A cannot ping B's inner address"
    assert topo.ping(a, b.inner4, count=count, src=a.inner4), "ping A -> B lost packets"
    assert topo.ping(b, a.inner4, count=count, src=b.inner4), "ping B -> A lost packets"


def tunsec_pair(topo: TwoHosts, extra_child: str = "") -> tuple[TunsecIke, TunsecIke]:
    """tunsec in A (start_action = start) and in B with the same child lines, the tunnel up and pinged
    both ways."""
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start", extra_child=extra_child))
    b = TunsecIke(topo, Conn(topo.b, topo.a, extra_child=extra_child))
    b.start()
    a.start()
    a.wait_established()
    ping_both_ways(topo)
    return a, b


def iperf3_tcp(topo: TwoHosts, seconds: int = 2, reverse: bool = False) -> int:
    """A TCP run from A to B through the tunnel (``reverse``: B sends); bytes received."""
    srv = topo.popen(topo.b, ["iperf3", "-s", "-1", "-B", topo.b.inner4])
    try:
        listening = wait_until(lambda: ":5201" in topo.run(topo.b, ["ss", "-ltn"], check=False).stdout, 10)
        assert listening, "iperf3 server did not start"
        argv = ["iperf3", "-c", topo.b.inner4, "-B", topo.a.inner4, "-t", str(seconds), "--json"]
        if reverse:
            argv.append("-R")
        r = topo.run(topo.a, argv, check=False, timeout=seconds + 30)
        doc = json.loads(r.stdout)
        assert "error" not in doc, doc["error"]
        received = int(doc["end"]["sum_received"]["bytes"])
        assert received > 0
        return received
    finally:
        topo.stop(srv)


def tunsec_counters(side: TunsecIke, child: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dataplane counters of a child's SAs: {"in": {...}, "out": {...}}."""
    sas = side.status()["sas"]
    out = {}
    for d, spi in (("in", child["spi_in"]), ("out", child["spi_out"])):
        (found,) = [s for s in sas if s["spi"] == spi and s["direction"] == d]
        out[d] = found
    return out


def iperf3_two_streams(topo: TwoHosts, seconds: int, bidir: bool = False) -> dict[str, Any]:
    """Two parallel TCP streams A -> B through the tunnel (``bidir``: and two B -> A); iperf3's JSON report."""
    srv = topo.popen(topo.b, ["iperf3", "-s", "-1", "-B", topo.b.inner4])
    try:
        listening = wait_until(lambda: ":5201" in topo.run(topo.b, ["ss", "-ltn"], check=False).stdout, 10)
        assert listening, "iperf3 server did not start"
        argv = ["iperf3", "-c", topo.b.inner4, "-B", topo.a.inner4, "-t", str(seconds), "-P", "2", "--json"]
        r = topo.run(topo.a, argv + (["--bidir"] if bidir else []), check=False, timeout=seconds + 30)
        doc: dict[str, Any] = json.loads(r.stdout)
        assert "error" not in doc, doc["error"]
        return doc
    finally:
        topo.stop(srv)


def children_up(side: TunsecIke) -> list[str]:
    """Inbound SPIs of the Child SAs this side installed, in order (the first one and each rekey)."""
    return re.findall(rf"CHILD_SA {CHILD} up, SPIs ([0-9a-f]{{8}})_i", side.log_text())
