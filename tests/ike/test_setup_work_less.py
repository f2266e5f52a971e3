"""Work a road-warrior client's set-up no longer does (issue 9 item 6 at N = 100, second round,
h/perf100b), each checked where it was done, with the outcome unchanged:

- a responder's IKE_SA_INIT does not ask whether the connection that chose the peer's proposal
  accepts it (``_accepting``: one candidate, or the chooser among several);
- the value objects a set-up makes per client are not frozen dataclasses at run time (a frozen one
  sets each field through object.__setattr__), with the same equality and hash;
- a selector's family and its addresses' integers are read without the address's property and
  ``__int__`` frames (Ts.version, intersect, the fast path's order check, the claims);
- no exception is raised and caught on the way: no generator is left unfinished (next(genexpr),
  closed with a GeneratorExit raised in it) and Handles.get raises no KeyError for an SA without
  a handle;
- no generator is made where a list comprehension or a loop does (the payloads' encoders, the
  selectors' conversions and checks, the candidates' sort, the CP request's families);
- a connection's ``names_its_peer`` and ``lease_proof`` are worked out once, not per question, and
  the PRF's size without a second property frame;
- a responder's IKE_SA_INIT reads the request's payloads in one pass, not one per payload asked for;
- an IKE SA's name, its ESP source and a pool's family are read without a second property frame.

Each test fails on the code before h/perf100b but test_equal_values_still_hash_alike, which holds
the outcome (equality and hash) as it was.  The gateway's configuration and helpers are
test_setup_work_once's."""

from __future__ import annotations

import collections
import ipaddress
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import pytest

from tests.ike.test_setup_work_once import GROUP, GW_ADDR, _client, _counting, _gateway
from tunsec.ike.config import IkeConfig, RemoteAuth
from tunsec.ike.constants import PrfId
from tunsec.ike.crypto import Prf
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.exchanges import ike_sa_init
from tunsec.ike.exchanges.child import Selection
from tunsec.ike.exchanges.ike_config import CpAnswer
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.secret import Secret
from tunsec.ike.state import AuthAnswer, IkeSaState
from tunsec.ike.testing import Network
from tunsec.policy.claims import Claim, Peer, TsClaims
from tunsec.policy.pools import AddressPools, Lease, PoolConfig, _Holder
from tunsec.policy.selector import Ts, check_fast_selectors
from tunsec.services.ike.handles import Handles

KEY = GROUP   # the group key: erin.example has no entry of its own


def _login(gateway: list[IkeConfig], run: Callable[[Callable[[], None]], object] = lambda f: f(),
           endpoint: list[IkeEndpoint] | None = None) -> bool:
    """Whether a client's IKE SA came up with a gateway of these connections (``run`` runs the exchanges;
    ``endpoint`` gets the gateway's)."""
    net = Network()
    gw = net.add(GW_ADDR, IkeEndpoint(gateway,
                                      address_pool=AddressPools([PoolConfig.parse_addrs("rw", "10.3.0.0/24")])))
    if endpoint is not None:
        endpoint.append(gw)
    addr = "198.51.100.2"
    client = IkeEndpoint([_client("erin.example", KEY, addr)])
    net.add(addr, client)

    def exchanges() -> None:
        client.initiate("home", "net", net.now)
        net.run(until=net.now + 5)

    run(exchanges)
    return any(isinstance(e, IkeSaUp) for e in net.take(addr))


def _raised(fn: Callable[[], object]) -> collections.Counter[tuple[str, str]]:
    """(function, exception) of every exception raised while ``fn`` runs, caught or not."""
    raised: collections.Counter[tuple[str, str]] = collections.Counter()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "exception":
            raised[frame.f_code.co_qualname, arg[0].__name__] += 1
        return local

    sys.settrace(lambda frame, event, arg: local)
    try:
        fn()
    finally:
        sys.settrace(None)
    return raised


def test_the_connection_that_chose_the_proposal_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's one connection: its IKE_SA_INIT matched the peer's proposal once, not a second time
    to ask whether it accepts what it chose."""
    gw = _gateway()
    asked = _counting(monkeypatch, ike_sa_init, "accepts")
    assert _login([gw])
    # (the client asks with its own proposals whether the gateway's answer is one it offered)
    assert not any(a is gw.proposals for a in asked) and len(asked) == 1


def test_other_candidates_are_still_asked_once_per_proposal_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two more %any connections, one with the chooser's proposals and one with others: each
    distinct list but the chooser's asked once, and IKE_AUTH may still switch to them."""
    gw = _gateway()
    same = IkeConfig("rw-same", gw.local, gw.remote, gw.proposals, gw.children, psk=gw.psk, pools=gw.pools,
                     local_addr=gw.local_addr)
    other = IkeConfig("rw-other", gw.local, gw.remote, parse_proposals("aes256gcm16-prfsha384-ecp384"), gw.children,
                      psk=gw.psk, pools=gw.pools, local_addr=gw.local_addr)
    asked = _counting(monkeypatch, ike_sa_init, "accepts")
    assert _login([gw, same, other])
    assert [a for a in asked if a is gw.proposals or a is other.proposals] == [other.proposals]
    assert ike_sa_init._accepting((gw, same, other), gw, parse_proposals("default")[0].to_wire(1)) == (gw, same)


@pytest.mark.parametrize("cls", [IkeSaUp, ChildSaUp, Claim, Peer, Lease, _Holder, Selection, CpAnswer, AuthAnswer,
                                 Ts, Identity])
def test_per_client_value_objects_are_not_frozen_at_run_time(cls: type) -> None:
    """mypy still refuses any assignment (tunsec.immutable); at run time the __init__ assigns plainly."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert not params.frozen
    assert "__setattr__" not in cls.__dict__ and "__delattr__" not in cls.__dict__


def test_equal_values_still_hash_alike() -> None:
    a, b = Ts.parse("10.3.0.0/24"), Ts.parse("10.3.0.0/24")
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    alice, alice_upper = Identity.parse("alice.example"), Identity.parse("ALICE.example")
    assert alice == alice_upper and hash(alice) == hash(alice_upper)   # its own caseless __eq__ and __hash__
    assert Peer(alice, "psk") == Peer(alice_upper, "psk") and hash(Peer(alice, "psk")) == hash(Peer(alice_upper, "psk"))
    assert Peer(alice, "psk") != Peer(alice, "eap-mschapv2")


def test_selectors_are_compared_without_address_property_and_int_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    wide, lease, other = Ts.parse("10.3.0.0/16"), Ts.parse("10.3.0.7/32"), Ts.parse("2001:db8::/64")
    net, half, apart = Ts.parse("10.3.0.0/24"), Ts.parse("10.3.0.128/16"), Ts.parse("10.4.0.0/24")
    alice, bob = Peer("alice", "psk"), Peer("bob", "psk")
    ints = _counting(monkeypatch, ipaddress.IPv4Address, "__int__")
    versions: list[object] = []

    def version(self: ipaddress.IPv4Address) -> int:
        versions.append(self)
        return 4

    monkeypatch.setattr(ipaddress.IPv4Address, "version", property(version))
    assert lease.version == 4 and other.version == 6
    assert wide.intersect(lease) is lease and lease.intersect(wide) is lease and wide.intersect(other) is None
    assert net.intersect(half) is net and net.intersect(apart) is None
    check_fast_selectors([wide], [lease])
    claims = TsClaims()
    claims.add(1, "rw", alice, [lease], [wide])
    assert [c.handle for c, _ in claims.overlaps(bob, [net], [wide])] == [1]
    assert ints == [] and versions == []


# what a gateway runs for each client (the client's side has its own, not counted here)
_RESPONDERS = ("init_request", "find_nonce", "responder_for", "Suite.of", "IkeConfig.assigns", "respond",
               "_peer_ids", "_cp_body", "child_installed")


def test_a_responders_set_up_raises_nothing_it_catches() -> None:
    """No generator of the responder's left unfinished (each is closed by raising GeneratorExit in it)."""
    gw = [_gateway()]
    raised: collections.Counter[tuple[str, str]] = collections.Counter()

    def run(exchanges: Callable[[], None]) -> None:
        raised.update(_raised(exchanges))

    assert _login(gw, run)
    assert [k for k in raised if k[0].split(".<locals>")[0] in _RESPONDERS] == []


def test_handles_get_raises_no_key_error() -> None:
    handles = Handles()
    class _Sa:
        state = State.ESTABLISHED

    sa, other = cast(IkeSa, _Sa()), cast(IkeSa, _Sa())
    handles[sa] = 7
    got: list[object] = []
    assert _raised(lambda: got.extend([handles.get(sa), handles.get(other), handles.get(other, -1)])) == {}
    assert got == [7, None, -1] and handles.live(7) is sa and handles.live(8) is None


# (file, function) of the set-up path that made a generator per call (a client's side runs some too)
_NO_GENERATORS = {("message.py", "Transform.encode"), ("message.py", "Proposal.encode"),
                  ("message.py", "TsPayload.encode_body"), ("child.py", "received_ts"),
                  ("child.py", "response_payloads"), ("child.py", "outside_others_leases"),
                  ("selector.py", "check_fast_selectors"), ("proposals.py", "_strip_wire_dh"),
                  ("ike_auth.py", "_select_config"), ("ike_config.py", "encode_attributes"),
                  ("ike_config.py", "respond"), ("sa_responder.py", "respond_to"),
                  ("ike_sa_init.py", "_peer_behind_nat"), ("sa_timers.py", "get_timer")}


def test_the_set_up_makes_no_generator_a_comprehension_does() -> None:
    made: set[tuple[str, str]] = set()

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if event == "call" and code.co_flags & 0x20:   # CO_GENERATOR
            made.add((code.co_filename.rsplit("/", 1)[-1], code.co_qualname.split(".<locals>")[0]))

    def run(exchanges: Callable[[], None]) -> None:
        sys.settrace(tracer)
        try:
            exchanges()
        finally:
            sys.settrace(None)

    assert _login([_gateway()], run)
    assert made & _NO_GENERATORS == set()


def test_a_connections_peer_naming_and_lease_proof_are_worked_out_once() -> None:
    gw = _gateway()
    assert gw.names_its_peer is False and gw.lease_proof == "psk rw"
    assert vars(gw)["names_its_peer"] is False and vars(gw)["lease_proof"] == "psk rw"   # kept, not asked again
    named = IkeConfig("site", gw.local, RemoteAuth("psk", Identity.parse("site.example")), gw.proposals, gw.children,
                      psk=Secret(KEY))
    assert named.names_its_peer is True and named.lease_proof == "psk site"


def test_the_prf_size_is_read_without_its_hash_names_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    prf = Prf(PrfId.HMAC_SHA2_384)
    names = _counting(monkeypatch, Prf, "hash_name")
    assert prf.size == 48 and Prf(PrfId.HMAC_SHA2_256).size == 32
    assert names == []


def test_a_responders_ike_sa_init_reads_the_request_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """find, find_notify, any_notify and find_all each passed over the request (eight passes)."""
    passes: list[str] = []

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def finder(*args: Any) -> Any:
            passes.append(name)
            return real(*args)
        return finder

    for name in ("find", "find_notify", "any_notify", "find_all"):
        if hasattr(ike_sa_init, name):
            monkeypatch.setattr(ike_sa_init, name, counted(name, getattr(ike_sa_init, name)))
    asked: list[object] = []
    real_respond = ike_sa_init.respond

    def respond(st: Any, payloads: Any) -> Any:
        before = len(passes)
        answer = real_respond(st, payloads)
        asked.append(passes[before:])
        return answer

    monkeypatch.setattr(ike_sa_init, "respond", respond)   # (responders calls it through the module)
    assert _login([_gateway()])
    assert asked == [[]]


def test_an_ike_sas_name_esp_source_and_a_pools_family_take_one_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway: list[IkeEndpoint] = []
    assert _login([_gateway()], endpoint=gateway)
    (sa,) = gateway[0].sas
    pool = PoolConfig.parse_addrs("rw", "10.3.0.0/24")

    def frame(self: object) -> object:
        raise AssertionError("read through its second property")

    monkeypatch.setattr(IkeSaState, "name", property(frame))
    monkeypatch.setattr(IkeSaState, "local_ip", property(frame))
    monkeypatch.setattr(ipaddress.IPv4Address, "version", property(frame))
    assert sa.name == "rw" and sa.esp_local == (GW_ADDR, 4500) and pool.version == 4
