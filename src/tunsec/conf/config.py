"""A whole tunsec config file: :func:`load_config` / :func:`parse_config` -> :class:`Config`.

The file is strongSwan's swanctl.conf plus a ``tunsec { }`` section. The
syntax is read by :mod:`tunsec.conf.syntax`; each top-level section then has
its own module (see ``_TOP_LEVEL`` and the package docstring). Every problem
becomes a :class:`~tunsec.conf.errors.ConfigIssue` naming file, line and key;
all of them are raised together as one :class:`~tunsec.conf.errors.ConfigError`,
so ``tunsec check`` shows everything at once.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tunsec.conf.authorities import read_authorities
from tunsec.conf.connections import Connection, any_peer_action_warnings, port_warnings, read_connections
from tunsec.conf.credentials import Credentials, credential_owners
from tunsec.conf.errors import ConfigError, ConfigIssue
from tunsec.conf.filecheck import FileCheck, refusal_line
from tunsec.conf.lifetime_warnings import rand_limit_warnings
from tunsec.conf.manual import ManualTunnel, ike_inside_manual_warnings, read_manual_section
from tunsec.conf.named_overlap import named_overlap_warnings
from tunsec.conf.pools import pool_ts_warnings, read_pools
from tunsec.conf.radius import radius_warnings, read_radius, unproven_warnings
from tunsec.conf.readable import files_holding_keys, readable_secret_warnings
from tunsec.conf.secrets import IkeSecret, read_secrets, weak_psk_warnings
from tunsec.conf.syntax import ReadRecord, Refused, Section, Unreadable, parse_tree, read_config_source, withhold_tails
from tunsec.conf.tunsec_section import TunsecSettings, read_tunsec_section
from tunsec.policy.pools import PoolConfig
from tunsec.radius.settings import RadiusSettings

__all__ = ["Config", "ConfigRefused", "load_config", "parse_config"]


class ConfigRefused(ConfigError):
    """As root with root_check: a file of the configuration anyone but root may change (or replaced while
    read); nothing of it is to be acted on.  One line per file refused, each with its fix."""


@dataclass(frozen=True)
class Config:
    """A validated configuration file.

    ``connections`` are the IKEv2 connections, as the IKE service runs them
    (:class:`~tunsec.conf.connections.Connection`); ``ike_secrets`` the
    ``secrets.ike*`` PSKs (already in the connections that use them);
    ``warnings`` are accepted values worth a log line (weak PSKs).
    """

    path: str
    tunsec: TunsecSettings = field(default_factory=TunsecSettings)
    manual: tuple[ManualTunnel, ...] = ()
    connections: tuple[Connection, ...] = ()
    ike_secrets: tuple[IkeSecret, ...] = ()
    pools: tuple[PoolConfig, ...] = ()  # virtual IP pools (pools { }), leased by the IKE service
    radius: RadiusSettings | None = None  # radius { }: where auth = eap-radius relays EAP
    warnings: tuple[ConfigIssue, ...] = ()
    # path and the files it includes, in reading order (root checks who may write them); not what it says
    files: tuple[str, ...] = field(default=(), compare=False)
    # those read from a file without root_check (privilege.check_config_files refuses them as root)
    unchecked: tuple[str, ...] = field(default=(), compare=False)
    # what path was when not a regular file ("a pipe": -c /dev/stdin, -c <(...)): read once, a reload cannot
    # read it again (Daemon.reload refuses it, review revconf F3); "" for a file
    not_regular: str = field(default="", compare=False)
    # the files read that hold key material: those of files a secret or a manual key was written in
    # (readable.files_holding_keys), and the private keys loaded (load_config warns of those every local
    # user may read)
    sensitive_files: tuple[str, ...] = field(default=(), compare=False)

    def connection(self, name: str) -> Connection:
        for conn in self.connections:
            if conn.name == name:
                return conn
        raise KeyError(f"no connection {name!r}")


def _ignore(section: Section, issues: list[ConfigIssue]) -> None:
    """Read in :func:`parse_config` once every section is known (they depend on one another)."""


# The schema's top level: swanctl.conf's sections plus tunsec's own.
_TOP_LEVEL: dict[str, Callable[[Section, list[ConfigIssue]], None]] = {
    "tunsec": _ignore,
    "manual": _ignore,
    "connections": _ignore,
    "secrets": _ignore,
    "authorities": _ignore,
    "pools": _ignore,
    "radius": _ignore,
}


def _check_top_level(root: Section, issues: list[ConfigIssue]) -> None:
    known = sorted(_TOP_LEVEL)
    for name, setting in root.settings.items():
        message = (
            f"'{name}' is a section: write '{name} {{ ... }}'"
            if name in _TOP_LEVEL
            else f"unknown key at the top level (sections are: {', '.join(known)})"
        )
        issues.append(ConfigIssue(setting.file, setting.line, name, message))
    for name, section in root.sections.items():
        handler = _TOP_LEVEL.get(name)
        if handler is not None:
            handler(section, issues)
            continue
        hint = difflib.get_close_matches(name, known, n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})"
        issues.append(ConfigIssue(section.file, section.line, name, "unknown section" + suffix))


def _ordered(issues: list[ConfigIssue], files: list[str]) -> list[ConfigIssue]:
    """File by file in reading order, then by line; exact duplicates dropped."""
    rank = {f: i for i, f in reversed(list(enumerate(files)))}
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (rank.get(i.file, -1), i.line))


def parse_config(text: str, path: str = "<string>", *, check: FileCheck | None = None,
                 record: ReadRecord | None = None) -> Config:
    """Parse and validate config text; raises :class:`ConfigError` listing every problem.

    ``path`` names the text in messages and anchors relative ``include`` patterns
    and the credential folders (x509/, x509ca/, private/...) of ``connections``.
    check: includes and credentials are read as :func:`load_config` reads with root_check; :class:`ConfigRefused`
    if one (or the text's own file, in ``record``) is refused.
    """
    issues: list[ConfigIssue] = []
    record = record if record is not None else ReadRecord()
    root, files = parse_tree(text, path, issues, check=check, record=record)
    _check_top_level(root, issues)
    sections = root.sections
    tunsec = read_tunsec_section(sections["tunsec"], issues) if "tunsec" in sections else TunsecSettings()
    if record.refused:   # before anything else is read (credentials): the user is all the refusal needs
        raise _refusal(record.refused, tunsec.user)
    manual = read_manual_section(sections["manual"], issues) if "manual" in sections else ()
    # credentials are read only when a connection needs them (a manual-only config has no x509/)
    # as root: files only root and the service user may change (a CA another user may replace is theirs to pick);
    # as the service user at its reload: root's and its own
    owners = check.credential_owners(credential_owners(tunsec.user)) if check is not None else None
    creds = Credentials(os.path.dirname(path), issues, owners)
    if "authorities" in sections:
        read_authorities(sections["authorities"], creds, issues)
    secrets = sections.get("secrets")
    psks, broken = read_secrets(secrets, creds, issues) if secrets is not None else ([], False)
    pools = read_pools(sections["pools"], issues) if "pools" in sections else ()
    radius = read_radius(sections["radius"], issues) if "radius" in sections else None
    connections: tuple[Connection, ...] = ()
    if "connections" in sections:
        connections = read_connections(
            sections["connections"], creds, psks, issues, psks_broken=broken,
            retransmit=tunsec.retransmit, half_open_timeout=tunsec.half_open_timeout,
            pools={p.name: p.version for p in pools},
            fragment_size=tunsec.fragment_size,
            max_child_sas=tunsec.max_child_sas,
            max_ike_sas=tunsec.max_ike_sas_per_identity,
            follow_redirects=tunsec.follow_redirects,
            radius=radius is not None and bool(radius.servers),
            radius_groups=radius is not None and radius.gives_groups,
        )  # fmt: skip
    if issues:
        raise ConfigError(_ordered(withhold_tails(root, issues), files))
    return Config(
        path=path,
        tunsec=tunsec,
        manual=manual,
        connections=connections,
        ike_secrets=tuple(psks),
        pools=pools,
        radius=radius,
        warnings=tuple(_ordered(withhold_tails(root, [
            *weak_psk_warnings(secrets, psks),
            *port_warnings(connections),
            *rand_limit_warnings(sections.get("connections"), connections),
            *any_peer_action_warnings(connections),
            *pool_ts_warnings(connections, pools),
            *ike_inside_manual_warnings(manual, connections, pools),
            *named_overlap_warnings(connections, pools),
            *(radius_warnings(sections["radius"], radius, tunsec.half_open_timeout) if radius is not None else ()),
            *(unproven_warnings(connections, radius) if radius is not None else ()),
        ], "a warning"), files)),
        files=tuple(files), unchecked=tuple(record.unchecked),
        sensitive_files=(*files_holding_keys(root, files), *creds.key_files),
    )


def _refusal(refused: list[Refused], user: str | None) -> ConfigRefused:
    return ConfigRefused([ConfigIssue(r.path, 0, "", refusal_line(r.path, r.why, r.fix, user, r.owners, r.pattern))
                          for r in refused])


def load_config(path: str | os.PathLike[str], *, root_check: bool = False, service_user: bool = False) -> Config:
    """Read, parse and validate a config file.

    An unreadable file is reported as a :class:`ConfigError` (chained from the
    ``OSError``) so callers handle one exception type.  root_check, for a process that acts as root on what
    the file says (tunsec up, prepare, init-state, a reload as root): as root, it and each file it includes
    is checked before it is opened and compared with what was opened (safefs.read_trusted), the folders an
    include glob or a credential folder looks in too, and :class:`ConfigRefused` (a ConfigError) names the
    files anyone but root may change.  service_user, with root_check: the control process after its drop (a
    reload), which checks the same with itself allowed besides root (filecheck.py).
    """
    name = os.fspath(path)
    record = ReadRecord()
    check = FileCheck.of(root_check, service_user)
    not_regular = ""
    try:
        text, not_regular = read_config_source(name, check=check)
    except Unreadable as exc:
        raise ConfigError([exc.issue]) from exc.__cause__
    except Refused as exc:
        record.refused.append(exc)
        text = exc.text
    if check is None:
        record.unchecked.append(name)
    cfg = replace(parse_config(text, name, check=check, record=record), not_regular=not_regular)
    readable = readable_secret_warnings(cfg.sensitive_files)
    return replace(cfg, warnings=(*cfg.warnings, *readable)) if readable else cfg
