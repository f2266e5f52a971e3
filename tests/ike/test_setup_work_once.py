"""Work a road-warrior client's set-up no longer does twice (issue 9 item 6 at N = 100, h/perf100),
each checked where it was repeated, with the outcome unchanged:

- a responder's PSK IKE_AUTH looks the peer's key up once (its own AUTH uses the entry it checked the
  peer's with), and checks the identities' sizes once;
- PskIndex.lookup makes the peer identity's text once, not once more per entry ranked;
- is_link_local parses no IPv4 address (every IKE_SA_INIT asks);
- one selector on each side is paired, and narrowed by one, without hashing it for the dedup, and
  a client's one lease is compared, not hashed;
- a datagram goes into the engine without its IKE SA looked up while SPIs are pooled;
- a configured proposal hashes its transforms once (it keys the match cache at every client's
  IKE_SA_INIT and IKE_AUTH), and its key-exchange-less form (a first Child SA's) is made once.

Each test fails on the code before h/perf100 (a count of 2 where 1 is asserted, a parse, a rehash)."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tunsec.conf.config import parse_config
from tunsec.dataplane.client import WorkerClient
from tunsec.ike import identity as identity_mod
from tunsec.ike import link_local, psk
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ProtocolId, TransformType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.exchanges import ike_auth
from tunsec.ike.exchanges.child import outside_others_leases
from tunsec.ike.identity import Identity
from tunsec.ike.message import Transform
from tunsec.ike.proposals import ProposalSpec, parse_proposals, select_proposal
from tunsec.ike.sa import IkeSa
from tunsec.ike.secret import Secret
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import Network
from tunsec.policy.pad import narrow
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.policy.selector import TooManySelectors, Ts, check_fast_selectors, selector_pairs
from tunsec.services.ike.barrier import Barrier
from tunsec.services.ike.spis import SpiPool

GW_ADDR = "192.0.2.1"
GROUP, DAVE = b"a group key for all of us here", b"dave's own pre-shared key"
CONF = """\
connections {
    rw {
        local_addrs = 192.0.2.1
        pools = rw
        local {
            auth = psk
            id = gw.example
        }
        remote {
            auth = psk
        }
        children {
            net {
                local_ts = 10.9.0.0/16
                remote_ts = dynamic
            }
        }
    }
}
pools {
    rw {
        addrs = 10.3.0.0/24
    }
}
secrets {
    ike-all {
        id = gw.example
        secret = "a group key for all of us here"
    }
    ike-dave {
        id-gw = gw.example
        id-user = dave.example
        secret = "dave's own pre-shared key"
    }
}
tunsec {
    tun = tunsec0
}
"""


def _gateway() -> IkeConfig:
    (conn,) = parse_config(CONF, "swanctl.conf").connections
    return conn.ike


def _client(ident: str, key: bytes, addr: str) -> IkeConfig:
    return IkeConfig("home", LocalAuth("psk", Identity.parse(ident)), RemoteAuth("psk", Identity.parse("gw.example")),
                     parse_proposals("default"), (child_config("net", "dynamic", "10.9.0.0/16"),),
                     psk=Secret(key), local_addr=addr, remote_addr=GW_ADDR, vips=(ipaddress.ip_address("0.0.0.0"),))


def _login(gw: IkeConfig, ident: str, key: bytes) -> bool:
    """Whether the client's IKE SA came up (the client checked the gateway's AUTH with ``key``)."""
    net = Network()
    net.add(GW_ADDR, IkeEndpoint([gw], address_pool=AddressPools([PoolConfig.parse_addrs("rw", "10.3.0.0/24")])))
    addr = "198.51.100.2"
    net.add(addr, IkeEndpoint([_client(ident, key, addr)])).initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    return any(isinstance(e, IkeSaUp) for e in net.take(addr))


def _counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[object]:
    """Replace owner.name by a wrapper that notes each call's first argument."""
    real = getattr(owner, name)
    calls: list[object] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.mark.parametrize(("ident", "key"), [("dave.example", DAVE), ("erin.example", GROUP)])
def test_a_psk_ike_auth_looks_the_peers_key_up_once_and_answers_with_it(
        monkeypatch: pytest.MonkeyPatch, ident: str, key: bytes) -> None:
    """dave's own entry and the group key: the client checks the gateway's AUTH with the key it proved
    itself with, so the gateway's answer was made with the entry its one lookup found."""
    gw = _gateway()
    lookups = _counting(monkeypatch, type(gw._psk_index), "lookup")
    assert _login(gw, ident, key)
    assert len(lookups) == 1, "the peer's AUTH checked and ours made with one psk_for"


def test_a_responders_ike_auth_checks_the_identities_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = identity_mod.check_peer_identity   # as ike_auth imported it
    checked: list[bytes] = []

    def check(id_type: int, data: bytes) -> None:
        checked.append(data)
        real(id_type, data)

    monkeypatch.setattr(ike_auth, "check_peer_identity", check)
    assert _login(_gateway(), "dave.example", DAVE)
    # the gateway's check of the client's IDi (only the gateway checks it: the client checks the
    # gateway's IDr, in its request and in the answer)
    assert checked.count(b"dave.example") == 1


def test_a_lookup_makes_the_peers_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = _gateway()
    texts = _counting(monkeypatch, psk, "_text")
    entry = gw._psk_index.lookup(Identity.parse("dave.example"))
    assert entry is not None and entry.secret == Secret(DAVE)
    assert len(texts) == 1, "two entries ranked (dave's, the group key), one text"


def test_an_ipv4_source_is_not_parsed_for_the_link_local_check(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = _counting(monkeypatch, ipaddress, "ip_address")   # link_local calls ipaddress.ip_address
    assert not link_local.is_link_local("192.0.2.7")
    assert not link_local.is_link_local("junk")
    assert parses == []
    assert link_local.is_link_local("fe80::1%eth0") and not link_local.is_link_local("::ffff:169.254.1.1")
    assert len(parses) == 2


def test_a_configured_proposal_hashes_its_transforms_once(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_proposals("default", ProtocolId.IKE)[0]
    hashed = _counting(monkeypatch, Transform, "__hash__")
    first = hash(spec)
    assert len(hashed) == len(spec.transforms)
    assert hash(spec) == first and len(hashed) == len(spec.transforms)
    # the dataclass's own hash, so equal specs (another configuration's, a reload's) are one cache key
    other = ProposalSpec(spec.protocol, tuple(spec.transforms))
    assert other == spec and other is not spec and hash(other) == first == hash((spec.protocol, spec.transforms))
    assert {spec: 1}[other] == 1


def test_the_proposal_without_key_exchange_is_made_once() -> None:
    (spec,) = parse_proposals("aes128gcm16-x25519-modp2048", ProtocolId.ESP)
    assert spec.without_dh() is spec.without_dh()
    assert spec.without_dh() == ProposalSpec(spec.protocol,
                                              tuple(t for t in spec.transforms if t.type != TransformType.DH))
    assert len(spec.without_dh().transforms) < len(spec.transforms)
    # a first Child SA's match (strip_dh) picks what a fresh key-exchange-less spec picks
    ours = parse_proposals("default", ProtocolId.ESP)
    theirs = [s.to_wire(n + 1, b"\x01\x02\x03\x04")
              for n, s in enumerate(parse_proposals(["aes256gcm16-esn-noesn", "aes128gcm16"], ProtocolId.ESP))]
    chosen = select_proposal(ours, theirs, strip_dh=True)
    assert chosen is not None and chosen == select_proposal(ours, theirs, strip_dh=True)
    assert chosen.spi == b"\x01\x02\x03\x04" and chosen.num == 1



def test_one_selector_a_side_is_paired_without_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Child SA's usual one local and one remote selector: paired as before, none hashed for the
    dedup (the engine's check and the install's pairs each did it, four IP address hashes a time)."""
    local, remote = Ts.parse("10.9.0.0/16"), Ts.parse("10.3.0.7/32")
    hashed = _counting(monkeypatch, Ts, "__hash__")
    assert selector_pairs([local], [remote]) == [(local, remote)]
    check_fast_selectors([local], [remote])
    assert hashed == []
    assert selector_pairs([local, local], [remote]) == [(local, remote)]   # duplicates: one of each, as before
    assert len(hashed) == 2


def test_a_datagram_goes_in_without_its_ike_sa_looked_up_while_spis_are_pooled() -> None:
    """With SPIs pooled and nothing waiting, every datagram goes into the engine at once, whoever it
    is for: no header parse and lookup of its IKE SA first (IkeEndpoint.sa_for, every client's
    IKE_SA_INIT and IKE_AUTH).  Once others wait, an IKE SA's datagram waits behind them as before."""
    async def body() -> None:
        delivered: list[bytes] = []
        looked_up: list[bytes] = []
        owner = cast(IkeSa, SimpleNamespace(local_spi=b"\x01" * 8, is_half_open=False))

        def lookup(data: bytes) -> IkeSa | None:
            looked_up.append(data)
            return owner

        barrier = Barrier(lambda now: [], lambda d: None, asyncio.ensure_future, lambda: None)
        pool = SpiPool(lambda: cast(WorkerClient, None), asyncio.ensure_future, barrier,
                       lambda data, remote, local, unmarked: delivered.append(data), lambda: None, owner=lookup)
        pool.spis.append(0xC0000001)
        pool.receive(b"ike auth", ("198.51.100.2", 4500))
        assert delivered == [b"ike auth"] and looked_up == []
        pool._held.append(lambda: None)   # others wait already: an IKE SA's datagram waits behind them
        pool.receive(b"next", ("198.51.100.2", 4500))
        assert delivered == [b"ike auth"] and looked_up == [b"next"] and len(pool._held) == 2

    asyncio.run(body())


def test_one_selector_narrowed_by_one_is_not_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Child SA's usual one proposed and one allowed selector (each side, every client): narrowed
    as before, no dedup hash; with more, duplicates are still one, and the limit still holds."""
    wide, lease = Ts.parse("10.3.0.0/16"), Ts.parse("10.3.0.7/32")
    hashed = _counting(monkeypatch, Ts, "__hash__")
    assert narrow([lease], [wide], 4) == (lease,) and narrow([Ts.parse("10.4.0.1/32")], [wide]) == ()
    assert hashed == []
    assert narrow([lease, lease], [wide]) == (lease,)
    with pytest.raises(TooManySelectors):
        narrow([lease], [wide], 0)


def test_a_single_lease_is_compared_not_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    """outside_others_leases with the peer's one lease (remote_ts = dynamic): its address is not hashed
    into a set; the selectors come back as they were."""
    lease = SimpleNamespace(address=ipaddress.IPv4Address("10.3.0.7"))
    st = cast(IkeSaState, SimpleNamespace(config=SimpleNamespace(pools=("rw",)), address_pool=object(),
                                          peer_vips=(lease,)))
    hashed = _counting(monkeypatch, ipaddress.IPv4Address, "__hash__")
    sel = (Ts.parse("10.3.0.7/32"),)
    assert outside_others_leases(st, sel) == sel
    assert hashed == []
