"""Review revradius F2: an Access-Accept's Session-Timeout (and Class, Acct-Interim-Interval) is
lost when MAX_UNCLAIMED other Accepts come before its IKE SA is up.

RadiusRelay keeps what an Accept tells the service in ``_accepted`` until the IKE SA is up
(take_accepted) or gone; beyond MAX_UNCLAIMED (1024) the oldest goes, and take_accepted then
gives an empty Accepted: no Session-Timeout (_limit_session sets no limit), no Class to echo in
accounting.  An entry waits there from the Accept to the client's last IKE_AUTH (its AUTH from
the MSK), which the client sends when it likes, within the half-open timeout.  So a user with a
Session-Timeout (a guest or contractor account, a forced re-authentication) who holds 1024 more
of its own logins at that last step, from half-open IKE SAs (``half_open_limit`` is 4N+10 in
docs/benchmarks.md's deployments, ``block_threshold`` 5 per address or IPv6 /64: ~205 /64s,
a home /56 has 256), then sends the last AUTH of its first one, gets an IKE SA that
never times out; every other user whose Accept falls in that burst loses its limit and Class too.

A scripted RADIUS server on loopback (real UDP, a port the kernel picks) accepts every
conversation with Session-Timeout 3600, as tests/radius/test_radius_relay.py's servers do.

Fixed (fixradius): the relay keeps no such table; the Accept's reply carries it
(``RelayReply.accepted``) to its IKE SA, which holds it until it is up (GatewayEap ->
IkeSaUp.accepted, tests/ike/test_engine_eap_relay_accept.py).  What an IKE SA coming up gets is
now what its reply carried; the assertions are the review's."""
from __future__ import annotations

import asyncio
import struct
from typing import Any

from test_radius_messages import STATION, reply
from test_radius_relay import ask, server

from tunsec.ike.eap.relay import RelayOutcome
from tunsec.ike.events import Accepted
from tunsec.radius.messages import ACCESS_ACCEPT
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusSettings

SESSION_TIMEOUT = (27, struct.pack("!I", 3600))
SUCCESS = (79, b"\x03\x11\x00\x04")
MAX_UNCLAIMED = 1024   # how many Accepts RadiusRelay's shared table held (before fixradius)


class AcceptAll(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(reply(ACCESS_ACCEPT, data, [SUCCESS, SESSION_TIMEOUT]), addr)


def test_a_session_timeout_is_kept_until_its_ike_sa_is_up_whatever_other_logins_do() -> None:
    async def main() -> tuple[int | None, int | None]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(AcceptAll, local_addr=("127.0.0.1", 0))
        relay = RadiusRelay(RadiusSettings((server("fr", transport.get_extra_info("sockname")[1]),),
                                           retransmit_timeout=2.0))
        first = await relay.round("sa-victim", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        assert first.outcome is RelayOutcome.ACCEPT
        # MAX_UNCLAIMED more logins accepted, each IKE SA waiting for its client's last AUTH
        for n in range(MAX_UNCLAIMED):
            last = await relay.round(f"sa-{n}", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
            assert last.outcome is RelayOutcome.ACCEPT
        latest = (last.accepted or Accepted()).session_timeout    # what sa-1023 carries to its IkeSaUp
        taken = (first.accepted or Accepted()).session_timeout    # its IKE SA comes up now
        relay.close()
        transport.close()
        return latest, taken

    latest, taken = asyncio.run(main())
    assert latest == 3600
    # main: None (evicted): _limit_session sets no limit, the IKE SA lasts until the client ends it
    assert taken == 3600
