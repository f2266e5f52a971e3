"""swanctl.conf's ``connections { }``: IKEv2 connections and their ``children``.

:func:`read_connections` validates each ``connections.<name>`` section (with
its ``local``, ``remote`` and ``children``) and builds a :class:`Connection`:
the engine's :class:`~tunsec.ike.config.IkeConfig` (``.ike``, with the
``tunsec { }`` retransmission settings already in it) and one :class:`Child`
per child (the engine's :class:`~tunsec.ike.config.ChildConfig` plus what the
IKE service needs to install its SAs). The IKE service runs these objects as
they are: the value on the parsed object is the value that runs.

Keys mean what they mean in strongSwan 5.9's swanctl.conf. A key or value
tunsec does not honour is an error naming file and line, never silently
ignored; a few keys are accepted only with the value that describes what
tunsec does anyway (``encap = yes``, ``policies = yes``...).
Three keys are tunsec's own, since strongSwan configures redirects in plugins
(RFC 5685, see tunsec.ike.redirect): ``redirect_to = ADDRESS | FQDN`` makes a
gateway send new clients to the gateway at that IPv4/IPv6 address or host name,
``redirect_when = always | N`` only once it holds at least N IKE SAs, and
``redirect_on = init | auth`` in answer to IKE_SA_INIT (the default) or only
after authenticating the client, in IKE_AUTH.
Child names may repeat across connections, as in strongSwan: :func:`find_child`
resolves ``--child NAME`` with ``--ike CONN``.

Certificates and keys come from :mod:`tunsec.conf.credentials`, PSKs from
:mod:`tunsec.conf.secrets` (:func:`~tunsec.conf.secrets.find_psk`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509

from tunsec.conf.credentials import (
    KEY_DIRS,
    X509_DIR,
    X509CA_DIR,
    Credentials,
    is_ca,
    key_kind,
    load_certificate,
    subject_name,
)
from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader, accept_only, check_fast_selectors
from tunsec.conf.secrets import IkeSecret, find_psk
from tunsec.conf.syntax import Section
from tunsec.conf.values import (
    DEFAULT_REPLAY_WINDOW,
    IPAddress,
    choice,
    int_range,
    lower,
    parse_address,
    parse_bool,
    parse_bytes,
    parse_duration,
    parse_files,
    parse_identity,
    parse_local_identity,
    parse_packets,
    parse_port,
    parse_replay_window,
    parse_ts_list,
    parse_uint32,
    refuse,
)
from tunsec.dataplane.pipe import Lifetime
from tunsec.ike.auth import PrivateKey
from tunsec.ike.config import (
    ChildConfig,
    EapSecret,
    IkeConfig,
    LocalAuth,
    RedirectOn,
    RemoteAuth,
    RetransmitConfig,
    SendCertMode,
)
from tunsec.ike.constants import IKE_PORT, NATT_PORT, ProtocolId
from tunsec.ike.fragments import DEFAULT_FRAGMENT_SIZE, FragmentationMode
from tunsec.ike.identity import Identity, IdentityError, certificate_has_identity
from tunsec.ike.proposals import ProposalSpec, parse_proposals
from tunsec.ike.redirect import is_fqdn
from tunsec.ike.secret import Secret
from tunsec.policy.pad import ANY_ADDRESS
from tunsec.policy.selector import Ts, parse_ts
from tunsec.updown import UpdownError, parse_command

__all__ = [
    "DEFAULT_CHILD_REKEY_TIME",
    "DEFAULT_IKE_REKEY_TIME",
    "Action",
    "Child",
    "Connection",
    "Unique",
    "find_child",
    "ike_endpoints",
    "read_connections",
    "rekey_limit",
    "unserved_sources",
]

# strongSwan's actions (vici's parse_action): none/clear, trap/route, start/restart.
Action = Literal["none", "trap", "start"]
Unique = Literal["never", "no", "keep", "replace"]

# strongSwan's defaults (vici_config.c): IKE SA rekeying every 4 h, Child SA every hour.
DEFAULT_IKE_REKEY_TIME = 4 * 3600
DEFAULT_CHILD_REKEY_TIME = 3600


@dataclass(frozen=True)
class Child:
    """One ``children.<name>`` section: the engine's :class:`ChildConfig` plus what the IKE service needs
    to install its SAs (actions, lifetimes the dataplane counts, replay window).

    Lifetimes are strongSwan's, with its defaults already applied (``life_* =
    rekey_* + 10%``, ``rand_* = life_* - rekey_*``); 0 means "none". The
    actions are normalised to ``none``/``trap``/``start`` as strongSwan does
    (``clear`` is ``none``, ``route`` is ``trap``, ``restart`` is ``start``).
    """

    name: str
    config: ChildConfig
    start_action: Action = "none"
    close_action: Action = "none"
    dpd_action: Action = "none"
    rekey_time: int = DEFAULT_CHILD_REKEY_TIME
    life_time: int = DEFAULT_CHILD_REKEY_TIME * 110 // 100
    rand_time: int = DEFAULT_CHILD_REKEY_TIME * 10 // 100
    rekey_bytes: int = 0
    life_bytes: int = 0
    rand_bytes: int = 0
    rekey_packets: int = 0
    life_packets: int = 0
    rand_packets: int = 0
    replay_window: int = DEFAULT_REPLAY_WINDOW
    inactivity: int = 0
    updown: tuple[str, ...] = ()   # the script and its arguments (tunsec.updown), run without a shell
    hostaccess: bool = False       # only passed to the updown script (PLUTO_HOST_ACCESS)
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    def hard_lifetime(self) -> Lifetime:
        """The dataplane's hard limits for one of this child's SAs (rekeying on time is the engine's)."""
        return Lifetime(bytes=self.life_bytes, packets=self.life_packets, seconds=self.life_time)

    def soft_lifetime(self, randbelow: Callable[[int], int] = secrets.randbelow) -> Lifetime:
        """The dataplane's soft limits (an EXPIRE that starts a rekey) for one new SA, jittered per SA."""
        return Lifetime(bytes=rekey_limit(self.rekey_bytes, self.rand_bytes, randbelow),
                        packets=rekey_limit(self.rekey_packets, self.rand_packets, randbelow))


def rekey_limit(rekey: int, rand: int, randbelow: Callable[[int], int] = secrets.randbelow) -> int:
    """strongSwan's soft limit for one SA: ``rekey`` minus a random part of ``rand`` (0: no limit).

    Drawn anew for every SA, so that neither the two peers nor the SAs of a
    busy gateway reach their byte or packet limits, and rekey, all at once."""
    if rekey <= 0:
        return 0
    return max(1, rekey - (randbelow(rand + 1) if rand > 0 else 0))


@dataclass(frozen=True)
class Connection:
    """One ``connections.<name>`` section.

    :attr:`ike` is what the engine takes (``IkeEndpoint([c.ike for c in
    config.connections])``); its ``children`` are the :attr:`children`'s
    configs in the same order (left out, they are made from ``ike.children``
    with the defaults). The rest is for the IKE service: which addresses and
    ports to use and accept (an empty address tuple is ``%any``), when to
    start, rekey, reauthenticate and check liveness. Times are seconds, 0 is
    "never".
    """

    name: str
    ike: IkeConfig
    children: tuple[Child, ...] = ()
    local_addrs: tuple[IPAddress, ...] = ()
    remote_addrs: tuple[IPAddress, ...] = ()
    # local_port, remote_port, dpd_delay, send_cert and the engine's timers (rekey_time, rand_time,
    # over_time) live in ike (IkeConfig), once
    keyingtries: int = 1
    unique: Unique = "no"
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    @property
    def local_port(self) -> int:
        return self.ike.local_port

    def __post_init__(self) -> None:
        if not self.children:
            object.__setattr__(self, "children", tuple(Child(c.name, c) for c in self.ike.children))
        if [c.config for c in self.children] != list(self.ike.children):
            raise ValueError(f"connection {self.name}: children and ike.children differ")

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(f"connection {self.name} has no child {name!r}")


def _parse_version(text: str) -> int:
    value = text.strip()
    if value == "2":
        return 2
    if value in ("0", "1"):
        meaning = "IKEv1 and IKEv2" if value == "0" else "IKEv1"
        raise BadValue(f"{value} ({meaning}): IKEv1 is not supported, tunsec speaks IKEv2 only (write version = 2)")
    raise BadValue(f"not an IKE version (2): {show_value(text)}")


_DNS_NAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _is_range(text: str) -> bool:
    first, sep, last = text.partition("-")
    try:
        ipaddress.ip_address(first.strip())
        ipaddress.ip_address(last.strip())
    except ValueError:
        return False
    return bool(sep)


_ANY_ADDR: tuple[IPAddress, ...] = ()


def _parse_addrs(text: str) -> tuple[IPAddress, ...]:
    """One IP address, or ``%any`` (the empty tuple), in swanctl's list syntax.

    strongSwan also takes DNS names, subnets, ranges and several addresses;
    tunsec resolves no names, and its engine initiates to, accepts IKE from and
    binds one address per side, so the others would be accepted and never used:
    errors.
    """
    addrs: list[IPAddress] = []
    anywhere = False
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise BadValue("empty item in the list")
        if item.lower() == "%any":
            anywhere = True
        elif item.lower() in ("%any4", "%any6"):
            raise BadValue(f"{item} is not supported: write %any")
        elif "/" in item or _is_range(item):
            raise BadValue(f"subnets and ranges are not supported, write single addresses: {show_value(item)}")
        elif _DNS_NAME.fullmatch(item):
            raise BadValue(f"DNS names are not supported, write an IP address: {show_value(item)}")
        else:
            addrs.append(parse_address(item))
    if anywhere and addrs:
        raise BadValue("%any cannot be combined with addresses")
    if len(set(addrs)) != len(addrs):
        raise BadValue("an address is listed twice")
    if len(addrs) > 1:
        raise BadValue("tunsec uses one address per side (or %any): list one; IKE from or to the others "
                       "would not match this connection")
    return tuple(addrs)


def _parse_ike_proposals(text: str) -> tuple[ProposalSpec, ...]:
    try:
        return parse_proposals(text, ProtocolId.IKE)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def _parse_esp_proposals(text: str) -> tuple[ProposalSpec, ...]:
    try:
        return parse_proposals(text, ProtocolId.ESP)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def _parse_dscp(text: str) -> str:
    value = text.strip()
    if len(value) != 6 or set(value) - {"0", "1"}:
        raise BadValue(f"not a DSCP (six binary digits): {show_value(text)}")
    return value


_parse_keyingtries = int_range(0, 0xFFFFFFFF, "a number of tries")
_UNIQUE: dict[str, Unique] = {"never": "never", "no": "no", "keep": "keep", "replace": "replace"}
_parse_unique = choice("a uniqueness policy", _UNIQUE)
_parse_childless = choice(
    "a childless mode", {"allow": "allow", "never": "never", "prefer": "prefer", "force": "force"}
)


def _parse_encap(text: str) -> bool:
    if not parse_bool(text):
        raise BadValue(
            "encap = no is not supported: tunsec always encapsulates ESP in UDP (RFC 3948), since its "
            "dataplane sends and receives ESP only on UDP port 4500; write encap = yes or remove the key"
        )
    return True


_FRAGMENTATION: dict[str, FragmentationMode] = {"yes": "yes", "accept": "accept", "force": "force", "no": "no"}
_parse_fragmentation = choice("a fragmentation mode", _FRAGMENTATION)


def _parse_send_cert(text: str) -> SendCertMode:
    value = text.strip().lower()
    if value == "always":
        return "always"
    if value == "ifasked":
        return "ifasked"
    if value == "never":
        return "never"
    raise BadValue(f"not a send_cert mode (always, ifasked, never): {show_value(text)}")


_ACTIONS: dict[str, Action] = {
    "none": "none", "clear": "none", "trap": "trap", "route": "trap", "start": "start", "restart": "start",
}  # fmt: skip


def _parse_action(text: str) -> Action:
    value = text.strip().lower()
    action = _ACTIONS.get(value)
    if action is not None:
        return action
    if value.replace(" ", "") in ("trap|start", "start|trap"):
        raise BadValue("trap|start is not supported: choose trap or start")
    raise BadValue(f"not an action (none, trap, start): {show_value(text)}")


def _parse_mode(text: str) -> Literal["tunnel"]:
    value = text.strip().lower()
    if value == "tunnel":
        return "tunnel"
    if value in ("transport", "transport_proxy", "beet"):
        raise BadValue(f"{value} mode is not supported (tunsec does tunnel mode only)")
    if value in ("pass", "drop"):
        raise BadValue(f"{value} (shunt) policies are not supported (tunsec does tunnel mode only)")
    raise BadValue(f"not an IPsec mode (tunnel): {show_value(text)}")


_HW_OFFLOAD = {"no": "no", "yes": "yes", "auto": "auto", "crypto": "crypto", "packet": "packet"}


_NO_FILES: tuple[str, ...] = ()
_DYNAMIC_ONLY: tuple[Ts, ...] = (parse_ts("dynamic"),)   # strongSwan's default local_ts/remote_ts


# --------------------------------------------------------------------------
# connections { <name> { local { } remote { } children { } } }
# --------------------------------------------------------------------------

AuthMethod = Literal["psk", "pubkey", "eap-mschapv2", "eap-tls", "eap-radius"]
KeyKind = Literal["rsa", "ecdsa", "ed25519"]


@dataclass(frozen=True)
class _Auth:
    method: AuthMethod
    key_kind: KeyKind | None = None
    rsa_pss: bool = False


def _parse_auth(text: str) -> _Auth:
    value = text.strip().lower()
    simple: dict[str, _Auth] = {
        "psk": _Auth("psk"),
        "pubkey": _Auth("pubkey"),
        "rsa": _Auth("pubkey", "rsa"),
        "rsa/pss": _Auth("pubkey", "rsa", rsa_pss=True),
        "ecdsa": _Auth("pubkey", "ecdsa"),
        "ed25519": _Auth("pubkey", "ed25519"),
        "eap-mschapv2": _Auth("eap-mschapv2"),
        "eap-tls": _Auth("eap-tls"),
        "eap-radius": _Auth("eap-radius"),
    }
    if value in simple:
        return simple[value]
    if value.startswith("eap"):
        raise BadValue("of the EAP methods only eap-mschapv2, eap-tls and eap-radius are supported")
    if value.startswith("xauth"):
        raise BadValue("XAuth is IKEv1 and not supported (psk or pubkey)")
    if value.startswith("ike:") or "-" in value:
        raise BadValue(
            "signature scheme and key strength constraints are not supported "
            "(psk, pubkey, rsa, rsa/pss, ecdsa or ed25519)"
        )
    raise BadValue(f"not an authentication method (psk, pubkey, rsa, rsa/pss, ecdsa, ed25519): {show_value(text)}")


@dataclass
class _Round:
    """A parsed local or remote section, before credentials are attached."""

    section: Section
    reader: SectionReader
    auth: _Auth | None
    id: Identity | None
    certs: tuple[str, ...] = ()
    cacerts: tuple[str, ...] = ()
    eap_id: str = ""


_EAP_KEYS = ("aaa_id", "xauth_id")
_PKCS11_SECTION = "certificate sections on tokens (PKCS#11) are not supported: use {key} = FILE"


def _round_sections(r: SectionReader, prefix: str, issues: list[ConfigIssue]) -> Section | None:
    """The connection's one ``local``/``remote`` section; a second round is an error."""
    rounds = [r.subsection(name) for name in r.section.sections if name.lower().startswith(prefix)]
    found = [s for s in rounds if s is not None]
    for extra in found[1:]:
        issues.append(
            ConfigIssue(
                extra.file, extra.line, extra.path,
                f"a second {prefix} authentication round (RFC 4739) is not supported",
            )
        )  # fmt: skip
    return found[0] if found else None


def _common_round_keys(r: SectionReader, local: bool) -> tuple[_Auth | None, Identity | None]:
    r.get("round", parse_uint32, 0)  # orders rounds; tunsec has one
    auth = r.get("auth", _parse_auth, _Auth("pubkey"))
    ident = r.get("id", parse_local_identity if local else parse_identity, None)
    r.get("pubkeys", refuse("raw public keys are not supported: use certificates"), None)
    for sub in list(r.section.sections):
        low = sub.lower()
        if low.startswith(("cert", "cacert")):
            section = r.subsection(sub)
            assert section is not None
            kind = "cacerts" if low.startswith("cacert") else "certs"
            r.issues.append(ConfigIssue(section.file, section.line, section.path, _PKCS11_SECTION.format(key=kind)))
    return (None if "auth" in r.failed else auth), ident


def _read_local(section: Section | None, issues: list[ConfigIssue], parent: Section) -> _Round:
    sec = section or Section("local", parent.key_path("local"), parent.file, parent.line)
    r = SectionReader(sec, issues)
    auth, ident = _common_round_keys(r, True)
    certs = r.get("certs", parse_files, _NO_FILES)
    eap = refuse("AAA and XAuth identities are not supported")
    for key in _EAP_KEYS:
        r.get(key, eap, None)
    eap_id = r.get("eap_id", str.strip, "")
    r.finish()
    _check_eap_id(r, auth, eap_id)
    if auth is not None and auth.method == "eap-radius":
        r.error("auth", "eap-radius is for remote: the gateway relays its clients' EAP to RADIUS "
                "(a client authenticates with eap-mschapv2)")
    if auth is not None and auth.method == "psk" and certs:
        r.error("certs", "certificates are only used with auth = pubkey")
    return _Round(sec, r, auth, ident, certs=certs, eap_id=eap_id)


def _check_eap_id(r: SectionReader, auth: _Auth | None, eap_id: str) -> None:
    if eap_id and auth is not None and not auth.method.startswith("eap-"):
        r.error("eap_id", "eap_id is only used with auth = eap-mschapv2, eap-tls or eap-radius")
    if eap_id and eap_id != "%any" and auth is not None and auth.method == "eap-tls":
        try:  # the identity the client's certificate must certify
            Identity.parse(eap_id)
        except IdentityError as exc:
            r.error("eap_id", str(exc))


def _read_remote(section: Section | None, issues: list[ConfigIssue], parent: Section) -> _Round:
    sec = section or Section("remote", parent.key_path("remote"), parent.file, parent.line)
    r = SectionReader(sec, issues)
    auth, ident = _common_round_keys(r, False)
    if auth is not None and (auth.key_kind is not None or auth.rsa_pss):
        r.error("auth", "constraints on the peer's key type are not supported: write auth = pubkey")
        auth = None
    cacerts = r.get("cacerts", parse_files, _NO_FILES)
    r.get("certs", refuse("pinning the peer's certificate is not supported: trust its CA (cacerts)"), None)
    accept_only(
        r, "revocation", choice("a revocation policy", {"strict": "strict", "ifuri": "ifuri", "relaxed": "relaxed"}),
        {"relaxed"}, "revocation checking is not supported (only relaxed, the default)",
    )  # fmt: skip
    for key, why in (
        ("groups", "group membership constraints are not supported"),
        ("cert_policy", "certificate policy constraints are not supported"),
        ("ca_id", "CA identity constraints are not supported: use cacerts"),
    ):
        r.get(key, refuse(why), None)
    eap_id = r.get("eap_id", str.strip, "")
    r.finish()
    _check_eap_id(r, auth, eap_id)
    if auth is not None and auth.method == "psk" and cacerts:
        r.error("cacerts", "CA certificates are only used with auth = pubkey")
    return _Round(sec, r, auth, ident, cacerts=cacerts, eap_id=eap_id)


@dataclass
class _Draft:
    """A child as parsed; becomes a :class:`Child` once the connection is complete."""

    section: Section
    reader: SectionReader
    child: Child


def _lifetimes(r: SectionReader, what: str, parse: Callable[[str], int], default_rekey: int) -> tuple[int, int, int]:
    """(rekey, life, rand) with strongSwan's defaults: life = rekey + 10%, rand = life - rekey."""
    rekey = r.get(f"rekey_{what}", parse, None)
    life = r.get(f"life_{what}", parse, None)
    rand = r.get(f"rand_{what}", parse, None)
    rekey_v = default_rekey if rekey is None else rekey
    life_v = rekey_v * 110 // 100 if life is None else life
    rand_v = life_v - min(life_v, rekey_v) if rand is None else rand
    soft, hard = f"rekey_{what}", f"life_{what}"
    if life and rekey_v >= life and not {soft, hard} & r.failed:
        if rekey is not None:
            r.error(soft, f"must be below {hard} ({rekey} >= {life})")
        else:
            r.error(hard, f"must be above {soft} ({life} <= {rekey_v}, the default {soft})")
    return rekey_v, life_v, rand_v


_CHILD_REFUSED = (
    ("ah_proposals", "AH is not supported (tunsec does ESP only)"),
    ("interface", "restricting policies to an interface is not supported"),
    ("mark_in", "netfilter marks are not supported"),
    ("mark_in_sa", "netfilter marks are not supported"),
    ("mark_out", "netfilter marks are not supported"),
    ("set_mark_in", "netfilter marks are not supported"),
    ("set_mark_out", "netfilter marks are not supported"),
    ("if_id_in", "XFRM interface IDs are not supported"),
    ("if_id_out", "XFRM interface IDs are not supported"),
    ("label", "security labels are not supported"),
    ("label_mode", "security labels are not supported"),
)


def _read_child(section: Section, issues: list[ConfigIssue]) -> _Draft | None:
    r = SectionReader(section, issues)
    local_ts = r.get("local_ts", parse_ts_list, _DYNAMIC_ONLY)
    remote_ts = r.get("remote_ts", parse_ts_list, _DYNAMIC_ONLY)
    esp = r.get("esp_proposals", _parse_esp_proposals, None)
    mode: Literal["tunnel"] = r.get("mode", _parse_mode, "tunnel")
    start_action: Action = r.get("start_action", _parse_action, "none")
    close_action: Action = r.get("close_action", _parse_action, "none")
    dpd_action: Action = r.get("dpd_action", _parse_action, "none")
    rekey_time, life_time, rand_time = _lifetimes(r, "time", parse_duration, DEFAULT_CHILD_REKEY_TIME)
    rekey_bytes, life_bytes, rand_bytes = _lifetimes(r, "bytes", parse_bytes, 0)
    rekey_packets, life_packets, rand_packets = _lifetimes(r, "packets", parse_packets, 0)
    replay_window = r.get("replay_window", parse_replay_window, DEFAULT_REPLAY_WINDOW)
    accept_only(r, "inactivity", parse_duration, {0}, "inactivity timeouts are not supported")
    inactivity = 0
    updown: tuple[str, ...] = r.get("updown", _parse_updown, ())
    # only passed to updown scripts (PLUTO_HOST_ACCESS), as in strongSwan
    hostaccess = r.get("hostaccess", parse_bool, False)
    accept_only(r, "policies", parse_bool, {True}, "policies = no is not supported (tunsec always installs policies)")
    accept_only(r, "policies_fwd_out", parse_bool, {False}, "outbound FWD policies are not supported")
    accept_only(r, "ipcomp", parse_bool, {False}, "IPComp is not supported")
    accept_only(r, "sha256_96", parse_bool, {False}, "truncated HMAC-SHA256 is not supported (tunsec's ESP is AES-GCM)")
    accept_only(r, "hw_offload", choice("a hw_offload mode", _HW_OFFLOAD), {"no"}, "hardware offload is not supported")
    accept_only(r, "copy_df", parse_bool, {True}, "only copy_df = yes is supported")
    accept_only(r, "copy_ecn", parse_bool, {True}, "only copy_ecn = yes is supported")
    accept_only(r, "copy_dscp", choice("a copy_dscp mode", {"out": "out", "in": "in", "yes": "yes", "no": "no"}),
          {"out"}, "only copy_dscp = out is supported")  # fmt: skip
    accept_only(r, "reqid", parse_uint32, {0}, "fixed reqids are not supported")
    accept_only(r, "priority", parse_uint32, {0}, "fixed policy priorities are not supported")
    accept_only(r, "tfc_padding", lower, {"0"}, "TFC padding is not supported")
    for key, why in _CHILD_REFUSED:
        r.get(key, refuse(why), None)
    r.finish()
    check_fast_selectors(r, local_ts, remote_ts)
    if r.failed:
        return None
    config = ChildConfig(
        section.name,
        local_ts,
        remote_ts,
        esp if esp is not None else parse_proposals("default", ProtocolId.ESP),
        mode,
        rekey_time=rekey_time or None,   # the engine rekeys on time; the dataplane on bytes/packets
        rand_time=float(rand_time),      # ... rand_time earlier at most (strongSwan's jitter)
    )
    child = Child(
        section.name,
        config,
        start_action=start_action,
        close_action=close_action,
        dpd_action=dpd_action,
        rekey_time=rekey_time,
        life_time=life_time,
        rand_time=rand_time,
        rekey_bytes=rekey_bytes,
        life_bytes=life_bytes,
        rand_bytes=rand_bytes,
        rekey_packets=rekey_packets,
        life_packets=life_packets,
        rand_packets=rand_packets,
        replay_window=replay_window,
        inactivity=inactivity,
        updown=updown,
        hostaccess=hostaccess,
        file=section.file,
        line=section.line,
    )
    return _Draft(section, r, child)


def _parse_updown(text: str) -> tuple[str, ...]:
    """``updown``: a script (with arguments) run without a shell; it must exist and be executable now."""
    try:
        argv = parse_command(text)
    except UpdownError as exc:
        raise BadValue(str(exc)) from None
    if not os.path.isfile(argv[0]) or not os.access(argv[0], os.X_OK):
        raise BadValue(f"{argv[0]} is not an executable file (chmod +x it, or fix the path)")
    return argv


def _read_children(r: SectionReader, issues: list[ConfigIssue]) -> list[_Draft] | None:
    """The connection's children; None if one of them is broken (already reported)."""
    section = r.subsection("children")
    if section is None or (not section.sections and not section.settings):
        if not r.section.damaged and (section is None or not section.damaged):
            r.error("children", "a connection needs at least one child ('children { NAME { ... } }')")
        return None
    for name, setting in section.settings.items():
        issues.append(
            ConfigIssue(
                setting.file, setting.line, section.key_path(name),
                "children takes one section per child ('NAME { local_ts = ... }'), not keys",
            )
        )  # fmt: skip
    drafts = [_read_child(sub, issues) for sub in section.sections.values()]
    if section.settings or any(d is None for d in drafts):
        return None
    return [d for d in drafts if d is not None]


_CONN_REFUSED = (
    ("if_id_in", "XFRM interface IDs are not supported"),
    ("if_id_out", "XFRM interface IDs are not supported"),
    ("ppk_id", "postquantum preshared keys (PPK) are not supported"),
    ("mediated_by", "mediation is not supported"),
    ("mediation_peer", "mediation is not supported"),
)


@dataclass
class _ConnContext:
    creds: Credentials
    psks: Sequence[IkeSecret]
    psks_broken: bool  # a secrets.ike entry had errors: a missing PSK may be that one
    issues: list[ConfigIssue]
    retransmit: RetransmitConfig
    half_open_timeout: float
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    pools: Mapping[str, int] = field(default_factory=dict)  # pools.<name> -> IP version
    radius: bool = False  # radius { servers { } } names at least one server (for auth = eap-radius)


def _parse_vips(text: str) -> tuple[IPAddress, ...]:
    """``vips``: addresses to request; 0.0.0.0 and :: ask for any address of that family."""
    out: list[IPAddress] = []
    for item in (i.strip() for i in text.split(",")):
        try:
            addr = ipaddress.ip_address(item)
        except ValueError:
            raise BadValue(f"not an IPv4 or IPv6 address (0.0.0.0 or :: for any): {show_value(item)}") from None
        if addr.is_multicast or addr.is_loopback:
            raise BadValue(f"{addr} cannot be a virtual IP")
        if addr in out or any(a.version == addr.version for a in out):
            raise BadValue(f"one virtual IP per address family (got {show_value(text)})")
        out.append(addr)
    return tuple(out)


def _parse_pool_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise BadValue(f"a list of pool names: {show_value(text)}")
    return names


def _check_pools(r: SectionReader, names: tuple[str, ...], known: Mapping[str, int]) -> None:
    missing = [n for n in names if n not in known]
    if missing:
        have = ", ".join(sorted(known)) or "none"
        r.error("pools", f"no pool {', '.join(missing)} in pools {{ }} (configured: {have})")


def _ike_lifetimes(r: SectionReader) -> tuple[int, int, int, int]:
    """(rekey, reauth, over, rand) with strongSwan's defaults (vici_config.c)."""
    rekey = r.get("rekey_time", parse_duration, None)
    reauth = r.get("reauth_time", parse_duration, None)
    over = r.get("over_time", parse_duration, None)
    rand = r.get("rand_time", parse_duration, None)
    if reauth:
        r.error("reauth_time", "reauthentication is not supported (tunsec rekeys IKE SAs: use rekey_time)")
    if rekey is None and reauth is None:
        rekey, reauth = DEFAULT_IKE_REKEY_TIME, 0
    rekey, reauth = rekey or 0, reauth or 0
    if over is None:
        # at least a second: 10% of a rekey_time under 10 s rounds to 0, and an IKE SA whose hard
        # lifetime falls on its rekey time expires instead of rekeying
        over = max(max(rekey, reauth) // 10, 1) if rekey or reauth else 0
    if rand is None:
        rand = min(rekey, reauth) if rekey and reauth else max(rekey, reauth)
        rand = min(over, rand // 2)
    return rekey, reauth, over, rand


def _parse_redirect_to(text: str) -> str:
    """``redirect_to``: the gateway (an IPv4 or IPv6 address, or an FQDN) new clients are redirected to."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        if is_fqdn(text.strip()):
            return text.strip()   # sent as GW Ident type FQDN: each client resolves it
        raise BadValue(f"not an IPv4 or IPv6 address or a host name: {show_value(text)}") from None
    if addr.is_unspecified or addr.is_multicast:
        raise BadValue(f"{addr} cannot be a gateway to redirect to")
    return str(addr)


def _parse_redirect_when(text: str) -> int:
    """``redirect_when``: ``always`` (0), or the number of IKE SAs held from which on clients are redirected."""
    if text.strip() == "always":
        return 0
    if not text.strip().isdigit() or not 1 <= int(text) <= 0xFFFFFFFF:
        raise BadValue(f"expected always or a number of IKE SAs (1 or more), got {show_value(text)}")
    return int(text)


def _parse_redirect_on(text: str) -> RedirectOn:
    """``redirect_on``: ``init`` (answer IKE_SA_INIT) or ``auth`` (authenticate the client first)."""
    value = text.strip()
    if value == "init":
        return "init"
    if value == "auth":
        return "auth"
    raise BadValue(f"expected init or auth, got {show_value(text)}")


def _read_connection(section: Section, ctx: _ConnContext) -> Connection | None:
    issues = ctx.issues
    r = SectionReader(section, issues)
    r.get("version", _parse_version, 2)
    local_addrs = r.get("local_addrs", _parse_addrs, _ANY_ADDR)
    remote_addrs = r.get("remote_addrs", _parse_addrs, _ANY_ADDR)
    local_port = r.get("local_port", parse_port, IKE_PORT)
    if local_port == NATT_PORT:
        # strongSwan would start on its NAT-T socket; ours is the worker's, which sends IKE only
        # with the non-ESP marker and takes a datagram without one as ESP
        r.error("local_port", "IKE cannot start on port 4500 here: it is the dataplane's ESP-in-UDP port, where "
                "IKE moves after IKE_SA_INIT; use local_port 500 (the default) or another free port")
    remote_port = r.get("remote_port", parse_port, IKE_PORT)
    proposals = r.get("proposals", _parse_ike_proposals, None)
    r.get("encap", _parse_encap, True)  # tunsec forces UDP encapsulation, as encap = yes does
    mobike = r.get("mobike", parse_bool, True)   # RFC 4555; strongSwan's default
    dpd_delay = r.get("dpd_delay", parse_duration, 0)
    r.get("dpd_timeout", parse_duration, 0)  # IKEv1 only: no effect on IKEv2 in strongSwan either
    # IKE fragmentation (RFC 7383): strongSwan's modes and default (see tunsec.ike.fragments)
    fragmentation: FragmentationMode = r.get("fragmentation", _parse_fragmentation, "yes")
    send_certreq = r.get("send_certreq", parse_bool, True)
    send_cert: SendCertMode = r.get("send_cert", _parse_send_cert, "ifasked")
    keyingtries = r.get("keyingtries", _parse_keyingtries, 1)
    unique: Unique = r.get("unique", _parse_unique, "no")
    rekey_time, _reauth_time, over_time, rand_time = _ike_lifetimes(r)   # reauth_time: 0 only
    accept_only(r, "aggressive", parse_bool, {False}, "Aggressive Mode is IKEv1 and not supported")
    accept_only(r, "pull", parse_bool, {True}, "push mode (IKEv1 Mode Config) is not supported")
    accept_only(r, "dscp", _parse_dscp, {"000000"}, "setting a DSCP on IKE packets is not supported")
    accept_only(r, "childless", _parse_childless, {"allow", "never"}, "childless IKE SAs are not supported")
    accept_only(r, "ppk_required", parse_bool, {False}, "postquantum preshared keys (PPK) are not supported")
    accept_only(r, "mediation", parse_bool, {False}, "mediation is not supported")
    for key, why in _CONN_REFUSED:
        r.get(key, refuse(why), None)
    vips: tuple[IPAddress, ...] = r.get("vips", _parse_vips, ())
    pools: tuple[str, ...] = r.get("pools", _parse_pool_names, ())
    redirect_to: str | None = r.get("redirect_to", _parse_redirect_to, None)
    redirect_when: int = r.get("redirect_when", _parse_redirect_when, 0)
    redirect_on: RedirectOn = r.get("redirect_on", _parse_redirect_on, "init")
    for key in ("redirect_when", "redirect_on"):
        if key in section.settings and not {"redirect_to", key} & r.failed and redirect_to is None:
            r.error(key, f"{key} needs redirect_to (the gateway to send clients to)")
    if pools:
        _check_pools(r, pools, ctx.pools)
    local = _read_local(_round_sections(r, "local", issues), issues, section)
    remote = _read_remote(_round_sections(r, "remote", issues), issues, section)
    drafts = _read_children(r, issues)
    r.finish()

    if local_addrs and remote_addrs and not {a.version for a in local_addrs} & {a.version for a in remote_addrs}:
        r.error("remote_addrs", "no address family in common with local_addrs")
    if drafts is not None:
        for draft in drafts:
            if draft.child.start_action != "none" and not remote_addrs and "remote_addrs" not in r.failed:
                draft.reader.error(
                    "start_action",
                    f"start_action = {draft.child.start_action} needs a peer to initiate to (remote_addrs is %any)",
                )
    if r.failed or local.reader.failed or remote.reader.failed or drafts is None:
        return None
    if any(d.reader.failed for d in drafts) or local.auth is None or remote.auth is None:
        return None

    local_auth = _local_auth(local, local_addrs, ctx)
    remote_auth = _remote_auth(remote, ctx)
    if local_auth is None or remote_auth is None:
        return None
    psk: Secret | None = None
    if "psk" in (local_auth.method, remote_auth.method):
        entry = find_psk(ctx.psks, local_auth.id, remote_auth.id)
        if entry is None and ctx.psks_broken:
            return None
        if entry is None:
            where = local if local_auth.method == "psk" else remote
            where.reader.error(
                "auth",
                f"no PSK in secrets for local id {local_auth.id} and remote id {remote_auth.id} "
                "(add a secrets.ike-NAME section with their ids and the secret)",
            )
            return None
        psk = entry.secret
    children = tuple(d.child for d in drafts)
    try:
        ike = IkeConfig(
            section.name,
            local_auth,
            remote_auth,
            proposals if proposals is not None else parse_proposals("default", ProtocolId.IKE),
            tuple(c.config for c in children),
            psk=psk,
            eap_secrets=_eap_secrets(ctx.psks) if "eap-mschapv2" in (local_auth.method, remote_auth.method) else (),
            local_addr=str(local_addrs[0]) if local_addrs else None,
            remote_addr=str(remote_addrs[0]) if remote_addrs else None,
            local_port=local_port,
            remote_port=remote_port,
            send_certreq=send_certreq,
            retransmit=ctx.retransmit,
            half_open_timeout=ctx.half_open_timeout,
            # strongSwan 5.9 sends INITIAL_CONTACT (if it has no SA with the peer) unless unique = never.
            initial_contact=unique != "never",
            rekey_time=rekey_time or None,
            rand_time=float(rand_time),
            over_time=float(over_time),   # the hard lifetime: deleted over_time after the rekey was due
            send_cert=send_cert,
            dpd_delay=dpd_delay or None,
            vips=vips,
            pools=pools,
            fragmentation=fragmentation,
            fragment_size=ctx.fragment_size,
            redirect_to=redirect_to,
            redirect_when=redirect_when,
            redirect_on=redirect_on,
            mobike=mobike,
        )
    except ValueError as exc:  # the engine's own consistency checks; the checks above should cover them
        issues.append(ConfigIssue(section.file, section.line, section.path, str(exc)))
        return None
    return Connection(
        section.name,
        ike,
        children,
        local_addrs=local_addrs,
        remote_addrs=remote_addrs,
        keyingtries=keyingtries,
        unique=unique,
        file=section.file,
        line=section.line,
    )


def _local_auth(local: _Round, local_addrs: tuple[IPAddress, ...], ctx: _ConnContext) -> LocalAuth | None:
    assert local.auth is not None
    r = local.reader
    if local.auth.method == "eap-tls":
        r.error("auth", "eap-tls authenticates clients (remote.auth); as a client tunsec has eap-mschapv2")
        return None
    if local.auth.method == "psk":
        ident = local.id
        if ident is None:
            if len(local_addrs) != 1:
                r.error(
                    "id",
                    "required with auth = psk unless local_addrs is one address "
                    "(strongSwan would use the address in use; tunsec needs it written down)",
                )
                return None
            ident = Identity.parse(str(local_addrs[0]))
        return LocalAuth("psk", ident)
    if local.auth.method == "eap-mschapv2":
        if local.id is None:
            r.error("id", "required with auth = eap-mschapv2 (the IKE identity we send)")
            return None
        user = local.eap_id or str(local.id)
        if not any(user in s.ids for s in _eap_secrets(ctx.psks)):
            r.error("auth", f"no EAP password for {user!r}: add a secrets.eap-NAME section with id = {user}")
            return None
        return LocalAuth("eap-mschapv2", local.id, eap_id=local.eap_id)
    found = _own_certificate(local, ctx)
    if found is None:
        return None
    cert, key = found
    ident = local.id if local.id is not None else Identity.from_name(cert.subject)
    kind = key_kind(key)
    if local.auth.key_kind is not None and local.auth.key_kind != kind:
        r.error("auth", f"auth wants an {local.auth.key_kind} key but the certificate has an {kind} key")
        return None
    return LocalAuth(
        "pubkey",
        ident,
        cert=cert,
        intermediates=ctx.creds.chain(cert),
        private_key=key,
        rsa_pss=local.auth.rsa_pss,
    )


def _own_certificate(local: _Round, ctx: _ConnContext) -> tuple[x509.Certificate, PrivateKey] | None:
    """The local certificate and its private key, by ``certs`` or (like strongSwan) by id in x509/."""
    if local.certs:
        return _listed_certificate(local, ctx)
    r, creds = local.reader, ctx.creds
    if local.id is None:
        r.error(
            "certs", "auth = pubkey needs a certificate: list it in certs (or give an id a certificate in x509/ has)"
        )
        return None
    candidates = [(path, cert) for path, cert in creds.own_certificates() if certificate_has_identity(cert, local.id)]
    with_key = [(path, cert, key) for path, cert in candidates if (key := creds.key_for(cert)) is not None]
    if len(with_key) == 1:
        return with_key[0][1], with_key[0][2]
    if not with_key:
        r.error(
            "certs", f"auth = pubkey needs a certificate: no certificate with a private key in x509/ has id {local.id}"
        )
    else:
        names = ", ".join(creds.shown(path) for path, _, _ in with_key)
        r.error("certs", f"several certificates in x509/ have id {local.id} ({names}): choose one in certs")
    return None


def _listed_certificate(local: _Round, ctx: _ConnContext) -> tuple[x509.Certificate, PrivateKey] | None:
    """``certs = a.pem, b.pem`` lists candidates: the first that has the local id (and a private key) is used.

    Without an id, the first certificate is used and its subject becomes the id,
    as in strongSwan. (strongSwan may pick another candidate by the peer's
    CERTREQ; tunsec decides when the config is loaded.)
    """
    r, creds = local.reader, ctx.creds
    loaded: list[tuple[str, x509.Certificate]] = []
    for name in local.certs:
        path = creds.path(X509_DIR, name)
        try:
            loaded.append((path, load_certificate(path)))
        except BadValue as exc:
            r.error("certs", f"{creds.shown(path)}: {exc}")
    if len(loaded) < len(local.certs):
        return None
    if local.id is None:
        matching = loaded[:1]
    else:
        matching = [(path, cert) for path, cert in loaded if certificate_has_identity(cert, local.id)]
        if not matching:
            listed = ", ".join(f"{creds.shown(path)} ({subject_name(cert)})" for path, cert in loaded)
            plural = "s" if len(loaded) > 1 else ""
            r.error("id", f"is not in the certificate{plural} {listed} as subject or subjectAltName")
            return None
    for _path, cert in matching:
        key = creds.key_for(cert)
        if key is not None:
            return cert, key
    listed = ", ".join(f"{creds.shown(path)} ({subject_name(cert)})" for path, cert in matching)
    r.error("certs", f"no private key for {listed} in " + ", ".join(f"{d}/" for d in KEY_DIRS))
    return None


def _remote_auth(remote: _Round, ctx: _ConnContext) -> RemoteAuth | None:
    assert remote.auth is not None
    ident = remote.id if remote.id is not None else Identity.any()
    if remote.auth.method == "psk":
        return RemoteAuth("psk", ident)
    if remote.auth.method == "eap-mschapv2":
        return RemoteAuth("eap-mschapv2", ident, eap_id=remote.eap_id)
    if remote.auth.method == "eap-radius":
        if not ctx.radius:
            remote.reader.error("auth", "auth = eap-radius needs a RADIUS server: add radius { servers { NAME { "
                                "address = ..., secret = ... } } }")
            return None
        return RemoteAuth("eap-radius", ident, eap_id=remote.eap_id)
    # pubkey, or eap-tls: both verify a client certificate against the CAs
    method = remote.auth.method
    r, creds = remote.reader, ctx.creds
    cas: list[x509.Certificate] = []
    for name in remote.cacerts:
        path = creds.path(X509CA_DIR, name)
        try:
            cert = load_certificate(path)
        except BadValue as exc:
            r.error("cacerts", f"{creds.shown(path)}: {exc}")
            continue
        if not is_ca(cert):
            r.error("cacerts", f"{creds.shown(path)}: {subject_name(cert)} is not a CA certificate")
            continue
        cas.append(cert)
    if "cacerts" in r.failed:
        return None
    if not remote.cacerts:
        cas = creds.trusted_cas()
    if not cas:
        r.error(
            "auth",
            f"auth = {method} needs a CA certificate to verify the peer: put it in x509ca/, "
            "in authorities or in remote.cacerts",
        )
        return None
    return RemoteAuth(method, ident, tuple(dict.fromkeys(cas)), eap_id=remote.eap_id)


def _eap_secrets(entries: Sequence[IkeSecret]) -> tuple[EapSecret, ...]:
    """The ``secrets.eap*`` entries as the engine wants them: passwords by user name."""
    return tuple(EapSecret(tuple(str(i) for i in e.ids), e.secret) for e in entries if e.eap)


def _uses_pubkey(section: Section) -> bool:
    """Whether a connection may need certificates (unparsable auth values count as no)."""
    for prefix in ("local", "remote"):
        sub = next((s for n, s in section.sections.items() if n.lower().startswith(prefix)), None)
        setting = sub.settings.get("auth") if sub is not None else None
        if setting is None or setting.value == "":
            return True  # strongSwan's default is pubkey
        try:
            if _parse_auth(setting.value).method in ("pubkey", "eap-tls"):
                return True
        except BadValue:
            pass
    return False


# --------------------------------------------------------------------------
# Entry point, and what the daemon asks of the connections
# --------------------------------------------------------------------------


def read_connections(
    section: Section,
    creds: Credentials,
    psks: Sequence[IkeSecret],
    issues: list[ConfigIssue],
    *,
    psks_broken: bool = False,
    retransmit: RetransmitConfig | None = None,
    half_open_timeout: float = 30.0,
    pools: Mapping[str, int] | None = None,
    fragment_size: int = DEFAULT_FRAGMENT_SIZE,
    radius: bool = False,
) -> tuple[Connection, ...]:
    """The valid connections of ``connections { }``; every problem goes to ``issues``.

    ``psks`` are the ``secrets.ike*`` entries (``psks_broken``: one of them had
    errors, so a connection without a PSK says nothing more); ``retransmit``,
    ``half_open_timeout`` and ``fragment_size`` come from ``tunsec { }`` and go into
    every ``IkeConfig``; ``pools`` names the configured address pools (their IP
    version), which ``connections.X.pools`` may use; ``radius``: RADIUS servers are
    configured, so ``auth = eap-radius`` may be used.
    """
    ctx = _ConnContext(creds, psks, psks_broken, issues, retransmit or RetransmitConfig(), half_open_timeout,
                       fragment_size=fragment_size, pools=dict(pools or {}), radius=radius)
    for name, setting in section.settings.items():
        issues.append(
            ConfigIssue(
                setting.file, setting.line, section.key_path(name),
                "connections takes one section per connection ('NAME { ... }'), not keys",
            )
        )  # fmt: skip
    if any(_uses_pubkey(sub) for sub in section.sections.values()):
        creds.trusted_cas()  # report problems in x509ca/ even if no connection gets that far
    connections = [_read_connection(sub, ctx) for sub in section.sections.values()]
    return tuple(c for c in connections if c is not None)


def find_child(connections: Sequence[Connection], child: str, ike: str | None = None) -> Connection:
    """The connection ``--child CHILD [--ike IKE]`` means; :class:`LookupError` says why there is none.

    Child names may repeat across connections (strongSwan's examples call every
    connection's child ``net``); then ``--ike`` must say which one.
    """
    if ike:
        conn = next((c for c in connections if c.name == ike), None)
        if conn is None:
            raise LookupError(f"no connection {ike!r}")
        if child and all(ch.name != child for ch in conn.children):
            names = ", ".join(ch.name for ch in conn.children)
            raise LookupError(f"connection {ike} has no child {child!r} (its children: {names})")
        return conn
    candidates = [c for c in connections if any(ch.name == child for ch in c.children)]
    if not candidates:
        raise LookupError(f"no child {child!r} in any connection")
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise LookupError(f"child {child!r} is in several connections ({names}): choose one with --ike")
    return candidates[0]


def ike_endpoints(connections: Sequence[Connection]) -> dict[int, str]:
    """Per outer family, the address IKE and ESP use: the connections' local_addrs, or any."""
    out: dict[int, str] = {}
    for c in connections:
        addr = c.ike.local_addr
        if addr:
            ip = ipaddress.ip_address(addr)
            wildcard = "0.0.0.0" if ip.version == 4 else "::"
            out[ip.version] = str(ip) if out.get(ip.version, str(ip)) == str(ip) else wildcard
            continue
        remote = c.ike.remote_addr
        fams = {ipaddress.ip_address(remote).version} if remote else {4, 6}
        for fam in fams:
            out.setdefault(fam, "0.0.0.0" if fam == 4 else "::")
    return out


def port_warnings(connections: Sequence[Connection]) -> list[ConfigIssue]:
    """Connections whose IKE and ESP in UDP stay on the peer's custom remote_port after IKE_SA_INIT
    (neither end on 500: strongSwan's float_ports keeps the peer's port, and so do we): fine with
    strongSwan, which takes ESP on any of its ports; a tunsec peer takes it only on 4500."""
    return [ConfigIssue(c.file, c.line, f"connections.{c.ike.name}.remote_port",
                        f"IKE and ESP in UDP stay on the peer's port {c.ike.remote_port} after IKE_SA_INIT (neither "
                        f"end is on port 500, as strongSwan floats); a tunsec peer takes ESP only on port 4500 and "
                        f"drops it there: for a tunsec peer use remote_port = 4500")
            for c in connections
            if c.local_port != IKE_PORT and c.ike.remote_port not in (IKE_PORT, NATT_PORT)
            and c.ike.remote_addr not in ANY_ADDRESS]


def unserved_sources(connections: Iterable[Connection], sockets: Iterable[tuple[int, str, int]]) -> list[str]:
    """What is wrong, one line per connection, if an initiator's IKE_SA_INIT could not leave from its
    local_addrs (or any address) and local_port: no socket among ``sockets`` ((family, bound address,
    port)) is bound there.  A responder answers from the socket a request came in on."""
    keys = set(sockets)
    out = []
    for c in connections:
        if not c.ike.remote_addr:
            continue
        fam = ipaddress.ip_address(c.ike.remote_addr).version
        wildcard = "0.0.0.0" if fam == 4 else "::"
        wanted = {c.ike.local_addr, wildcard} if c.ike.local_addr else {a for f, a, _ in keys if f == fam}
        if not any((fam, addr, c.local_port) in keys for addr in wanted):
            src = f"{c.ike.local_addr or f'any IPv{fam} address'} port {c.local_port}"
            out.append(f"connection {c.name}: no IKE socket to send IKE_SA_INIT to {c.ike.remote_addr} from "
                       f"{src}: tunsec binds {_bound(keys, fam)}; set the connection's local_addrs and "
                       "local_port to one of those, or restart tunsec to bind them")
    return out


def _bound(keys: set[tuple[int, str, int]], family: int) -> str:
    have = sorted(f"{addr} port {port}" for fam, addr, port in keys if fam == family)
    return ", ".join(have) or f"no IPv{family} IKE socket"
