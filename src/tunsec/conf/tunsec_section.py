"""The ``tunsec { }`` section: tunsec's own settings (TUN, MTU, control socket,
worker user, IKE retransmission and half-open limits, state directory).

Settings the IKE engine takes are built here as the engine's own types
(:class:`~tunsec.ike.config.RetransmitConfig`, :class:`~tunsec.ike.endpoint.DosLimits`),
so what is parsed is what runs; :mod:`tunsec.conf.connections` puts the
retransmission settings into every connection's ``IkeConfig``.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Literal

from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader
from tunsec.conf.syntax import Section
from tunsec.conf.values import IPAddress, auto_or, choice, float_range, int_range, parse_bool, parse_duration
from tunsec.ike.auth_ban import AuthBanSettings
from tunsec.ike.config import DEFAULT_MAX_CHILD_SAS, DEFAULT_MAX_IKE_SAS, RetransmitConfig
from tunsec.ike.dos_source import MAX_IPV6_SOURCE_PREFIX, MIN_IPV6_SOURCE_PREFIX
from tunsec.ike.endpoint import DosLimits
from tunsec.ike.fragments import DEFAULT_FRAGMENT_SIZE

__all__ = [
    "DATAPLANE_USER", "WORKER_USER", "ListenAddress", "LogFormat", "LogLevel", "TunsecSettings",
    "read_tunsec_section", "worker_user",
]  # fmt: skip

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


def _parse_ifname(text: str) -> str:
    """Linux dev_valid_name(): 1..15 bytes, no '/', ':' or whitespace, not '.'/'..'."""
    name = text.strip()
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= 15:
        raise BadValue(f"interface names are 1..15 bytes, got {size}")
    if name in (".", "..") or any(c in "/:\0" or c.isspace() for c in name):
        raise BadValue(f"not a valid Linux interface name: {show_value(name)}")
    return name


_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


def _parse_socket_path(text: str) -> str:
    path = text.strip()
    if "\0" in path:
        raise BadValue("path contains a NUL character")
    if len(path.encode("utf-8", "surrogatepass")) > _SUN_PATH_MAX:
        raise BadValue(f"unix socket paths are at most {_SUN_PATH_MAX} bytes")
    return path


_LOG_LEVELS: dict[str, LogLevel] = {
    "debug": "debug", "info": "info", "warning": "warning", "error": "error"
}  # fmt: skip


def _parse_log_level(text: str) -> LogLevel:
    try:
        return _LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise BadValue(f"not a log level (debug, info, warning, error): {show_value(text)}") from None


_LOG_FORMATS: dict[str, LogFormat] = {"text": "text", "json": "json"}
_parse_log_format = choice("a log format", _LOG_FORMATS)


@dataclass(frozen=True)
class ListenAddress:
    """An IP address and TCP port to listen on (``metrics_listen``)."""

    addr: IPAddress
    port: int

    def __str__(self) -> str:
        return f"[{self.addr}]:{self.port}" if self.addr.version == 6 else f"{self.addr}:{self.port}"


def _parse_listen(text: str) -> ListenAddress:
    """``ADDRESS:PORT`` or ``[IPV6]:PORT``; an address literal, no host name (nothing to resolve at startup)."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise BadValue(f"expected ADDRESS:PORT (e.g. 127.0.0.1:9101 or [::1]:9101), got {show_value(value)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise BadValue(f"write an IPv6 address in brackets, e.g. [::1]:9101, got {show_value(value)}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise BadValue(f"not an IP address: {show_value(host)} (write 127.0.0.1 or [::1], not a host name)") from None
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise BadValue(f"not a TCP port (1..65535): {show_value(port_text)}")
    return ListenAddress(addr, int(port_text))


def _parse_user(text: str) -> str:
    name = text.strip()
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise BadValue(f"no such user on this host: {show_value(name)}") from None
    return name


WORKER_USER = "tunsec"   # the system user scripts/install-deps.sh creates for the worker


def worker_user(configured: str | None) -> str | None:
    """Whom both processes run as after set-up; None keeps root (only ``user = root`` asks for that).

    Unset means the dedicated ``tunsec`` user, which the install creates; never a
    silent ``nobody``: other daemons share it (and nogroup), so they could reach
    the control socket and whatever the process can read.  ``user = nobody``
    written out is still honoured."""
    name = configured or WORKER_USER
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        raise LookupError(
            f"user {name} does not exist on this host: tunsec runs as it once set up (tunsec {{ user }}, "
            f"default {WORKER_USER}); create it (as root: useradd --system --no-create-home --shell "
            f"/usr/sbin/nologin {name}, as scripts/install-deps.sh does), name another user of tunsec's own "
            "in tunsec { user = ... }, or write user = root there to keep root"
        ) from None
    return None if uid == 0 else name


def service_uid(configured: str | None) -> int | None:
    """The uid tunsec runs as once set up (worker_user), if that user exists; None for root or no such user."""
    try:
        name = worker_user(configured)
        return pwd.getpwnam(name).pw_uid if name else None
    except (LookupError, KeyError):   # `tunsec up` says so
        return None


DATAPLANE_USER = "tunsec-dp"   # the worker's own user, made next to WORKER_USER by the install


def _parse_state_dir(text: str) -> str:
    path = text.strip()
    if "\0" in path:
        raise BadValue("path contains a NUL character")
    if not os.path.isabs(path):
        raise BadValue(f"must be an absolute path (a directory on persistent storage), got {show_value(path)}")
    return os.path.normpath(path)


def _parse_larval_timeout(text: str) -> int:
    seconds = parse_duration(text)
    if seconds < 1:
        raise BadValue("must be at least 1 second")
    return seconds


_parse_mtu = auto_or(int_range(576, 65535, "an MTU"))
MAX_WORKERS = 16   # TUN queues (one loop thread each) the daemon opens at most
_parse_workers = auto_or(int_range(1, MAX_WORKERS, "a worker count"))




# IKE retransmission, as strongswan.conf's charon.retransmit_timeout/_base/_tries
_parse_retransmit_timeout = float_range(0.05, 3600, "a number of seconds")
_parse_retransmit_base = float_range(1, 10, "a number")
_parse_retransmit_tries = int_range(0, 100, "a number of retransmissions")
_parse_retransmit_limit = float_range(0, 3600, "a number of seconds")   # charon.retransmit_limit; 0: none
# unauthenticated IKE_SA_INIT, as strongswan.conf's charon.half_open_timeout,
# charon.cookie_threshold and charon.init_limit_half_open (which has no "unlimited" here)
_parse_half_open_timeout = float_range(0.5, 3600, "a number of seconds")
_parse_cookie_threshold = int_range(0, 1 << 20, "a number of half-open IKE SAs")
_parse_half_open_limit = int_range(1, 1 << 20, "a number of half-open IKE SAs")
# per source address, as charon.cookie_threshold_ip and charon.block_threshold (which has no "off" here)
_parse_cookie_threshold_ip = int_range(0, 1 << 20, "a number of half-open IKE SAs from one address")
_parse_block_threshold = int_range(1, 1 << 20, "a number of half-open IKE SAs from one address")
# what "one address" is for IPv6 (not in strongSwan, which counts per address): a prefix of this many
# bits, as a host has at least a /64 to send from (128: per address); below /32 is a whole ISP.  The
# worker's per-source limits count under it too (its --ipv6-source-prefix; a change needs a restart)
_parse_ipv6_source_prefix = int_range(MIN_IPV6_SOURCE_PREFIX, MAX_IPV6_SOURCE_PREFIX, "an IPv6 prefix length")
_parse_datagram_size = int_range(576, 65535, "a size in bytes")
# ready ephemeral key pairs per key exchange group (tunsec.ike.dh_pool); 0: none.  The bound keeps
# the pool's memory small (~0.5 KB an X25519 key pair, ~2.3 KB an ECP one, 64 MODP at most)
# Child SAs one IKE SA may hold (not in strongSwan; see tunsec.ike.config.DEFAULT_MAX_CHILD_SAS)
_parse_max_child_sas = int_range(1, 1 << 16, "a number of Child SAs per IKE SA")
# IKE SAs one identity may hold per connection (not in strongSwan; see tunsec.ike.config.DEFAULT_MAX_IKE_SAS)
_parse_max_ike_sas = int_range(1, 1 << 16, "a number of IKE SAs per identity")
# IKE SAs of all peers (strongswan.conf's charon.ikesa_limit; 0: no limit)
_parse_ikesa_limit = int_range(0, 1 << 24, "a number of IKE SAs (0: no limit)")
# sources refused after failed authentications (ike/auth_ban.py): 0 turns it off
_parse_auth_failures = int_range(0, 1 << 16, "a number of failed authentications (0: no ban)")


def _parse_auth_seconds(text: str) -> float:
    seconds = parse_duration(text)
    if not 1 <= seconds <= 7 * 86400:
        raise BadValue(f"must be 1s to 7d, got {show_value(text)}")
    return float(seconds)


_parse_ke_pool = int_range(0, 4096, "a number of key pairs per key exchange group (0: no pool)")


def _parse_fragment_size(text: str) -> int:
    """strongswan.conf's charon.fragment_size: 0 (the address family's minimum) or 576..65535."""
    return 0 if text.strip() == "0" else _parse_datagram_size(text)


@dataclass(frozen=True)
class TunsecSettings:
    """The ``tunsec { }`` section. ``None`` stands for ``auto``."""

    tun: str = "tunsec0"
    mtu: int | None = None
    outer_mtu: int | None = None
    control_socket: str = ""   # "" = resolved at run time by runtime.default_control_socket()
    workers: int | None = None
    log_level: LogLevel = "info"
    # text (one line per event, no timestamp when journald is the sink) or json (one object a line)
    log_format: LogFormat = "text"
    # Prometheus metrics over HTTP at this address (GET /metrics); None = no endpoint
    metrics_listen: ListenAddress | None = None
    larval_timeout: int = 30
    # IKE requests (retransmit_timeout, retransmit_base, retransmit_tries): first
    # retransmission after timeout seconds, each wait base times the one before,
    # give up after tries, no wait longer than retransmit_limit (0: none) (strongswan.conf's
    # charon.retransmit_* and their defaults);
    # every connection's IkeConfig carries this
    retransmit: RetransmitConfig = field(default_factory=RetransmitConfig)
    # both processes drop to this user once the TUN, sockets, routes and control
    # socket are set up (tunsec.privilege): the worker keeps no capability, the
    # control process only what it still uses; None = tunsec (a startup error
    # if it does not exist); "root" keeps root (worker_user)
    user: str | None = None
    # the dataplane worker's own user (tunsec.dataplane.spawner): another uid than the control
    # process's, so a worker taken over through its packet parsing cannot read the configuration,
    # the keys or the control socket, nor signal or read the control process; None = tunsec-dp if
    # it exists, else the control process's user (with a warning)
    worker_user: str | None = None
    # once set up, the worker confines itself (tunsec.dataplane.sandbox: Landlock, seccomp) where the
    # kernel can; no: for an operator whose kernel or tooling (a debugger, perf) it gets in the way of
    worker_sandbox: bool = True
    # IKE SAs a peer has not authenticated yet ("half-open"): closed after
    # half_open_timeout seconds (every connection's IkeConfig carries it); above
    # dos.cookie_threshold of them a COOKIE is demanded (RFC 7296 §2.6); above
    # dos.half_open_limit requests are dropped; per source address, above
    # dos.cookie_threshold_ip a COOKIE is demanded from it, above dos.block_threshold
    # its requests are dropped (an IPv6 source counts under its dos.ipv6_source_prefix)
    half_open_timeout: float = 30.0
    # IKE fragments (RFC 7383) fill IP datagrams of at most this many bytes (strongswan.conf's
    # charon.fragment_size; 0: 576 for IPv4, 1280 for IPv6); every connection's IkeConfig carries it
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    dos: DosLimits = field(default_factory=DosLimits)
    # a source (IPv4 address, IPv6 /ipv6_source_prefix) whose IKE SAs failed authentication
    # auth_failures times within auth_failures_window has its IKE_SA_INIT requests dropped for
    # auth_failures_ban (doubled for a repeat offender, 16 times at most); auth_failures = 0: never
    auth_ban: AuthBanSettings = field(default_factory=AuthBanSettings)
    # a peer's CREATE_CHILD_SA for a further Child SA is refused with NO_ADDITIONAL_SAS once its IKE SA
    # holds this many (a rekey replaces one and does not count); every connection's IkeConfig carries it
    max_child_sas: int = DEFAULT_MAX_CHILD_SAS
    # a peer's IKE_AUTH is refused with AUTHENTICATION_FAILED once its identity holds this many IKE SAs of
    # the connection (a rekey replaces one and does not count); every connection's IkeConfig carries it
    max_ike_sas_per_identity: int = DEFAULT_MAX_IKE_SAS
    # a client follows gateways' REDIRECTs (RFC 5685) and announces that it does: strongswan.conf's
    # charon.follow_redirects (global in strongSwan too, no swanctl.conf key); every IkeConfig carries it
    follow_redirects: bool = True
    # key pairs kept ready per key exchange group (the first group of each connection's IKE
    # proposals; MODP at most 64), generated at start and while no IKE SA is being set up, taken
    # at IKE_SA_INIT only (rekeys generate theirs), replaced after 5 minutes unused
    # (tunsec.ike.dh_pool); 0: every key pair is generated when it is needed
    ke_pool: int = 256
    # manual tunnels persist their sequence number reservations here (RFC 4106
    # forbids GCM with static keys unless nonces never repeat across restarts)
    state_dir: str = "/var/lib/tunsec"


def read_tunsec_section(section: Section, issues: list[ConfigIssue]) -> TunsecSettings:
    r = SectionReader(section, issues)
    d = TunsecSettings()
    settings = TunsecSettings(
        tun=r.get("tun", _parse_ifname, d.tun),
        mtu=r.get("mtu", _parse_mtu, d.mtu),
        outer_mtu=r.get("outer_mtu", _parse_mtu, d.outer_mtu),
        control_socket=r.get("control_socket", _parse_socket_path, d.control_socket),
        workers=r.get("workers", _parse_workers, d.workers),
        log_level=r.get("log_level", _parse_log_level, d.log_level),
        log_format=r.get("log_format", _parse_log_format, d.log_format),
        metrics_listen=r.get("metrics_listen", _parse_listen, d.metrics_listen),
        larval_timeout=r.get("larval_timeout", _parse_larval_timeout, d.larval_timeout),
        retransmit=RetransmitConfig(
            timeout=r.get("retransmit_timeout", _parse_retransmit_timeout, d.retransmit.timeout),
            base=r.get("retransmit_base", _parse_retransmit_base, d.retransmit.base),
            tries=r.get("retransmit_tries", _parse_retransmit_tries, d.retransmit.tries),
            limit=r.get("retransmit_limit", _parse_retransmit_limit, d.retransmit.limit),
        ),
        user=r.get("user", _parse_user, d.user),
        worker_user=r.get("worker_user", _parse_user, d.worker_user),
        worker_sandbox=r.get("worker_sandbox", parse_bool, d.worker_sandbox),
        half_open_timeout=r.get("half_open_timeout", _parse_half_open_timeout, d.half_open_timeout),
        fragment_size=r.get("fragment_size", _parse_fragment_size, d.fragment_size),
        dos=DosLimits(
            cookie_threshold=r.get("cookie_threshold", _parse_cookie_threshold, d.dos.cookie_threshold),
            half_open_limit=r.get("half_open_limit", _parse_half_open_limit, d.dos.half_open_limit),
            cookie_threshold_ip=r.get("cookie_threshold_ip", _parse_cookie_threshold_ip, d.dos.cookie_threshold_ip),
            block_threshold=r.get("block_threshold", _parse_block_threshold, d.dos.block_threshold),
            ipv6_source_prefix=r.get("ipv6_source_prefix", _parse_ipv6_source_prefix, d.dos.ipv6_source_prefix),
            ikesa_limit=r.get("ikesa_limit", _parse_ikesa_limit, d.dos.ikesa_limit),
        ),
        auth_ban=AuthBanSettings(
            max=r.get("auth_failures", _parse_auth_failures, d.auth_ban.max),
            window=r.get("auth_failures_window", _parse_auth_seconds, d.auth_ban.window),
            ban=r.get("auth_failures_ban", _parse_auth_seconds, d.auth_ban.ban),
        ),
        max_child_sas=r.get("max_child_sas", _parse_max_child_sas, d.max_child_sas),
        max_ike_sas_per_identity=r.get("max_ike_sas_per_identity", _parse_max_ike_sas, d.max_ike_sas_per_identity),
        follow_redirects=r.get("follow_redirects", parse_bool, d.follow_redirects),
        ke_pool=r.get("ke_pool", _parse_ke_pool, d.ke_pool),
        state_dir=r.get("state_dir", _parse_state_dir, d.state_dir),
    )
    r.finish()
    return settings
