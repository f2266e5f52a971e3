"""`tunsec prepare --undo -c FILE`: what `tunsec prepare` made for the configuration's TUN goes, as root,
while no tunsec runs on it: the TUN (and its routes with it), the full tunnel's kill switch device (and
its standing routes) and the exclude routes of the TUN's mark.  In that order: the TUN's traffic is
dropped by the kill switch until it goes, and the peers stay reachable until then.  The directories
prepare gave to the user stay (state_dir holds manual keys' sequence numbers).
"""

from __future__ import annotations

import errno
import os
import socket

from pytun_pmd3.linux import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TUN, IFF_VNET_HDR

from tunsec.conf.config import Config
from tunsec.dataplane.exclude import ExcludeRoutes
from tunsec.dataplane.killswitch import KillSwitch
from tunsec.dataplane.tun import interface_exists
from tunsec.dataplane.tundev import tun_flags
from tunsec.prepare import PrepareError, unpersist


def _not_running(path: str) -> None:
    """A tunsec answering on the control socket path is refused: its TUN and routes are in use."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return
    raise PrepareError(f"a tunsec is running on {path}: stop it first (its TUN and routes are in use)")


def _remove_tun(name: str) -> str:
    """The TUN name goes; what the summary says of it."""
    if not interface_exists(name):
        return f"TUN {name}: none"
    have = tun_flags(name)
    if not have & IFF_TUN:
        raise PrepareError(f"{name} is not a TUN device: left as it is (is tunsec {{ tun }} right?)")
    try:
        unpersist(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | (have & IFF_MULTI_QUEUE))
    except OSError as err:
        busy = " (a process has it open: stop it first)" if err.errno == errno.EBUSY else ""
        raise PrepareError(f"removing TUN {name}: {err.strerror or err}{busy}") from err
    return f"TUN {name} removed (its routes with it)"


def undo(cfg: Config) -> str:
    """Remove what prepare made for cfg's TUN; a summary of what went."""
    if os.geteuid() != 0:
        raise PrepareError("tunsec prepare --undo runs as root (it removes the TUN and routes prepare made)")
    _not_running(cfg.tunsec.control_socket)
    name = cfg.tunsec.tun
    said = [_remove_tun(name)]
    kill_switch = KillSwitch(name)
    if interface_exists(kill_switch.name):
        kill_switch.remove()
        said.append(f"device {kill_switch.name} of the full tunnel's standing routes "
                    + ("stays (the error above says why)" if interface_exists(kill_switch.name) else "removed"))
    try:
        gone = ExcludeRoutes(name).drop_unheld("tunsec prepare added")
    except OSError as err:
        raise PrepareError(str(err.strerror or err)) from err
    said.append(f"exclude routes removed: {', '.join(gone)}" if gone else "no exclude route")
    return "; ".join(said) + f". The directories of {cfg.path} stay as they are."
