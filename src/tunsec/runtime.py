"""Where a running tunsec is found: its control socket's default path.

systemd's RuntimeDirectory= (``$RUNTIME_DIRECTORY``) first, then the user's
``$XDG_RUNTIME_DIR/tunsec`` (an unprivileged tunsec may not write /run), then
``/run/tunsec``.  ``tunsec up`` and ``tunsec status`` resolve it the same way.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from collections.abc import Mapping

from tunsec.conf.config import Config

SOCKET_NAME = "tunsec.sock"


def default_control_socket(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]   # systemd lists several with ':'
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, SOCKET_NAME)
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "tunsec", SOCKET_NAME)
    return os.path.join("/run/tunsec", SOCKET_NAME)


def resolved(cfg: Config) -> Config:
    """cfg with its control socket path filled in when the file leaves it to the default."""
    if cfg.tunsec.control_socket:
        return cfg
    return dataclasses.replace(cfg, tunsec=dataclasses.replace(cfg.tunsec, control_socket=default_control_socket()))


def owner_name(path: str) -> str:
    """Who owns path (for 'run as root or as user U'), or the directory it is in when that is all
    this user may see; the uid when it has no name."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        try:
            uid = os.stat(os.path.dirname(path) or ".").st_uid
        except OSError:
            return "its owner"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
