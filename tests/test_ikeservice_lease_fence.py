"""A virtual IP handed on: the next client gets a pool address only when nothing of the client
that had it is left in the worker (issue 9, "leases unique and released on delete").

A road warrior's lease goes offline with its IKE SA, in the engine, at once; its Child SAs'
SAs and policies leave the worker later, through the changes queue (services/ike/installs.py
``_child_down``).  With a pool of ONE address, client B (another identity) is leased that same
address as soon as client A's IKE SA is gone, and its Child SA (remote_ts = the address) is
installed at once.  Anything of A still in the worker then would take B's traffic (A's policy
for the address sits before B's: the SPD takes the older of equal priority) or let A send as B
(A's inbound SA admits the address as source).  So, whatever the interleaving (B's IKE_AUTH
in the same turn as A's DELETE or DPD failure, or while A's removal holds the changes queue;
A having rekeyed its Child SA just before, whose old inbound SA would linger for packets in
flight), from B's first install request on the worker holds no SA and no policy of A's, and
a packet to the address is sealed for B.  The same when A itself comes back with the address.

The gateway is a real IkeService with the worker's request handling and the C fast path in
process: applying requests in the order they are sent, as the worker reads the pipe
(test_ikeservice_install_order.PipeOrderWorker), or at the far end of a real SOCK_SEQPACKET pipe
from the daemon's WorkerClient (PipeWorker); the clients are IKE engines wired to it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from pipe_batches import messages
from test_ikeservice_install_order import PipeOrderWorker, turns
from test_ikeservice_peers import GW, PSK, FakeSocket, Gateway, _now, esp_open, esp_seal, ipv4_udp, run, site_ip

from tunsec.conf.connections import Connection
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient
from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Direction, Endpoint, Errno
from tunsec.dataplane.worker import Worker
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, RetransmitConfig, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.ts import Ts
from tunsec.policy.ids import IdSpace
from tunsec.policy.pools import PoolConfig
from tunsec.services.ike import IkeService
from tunsec.services.ike.state import ChildState

VIP = "10.3.0.7"
POOL = PoolConfig.parse_addrs("rw", f"{VIP}-{VIP}")    # ONE address
GW_NET = "10.1.0.0/16"
A, B = 0, 1
IDS = ("a.example", "b.example")
PROPOSALS = parse_proposals("aes128gcm16-prfsha256-curve25519")


def client_cfg(i: int, ident: str) -> IkeConfig:
    return IkeConfig(f"site{i}", LocalAuth("psk", Identity.parse(ident)),
                     RemoteAuth("psk", Identity.parse("gw.example")), PROPOSALS,
                     (child_config("net", "dynamic", GW_NET, "aes128gcm16"),), psk=PSK,
                     local_addr=site_ip(i), remote_addr=GW, vips=(ipaddress.ip_address("0.0.0.0"),), mobike=False)


class WatchedWorker(PipeOrderWorker):
    """PipeOrderWorker calling ``watch`` with each request right after the worker applied it."""

    watch: Callable[[pipe.Message], None] | None = None

    def _apply(self, build: Callable[[int], pipe.Message]) -> list[pipe.Reply]:
        replies = super()._apply(build)
        if self.watch is not None:
            self.watch(self.log[-1])
        return replies


class PipeWorker:
    """The worker's request handling and C fast path at the far end of a real SOCK_SEQPACKET pipe,
    talking to the daemon's WorkerClient: read from the pipe when the event loop gets to it (as
    the worker process does, in its own loop), answered in order.  Only the process is missing.
    SEND_IKE goes onto the test's wire."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send_ike: Callable[[pipe.SendIke], None]) -> None:
        self.dp = Dataplane()
        self.worker = Worker(self.dp, lambda data: None, {}, loop)
        self.send_ike = send_ike
        self.log: list[pipe.Message] = []
        self.watch: Callable[[pipe.Message], None] | None = None
        ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._theirs.setblocking(False)
        self.client = WorkerClient(lambda msg: None)
        self.client._sock = ours
        loop.add_reader(ours.fileno(), self.client._readable)
        loop.add_reader(self._theirs.fileno(), self._readable)
        self._loop = loop

    def _readable(self) -> None:
        while True:
            try:
                datagram = self._theirs.recv(1 << 17)
            except BlockingIOError:
                return
            for data in messages(datagram):   # a turn's requests come as one batch
                self._request(data)

    def _request(self, data: bytes) -> None:
        msg = pipe.decode(data)
        self.log.append(msg)
        if isinstance(msg, pipe.SendIke):
            self.send_ike(msg)
            answers = [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.OK))]
        else:
            answers = self.worker.handle_datagram(data)
        if self.watch is not None:
            self.watch(msg)
        for answer in answers:
            self._theirs.send(answer)

    def close(self) -> None:
        for sock in (self.client._sock, self._theirs):
            if sock is not None:
                self._loop.remove_reader(sock.fileno())
                sock.close()


@dataclass
class PoolGateway(Gateway):
    """Gateway (test_ikeservice_peers) whose connection leases the clients' remote_ts from POOL."""

    dpd: bool = False   # fast DPD retransmits, to lose a silent client in a fraction of a second
    pipe: bool = False  # the worker behind a real pipe (PipeWorker), else applying requests as sent

    def close(self) -> None:
        if self.pipe:
            self.piped.close()

    async def start(self) -> None:
        # DPD on, but its timer never fires here: lose_a starts the liveness check itself, when A is to go
        # (a 0.2 s timer lost A early, before lose_a, whenever the set-up before it took ~0.4 s)
        quick = dict(dpd_delay=3600.0, retransmit=RetransmitConfig(timeout=0.1, base=1.0, tries=1)) if self.dpd else {}
        ike = IkeConfig("gw", LocalAuth("psk", Identity.parse("gw.example")), RemoteAuth("psk"), PROPOSALS,
                        (child_config("net", GW_NET, "dynamic", "aes128gcm16"),), psk=PSK, local_addr=GW,
                        pools=(POOL.name,), **quick)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        if self.pipe:
            self.piped = PipeWorker(loop, self._natt_out)
            self.worker = self.piped   # type: ignore[assignment]   (dp and log, as the tests read them)
            client = self.piped.client
        else:
            self.worker = client = WatchedWorker(loop, self._natt_out)   # type: ignore[assignment]
        self.service = IkeService([Connection(ike.name, ike)], lambda: client, {4: GW}, IdSpace(),  # type: ignore[arg-type,return-value]
                                  pools=[POOL])
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        for i in range(self.n):
            self.sites.append(IkeEndpoint([client_cfg(i, IDS[i])]))
            self.site_events.append([])


@dataclass
class Fence:
    """What the worker holds of the client that left, checked after every request it applies from
    the next client's first install request on: every breach is noted."""

    gone_in: set[int]                        # the leaving client's inbound SPIs at the gateway
    gone_out: set[tuple[int, Endpoint]]      # its outbound SAs (SPI, peer)
    gone_policies: set[int]                  # its policy ids (ids come back only after a full cycle)
    gone_reqid: int
    started: bool = False
    breaches: list[str] = field(default_factory=list)

    def watch(self, worker: PipeOrderWorker | PipeWorker) -> Callable[[pipe.Message], None]:
        def check(msg: pipe.Message) -> None:
            after = f"after {type(msg).__name__}"
            if not self.started and isinstance(msg, (pipe.Update, pipe.Add)) and msg.sa.spi not in self.gone_in \
                    and (msg.sa.spi, msg.sa.remote) not in self.gone_out:
                self.started = True
            if not self.started:
                return
            for sa in worker.worker.dp.sas():
                if (sa.direction is Direction.IN and sa.spi in self.gone_in) or \
                        (sa.direction is Direction.OUT and (sa.spi, sa.remote) in self.gone_out):
                    self.breaches.append(f"{after}: {sa.direction.name} SA {sa.spi:08x} of the old client")
            for pol in worker.worker.dp.policies():
                if pol.id in self.gone_policies or pol.reqid == self.gone_reqid:
                    self.breaches.append(f"{after}: policy {pol.id} (reqid {pol.reqid}) of the old client")
        return check


def child_of(gw: Gateway, ident: str) -> ChildState | None:
    """The gateway's newest Child SA with the client of that identity."""
    mine = [c for c in gw.service.children.values()
            if (sa := gw.service._ike_sa(c.ike)) is not None and str(sa.peer_id) == ident]
    return max(mine, key=lambda c: c.handle, default=None)


def fence_of(gw: Gateway, ident: str, earlier_in: set[int]) -> Fence:
    """A Fence around everything the gateway installed for the client of ``ident`` (with ``earlier_in``,
    inbound SPIs of Child SAs it rekeyed away that may still linger)."""
    mine = [c for c in gw.service.children.values()
            if (sa := gw.service._ike_sa(c.ike)) is not None and str(sa.peer_id) == ident]
    (reqid,) = {c.reqid for c in mine}
    return Fence({c.spi_in for c in mine} | earlier_in, {(c.spi_out, c.remote) for c in mine},
                 set(mine[0].lineage.policy_ids), reqid)


def to_gateway(gw: Gateway, i: int, data: bytes, port: int) -> None:
    """One datagram from client i to the gateway's port (4500: as the worker passes it up), pumped."""
    if port == 4500:
        gw.service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(site_ip(i)), 4500)))
    else:
        gw.service.receive(data, (site_ip(i), 500), (GW, 500))
        gw.service._pump()


async def held_ike_auth(gw: Gateway, i: int) -> bytes:
    """Client i's IKE_SA_INIT exchange with the gateway; its IKE_AUTH request, not delivered."""
    site = gw.sites[i]
    site.initiate(f"site{i}", "net", _now())
    (init,) = site.datagrams_to_send(_now())
    to_gateway(gw, i, init.data, init.addr[1])
    for _ in range(200):   # its answer may wait for a GETSPI refill or a key pair (tasks)
        if any(dst[0] == site_ip(i) for _, dst, _ in gw.wire):
            break
        await turns()
    ((src, dst, answer),) = [w for w in gw.wire if w[1][0] == site_ip(i)]
    gw.wire.remove((src, dst, answer))
    site.receive(answer, src, _now(), dst)
    (auth,) = site.datagrams_to_send(_now())
    assert auth.addr == (GW, 4500)   # NAT-T is forced: on to port 4500
    return auth.data


def ike_sa_of(gw: Gateway, ident: str) -> IkeSa:
    return next(sa for sa in gw.service.endpoint.sas if str(sa.peer_id) == ident and sa.state is State.ESTABLISHED)


def assert_sealed_for(gw: Gateway, i: int, child: ChildState) -> None:
    """A packet to the address leaves for client i, sealed with its newest key, under the Child SA's SPI."""
    esp, dst, drop, _ = gw.worker.dp.outbound(ipv4_udp("10.1.0.5", VIP))
    assert drop is Drop.NONE and dst == Endpoint(ipaddress.ip_address(site_ip(i)), 4500)
    spi, inner = esp_open(gw.site_key_in(i), esp)
    assert spi == child.spi_out and inner == ipv4_udp("10.1.0.5", VIP)
    (pol,) = [p for p in gw.worker.dp.policies() if p.selector.dst_lo == ipaddress.ip_address(VIP)]
    assert pol.reqid == child.reqid and pol.out_spi == child.spi_out


async def lose_a(gw: Gateway, how: str, then: Callable[[], None]) -> None:
    """Client A's IKE SA at the gateway goes: ``delete`` (A's INFORMATIONAL DELETE arrives) or
    ``dpd`` (A falls silent, the gateway's liveness check gives up); ``then`` runs at once, in the
    same turn (after the service handled the events of the close).  Returns when both are done."""
    svc = gw.service
    a_sa = ike_sa_of(gw, IDS[A])
    if how == "delete":
        gw.site_sa(A).delete(_now())
        (dele,) = gw.sites[A].datagrams_to_send(_now())
        to_gateway(gw, A, dele.data, dele.addr[1])
        assert a_sa.is_closed
        then()
        return
    done = asyncio.get_running_loop().create_future()
    on_timer = svc._on_timer

    def timer() -> None:   # the gateway's timer (svc._arm arms svc._on_timer: this, from now on)
        on_timer()
        if a_sa.is_closed and not done.done():
            then()
            done.set_result(None)
    svc._on_timer = timer   # type: ignore[method-assign]
    a_sa.send_liveness()    # what the DPD timer does when A was silent for dpd_delay
    svc._pump()
    svc._arm(at_least=0.0)
    async with asyncio.timeout(30):   # a bound, no threshold: DPD takes ~0.2 s here
        while not done.done():
            gw.wire[:] = [w for w in gw.wire if w[1][0] != site_ip(A)]   # A hears nothing, says nothing
            await asyncio.sleep(0.02)


def next_client(gw: Gateway, i: int, auth: bytes, when: str, fence: Fence, seen: list[object]) -> Callable[[], None]:
    """What delivers client i's held IKE_AUTH once A's IKE SA is gone: in the same turn, or in the
    next (A's removal, spawned in that turn, has started: it holds the changes queue, waiting for
    the worker's answers).  ``seen``: the leases then, and whether the queue was held."""
    def deliver() -> None:
        seen.append([(str(x.address), x.online) for x in gw.service.pools.leases()])
        seen.append(gw.service._changes.locked() and not fence.started)
        to_gateway(gw, i, auth, 4500)
    if when == "same turn":
        return deliver
    return lambda: asyncio.get_running_loop().call_soon(deliver)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("how", ["delete", "dpd"])
@pytest.mark.parametrize("when", ["same turn", "during removal"])
@pytest.mark.parametrize("rekeyed", ["", "child rekeyed", "IKE SA rekeyed"])
@pytest.mark.parametrize("worker", ["in process", "pipe"])
def test_the_next_client_gets_the_address_only_after_the_old_one_left_the_worker(
        how: str, when: str, rekeyed: str, worker: str) -> None:
    async def body() -> None:
        gw = PoolGateway(2, mobike=False, dpd=how == "dpd", pipe=worker == "pipe")
        await gw.start()
        try:
            await handed_on(gw, how, when, rekeyed)
        finally:
            gw.close()

    run(body())


async def handed_on(gw: PoolGateway, how: str, when: str, rekeyed: str) -> None:
    """A up (its Child SA or IKE SA rekeyed); B's IKE_AUTH held; A lost; B's IKE_AUTH in the same
    turn or while A's removal holds the changes queue; then (a), (b), (c) of the module's docstring."""
    gw.connect(A)
    await gw.settle()
    a_child = child_of(gw, IDS[A])
    assert a_child is not None and a_child.remote_ts == (Ts.host(VIP),)
    earlier_in: set[int] = set()
    if rekeyed == "IKE SA rekeyed":   # the lease goes over to the new IKE SA, the Child SA with it
        old_ike = gw.site_sa(A)
        old_ike.rekey()
        await gw.settle()
        assert gw.site_sa(A) is not old_ike and child_of(gw, IDS[A]) is a_child
    if rekeyed == "child rekeyed":   # A rekeys its Child SA: the old inbound SA lingers for packets in flight
        earlier_in.add(a_child.spi_in)
        old_key = next(e for e in gw.site_events[A] if isinstance(e, ChildSaUp)).key_out.reveal()
        sa = gw.site_sa(A)
        sa.rekey_child(sa.children[0].unique_id)
        await gw.settle()
        a_child = child_of(gw, IDS[A])
        assert a_child is not None and a_child.spi_in not in earlier_in
        assert earlier_in <= {s.spi for s in gw.worker.dp.sas() if s.direction is Direction.IN}
    assert [(str(x.address), x.identity, x.online) for x in gw.service.pools.leases()] == [(VIP, IDS[A], True)]
    # B's IKE_SA_INIT is answered; its IKE_AUTH waits (now it would find the pool exhausted)
    auth = await held_ike_auth(gw, B)
    fence = fence_of(gw, IDS[A], earlier_in)
    gw.worker.watch = fence.watch(gw.worker)
    seen: list[object] = []
    await lose_a(gw, how, next_client(gw, B, auth, when, fence, seen))   # then B is leased the address at once
    await gw.settle()
    assert seen[0] == [(VIP, False)]   # A's lease went offline with its IKE SA
    assert seen[1] is (when == "during removal")
    # (a) B's Child SA is installed, for the address A had
    b_child = child_of(gw, IDS[B])
    assert b_child is not None and b_child.remote_ts == (Ts.host(VIP),)
    assert [(str(x.address), x.identity, x.online) for x in gw.service.pools.leases()] == [(VIP, IDS[B], True)]
    assert {s.spi for s in gw.worker.dp.sas()} >= {b_child.spi_in}
    assert child_of(gw, IDS[A]) is None
    # (b) from B's first install request on, the worker held nothing of A's
    assert fence.started and fence.breaches == []
    # (c) a packet to the address is sealed for B, under B's outbound SPI
    assert_sealed_for(gw, B, b_child)
    if rekeyed == "child rekeyed":   # A cannot send as B on the SA it rekeyed away either
        (old_in,) = earlier_in
        esp = esp_seal(old_in, 1, old_key, ipv4_udp(VIP, "10.1.0.5"))
        inner, drop = gw.worker.dp.inbound(esp, Endpoint(ipaddress.ip_address(site_ip(A)), 4500),
                                           Endpoint(ipaddress.ip_address(GW), 4500))
        assert (inner, drop) == (b"", Drop.NO_SA)


@pytest.mark.parametrize("when", ["same turn", "during removal"])
@pytest.mark.parametrize("worker", ["in process", "pipe"])
def test_a_client_back_with_its_own_address_finds_nothing_of_its_old_ike_sa(when: str, worker: str) -> None:
    """A leaves (DELETE) and comes back at once (its IKE_AUTH in the same turn): the same address,
    installed behind the old Child SA's removal."""
    async def body() -> None:
        gw = PoolGateway(1, mobike=False, pipe=worker == "pipe")
        await gw.start()
        try:
            await back_again(gw, when)
        finally:
            gw.close()

    run(body())


async def back_again(gw: PoolGateway, when: str) -> None:
    """A up; A's DELETE held; A restarted, its IKE_AUTH held; both in the same turn, or A's
    IKE_AUTH while the old Child SA's removal holds the changes queue."""
    gw.connect(A)
    await gw.settle()
    fence = fence_of(gw, IDS[A], set())
    gw.worker.watch = fence.watch(gw.worker)
    old_site = gw.sites[A]
    gw.sites[A] = IkeEndpoint([client_cfg(A, IDS[A])])   # A, restarted (its first self sends the DELETE)
    gw.site_events[A] = []
    auth = await held_ike_auth(gw, A)
    gw.sites[A], new_site = old_site, gw.sites[A]
    seen: list[object] = []

    def back() -> None:
        gw.sites[A] = new_site
        next_client(gw, A, auth, when, fence, seen)()
    await lose_a(gw, "delete", back)
    await gw.settle()
    assert seen[0] == [(VIP, False)]
    assert seen[1] is (when == "during removal")
    back = child_of(gw, IDS[A])
    assert back is not None and back.remote_ts == (Ts.host(VIP),)
    assert [(str(x.address), x.identity, x.online) for x in gw.service.pools.leases()] == [(VIP, IDS[A], True)]
    assert fence.started and fence.breaches == []
    assert_sealed_for(gw, A, back)


@pytest.mark.parametrize("first", ["linger ends", "lineage ends"])
def test_a_lingering_inbound_sa_is_deleted_once_when_its_time_and_its_lineage_end_together(first: str) -> None:
    """A deleted inbound SPI is the worker's to hand out again (GETSPI): a second DELETE of it could
    remove another Child SA's SA.  The linger's end and the lineage's end (both queued on the changes
    queue, in either order, in one turn) delete the lingering SA once between them."""
    async def body() -> None:
        gw = PoolGateway(1, mobike=False)
        await gw.start()
        gw.connect(A)
        await gw.settle()
        a_child = child_of(gw, IDS[A])
        assert a_child is not None
        old_in = a_child.spi_in
        sa = gw.site_sa(A)
        sa.rekey_child(sa.children[0].unique_id)
        await gw.settle()
        svc = gw.service
        ((timer, linger_ends),) = svc._timers.items()   # the old inbound SA's linger (a fake clock for it)

        def linger_over() -> None:   # its time is up now
            timer.cancel()
            del svc._timers[timer]
            linger_ends()
        if first == "linger ends":
            linger_over()   # its deletion is queued; in the same turn, A's DELETE comes
            await lose_a(gw, "delete", lambda: None)
        else:
            await lose_a(gw, "delete", linger_over)   # the lineage's removal is queued, then the linger's end
        await gw.settle()
        deletes = [m for m in gw.worker.log if isinstance(m, pipe.Delete) and m.spi == old_in]
        assert len(deletes) == 1 and deletes[0].direction is Direction.IN
        assert old_in not in {s.spi for s in gw.worker.dp.sas()} and gw.service.children == {}

    run(body())
