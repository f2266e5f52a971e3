"""`tunsec prepare --undo -c FILE`: what `tunsec prepare` made for the configuration's TUN goes, as root,
while no tunsec runs on it: the TUN (and its routes with it), the kill switch device (and
its standing routes), the exclude routes of the TUN's mark and the rules of local networks no other tunsec's route
covers (localrules.py).  In that order: the TUN's traffic is
dropped by the kill switch until it goes, and the peers stay reachable until then.  Last the rules that look up
tunsec's routing table (routetable.py), if that table holds no route any more (another instance's would).
The directories prepare gave to the user stay (state_dir holds manual keys' sequence numbers).

"No tunsec runs on it" is asked twice before anything is touched: the control socket (without waiting for
ever: ctlsocket.listener), then the kernel, whose word is the one that holds: the TUN's carrier (a process
has a queue of it open).  The socket alone cannot say: with control_socket left to its default its path
comes from the environment of whoever asks (the service's RUNTIME_DIRECTORY, root's shell's
XDG_RUNTIME_DIR), and a multi-queue TUN in use takes another attach (review revprep F1).
"""

from __future__ import annotations

import errno
import os

from pytun_pmd3.linux import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TUN, IFF_VNET_HDR

from tunsec.conf.config import Config
from tunsec.ctlsocket import Listener, listener
from tunsec.dataplane import localrules
from tunsec.dataplane.exclude import ExcludeRoutes
from tunsec.dataplane.killswitch import KillSwitch
from tunsec.dataplane.markrule import remove_mark_rules
from tunsec.dataplane.netlink import IPRoute
from tunsec.dataplane.routetable import TABLE, remove_unused_rules
from tunsec.dataplane.tun import interface_exists
from tunsec.dataplane.tundev import tun_flags, unpersist
from tunsec.prepare import PrepareError, refuse_in_use


def _not_running(path: str) -> None:
    """A process listening on the control socket path is refused: a tunsec, its TUN and routes in use."""
    try:
        found = listener(path)
    except OSError as err:
        raise PrepareError(f"cannot tell whether a tunsec is running on {path}: {err.strerror or err}") from err
    if found is Listener.ANSWERS:
        raise PrepareError(f"a tunsec is running on {path}: stop it first (its TUN and routes are in use)")
    if found is Listener.SILENT:
        raise PrepareError(f"a process listens on {path} and accepts no connection (a tunsec running, stuck?): "
                           "stop it first")


def _remove_tun(name: str) -> str:
    """The TUN name goes; what the summary says of it."""
    if not interface_exists(name):
        return f"TUN {name}: none"
    have = tun_flags(name)
    if not have & IFF_TUN:
        raise PrepareError(f"{name} is not a TUN device: left as it is (is tunsec {{ tun }} right?)")
    refuse_in_use(name, "stop it first; nothing was removed")
    try:
        unpersist(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | (have & IFF_MULTI_QUEUE))
    except OSError as err:
        busy = " (a process has it open: stop it first)" if err.errno == errno.EBUSY else ""
        raise PrepareError(f"removing TUN {name}: {err.strerror or err}{busy}") from err
    if interface_exists(name):   # a process attached between the look and now: its kill switch stays
        raise PrepareError(f"TUN {name} is still there: a process attached to it meanwhile (a tunsec starting?); "
                           "it is no longer persistent, its kill switch and exclude routes stay: stop it, then "
                           "tunsec prepare --undo again")
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
        said.append(f"device {kill_switch.name} of the tunnels' standing routes "
                    + ("stays (the error above says why)" if interface_exists(kill_switch.name) else "removed"))
    try:
        gone = ExcludeRoutes(name).drop_unheld("tunsec prepare added")
    except OSError as err:
        raise PrepareError(str(err.strerror or err)) from err
    said.append(f"exclude routes removed: {', '.join(gone)}" if gone else "no exclude route")
    with IPRoute() as ipr:
        # the local networks' rules no other tunsec's route covers any more (localrules.py: they are shared)
        if local := localrules.drop_unwanted(ipr, set()):
            said.append(f"rules of local networks removed ({'; '.join(local)})")
        rules = remove_unused_rules(ipr) + remove_mark_rules(ipr, (4, 6))
    if rules:
        said.append(f"table {TABLE} empty, its rules removed ({'; '.join(rules)})")
    return "; ".join(said) + f". The directories of {cfg.path} stay as they are."
