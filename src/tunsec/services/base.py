"""What every service of the daemon looks like, and the socket helper they share.

A service (manual tunnels, IKE tunnels) owns its SAs and policies in the worker;
the daemon owns only the lifecycle, the TUN, the shared ESP-in-UDP sockets, the
worker process and the control socket.  The daemon drives each service through
this interface, in this order:

    prepare()              before the event loop: own sockets and files (StartupError)
    esp_endpoints(), peer_addresses(), routes()
                           what the daemon sets up for it (shared ESP sockets, MTU, TUN routes)
    start()                the worker is up and empty: install SAs/policies, begin negotiating
    worker_restarted()     a new worker replaced a dead one: its SAD and SPD are empty again
    check_reload(cfg)      `tunsec reload`: what of the new configuration it cannot apply while running
    reload(cfg)            then (every service agreed) apply it: add, remove, replace; the rest untouched
    on_event(msg)          a worker event; True if the service owns it (the daemon logs the rest)
    worker_entries()       how many SAs and policies it holds in the worker (what a DUMP may answer)
    status(dump)           its part of `tunsec status` (merged into one JSON document); status_rows(dump)
                           the same with its long lists as Rows, what the daemon asks for
    shutdown()             before the worker stops (DELETEs still go out through it)
    close()                after the event loop: close what prepare() opened

A new service subclasses Service; the daemon builds an instance and adds it to
its list (Daemon.__init__), and names its class once more in
Daemon.service_status (so a service not configured still shows its empty part,
Service.idle_status).  Nothing else in the daemon names it.
"""

from __future__ import annotations

import logging
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any

from tunsec import privilege
from tunsec.dataplane import markrule, pipe
from tunsec.loglimit import internal_error

if TYPE_CHECKING:
    from tunsec.conf.config import Config

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Route = tuple[IPNetwork, tuple[IPNetwork, ...]]   # a remote network, and our side's networks (source address)
EspEndpoint = tuple[int, str, int]                 # outer family, local address, UDP port

SOCKET_BUFFER = 4 << 20
_SO_RCVBUFFORCE, _SO_SNDBUFFORCE = 33, 32          # linux/socket.h; root may exceed rmem_max/wmem_max


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


class ReloadRefused(Exception):
    """A new configuration this service cannot apply while running; the message says why."""


class Failed(str):
    """A line of reload()'s that says what could not be applied (the service logged it): the reload's
    answer is an error, so `tunsec reload` fails instead of printing it among what changed."""


# a reload the stop did not wait for (daemon.RELOAD_STOP_WAIT): cancelled, and refused by the services shut
# down (review revlate11 F1); the client's answer says so
STOP_CUT = "reload cut short by the stop"


def bind_udp(family: int, addr: str, port: int, *, purpose: str,
             reuseport: bool = False, big_buffers: bool = False, mark: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to addr:port, or a StartupError naming the operation
    (purpose), the address and port, the cause and the fix (privilege.bind_error).  Every service
    binds through here.  mark: tunsec's own IKE or ESP, its packets past tunsec's table (markrule.py)."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        s = socket.socket(af, socket.SOCK_DGRAM)
    except OSError as err:
        raise StartupError(privilege.bind_error(f"UDP ({purpose})", addr, port, err)) from err
    try:
        if reuseport:
            # one socket per worker queue: the kernel spreads peers across them
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == 6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if mark:
            markrule.mark_socket(s, purpose)
        if big_buffers:
            for opt, force in ((socket.SO_RCVBUF, _SO_RCVBUFFORCE), (socket.SO_SNDBUF, _SO_SNDBUFFORCE)):
                try:
                    s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        s.bind((addr, port))
        s.setblocking(False)
    except OSError as err:
        s.close()
        raise StartupError(privilege.bind_error(f"UDP ({purpose})", addr, port, err)) from err
    return s


class Service(ABC):
    """One kind of tunnel the daemon runs; see the module docstring for the call order."""

    name: str = "service"

    def prepare(self) -> None:
        """Before the event loop starts: open this service's own sockets and files."""
        return None

    def close(self) -> None:
        """After the event loop: undo prepare()."""
        return None

    def esp_endpoints(self) -> list[EspEndpoint]:
        """The local ESP-in-UDP endpoints this service's SAs use (the daemon binds the shared sockets)."""
        return []

    def peer_addresses(self) -> list[IPAddress]:
        """Known outer peer addresses (the daemon sizes the TUN MTU for the paths towards them)."""
        return []

    def routes(self) -> list[Route]:
        """Remote networks the daemon routes into the TUN."""
        return []

    @abstractmethod
    async def start(self) -> None:
        """The worker is up: install this service's SAs and policies."""

    @abstractmethod
    async def worker_restarted(self) -> None:
        """A new worker with an empty SAD and SPD replaced the one that died."""

    def worker_died(self) -> None:  # noqa: B027 (a hook most services need not take)
        """The worker died; its successor is not started yet (worker_restarted follows once it is)."""

    @abstractmethod
    def on_event(self, msg: pipe.Message) -> bool:
        """A worker event; True if it concerns an SA or policy this service owns (and was handled)."""

    # EXPIREs from the worker for limits the SA was never given: refused (tunsec status, metrics)
    refused_expires: int = 0
    # EXPIREs of SAs of Child SAs just let go (rekeyed), raised before their DELETE: ours, not acted on
    expires_after_rekey: int = 0

    @abstractmethod
    def worker_entries(self) -> int:
        """The SAs and policies this service holds in the worker now, about: a DUMP answer of the
        worker is held only up to what the services' entries make (worker_distrust.dump_cap)."""

    @abstractmethod
    def status(self, dump: pipe.Reply) -> dict[str, Any]:
        """This service's keys of the `tunsec status` document (dump: the worker's SAs and counters)."""

    def status_rows(self, dump: pipe.Reply) -> dict[str, Any]:
        """The same, a long list as tunsec.status.Rows (formatted later, a slice per turn of the event loop)."""
        return self.status(dump)

    @classmethod
    def idle_status(cls) -> dict[str, Any]:
        """The same keys when this kind of service is not configured (the document keeps its shape)."""
        return {}

    @abstractmethod
    async def shutdown(self) -> None:
        """Stop: the worker still runs (messages to peers still go out)."""

    def check_reload(self, cfg: Config) -> list[str]:
        """`tunsec reload`, before anything changes: what of cfg this service cannot apply while
        running, one line each (the daemon then refuses the whole reload); [] if all of it can."""
        return []

    @abstractmethod
    async def reload(self, cfg: Config) -> list[str]:
        """Apply this service's part of cfg (check_reload found nothing): start what was added,
        delete what was removed, replace what changed, leave the rest and its SAs alone.
        Returns one line per kind of change for the log and `tunsec reload`."""


async def reinstall(services: Sequence[Service], gone: Callable[[], bool]) -> None:
    """Each service into a restarted worker, whatever one before it raised (review revrestart F1: a
    manual tunnel's state that could not be written left the IKE service out, and tunsec stopped);
    the first error is raised once all had their turn, later ones are logged.  gone: the worker
    died meanwhile, and the watcher's next round restarts it and reinstalls every service then."""
    first: Exception | None = None
    for svc in services:
        try:
            await svc.worker_restarted()
        except Exception as err:
            if first is not None and not gone():   # the first is said by the caller (_restart_worker)
                logging.getLogger("tunsec").error(
                    "reinstalling %s into the restarted worker failed too: %s", svc.name,
                    err if isinstance(err, StartupError) else internal_error(err, False))
            first = first or err
            if gone():
                break
    if first is not None:
        raise first
