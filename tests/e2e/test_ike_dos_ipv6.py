"""The per-source IKE DoS limits count an IPv6 source per /64, over real UDP (tunsec in namespace A).

Namespace B owns 2001:db8:5::/48 as "any IP" (a local route on lo, non-local bind on), so it can
send from any address in it, as a host that has a prefix can; A routes the /48 to B. From B,
well-formed IKE_SA_INIT requests under fresh SPIs, each from another address of 2001:db8:5:6::/64,
each COOKIE returned as a real client would: the /64 is one source, held to cookie_threshold_ip
(3) and block_threshold (5) as one address is, while 2001:db8:5:7::/64 next to it is answered.
What `tunsec status` shows names the /64.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.message import NotifyPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

PREFIX = "2001:db8:5::/48"
BUSY, NEXT = "2001:db8:5:6", "2001:db8:5:7"   # two /64s of it (first four groups)


@dataclasses.dataclass(frozen=True)
class AnyPeerV6(Conn):
    """tunsec's connection on its IPv6 address, open to IKE from anywhere."""

    def conn_lines(self) -> str:
        return f"    local_addrs = {self.me.outer6}\n    remote_addrs = %any\n    proposals = {self.proposals}\n"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts() as t:
        t.run(t.b, ["ip", "-6", "route", "add", "local", PREFIX, "dev", "lo"])
        t.run(t.b, ["sysctl", "-q", "-w", "net.ipv6.ip_nonlocal_bind=1"])
        t.run(t.a, ["ip", "-6", "route", "add", PREFIX, "via", t.b.outer6])
        yield t


def init_request(topo: TwoHosts, conn: Conn) -> bytes:
    """A genuine IKE_SA_INIT request for the connection, made by tunsec's engine as an initiator."""
    cfg = IkeConfig(
        "i", LocalAuth("psk", Identity.parse("client.tunsec.test")), RemoteAuth("psk", Identity.parse(conn.my_id())),
        parse_proposals(conn.proposals),
        (child_config("net", topo.b.inner_net4, topo.a.inner_net4, "aes128gcm16"),),
        psk=Secret(conn.psk.encode()), local_addr=f"{BUSY}::1", remote_addr=topo.a.outer6,
    )
    endpoint = IkeEndpoint([cfg])
    endpoint.initiate("i", "net", 0.0)
    return endpoint.datagrams_to_send(0.0)[0].data


class Client:
    """One source address in B: sends IKE_SA_INIT requests to tunsec and reads its answers."""

    def __init__(self, topo: TwoHosts, ip: str, gateway: str) -> None:
        self.sock = topo.socket(topo.b, socket.AF_INET6)
        self.sock.bind((ip, 0))
        self.sock.settimeout(10)
        self.gateway = (gateway, 500)

    def ask(self, request: bytes) -> tuple[str, bytes]:
        """Send ``request`` (b"": none, read the answer to the last); the answer: ("sa", b"") or
        ("cookie", the cookie)."""
        if request:
            self.sock.sendto(request, self.gateway)
        msg = decode_message(self.sock.recv(65535))
        if msg.spi_r != bytes(8):
            return "sa", b""
        (cookie,) = msg.payloads
        assert isinstance(cookie, NotifyPayload) and cookie.type == NotifyType.COOKIE
        return "cookie", cookie.data


def with_spi(request: bytes, i: int) -> bytes:
    return struct.pack("!Q", 0x5000 + i) + request[8:]


def with_cookie(request: bytes, cookie: bytes) -> bytes:
    msg = decode_message(request)
    return dataclasses.replace(msg, payloads=(NotifyPayload(NotifyType.COOKIE, cookie), *msg.payloads)).encode()


def test_an_ipv6_64_rotating_source_addresses_is_one_source(topo: TwoHosts) -> None:
    conn = AnyPeerV6(topo.a, topo.b)
    tunsec = TunsecIke(topo, conn)
    tunsec.start()
    request = init_request(topo, conn)

    def held() -> int:   # requests from BUSY that made a half-open SA or were dropped at block_threshold
        doc = tunsec.status()
        return int(doc["ike_half_open"]) + int(doc["ike_drops"]["block_threshold"])

    got = []
    clients = []
    for i in range(8):   # each from another address of the /64, with a random-looking interface ID
        client = Client(topo, f"{BUSY}:{i * 40503 & 0xFFFF:x}:{i * 7919 & 0xFFFF:x}::{i + 1:x}", topo.a.outer6)
        clients.append(client)
        answer, cookie = client.ask(with_spi(request, i))
        if answer == "cookie":   # returned from that address, as it is bound to it
            client.sock.sendto(with_cookie(with_spi(request, i), cookie), client.gateway)
            assert wait_until(lambda n=i + 1: held() == n, 10), tunsec.status()
            # a half-open SA more (its answer is read), or a drop at block_threshold (nothing to read)
            made = tunsec.status()["ike_half_open"] == i + 1
            answer = "cookie, then " + (client.ask(b"")[0] if made else "nothing")
        got.append(answer)
    assert got == ["sa"] * 3 + ["cookie, then sa"] * 2 + ["cookie, then nothing"] * 3, tunsec.log_tail()

    # the next /64 is another source: answered (at once, or after a COOKIE if its calm-down group is the
    # busy /64's: the groups come from the daemon's per-run hash)
    for i in range(2):
        client = Client(topo, f"{NEXT}::{i + 1:x}", topo.a.outer6)
        clients.append(client)
        data = with_spi(request, 100 + i)
        answer, cookie = client.ask(data)
        if answer == "cookie":
            answer, _ = client.ask(with_cookie(data, cookie))
        assert answer == "sa"

    doc = tunsec.status()
    assert (doc["ike_half_open"], doc["ike_half_open_addresses"], doc["ike_half_open_max_per_address"],
            doc["ike_half_open_busiest"], doc["ike_drops"]["block_threshold"]) == (7, 2, 5, f"{BUSY}::/64", 3)
    text = tunsec.cli("status").stdout
    assert f"IKE: 7 half-open from 2 addresses or IPv6 prefixes (at most 5 from one: {BUSY}::/64)" in text, text
    for client in clients:
        client.sock.close()
