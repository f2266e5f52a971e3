"""Load warnings about a child's byte and packet soft-limit jitter (``rand_bytes``, ``rand_packets``).

Each SA's soft limit is ``rekey_*`` minus a random part of at most ``rand_*`` and never more than
``rekey_*`` itself (children.rekey_limit): a ``rand_*`` set at or above its ``rekey_*`` is cut
there, so an SA's limit lies anywhere from 1 to ``rekey_*``.  A value the user wrote and we do not
follow is worth a line; strongSwan's default ``rand_*`` (``life_* - rekey_*``) is not warned about.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunsec.conf.children import Child
from tunsec.conf.connections import Connection
from tunsec.conf.errors import ConfigIssue
from tunsec.conf.syntax import Section

__all__ = ["rand_limit_warnings"]

_COUNTED = ("bytes", "packets")


def rand_limit_warnings(section: Section | None, connections: Sequence[Connection]) -> list[ConfigIssue]:
    """One warning per child whose explicit rand_bytes/rand_packets is at least its rekey_* (not 0)."""
    if section is None:
        return []
    out: list[ConfigIssue] = []
    for conn in connections:
        conn_section = section.sections.get(conn.name)
        children = conn_section.sections.get("children") if conn_section is not None else None
        if children is None:
            continue
        for child in conn.children:
            child_section = children.sections.get(child.name)
            if child_section is not None:
                out.extend(_child_warnings(child_section, child))
    return out


def _child_warnings(section: Section, child: Child) -> list[ConfigIssue]:
    out = []
    for what in _COUNTED:
        setting = section.settings.get(f"rand_{what}")
        rekey, rand = getattr(child, f"rekey_{what}"), getattr(child, f"rand_{what}")
        if setting is None or setting.value == "" or rekey <= 0 or rand < rekey:
            continue
        out.append(ConfigIssue(setting.file, setting.line, section.key_path(f"rand_{what}"),
                               f"{rand} is not below rekey_{what} ({rekey}): the random part taken off each "
                               f"SA's soft limit is at most rekey_{what}, so a limit falls anywhere from 1 to "
                               f"{rekey} {what}, a few SAs' at their first packets; set rand_{what} below "
                               f"rekey_{what} for limits closer to it"))
    return out
