"""IKE SAs opened through the worker (port 4500): their failed authentications ban only that path.

The control process reads port 500 (and custom IKE ports) on its own sockets: the kernel saw the
source address of an IKE_SA_INIT there, and our answer, which carries our random SPI, goes out
without the worker.  A failed authentication of such an IKE SA is the sender's (auth_ban.py's
premise: a spoofer who cannot read the victim's traffic cannot fail one in its name).  Port 4500
is the worker's: it hands each datagram up with the source address it claims and sends our answers
to that address itself, so a worker taken over can run whole IKE exchanges "as" any address and fail
them (review revworker F1).  Counted like the others, ten of them banned an innocent address from
port 500, which the worker never sees, and the AUTHENTICATION_FAILED lines made the shipped
fail2ban jail block UDP 500 and 4500 from it at the firewall.

So an IKE SA whose IKE_SA_INIT came through the worker is noted (``opened``); its failures count in
a ban of their own (``ban``), which refuses only IKE_SA_INITs that arrive through the worker (a path
the worker can cut anyway), and their lines and ban lines say AUTHENTICATION_FAILED followed by TAG,
which the shipped filter (contrib/fail2ban/) does not match.  Successes, which vouch for the source's
wider IPv6 prefixes for a day (auth_ban.py), also count only in the ban of their own path
(``succeeded``).  A brute force straight to port 4500
(an IKE_SA_INIT sent there, as a peer with remote_port = 4500 does) is still banned by tunsec, from
4500, but no longer blocked by fail2ban (docs/operations.md, "Logs").  The settings are the main
ban's (tunsec { auth_failures* }); `tunsec unban` lifts both.
"""

from __future__ import annotations

import functools
import time
import weakref

from tunsec.ike.auth_ban import AuthBan
from tunsec.ike.sa import IkeSa
from tunsec.loglimit import SourceLimiter
from tunsec.services.ike import auth_log

TAG = " (through the worker's port 4500, not for fail2ban)"


class WorkerPath:
    def __init__(self, main: AuthBan) -> None:
        self._main = main
        self.ban = AuthBan(ipv6_prefix=main.ipv6_prefix, tag=TAG)
        # failures of the IKE SAs below, by address, as the main ones (auth_log.py), with the tag
        self.failed_log = SourceLimiter(flush_to=functools.partial(auth_log.report, tag=TAG),
                                        ipv6_prefix=main.ipv6_prefix)
        self._sas: weakref.WeakSet[IkeSa] = weakref.WeakSet()   # gone with the SA (half-open ones time out)

    def refuses(self, data: bytes, ip: str) -> bool:
        """Whether ``data``, come through the worker, is an IKE_SA_INIT request of a source banned on
        this path (or on any path: the caller asks the main ban too)."""
        self.ban.settings = self._main.settings   # the daemon sets the main one's (start, reload)
        return self.ban.refuses(data, ip, time.monotonic())

    def counting(self) -> AuthBan:
        """The ban failures on this path count in, with the main one's settings."""
        self.ban.settings = self._main.settings
        return self.ban

    def opened(self, before: IkeSa | None, after: IkeSa | None) -> None:
        """An IKE_SA_INIT request through the worker was handed to the engine: the IKE SA it made, if
        it made one (the engine's last registered SA changed)."""
        if after is not None and after is not before and not after.is_initiator:
            self._sas.add(after)

    def succeeded(self, sa: IkeSa, ip: str) -> None:
        """A responder IKE SA authenticated: vouch for the source's wider IPv6 prefixes (auth_ban.py)
        in the ban of the path it came in on only.  A worker taken over could otherwise name any
        address with one working credential and so shield a /64-rotating brute force on port 500 from
        the wider bans for a day; and the worker path's own prefixes need vouching as much (review
        revworker2 F2)."""
        ban = self.counting() if self.of(sa) else self._main
        ban.succeeded(ip, time.monotonic())

    def of(self, sa: IkeSa) -> bool:
        """Whether ``sa``'s IKE_SA_INIT came through the worker."""
        return sa in self._sas
