"""Many peers on one `remote_addrs = %any` connection, through the IKE service.

The gateway is a real IkeService driving the real worker logic and C fast path
in-process (tunsec.dataplane.worker.Worker over a Dataplane); the sites are
IKE engines wired to it in memory.  What a gateway must guarantee: every
peer's Child SA owns its reqid, policies and SAs, traffic for a site is sealed
with that site's key and sent to that site, and one peer's teardown or rekey
touches nothing of another's, even when the peers picked the same SPIs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tunsec.conf.connections import Child, Connection
from tunsec.dataplane import client, pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.fastpath import Dataplane, DataplaneError, Drop, lib
from tunsec.dataplane.pipe import Action, Direction, Endpoint, Errno
from tunsec.dataplane.worker import Worker
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa
from tunsec.ike.secret import Secret
from tunsec.policy.claims import Claim
from tunsec.policy.ids import IdSpace
from tunsec.policy.selector import Ts
from tunsec.services.ike import IkeService, installs

GW = "192.0.2.1"
PSK = Secret(b"a shared secret of some length")
SHARED_SPI = 0xC0FFEE01     # every site picks this inbound SPI: the gateway's outbound SPIs all collide


def site_ip(i: int) -> str:
    return f"198.51.100.{i + 1}"


def site_net(i: int) -> str:
    return f"10.2.{i + 1}.0/24"


def psk_ike(name: str, local_id: str, remote: RemoteAuth, local_ip: str, remote_ip: str | None,
            local_ts: str, remote_ts: str) -> IkeConfig:
    return IkeConfig(name, LocalAuth("psk", Identity.parse(local_id)), remote,
                     parse_proposals("aes128gcm16-prfsha256-curve25519"),
                     (child_config("net", local_ts, remote_ts, "aes128gcm16"),),
                     psk=PSK, local_addr=local_ip, remote_addr=remote_ip)


class InProcessWorker:
    """The worker's request handling and the C fast path, without the process and pipe around them,
    timed as through the pipe: a request is applied when it is sent (the worker reads requests in
    the order they come), its answers are read in a later event-loop turn, and request_soon hands
    back answers that say an error rather than raising (as WorkerClient's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send_ike: Callable[[pipe.SendIke], None]) -> None:
        self.dp = Dataplane()
        self.worker = Worker(self.dp, lambda data: None, {}, loop)
        self.send_ike = send_ike
        self.ids = itertools.count(1)
        self.log: list[pipe.Message] = []
        self.in_flight = 0   # as WorkerClient's: requests waiting for their answer
        # a test's: an awaitable for a request whose answer it holds back (the worker applied it)
        self.hold: Callable[[pipe.Message], Awaitable[object] | None] | None = None
        self._late: Callable[[list[pipe.Reply]], None] | None = None   # see request_soon

    async def request(self, build: Callable[[int], pipe.Message], max_bytes: int | None = None) -> list[pipe.Reply]:
        """As WorkerClient's (max_bytes unchecked: this worker does not lie): applied when sent, answered
        in a later turn; WorkerError unless all say OK,
        or (from a TimeoutError) if no answer came within client.REQUEST_TIMEOUT: a request whose
        answer a test holds for ever must end as it would through the pipe, not hang the test."""
        msg, fut = self.send(build)
        self.in_flight += 1
        timer = asyncio.get_running_loop().call_later(client.REQUEST_TIMEOUT, _time_out, fut)
        try:
            replies = await fut
        except TimeoutError as err:
            raise WorkerError(f"{type(msg).__name__} ({err})", Errno.EIO) from err
        finally:
            timer.cancel()
            self.in_flight -= 1
        bad = [r for r in replies if r.errno is not Errno.OK]
        if bad:
            raise WorkerError(type(msg).__name__, bad[0].errno, refused=True)   # as WorkerClient.request
        return replies

    def request_soon(self, build: Callable[[int], pipe.Message],
                     then: Callable[[list[pipe.Reply]], None] | None = None,
                     failed: object = None,
                     late: Callable[[list[pipe.Reply]], None] | None = None) -> asyncio.Future[list[pipe.Reply]]:
        """As WorkerClient's: applied when sent; the future gets the answers (errno unchecked) in a
        later turn, and ``then`` is called with them as they are read (it never fails: no ``failed``);
        ``late`` with them if they come after the future was cancelled (given up on)."""
        self._late = late   # to send (not a parameter: tests replace send with wrappers of two)
        return self.send(build, then)[1]

    def send(self, build: Callable[[int], pipe.Message], then: Callable[[list[pipe.Reply]], None] | None = None
             ) -> tuple[pipe.Message, asyncio.Future[list[pipe.Reply]]]:
        """The request goes through the worker's handling now, as a pipe delivers requests in the
        order they were sent; its answers are read in a later event-loop turn, or, when ``hold``
        (a test's) gives an awaitable for it, once that is done (never: a hung worker)."""
        late, self._late = self._late, None   # request_soon's
        built = build(next(self.ids))
        # a Child SA's install comes encoded (pipe.direct): as the worker, read it
        msg = pipe.decode(built) if isinstance(built, bytes) else built
        self.log.append(msg)
        if isinstance(msg, pipe.SendIke):
            self.send_ike(msg)
            replies = [pipe.Reply(msg.req_id, msg.TYPE, Errno.OK)]
        else:
            replies = [pipe.decode(b) for b in self.worker.handle_datagram(pipe.encode(msg))]  # type: ignore[misc]
            assert all(isinstance(r, pipe.Reply) for r in replies)
        fut: asyncio.Future[list[pipe.Reply]] = asyncio.get_running_loop().create_future()

        def answered() -> None:
            if not fut.done():
                fut.set_result(replies)
                if then is not None:
                    then(replies)
            elif fut.cancelled() and late is not None:
                late(replies)
        held = self.hold(msg) if self.hold is not None else None
        if held is None:
            asyncio.get_running_loop().call_soon(answered)
        else:
            asyncio.ensure_future(held).add_done_callback(lambda _: answered())
        return msg, fut


def _time_out(fut: asyncio.Future[list[pipe.Reply]]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"no answer within {client.REQUEST_TIMEOUT} s"))


@dataclass
class FakeSocket:
    """The gateway's port-500 socket."""

    wire: list[tuple[tuple[str, int], tuple[str, int], bytes]]

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.wire.append(((GW, 500), addr, data))
        return len(data)


@dataclass
class Gateway:
    """An IkeService on GW with `remote_addrs = %any`, n sites, and the wire between them."""

    n: int
    service: IkeService = field(init=False)
    worker: InProcessWorker = field(init=False)
    sites: list[IkeEndpoint] = field(default_factory=list)
    site_events: list[list[Any]] = field(default_factory=list)
    wire: list[tuple[tuple[str, int], tuple[str, int], bytes]] = field(default_factory=list)
    nat: dict[int, tuple[str, int]] = field(default_factory=dict)   # site -> its NAT's outside mapping
    mobike: bool = True   # the sites announce MOBIKE (RFC 4555), as the gateway does
    encap: bool = True    # the sites force UDP encapsulation (False: genuine NAT detection hashes)
    drop: Callable[[int, bytes], bool] | None = None   # drop(site, datagram): lose what site sends
    ke_pool: int = 0      # the gateway's ready key pairs per group (tunsec { ke_pool })

    async def start(self) -> None:
        gw = psk_ike("gw", "gw.example", RemoteAuth("psk"), GW, None, "10.1.0.0/16", "10.2.0.0/16")
        self.worker = InProcessWorker(asyncio.get_running_loop(), self._natt_out)
        self.service = IkeService([Connection(gw.name, gw)], lambda: self.worker, {4: GW}, IdSpace(),  # type: ignore[arg-type,return-value]
                                  ke_pool=self.ke_pool)
        await self.service.start()
        self.service.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire)}  # type: ignore[dict-item]
        for i in range(self.n):
            cfg = psk_ike(f"site{i}", f"site{i}.example", RemoteAuth("psk", Identity.parse("gw.example")),
                          site_ip(i), GW, site_net(i), "10.1.0.0/16")
            cfg = dataclasses.replace(cfg, mobike=self.mobike, force_encap=self.encap)
            # every site's first inbound SPI is the same; later ones (rekeys) differ from its own earlier ones
            self.sites.append(IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI))))
            self.site_events.append([])

    def _natt_out(self, msg: pipe.SendIke) -> None:
        self.wire.append(((GW, 4500), (str(msg.remote.addr), msg.remote.port), msg.data))

    def connect(self, i: int) -> None:
        self.sites[i].initiate(f"site{i}", "net", _now())

    async def settle(self, wait_tasks: bool = True) -> None:
        """Deliver datagrams and let the service's tasks run until nothing moves (without
        ``wait_tasks``, tasks that wait for something else are left waiting)."""
        idle = 0
        while idle < 20:
            moved = False
            for i, site in enumerate(self.sites):
                for d in site.datagrams_to_send(_now()):
                    if self.drop is not None and self.drop(i, d.data):
                        continue
                    self.wire.append((self.nat.get(i, (site_ip(i), d.local_port)), d.addr, d.data))
                while (ev := site.next_event()) is not None:
                    self.site_events[i].append(ev[1])
            while self.wire:
                moved = True
                src, dst, data = self.wire.pop(0)
                if dst[0] == GW:
                    if dst[1] == 4500:
                        self.service.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src[0]),
                                                                                      src[1])))
                    else:
                        self.service.receive(data, src, dst)
                        self.service._pump()
                else:
                    inside = {v: k for k, v in self.nat.items()}
                    i = inside.get(dst) if dst in inside else next(k for k in range(self.n) if site_ip(k) == dst[0])
                    assert i is not None
                    self.sites[i].receive(data, src, _now(), dst if dst not in inside else (site_ip(i), 4500))
            for _ in range(5):
                await asyncio.sleep(0)
            if (self.service._tasks or self.service.sockets.natt_sends) and wait_tasks:
                await asyncio.wait([*self.service._tasks, *self.service.sockets.natt_sends])
                moved = True
            idle = 0 if moved else idle + 1

    def site_sa(self, i: int) -> IkeSa:
        return next(sa for sa in self.sites[i].sas if sa.state.value == "established")

    def site_key_in(self, i: int) -> bytes:
        """The key site i opens the gateway's ESP with (its newest Child SA)."""
        ups = [e for e in self.site_events[i] if isinstance(e, ChildSaUp)]
        return ups[-1].key_in.reveal()

    def children_of(self, i: int) -> list[Any]:
        return [c for c in self.service.children.values() if str(c.remote.addr) == site_ip(i)]

    def send_to_site(self, i: int) -> tuple[bytes, Endpoint | None, Drop]:
        esp, dst, drop, _ = self.worker.dp.outbound(ipv4_udp("10.1.0.5", f"10.2.{i + 1}.7"))
        return esp, dst, drop


async def connected(n: int, mobike: bool = True) -> Gateway:
    """A gateway with n sites, each of which initiated its IKE SA and Child SA, settled."""
    gw = Gateway(n, mobike=mobike)
    await gw.start()
    for i in range(n):
        gw.connect(i)
    await gw.settle()
    return gw


def _now() -> float:
    import time
    return time.monotonic()


def ipv4_udp(src: str, dst: str, payload: bytes = b"for one site only") -> bytes:
    udp = struct.pack("!HHHH", 1234, 5678, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    csum = sum(struct.unpack("!10H", hdr))
    csum = (csum & 0xFFFF) + (csum >> 16)
    csum = ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + udp


def esp_seal(spi: int, seq: int, key: bytes, inner: bytes) -> bytes:
    """An RFC 4106 ESP packet (AES-GCM, 8-byte IV = the sequence number), as a client sends it."""
    pad = (-(len(inner) + 2)) % 4
    plain = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
    head = struct.pack("!II", spi, seq)
    iv = struct.pack("!Q", seq)
    return head + iv + AESGCM(key[:-4]).encrypt(key[-4:] + iv, plain, head)


def esp_open(key: bytes, esp: bytes) -> tuple[int, bytes]:
    """(SPI, inner packet) of an RFC 4106 ESP packet; raises InvalidTag for the wrong key."""
    spi = struct.unpack("!I", esp[:4])[0]
    plain = AESGCM(key[:-4]).decrypt(key[-4:] + esp[8:16], esp[16:], esp[:8])
    pad_len = plain[-2]
    return spi, plain[: len(plain) - 2 - pad_len]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def child_claims(svc: IkeService) -> int:
    """The claims of Child SAs (and held lineages), not those of the named connections' configured
    children (services/ike/configured_claims.py), which stay while the configuration names them."""
    return len(svc.ts_claims) - len(svc.configured_claims)


def unconfigured(found: list[tuple[Claim, Ts]]) -> list[tuple[Claim, Ts]]:
    """``found`` (TsClaims.overlaps) without the named connections' configured claims."""
    return [(c, ts) for c, ts in found if not c.configured]


def assert_reaches_only_its_site(gw: Gateway, i: int) -> None:
    esp, dst, drop = gw.send_to_site(i)
    assert drop is Drop.NONE
    assert dst == Endpoint(ipaddress.ip_address(site_ip(i)), 4500)
    spi, inner = esp_open(gw.site_key_in(i), esp)
    assert spi == max(c.spi_out for c in gw.children_of(i)) and inner == ipv4_udp("10.1.0.5", f"10.2.{i + 1}.7")


# ----------------------------------------------------------------------------- tests


def test_each_peer_owns_its_reqid_policies_and_sas() -> None:
    async def body() -> None:
        gw = Gateway(6)
        await gw.start()
        for i in range(gw.n):
            gw.connect(i)
            await gw.settle()
        svc = gw.service
        # every peer's child is booked, none overwrote another (unique ids restart per IKE SA)
        assert len(svc.children) == gw.n
        assert len({c.unique_id for c in svc.children.values()}) == 1   # the engine's ids repeat per IKE SA
        reqids = {c.reqid for c in svc.children.values()}
        assert len(reqids) == gw.n
        # each reqid has exactly the policy for its own site's subnet, bound to its own SA
        policies = gw.worker.dp.policies()
        assert len(policies) == gw.n and {p.reqid for p in policies} == reqids
        for i in range(gw.n):
            (child,) = gw.children_of(i)
            (pol,) = [p for p in policies if p.reqid == child.reqid]
            assert pol.action is Action.PROTECT and str(pol.selector.dst_lo) == f"10.2.{i + 1}.0"
            assert child.spi_out == SHARED_SPI
        outs = [s for s in gw.worker.dp.sas() if s.direction is Direction.OUT]
        assert len(outs) == gw.n and {s.spi for s in outs} == {SHARED_SPI}
        for i in range(gw.n):
            assert_reaches_only_its_site(gw, i)
        # status: each IKE SA lists its own child, and only that one
        status = svc.ike_sas()
        assert len(status) == gw.n
        for entry in status:
            (child,) = entry["children"]
            assert child["remote"].startswith(entry["remote"].split("[")[0] + "[")
        assert len({e["children"][0]["reqid"] for e in status}) == gw.n

    run(body())


def test_one_peer_leaving_and_returning_leaves_the_others_untouched() -> None:
    async def body() -> None:
        gw = await connected(3)
        svc = gw.service
        before = {i: gw.children_of(i)[0] for i in (0, 2)}
        policies_before = {p.id: p for p in gw.worker.dp.policies() if p.reqid != gw.children_of(1)[0].reqid}
        b_reqid = gw.children_of(1)[0].reqid
        # site 1 (B) terminates its IKE SA
        gw.site_sa(1).delete(_now())
        await gw.settle()
        assert gw.children_of(1) == []
        assert not any(p.reqid == b_reqid for p in gw.worker.dp.policies())
        assert {p.id: (p.reqid, p.selector) for p in gw.worker.dp.policies()} == \
            {k: (p.reqid, p.selector) for k, p in policies_before.items()}
        outs = {(s.spi, str(s.remote.addr)) for s in gw.worker.dp.sas() if s.direction is Direction.OUT and s.remote}
        assert outs == {(SHARED_SPI, site_ip(0)), (SHARED_SPI, site_ip(2))}
        assert gw.send_to_site(1)[2] is Drop.NO_POLICY
        for i in (0, 2):
            assert gw.children_of(i) == [before[i]]
            assert_reaches_only_its_site(gw, i)
        # and comes back: a fresh reqid, nobody else's
        gw.connect(1)
        await gw.settle()
        (back,) = gw.children_of(1)
        assert back.reqid not in {before[0].reqid, before[2].reqid}
        for i in range(gw.n):
            assert_reaches_only_its_site(gw, i)
        assert len(svc.children) == 3 and len(gw.worker.dp.policies()) == 3

    run(body())


def test_rekey_keeps_the_reqid_and_policies_of_its_own_lineage_only() -> None:
    async def body() -> None:
        gw = await connected(2)
        (a,) = gw.children_of(0)
        (b,) = gw.children_of(1)
        policies = {(p.id, p.reqid) for p in gw.worker.dp.policies()}
        # site 0 rekeys its Child SA (with a new inbound SPI, SHARED_SPI + 1)
        site = gw.site_sa(0)
        site.rekey_child(site.children[0].unique_id)
        await gw.settle()
        (a2,) = gw.children_of(0)
        assert a2.handle != a.handle and a2.spi_out == 0xC0FFEE02
        assert a2.reqid == a.reqid and a2.lineage is a.lineage
        assert {(p.id, p.reqid) for p in gw.worker.dp.policies()} == policies
        assert gw.children_of(1) == [b]
        outs = {(s.spi, str(s.remote.addr)) for s in gw.worker.dp.sas() if s.direction is Direction.OUT and s.remote}
        assert outs == {(0xC0FFEE02, site_ip(0)), (SHARED_SPI, site_ip(1))}
        esp, _, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and esp_open(gw.site_key_in(0), esp)[0] == 0xC0FFEE02
        assert_reaches_only_its_site(gw, 1)
        # the lineage ends with its IKE SA: reqid and policy ids go back to the pool
        gw.site_sa(0).delete(_now())
        await gw.settle()
        assert a.reqid not in gw.service.ids.reqids.used
        assert {p.reqid for p in gw.worker.dp.policies()} == {b.reqid}

    run(body())


def test_ids_are_one_space_for_manual_and_ike() -> None:
    from tunsec.policy.ids import Band, IdsExhausted, priority

    ids = IdSpace()
    taken = {ids.reqid() for _ in range(100)}
    assert len(taken) == 100
    ids.release_reqid(5)
    assert ids.reqid() not in taken     # released ids come back only after a full cycle
    small = IdSpace()
    small.reqids.hi = 3
    got = [small.reqid() for _ in range(3)]
    assert sorted(got) == [1, 2, 3]
    try:
        small.reqid()
        raise AssertionError("a full space must refuse")
    except IdsExhausted:
        pass
    small.release_reqid(2)
    assert small.reqid() == 2
    assert priority(Band.MANUAL, 10) < priority(Band.IKE_CHILD) < priority(Band.TRAP)


def test_a_half_open_responder_sa_does_not_hold_back_trap_initiation() -> None:
    """Anyone can leave a half-open IKE SA on our connection by sending one IKE_SA_INIT; that must
    not stop our own negotiation when traffic hits the trap policy.  Our own attempt under way does."""
    from tunsec.policy.ids import Band, priority

    peer = "198.51.100.9"

    async def body() -> None:
        wire: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        ike = psk_ike("trap", "gw.example", RemoteAuth("psk", Identity.parse("peer.example")), GW, peer,
                      "10.1.0.0/16", "10.9.0.0/16")
        conn = Connection(ike.name, ike, (Child("net", ike.child("net"), start_action="trap"),))
        svc = IkeService([conn], lambda: worker, {4: GW}, IdSpace())  # type: ignore[arg-type,return-value]
        await svc.start()
        svc.sockets.by_key = {(4, GW, 500): FakeSocket(wire)}  # type: ignore[dict-item]
        (trap,) = worker.dp.policies()
        assert trap.priority == priority(Band.TRAP) and trap.id in svc.trap_policies
        # the peer's IKE_SA_INIT arrives; its answer is lost: a half-open responder SA remains
        other = IkeEndpoint([psk_ike("x", "peer.example", RemoteAuth("psk", Identity.parse("gw.example")), peer, GW,
                                     "10.9.0.0/16", "10.1.0.0/16")])
        other.initiate("x", "net", _now())
        (init,) = other.datagrams_to_send(_now())
        svc.endpoint.receive(init.data, (peer, 500), _now(), (GW, 500))
        svc._pump()
        wire.clear()
        (half,) = svc.endpoint.sas
        assert not half.is_initiator and half.name == "trap"
        svc.acquire(trap.id)
        ours = [sa for sa in svc.endpoint.sas if sa.is_initiator]
        assert len(ours) == 1 and ours[0].name == "trap"
        assert [(dst, len(data) > 0) for _, dst, data in wire] == [((peer, 500), True)]
        svc.acquire(trap.id)           # ours is under way: no second one
        assert len([sa for sa in svc.endpoint.sas if sa.is_initiator]) == 1

    run(body())


def test_an_outbound_expire_rekeys_the_child_of_that_peer_only() -> None:
    """EXPIRE names an outbound SA by (SPI, peer); with colliding SPIs the SPI alone would pick anyone."""
    async def body() -> None:
        gw = await connected(3)
        before = {i: gw.children_of(i)[0] for i in range(gw.n)}
        peer1 = Endpoint(ipaddress.ip_address(site_ip(1)), 4500)
        assert gw.service.expired(SHARED_SPI, Direction.OUT, False, peer1)
        await gw.settle()
        (after1,) = gw.children_of(1)
        assert after1.handle != before[1].handle and after1.reqid == before[1].reqid   # rekeyed in its lineage
        for i in (0, 2):
            assert gw.children_of(i) == [before[i]]
        assert not gw.service.expired(SHARED_SPI, Direction.OUT, False, Endpoint(ipaddress.ip_address("192.0.2.99"),
                                                                                 4500))
        for i in range(gw.n):
            assert_reaches_only_its_site(gw, i)

    run(body())


@pytest.mark.parametrize("mobike", [False, True])
def test_nat_rebinding_moves_the_peers_child_sas_with_its_ike_sa(mobike: bool) -> None:
    """RFC 7296 §2.23: a site's NAT mapping changes (new address and port); its next authenticated
    IKE request (a DPD) moves the gateway's IKE SA, and the Child SAs follow it: the gateway's ESP
    for that site goes to the new mapping, same keys, numbers going on.  The other site's SAs stay.
    With MOBIKE (RFC 4555) the request that moves it is the site's UPDATE_SA_ADDRESSES, and the Child
    SAs follow once the gateway's return routability check came back from the new mapping."""
    async def body() -> None:
        gw = await connected(2, mobike=mobike)
        assert_reaches_only_its_site(gw, 0)
        (child,) = gw.children_of(0)
        other = [(s.spi, s.remote) for s in gw.worker.dp.sas() if s.remote != child.remote]
        gw.nat[0] = ("198.51.100.201", 40000)
        if mobike:
            assert gw.site_sa(0).update_addresses()
        else:
            gw.site_sa(0).send_liveness()
        await gw.settle()
        moved = Endpoint(ipaddress.ip_address("198.51.100.201"), 40000)
        assert gw.service.children[child.handle].remote == moved
        esp, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == moved
        spi, inner = esp_open(gw.site_key_in(0), esp)   # the site's key: the same SA, numbers going on
        assert spi == child.spi_out and struct.unpack("!I", esp[4:8])[0] == 2 and inner[16:20] == bytes([10, 2, 1, 7])
        migrates = [m for m in gw.worker.log if isinstance(m, pipe.Migrate)]
        assert {(m.spi, m.direction, m.new_remote) for m in migrates} == {
            (child.spi_out, Direction.OUT, moved), (child.spi_in, Direction.IN, moved)}
        assert [(s.spi, s.remote) for s in gw.worker.dp.sas() if s.remote != moved] == other
        # the site is still reachable at its new mapping, and the other site where it was
        gw.site_sa(0).send_liveness()
        await gw.settle()
        assert len([m for m in gw.worker.log if isinstance(m, pipe.Migrate)]) == 2   # nothing moved again
        esp, dst, drop = gw.send_to_site(1)
        assert drop is Drop.NONE and dst == Endpoint(ipaddress.ip_address(site_ip(1)), 4500)

    run(body())


def test_one_peers_pending_install_holds_back_only_its_own_datagrams() -> None:
    """Make-before-break is per peer: while the worker has not answered the install of site 0's
    Child SA, the gateway's IKE_AUTH response to site 0 waits, but site 1's leaves (a burst of
    clients is not serialised behind one install).  Site 0's follows once the install is answered."""
    async def body() -> None:
        gw = Gateway(2)
        await gw.start()
        gate = asyncio.Event()

        def slow_for_site0(msg: pipe.Message) -> Awaitable[object] | None:
            if isinstance(msg, pipe.Update) and msg.sa.remote.addr == ipaddress.ip_address(site_ip(0)):
                return gate.wait()
            return None

        gw.worker.hold = slow_for_site0
        gw.connect(0)
        gw.connect(1)
        await gw.settle(wait_tasks=False)   # site 0's install is not answered until the gate opens
        assert [sa.state.value for sa in gw.sites[1].sas] == ["established"]
        assert [sa.state.value for sa in gw.sites[0].sas] != ["established"]
        assert gw.service.barrier.install_waits >= 1
        gate.set()
        await gw.settle()
        assert_reaches_only_its_site(gw, 0)
        assert_reaches_only_its_site(gw, 1)

    run(body())


def test_a_child_sa_whose_install_the_worker_never_answers_is_given_up(caplog: pytest.LogCaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung worker: no answer to site 0's SPDADD (its last install request; the worker answers in
    order).  After the timeout the install is given up as failed (logged, the Child SA forgotten)
    and the IKE_AUTH answer held for it leaves, the Child SA refused in it (fixauthchild: TS_UNACCEPTABLE,
    its SAs went in, its policy did not; the IKE SA up); site 1's install, answered, is booked."""
    monkeypatch.setattr(installs, "REQUEST_TIMEOUT", 0.05)
    async def body() -> None:
        gw = Gateway(2)
        await gw.start()
        def hung(msg: pipe.Message) -> Awaitable[object] | None:
            if isinstance(msg, pipe.SpdAdd) and str(msg.policy.selector.dst_lo) == "10.2.1.0":
                return asyncio.get_running_loop().create_future()   # never answered
            return None
        gw.worker.hold = hung
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            gw.connect(0)
            gw.connect(1)
            await gw.settle()
            await asyncio.sleep(0.2)
            await gw.settle()
        failed = [r.getMessage() for r in caplog.records if "installing CHILD_SA" in r.getMessage()]
        assert len(failed) == 1 and "failed: SpdAdd (no answer within 10 s): EIO" in failed[0], failed
        up = [r.getMessage() for r in caplog.records if " up, SPIs " in r.getMessage()]
        assert len(up) == 1 and site_ip(1) in up[0], up
        assert gw.children_of(0) == [] and [c.install for c in gw.children_of(1)] == [None]
        # the IKE_AUTH answer reached site 0 after all: its IKE SA is up there, the Child SA refused
        # in it (before fixauthchild: up there, and then deleted)
        assert any(isinstance(e, IkeSaUp) for e in gw.site_events[0])
        assert not any(isinstance(e, ChildSaUp) for e in gw.site_events[0])
        assert [e.reason for e in gw.site_events[0] if isinstance(e, NegotiationFailed)] == ["TS_UNACCEPTABLE"]
    run(body())


def test_a_child_sa_whose_install_the_worker_refuses_is_removed_again(caplog: pytest.LogCaptureFixture) -> None:
    """A Child SA's UPDATE, ADD and SPDADD are sent together and their answers awaited together:
    when the worker refuses one (here site 0's SPDADD), the error is logged, the SAs that did go in
    are deleted again and the Child SA is forgotten; another peer's install is untouched."""
    async def body() -> None:
        gw = Gateway(2)
        await gw.start()
        spd_add = gw.worker.dp.spd_add

        def refuse_site0(policy: pipe.Policy) -> None:
            if str(policy.selector.dst_lo) == "10.2.1.0":
                raise DataplaneError("spd_add", lib.TS_ENOSPC)
            spd_add(policy)

        gw.worker.dp.spd_add = refuse_site0  # type: ignore[method-assign]
        spd_add_fields = gw.worker.dp.spd_add_fields

        def refuse_site0_fields(fields: Any) -> None:   # the worker's raw way: the selector's dst_lo field
            if fields[5][4] == bytes([10, 2, 1, 0]) + bytes(12):
                raise DataplaneError("spd_add", lib.TS_ENOSPC)
            spd_add_fields(fields)

        gw.worker.dp.spd_add_fields = refuse_site0_fields  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
            gw.connect(0)
            gw.connect(1)
            await gw.settle()
        failed = [r.getMessage() for r in caplog.records if "installing CHILD_SA" in r.getMessage()]
        assert len(failed) == 1 and "failed: SpdAdd: ENOSPC" in failed[0], failed
        assert gw.children_of(0) == [] and len(gw.children_of(1)) == 1
        (child1,) = gw.children_of(1)
        # only site 1's SAs and policy are left in the worker
        assert {(s.spi, s.direction) for s in gw.worker.dp.sas() if s.state == "mature"} == {
            (child1.spi_in, Direction.IN), (child1.spi_out, Direction.OUT)}
        assert [p.reqid for p in gw.worker.dp.policies()] == [child1.reqid]
        assert_reaches_only_its_site(gw, 1)

    run(body())


@pytest.mark.parametrize("mobike", [False, True])
def test_every_child_sa_of_a_moved_peer_follows_it(mobike: bool) -> None:
    """Issue 9 item 4: the IKE SA *and every Child SA* move. Site 0 has two Child SAs under one IKE SA
    (``net`` for the gateway's lower half, ``web`` for its upper half); after its NAT mapping changes
    both send their ESP to the new mapping with the same keys, and site 1's SA stays where it was."""
    async def body() -> None:
        gw = Gateway(2, mobike=mobike)
        await gw.start()
        halves = {"net": "10.1.0.0/17", "web": "10.1.128.0/17"}
        cfg = dataclasses.replace(
            psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(0), GW,
                    site_net(0), "10.1.0.0/16"),
            mobike=mobike,
            children=tuple(child_config(n, site_net(0), ts, "aes128gcm16") for n, ts in halves.items()))
        gw.sites[0] = IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI)))
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        gw.site_sa(0).initiate("web")
        await gw.settle()
        # the gateway's one child config served both: the site's children are told apart by their SPIs
        ups = {e.child: e for e in gw.site_events[0] if isinstance(e, ChildSaUp)}
        assert sorted(ups) == ["net", "web"] and len(gw.children_of(0)) == 2, gw.children_of(0)
        children = {name: next(c for c in gw.children_of(0) if c.spi_out == e.spi_in) for name, e in ups.items()}
        site1 = Endpoint(ipaddress.ip_address(site_ip(1)), 4500)
        other = [(s.spi, s.remote) for s in gw.worker.dp.sas() if s.remote == site1]
        assert len(other) == 2   # its inbound and outbound SA
        gw.nat[0] = ("198.51.100.201", 40000)
        if mobike:
            assert gw.site_sa(0).update_addresses()
        else:
            gw.site_sa(0).send_liveness()
        await gw.settle()
        moved = Endpoint(ipaddress.ip_address("198.51.100.201"), 40000)
        keys = {name: e.key_in.reveal() for name, e in ups.items()}
        for name, src in (("net", "10.1.0.5"), ("web", "10.1.200.5")):
            assert gw.service.children[children[name].handle].remote == moved, name
            packet = ipv4_udp(src, "10.2.1.7")
            esp, dst, drop, _ = gw.worker.dp.outbound(packet)
            assert (drop, dst) == (Drop.NONE, moved), name
            spi, inner = esp_open(keys[name], esp)   # the same SA and keys as before the move
            assert (spi, inner) == (children[name].spi_out, packet), name
        migrates = {(m.spi, m.direction) for m in gw.worker.log if isinstance(m, pipe.Migrate)}
        assert migrates == {(c.spi_out, Direction.OUT) for c in children.values()} | {
            (c.spi_in, Direction.IN) for c in children.values()}
        assert [(s.spi, s.remote) for s in gw.worker.dp.sas() if s.remote == site1] == other

    run(body())
