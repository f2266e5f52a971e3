"""One client of a gateway cannot claim another's traffic through its traffic selectors.

A gateway's Child SAs put their outbound PROTECT policies in one SPD at one priority, and the fast
path takes the older of two matching ones: a client whose remote selectors covered another's
address would draw that one's traffic, and its inbound SA would admit packets with that address as
source.  So (policy/claims.py, exchanges/child.py outside_others_leases):

- on a connection with ``pools`` whose remote_ts is wider than ``dynamic`` (here 10.3.0.0/16 over
  the pool 10.3.0.0/24), a client gets its own lease and no other pool address, whatever it proposes;
- without pools, a client (another identity) proposing selectors that overlap what another client
  holds is refused with TS_UNACCEPTABLE, and the log line names both; the same identity may
  overlap itself (a client back on a new IKE SA);
- an overlap is one of the remote AND the local selectors: two partners behind the same remote
  subnet that reach disjoint local subnets are both up, each with its own traffic.

The gateway is a real IkeService with the worker's request handling and the C fast path in
process (test_ikeservice_lease_fence.WatchedWorker); the clients are IKE engines wired to it."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

import pytest
from test_ikeservice_lease_fence import WatchedWorker, held_ike_auth
from test_ikeservice_peers import GW, PSK, FakeSocket, Gateway, _now, esp_open, esp_seal, ipv4_udp, run, site_ip

from tunsec.conf.connections import Connection
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.ts import Ts
from tunsec.policy.ids import IdSpace
from tunsec.policy.pools import PoolConfig
from tunsec.services.ike import IkeService
from tunsec.services.ike.state import ChildState

GW_NET = "10.1.0.0/16"
POOL = PoolConfig.parse_addrs("rw", "10.3.0.0/24")
PROPOSALS = parse_proposals("aes128gcm16-prfsha256-curve25519")


@dataclass
class Client:
    ident: str
    local_ts: str        # what it proposes as TSi ("dynamic" with vips: all of IPv4, narrowed to its lease)
    vips: bool = False   # asks for a virtual IP
    named: bool = False  # the gateway has a connection naming it (remote.id), not only the one of %any
    named_ts: str | None = None   # that connection's remote_ts (None: the gateway's, as the %any one)
    gw_side: str = GW_NET   # what it proposes as TSr: the gateway's side (within GW_NET) it reaches


@dataclass
class TsGateway(Gateway):
    """An IkeService on GW (remote_addrs = %any, any PSK identity) with ``clients`` wired to it."""

    clients: tuple[Client, ...] = ()
    remote_ts: str = "10.2.0.0/16"
    pools: bool = False

    async def start(self) -> None:
        def conn(name: str, remote: RemoteAuth, remote_ts: str | None = None) -> Connection:
            child = child_config("net", GW_NET, remote_ts or self.remote_ts, "aes128gcm16")
            return Connection(name, IkeConfig(name, LocalAuth("psk", Identity.parse("gw.example")), remote, PROPOSALS,
                                              (child,), psk=PSK, local_addr=GW,
                                              pools=(POOL.name,) if self.pools else ()))
        # the connection of %any first: a peer it names still gets its own (ike_auth._select_config)
        conns = [conn("gw", RemoteAuth("psk"))] + [
            conn(f"named{i}", RemoteAuth("psk", Identity.parse(c.ident)), c.named_ts)
            for i, c in enumerate(self.clients) if c.named]
        self.worker = client = WatchedWorker(asyncio.get_running_loop(), self._natt_out)  # type: ignore[assignment]
        self.service = IkeService(conns, lambda: client, {4: GW}, IdSpace(),  # type: ignore[arg-type]
                                  pools=[POOL] if self.pools else [])
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        for i, c in enumerate(self.clients):
            cfg = IkeConfig(f"site{i}", LocalAuth("psk", Identity.parse(c.ident)),
                            RemoteAuth("psk", Identity.parse("gw.example")), PROPOSALS,
                            (child_config("net", c.local_ts, c.gw_side, "aes128gcm16"),), psk=PSK,
                            local_addr=site_ip(i), remote_addr=GW, mobike=False,
                            vips=(ipaddress.ip_address("0.0.0.0"),) if c.vips else ())
            self.sites.append(IkeEndpoint([cfg]))
            self.site_events.append([])

    def child_of(self, i: int) -> ChildState | None:
        mine = [c for c in self.service.children.values() if str(c.remote.addr) == site_ip(i)]
        return max(mine, key=lambda c: c.handle, default=None)

    def key_out(self, i: int) -> bytes:
        """The key client i seals its ESP to the gateway with (its newest Child SA)."""
        return [e for e in self.site_events[i] if isinstance(e, ChildSaUp)][-1].key_out.reveal()


async def gateway(remote_ts: str, pools: bool, *clients: Client) -> TsGateway:
    """The clients connect one after the other, in order (the first one's policies come first)."""
    gw = TsGateway(len(clients), mobike=False, clients=clients, remote_ts=remote_ts, pools=pools)
    await gw.start()
    for i in range(len(clients)):
        gw.connect(i)
        await gw.settle()
    return gw


async def in_one_batch(*clients: Client) -> TsGateway:
    """The clients' IKE_AUTH requests reach the gateway in one batch, handled before any of their
    Child SAs is booked (the service's backstop decides then)."""
    gw = TsGateway(len(clients), mobike=False, clients=clients)
    await gw.start()
    auths = [await held_ike_auth(gw, i) for i in range(len(clients))]
    for i, auth in enumerate(auths):
        gw.service.receive(auth, (site_ip(i), 4500), (GW, 4500))
    gw.service._pump()
    await gw.settle()
    return gw


def reaches(gw: TsGateway, dst: str, src: str = "10.1.0.5") -> int | None:
    """Which client a packet from ``src`` on the gateway's side to ``dst`` is sealed for (None: not sent)."""
    esp, to, drop, _ = gw.worker.dp.outbound(ipv4_udp(src, dst))
    if drop is not Drop.NONE or to is None:
        return None
    (i,) = [i for i in range(gw.n) if to == Endpoint(ipaddress.ip_address(site_ip(i)), 4500)]
    _, inner = esp_open(gw.site_key_in(i), esp)   # only that client's key opens it
    assert inner == ipv4_udp(src, dst)
    return i


def sent_as(gw: TsGateway, i: int, src: str, dst: str = "10.1.0.5", seq: int = 1) -> Drop:
    """What the gateway does with a packet client i sends through its Child SA with source ``src``."""
    child = gw.child_of(i)
    assert child is not None
    esp = esp_seal(child.spi_in, seq, gw.key_out(i), ipv4_udp(src, dst))
    _, drop = gw.worker.dp.inbound(esp, Endpoint(ipaddress.ip_address(site_ip(i)), 4500),
                                   Endpoint(ipaddress.ip_address(GW), 4500))
    return drop


def refusals(gw: TsGateway, i: int) -> list[NegotiationFailed]:
    return [e for e in gw.site_events[i] if isinstance(e, NegotiationFailed)]


# ----------------------------------------------------------------------------- with pools

ATTACKER, HONEST = 0, 1


def test_a_client_claiming_the_pool_gets_no_other_clients_address() -> None:
    """remote_ts = 10.3.0.0/16 over the pool 10.3.0.0/24: A (no virtual IP) proposes all of
    10.3.0.0/16 before B connects; B leases 10.3.0.1.  A holds none of the pool, B's address
    reaches B only, and A cannot send as B."""
    async def body() -> None:
        gw = await gateway("10.3.0.0/16", True, Client("a.example", "10.3.0.0/16"),
                           Client("b.example", "dynamic", vips=True))
        a, b = gw.child_of(ATTACKER), gw.child_of(HONEST)
        assert a is not None and b is not None
        b_vip = str(b.remote_ts[0].start)
        assert b.remote_ts == (Ts.host(b_vip),) and b_vip.startswith("10.3.0.")
        # A: 10.3.0.0/16 without the pool's block (it holds no lease)
        assert a.remote_ts == (Ts.parse("10.3.1.0-10.3.255.255"),)
        assert reaches(gw, b_vip) == HONEST
        assert reaches(gw, "10.3.0.77") is None        # nobody's (yet): not A's
        assert reaches(gw, "10.3.7.7") == ATTACKER     # outside the pool, inside remote_ts: A's
        assert sent_as(gw, ATTACKER, b_vip) is Drop.POLICY
        assert sent_as(gw, HONEST, b_vip) is Drop.NONE
    run(body())


def test_on_a_pool_connection_a_client_is_narrowed_to_what_no_other_client_holds() -> None:
    """remote_ts = 0.0.0.0/0 with the pool: A leases an address; B (no virtual IP) proposes
    10.0.0.0/8 and gets it without the pool; C proposes 0.0.0.0/0 and gets what neither the pool
    nor B holds (a road warrior is narrowed, not refused); each address reaches its holder only."""
    async def body() -> None:
        gw = await gateway("0.0.0.0/0", True, Client("a.example", "10.3.0.0/24", vips=True),
                           Client("b.example", "10.0.0.0/8"), Client("c.example", "0.0.0.0/0"))
        a, b, c = (gw.child_of(i) for i in range(3))
        assert a is not None and b is not None and c is not None
        a_vip = str(a.remote_ts[0].start)
        assert a.remote_ts == (Ts.host(a_vip),)
        assert b.remote_ts == (Ts.parse("10.0.0.0-10.2.255.255"), Ts.parse("10.3.1.0-10.255.255.255"))
        assert c.remote_ts == (Ts.parse("0.0.0.0-9.255.255.255"), Ts.parse("11.0.0.0-255.255.255.255"))
        assert [reaches(gw, d) for d in (a_vip, "10.9.9.9", "8.8.8.8", "10.3.0.200")] == [0, 1, 2, None]
        assert sent_as(gw, 1, a_vip) is Drop.POLICY and sent_as(gw, 2, "10.9.9.9") is Drop.POLICY
        assert not any(refusals(gw, i) for i in range(3))
    run(body())


def test_a_client_whose_proposal_lies_inside_the_pool_is_refused() -> None:
    """remote_ts = the pool: a client with no lease proposing the pool keeps nothing: TS_UNACCEPTABLE."""
    async def body() -> None:
        gw = await gateway("10.3.0.0/24", True, Client("a.example", "10.3.0.0/24"))
        assert gw.child_of(0) is None
        assert [e.reason for e in refusals(gw, 0)] == ["TS_UNACCEPTABLE"]
        assert reaches(gw, "10.3.0.1") is None
    run(body())


# ----------------------------------------------------------------------------- without pools


def test_a_peer_overlapping_another_peers_selectors_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Site 0 holds 10.2.1.0/24; site 1 (another identity, the same PSK) proposes 10.2.0.0/16:
    refused, named in the log with both peers and the overlap; site 0's traffic stays its own."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        gw = await gateway("10.2.0.0/16", False, Client("site0.example", "10.2.1.0/24"),
                           Client("site1.example", "10.2.0.0/16"))
        assert gw.child_of(1) is None
        assert [e.reason for e in refusals(gw, 1)] == ["TS_UNACCEPTABLE"]
        assert reaches(gw, "10.2.1.7") == 0
        assert reaches(gw, "10.2.9.9") is None
        assert sent_as(gw, 0, "10.2.1.7") is Drop.NONE
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "TS_UNACCEPTABLE" in r.getMessage()]
    assert "site1.example" in line and "site0.example" in line and "10.2.1.0/24" in line and "gw" in line


def test_disjoint_peers_and_the_same_identity_again_are_accepted() -> None:
    """Site 1 proposing a disjoint subnet is accepted; site 0's identity coming back from another
    address (a new IKE SA with INITIAL_CONTACT, while the old one is still up) may hold its
    selectors again, and takes the traffic."""
    async def body() -> None:
        gw = await gateway("10.2.0.0/16", False, Client("site0.example", "10.2.1.0/24"),
                           Client("site1.example", "10.2.2.0/24"), Client("site0.example", "10.2.1.0/24"))
        assert gw.child_of(1) is not None and gw.child_of(2) is not None
        assert gw.child_of(0) is None   # INITIAL_CONTACT: the old IKE SA of the identity is gone
        assert not any(refusals(gw, i) for i in range(3))
        assert reaches(gw, "10.2.2.7") == 1
        assert reaches(gw, "10.2.1.7") == 2
    run(body())


def test_a_peer_gone_leaves_its_selectors_to_the_next() -> None:
    """Once site 0's IKE SA is deleted, another identity may hold the same selectors."""
    async def body() -> None:
        gw = await gateway("10.2.0.0/16", False, Client("site0.example", "10.2.1.0/24"),
                           Client("site1.example", "10.2.1.0/24"))
        assert gw.child_of(1) is None and gw.child_of(0) is not None
        gw.site_sa(0).delete(_now())
        await gw.settle()
        assert gw.child_of(0) is None and len(gw.service.ts_claims) == 0
        gw.connect(1)
        await gw.settle()
        assert gw.child_of(1) is not None
        assert reaches(gw, "10.2.1.7") == 1
    run(body())


def test_two_peers_negotiating_the_same_selectors_in_one_batch_leave_one_installed(
        caplog: pytest.LogCaptureFixture) -> None:
    """Both sites' IKE_AUTH requests for 10.2.1.0/24 are read in one batch (one pump): the engine
    accepts both (neither Child SA is booked yet), the service installs the first and deletes the
    second, logging why; the traffic goes to the first only, and the second site learns of the DELETE."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        gw = await in_one_batch(Client("site0.example", "10.2.1.0/24"), Client("site1.example", "10.2.1.0/24"))
        assert gw.child_of(0) is not None and gw.child_of(1) is None
        assert reaches(gw, "10.2.1.7") == 0
        assert {p.reqid for p in gw.worker.dp.policies() if p.reqid} == {gw.child_of(0).reqid}  # type: ignore[union-attr]
        assert gw.site_sa(1).children == []   # the DELETE reached site 1
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "not installed" in r.getMessage()]
    assert "site1.example" in line and "site0.example" in line and "10.2.1.0/24" in line


def test_in_one_batch_the_backstop_keeps_peers_of_disjoint_local_subnets() -> None:
    """As above, but the two sites reach disjoint local subnets: the service's backstop compares
    the local selectors too, and installs both; each local subnet's traffic goes to its own site."""
    async def body() -> None:
        gw = await in_one_batch(Client("site0.example", "10.2.1.0/24", gw_side="10.1.1.0/24"),
                                Client("site1.example", "10.2.1.0/24", gw_side="10.1.2.0/24"))
        assert gw.child_of(0) is not None and gw.child_of(1) is not None
        assert [reaches(gw, "10.2.1.7", src) for src in ("10.1.1.5", "10.1.2.5")] == [0, 1]
    run(body())


def test_two_connections_that_name_their_peers_may_share_selectors() -> None:
    """A primary and a backup gateway of one site: two connections, each naming its peer, with the
    same remote_ts (the administrator gave the site's subnet to both).  Both are up; the older's
    policies carry the traffic, the backup's once the primary is gone.  A peer of the %any
    connection claiming the same subnet is still refused: nobody named it."""
    async def body() -> None:
        site = "10.2.1.0/24"
        gw = await gateway("10.2.0.0/16", False, Client("primary.example", site, named=True, named_ts=site),
                           Client("backup.example", site, named=True, named_ts=site),
                           Client("anyone.example", site))
        assert gw.child_of(0) is not None and gw.child_of(1) is not None
        assert not refusals(gw, 0) and not refusals(gw, 1)
        assert gw.child_of(2) is None and [e.reason for e in refusals(gw, 2)] == ["TS_UNACCEPTABLE"]
        assert reaches(gw, "10.2.1.7") == 0
        assert sent_as(gw, 1, "10.2.1.7") is Drop.NONE   # the backup sends as the site: named for it
        gw.site_sa(0).delete(_now())
        await gw.settle()
        assert gw.child_of(0) is None
        assert reaches(gw, "10.2.1.7") == 1
    run(body())


def test_named_spokes_that_choose_from_a_wide_remote_ts_may_not_share() -> None:
    """A hub's spokes, each with a connection naming it, all with remote_ts = 10.2.0.0/16 (each
    chooses its subnet): a spoke claiming another's /24 is refused, named or not, as the
    administrator gave it no such subnet by name."""
    async def body() -> None:
        gw = await gateway("10.2.0.0/16", False, Client("spoke-a.example", "10.2.1.0/24", named=True),
                           Client("spoke-b.example", "10.2.1.0/24", named=True))
        assert gw.child_of(0) is not None and gw.child_of(1) is None
        assert [e.reason for e in refusals(gw, 1)] == ["TS_UNACCEPTABLE"]
        assert reaches(gw, "10.2.1.7") == 0
    run(body())


def test_peers_with_the_same_remote_subnet_and_disjoint_local_subnets_are_both_up() -> None:
    """Two partners of the connection of %any behind the same RFC 1918 subnet 10.2.1.0/24, one
    reaching 10.1.1.0/24, the other 10.1.2.0/24: both up (the SPD tells them apart by the local
    side); a packet from either local subnet is sealed for its own partner only, and each partner's
    SA admits its packets toward its own local subnet, not toward the other's."""
    async def body() -> None:
        gw = await gateway("10.2.0.0/16", False, Client("p0.example", "10.2.1.0/24", gw_side="10.1.1.0/24"),
                           Client("p1.example", "10.2.1.0/24", gw_side="10.1.2.0/24"))
        p0, p1 = gw.child_of(0), gw.child_of(1)
        assert p0 is not None and p1 is not None and not refusals(gw, 0) and not refusals(gw, 1)
        assert (p0.local_ts, p1.local_ts) == ((Ts.parse("10.1.1.0/24"),), (Ts.parse("10.1.2.0/24"),))
        assert p0.remote_ts == p1.remote_ts == (Ts.parse("10.2.1.0/24"),)
        assert [reaches(gw, "10.2.1.7", src) for src in ("10.1.1.5", "10.1.2.5", "10.1.3.5")] == [0, 1, None]
        assert sent_as(gw, 0, "10.2.1.7", "10.1.1.5", seq=1) is Drop.NONE
        assert sent_as(gw, 0, "10.2.1.7", "10.1.2.5", seq=2) is Drop.POLICY
        assert sent_as(gw, 1, "10.2.1.7", "10.1.2.5", seq=1) is Drop.NONE
        assert sent_as(gw, 1, "10.2.1.7", "10.1.1.5", seq=2) is Drop.POLICY
        assert len(gw.service.ts_claims) == 2
    run(body())


def test_peers_with_the_same_remote_subnet_and_overlapping_local_subnets_are_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    """The same remote subnet, and a local subnet inside the first partner's: the second is refused
    (TS_UNACCEPTABLE, the log names the first's local side too); the traffic stays the first's."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        gw = await gateway("10.2.0.0/16", False, Client("p0.example", "10.2.1.0/24", gw_side="10.1.0.0/16"),
                           Client("p1.example", "10.2.1.0/24", gw_side="10.1.2.0/24"))
        assert gw.child_of(0) is not None and gw.child_of(1) is None
        assert [e.reason for e in refusals(gw, 1)] == ["TS_UNACCEPTABLE"]
        assert [reaches(gw, "10.2.1.7", src) for src in ("10.1.1.5", "10.1.2.5")] == [0, 0]
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "TS_UNACCEPTABLE" in r.getMessage()]
    assert "p1.example" in line and "p0.example" in line and "local 10.1.0.0/16" in line
