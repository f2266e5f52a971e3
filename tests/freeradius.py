"""Debian's FreeRADIUS 3 as a test RADIUS server, in a network namespace of the test.

:class:`FreeRadius` copies the packaged configuration (/etc/freeradius/3.0) into a directory
of the test and changes only what a test needs: it runs as root (the test's directory is not
the freerad user's), listens on the namespace's loopback (127.0.0.1 and ::1, ports 1812/1813:
the namespace is the test's own), knows one client (the gateway, from 127.0.0.1), answers
rejects at once (no reject_delay), keeps users in the ``files`` module, and its EAP module
does EAP-MSCHAPv2 only (the packaged one also wants TLS certificates the package does not make),
or with ``ttls`` (the test PKI's key, certificate and CA) EAP-TTLS with EAP-MSCHAPv2 inside, run
by the packaged inner-tunnel server.
``freeradius -X`` runs in the foreground and logs to ``radiusd.log``; it is stopped by PID.
The packaged ``accounting { detail ... }`` stays: Accounting-Requests (port 1813) are written to
the detail file under the test's directory, read back with :meth:`FreeRadius.accounting_records`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from daemon import Daemon, requires

from tunsec.bench.netns import Host, TwoHosts

PACKAGED = Path("/etc/freeradius/3.0")
BINARY = "freeradius"

_EAP = """eap {
  default_eap_type = mschapv2
  timer_expire = 60
  ignore_unknown_eap_types = no
  cisco_accounting_username_bug = no
  max_sessions = ${max_requests}
  mschapv2 {
  }
}
"""


# EAP-TTLS (RFC 5281) with EAP-MSCHAPv2 inside, run by the packaged inner-tunnel server; TLS 1.2
# (charon's EAP-TTLS does no TLS 1.3); {key} {cert} {ca}: PEM files of the test's PKI
_EAP_TTLS = """eap {{
  default_eap_type = ttls
  timer_expire = 60
  ignore_unknown_eap_types = no
  cisco_accounting_username_bug = no
  max_sessions = ${{max_requests}}
  md5 {{
  }}
  mschapv2 {{
  }}
  tls-config tls-common {{
    private_key_file = {key}
    certificate_file = {cert}
    ca_file = {ca}
    cipher_list = "DEFAULT"
    tls_min_version = "1.2"
    tls_max_version = "1.2"
  }}
  ttls {{
    tls = tls-common
    default_eap_type = mschapv2
    virtual_server = "inner-tunnel"
  }}
}}
"""


def freeradius_missing() -> str | None:
    if shutil.which(BINARY) is None or not (PACKAGED / "radiusd.conf").is_file():
        return "FreeRADIUS missing (apt install freeradius)"
    return None


requires_freeradius = requires(freeradius_missing(), "FreeRADIUS")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class FreeRadius(Daemon):
    """A FreeRADIUS in ``host``'s namespace with ``users`` (name -> password) and one client."""

    topo: TwoHosts
    host: Host
    secret: str
    users: dict[str, str]
    replies: dict[str, str] = field(default_factory=dict)   # user -> reply items of its Access-Accept
    ttls: tuple[Path, Path, Path] | None = None   # EAP-TTLS instead of EAP-MSCHAPv2: (key, cert, CA) files
    # EAP-MSCHAPv2's verdict on a wrong password as a Failure request in an Access-Challenge, the
    # Access-Reject after the client's acknowledgement (else the Access-Reject at once)
    send_error: bool = False
    dir: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.dir = self.topo.workdir / f"freeradius-{self.host.ns}"
        self.write()

    @property
    def log(self) -> Path:
        return self.dir / "radiusd.log"

    @property
    def label(self) -> str:
        return f"FreeRADIUS in {self.host.ns}"

    def write(self) -> None:
        d = self.dir
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(PACKAGED, d, symlinks=True)
        conf = (d / "radiusd.conf").read_text()
        conf = re.sub(r"(?m)^\s*(user|group) = freerad\s*$", "", conf)
        for key, value in (("raddbdir", d), ("logdir", d / "log"), ("run_dir", d / "run")):
            conf = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", conf)
        conf = re.sub(r"(?m)^(\s*)reject_delay = .*$", r"\1reject_delay = 0", conf)
        (d / "radiusd.conf").write_text(conf)
        for sub in ("log", "run"):
            (d / sub).mkdir()
        site = (PACKAGED / "sites-available" / "default").read_text()
        site = site.replace("ipaddr = *", "ipaddr = 127.0.0.1").replace("ipv6addr = ::", "ipv6addr = ::1")
        (d / "sites-enabled" / "default").unlink()
        (d / "sites-enabled" / "default").write_text(site)
        if self.ttls is None:
            (d / "sites-enabled" / "inner-tunnel").unlink()   # PEAP/TTLS only
        (d / "mods-enabled" / "eap").unlink()
        if self.ttls is None:
            eap = _EAP.replace("  mschapv2 {\n", "  mschapv2 {\n    send_error = yes\n") if self.send_error else _EAP
            (d / "mods-enabled" / "eap").write_text(eap)
        else:
            key, cert, ca = self.ttls
            (d / "mods-enabled" / "eap").write_text(_EAP_TTLS.format(key=key, cert=cert, ca=ca))
        authorize = d / "mods-config" / "files" / "authorize"
        authorize.write_text("".join(f"{name} Cleartext-Password := {_quote(pw)}\n"
                                     + (f"\t{self.replies[name]}\n" if name in self.replies else "")
                                     for name, pw in self.users.items()))
        clients = f"client gateway {{\n  ipaddr = 127.0.0.1\n  secret = {_quote(self.secret)}\n}}\n"
        (d / "clients.conf").write_text(clients)
        os.chmod(d, 0o700)

    def start(self) -> None:
        argv = [BINARY, "-X", "-d", str(self.dir)]
        self.spawn(self.host, argv, lambda: "Ready to process requests" in self.log_text())

    @property
    def radacct(self) -> Path:
        """Where the ``detail`` module writes (``${logdir}/radacct/<client address>/detail-<date>``)."""
        return self.dir / "log" / "radacct"

    def accounting_records(self) -> list[dict[str, str]]:
        """The Accounting-Requests FreeRADIUS took, in order: attribute name -> value (unquoted)."""
        records: list[dict[str, str]] = []
        for path in sorted(self.radacct.glob("*/detail-*")):
            for block in path.read_text(errors="replace").split("\n\n"):
                record = {}
                for line in block.splitlines()[1:]:   # the first line is the time it was written
                    name, sep, value = line.strip().partition(" = ")
                    if sep:
                        record[name] = value.strip('"')
                if record:
                    records.append(record)
        return records
