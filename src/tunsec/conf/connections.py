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

The connection's sections are read where they live: ``children { }`` in
:mod:`tunsec.conf.children` (:class:`Child` is re-exported here), ``local { }``
and ``remote { }`` in :mod:`tunsec.conf.auth_rounds`. Certificates and keys
come from :mod:`tunsec.conf.credentials`, PSKs from :mod:`tunsec.conf.secrets`
(:func:`~tunsec.conf.secrets.find_psk`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tunsec.conf.auth_rounds import (
    check_eap_client,
    eap_secrets,
    make_local_auth,
    make_remote_auth,
    read_local,
    read_remote,
    round_section,
    uses_pubkey,
)
from tunsec.conf.children import DEFAULT_CHILD_REKEY_TIME, Action, Child, ChildDraft, read_children, rekey_limit
from tunsec.conf.credentials import Credentials
from tunsec.conf.errors import BadValue, ConfigIssue, show_value
from tunsec.conf.reader import SectionReader, accept_only, refuse_keys
from tunsec.conf.secrets import IkeSecret, find_own_psk, find_psk, psk_entries
from tunsec.conf.syntax import Section
from tunsec.conf.values import (
    IPAddress,
    choice,
    int_range,
    parse_address,
    parse_bool,
    parse_duration,
    parse_port,
    refuse,
)
from tunsec.ike.config import (
    DEFAULT_MAX_CHILD_SAS,
    DEFAULT_MAX_IKE_SAS,
    IkeConfig,
    RedirectOn,
    RetransmitConfig,
    SendCertMode,
)
from tunsec.ike.constants import IKE_PORT, NATT_PORT, ProtocolId
from tunsec.ike.fragments import DEFAULT_FRAGMENT_SIZE, FragmentationMode
from tunsec.ike.proposals import ProposalSpec, parse_proposals
from tunsec.ike.psk import PskEntry
from tunsec.ike.redirect import is_fqdn
from tunsec.ike.secret import Secret
from tunsec.policy.pad import ANY_ADDRESS

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

Unique = Literal["never", "no", "keep", "replace"]

# strongSwan's default (vici_config.c): IKE SA rekeying every 4 h (children: DEFAULT_CHILD_REKEY_TIME).
DEFAULT_IKE_REKEY_TIME = 4 * 3600


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
        child = self.get_child(name)
        if child is None:
            raise KeyError(f"connection {self.name} has no child {name!r}")
        return child

    def get_child(self, name: str) -> Child | None:
        """The child ``name``, or None: what an SA negotiated may have been renamed or removed by a reload."""
        for child in self.children:   # (a loop: an unfinished generator is closed with a GeneratorExit)
            if child.name == name:
                return child
        return None


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


# --------------------------------------------------------------------------
# connections { <name> { ... } }: the keys of the connection itself (local { },
# remote { }: tunsec.conf.auth_rounds; children { }: tunsec.conf.children)
# --------------------------------------------------------------------------

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
    max_child_sas: int = DEFAULT_MAX_CHILD_SAS
    max_ike_sas: int = DEFAULT_MAX_IKE_SAS
    follow_redirects: bool = True
    pools: Mapping[str, int] = field(default_factory=dict)  # pools.<name> -> IP version
    radius: bool = False  # radius { servers { } } names at least one server (for auth = eap-radius)
    radius_groups: bool = False  # radius { class_group/filter_id = yes }: Accepts give groups (remote.groups)


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


def _refuse_initiating(draft: ChildDraft) -> None:
    """A child of a connection of %any (no ``remote_addrs``) never starts on its own: it has no peer to.
    Its dpd_action/close_action load (strongSwan configs carry them): what they do there is a warning's
    (any_peer_action_warnings)."""
    if draft.child.start_action != "none":
        draft.reader.error("start_action", f"start_action = {draft.child.start_action} needs a peer to initiate "
                                           "to (remote_addrs is %any)")


def any_peer_action_warnings(connections: Sequence[Connection]) -> list[ConfigIssue]:
    """dpd_action/close_action of a connection of %any: a lost peer's child comes back only towards that
    peer (services/ike/reestablish.py, as strongSwan's reestablish; not into another peer's IKE SA: review
    revvanish F1), never where we leased it a virtual IP or used EAP (it reconnects by itself), and trap
    installs nothing (a trap would be every peer's remote_ts)."""
    out = []
    for c in connections:
        if c.remote_addrs:
            continue
        for ch in c.children:
            for key in ("dpd_action", "close_action"):
                action = getattr(ch, key)
                if action == "trap":
                    what = "installs no trap after a peer is lost (remote_addrs is %any: it would hold every peer's " \
                           "remote_ts); use none"
                elif action == "start":
                    what = "sets a lost peer's child up again towards that peer's own address and identity only, and " \
                           "not at all for peers leased a virtual IP or authenticated with EAP (they reconnect by " \
                           "themselves)"
                else:
                    continue
                out.append(ConfigIssue(c.file, c.line, f"connections.{c.name}.children.{ch.name}.{key}",
                                       f"{key} = {action} on a connection of %any {what}"))
    return out


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
    local = read_local(round_section(r, "local", issues), issues, section)
    remote = read_remote(round_section(r, "remote", issues), issues, section)
    drafts = read_children(r, issues)
    r.finish()

    if local_addrs and remote_addrs and not {a.version for a in local_addrs} & {a.version for a in remote_addrs}:
        r.error("remote_addrs", "no address family in common with local_addrs")
    if drafts is not None and not remote_addrs and "remote_addrs" not in r.failed:
        for draft in drafts:
            _refuse_initiating(draft)
    if r.failed or local.reader.failed or remote.reader.failed or drafts is None:
        return None
    if any(d.reader.failed for d in drafts) or local.auth is None or remote.auth is None:
        return None

    if not check_eap_client(local, remote):
        return None
    local_auth = make_local_auth(local, local_addrs, ctx.creds, ctx.psks)
    remote_auth = make_remote_auth(remote, ctx.creds, ctx.radius, ctx.radius_groups)
    if local_auth is None or remote_auth is None:
        return None
    psk: Secret | None = None
    psk_name = ""
    peer_psks: tuple[PskEntry, ...] = ()
    if "psk" in (local_auth.method, remote_auth.method):
        entry = find_own_psk(ctx.psks, local_auth.id, remote_auth.id)
        if remote_auth.id.is_any:
            # which entry is the peer's, its IDi tells (ike/psk.py): not one picked here for all of them
            peer_psks = psk_entries(ctx.psks)
        if entry is None and ctx.psks_broken:
            return None
        # with none for %any, only a connection that merely responds, and by PSK both ways, can run:
        # a peer's IDi picks both AUTH keys; it never initiates, nor verifies a certificate then signs with a PSK
        responds_by_peer = bool(peer_psks) and local_auth.method == remote_auth.method == "psk" and not remote_addrs
        if entry is None and not responds_by_peer:
            where = local if local_auth.method == "psk" else remote
            theirs = find_psk(ctx.psks, local_auth.id, remote_auth.id) if remote_auth.id.is_any else None
            where.reader.error(
                "auth",
                f"no PSK in secrets for local id {local_auth.id} and remote id {remote_auth.id} "
                "(add a secrets.ike-NAME section with their ids and the secret)" if theirs is None else
                f"remote id %any proves and accepts only a group key (an entry naming no identity but "
                f"{local_auth.id}): secrets.{theirs.name} names another identity, it is that one's key "
                "(set remote.id to the peer's identity, or add a group key)",
            )
            return None
        psk, psk_name = (entry.secret, entry.name) if entry is not None else (None, "")
    children = tuple(d.child for d in drafts)
    try:
        ike = IkeConfig(
            section.name,
            local_auth,
            remote_auth,
            proposals if proposals is not None else parse_proposals("default", ProtocolId.IKE),
            tuple(c.config for c in children),
            psk=psk,
            peer_psks=peer_psks,
            psk_name=psk_name,
            eap_secrets=eap_secrets(ctx.psks) if "eap-mschapv2" in (local_auth.method, remote_auth.method) else (),
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
            max_child_sas=ctx.max_child_sas,
            max_ike_sas=ctx.max_ike_sas,
            follow_redirects=ctx.follow_redirects,
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
    max_child_sas: int = DEFAULT_MAX_CHILD_SAS,
    max_ike_sas: int = DEFAULT_MAX_IKE_SAS,
    follow_redirects: bool = True,
    radius: bool = False,
    radius_groups: bool = False,
) -> tuple[Connection, ...]:
    """The valid connections of ``connections { }``; every problem goes to ``issues``.

    ``psks`` are the ``secrets.ike*`` entries (``psks_broken``: one of them had
    errors, so a connection without a PSK says nothing more); ``retransmit``,
    ``half_open_timeout``, ``fragment_size``, ``max_child_sas``, ``max_ike_sas`` and ``follow_redirects``
    come from ``tunsec { }`` and go into every ``IkeConfig``; ``pools`` names the configured address pools (their IP
    version), which ``connections.X.pools`` may use; ``radius``: RADIUS servers are
    configured, so ``auth = eap-radius`` may be used; ``radius_groups``: their Access-Accepts
    give group memberships, so ``remote.groups`` may be used.
    """
    ctx = _ConnContext(creds, psks, psks_broken, issues, retransmit or RetransmitConfig(), half_open_timeout,
                       fragment_size=fragment_size, max_child_sas=max_child_sas, max_ike_sas=max_ike_sas,
                       follow_redirects=follow_redirects,
                       pools=dict(pools or {}), radius=radius, radius_groups=radius_groups)
    refuse_keys(section, issues, "connections takes one section per connection ('NAME { ... }'), not keys")
    if any(uses_pubkey(sub) for sub in section.sections.values()):
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
