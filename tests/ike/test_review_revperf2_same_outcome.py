"""Review revperf2 of h/perf100b: what its speed-ups must not change, held against the code before it.

No finding: each of these passes on main and on the tree before the merge (b3ab9968).  They hold
the outcomes the review compared old against new for (docs/changes/2026-12-05-revperf2.md), so a
later speed-up of the same code cannot change them unnoticed:

- a responder's IKE_SA_INIT read in one pass decides as find/find_notify/any_notify/find_all did:
  the same requests refused (a missing or repeated SA, KE or Nonce), and for those accepted the same
  CERTREQ, fragmentation, REDIRECT support, NAT and signature hashes taken from the first of each;
- ``_accepting`` without asking the chooser's proposal list gives what asking every list gave;
- the selectors' ``_version``/``_ip`` reads agree with ``version``/``int()`` for the address kinds a
  Ts may hold (IPv4Interface, an address subclass; IPv4-mapped IPv6);
- IkeConfig's cached names_its_peer and lease_proof belong to the object: a changed connection
  (a reload builds new objects; dataclasses.replace as well) is asked afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress
import random

from tests.ike.test_setup_work_once import GROUP, GW_ADDR, _client, _gateway
from tunsec.ike.config import IkeConfig, RemoteAuth
from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.exchanges import ike_sa_init
from tunsec.ike.exchanges.base import any_notify, find, find_all, find_notify
from tunsec.ike.identity import Identity
from tunsec.ike.message import (
    CertReqPayload,
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    VendorIdPayload,
    decode_message,
)
from tunsec.ike.proposals import accepts, parse_proposals, select_proposal
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import nat_hash
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.policy.selector import IPAddress, Ts, check_fast_selectors

CLIENT = "198.51.100.2"
_EXTRA: list[Payload] = [
    NotifyPayload(NotifyType.REDIRECT_SUPPORTED),
    NotifyPayload(NotifyType.REDIRECTED_FROM, b"\x01\x04\xc0\x00\x02\x09"),
    NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
    NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)),
    NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, b"\x00\x02"),
    NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, b"\x00\x04"), CertReqPayload(4, b""), VendorIdPayload(b"x"),
]


def _first_request() -> Message:
    client = IkeEndpoint([_client("erin.example", GROUP, CLIENT)])
    client.initiate("home", "net", 0.0)
    (datagram,) = client.datagrams_to_send(0.0)
    return decode_message(datagram.data)


def _served(base: Message, payloads: list[Payload]) -> list[IkeSa]:
    gw = IkeEndpoint([_gateway()], address_pool=AddressPools([PoolConfig.parse_addrs("rw", "10.3.0.0/24")]))
    msg = Message(base.spi_i, base.spi_r, base.exchange, base.flags, base.message_id, tuple(payloads))
    gw.receive(msg.encode(), (CLIENT, 500), 0.0, (GW_ADDR, 500))
    gw.datagrams_to_send(0.0)
    return gw.sas


def _eight_passes(payloads: list[Payload], spi_i: bytes) -> tuple[bool, bool, bool, bool, bytes | None]:
    """What the responder took from a request before h/perf100b, pass by pass."""
    sources = [n.data for n in find_all(payloads, NotifyPayload) if n.type == NotifyType.NAT_DETECTION_SOURCE_IP]
    seen = nat_hash(spi_i, bytes(8), (CLIENT, 500))
    sig = find_notify(payloads, NotifyType.SIGNATURE_HASH_ALGORITHMS)
    return (find(payloads, CertReqPayload) is not None,
            find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None,
            any_notify(payloads, {NotifyType.REDIRECT_SUPPORTED, NotifyType.REDIRECTED_FROM}),
            bool(sources) and not any(hmac.compare_digest(h, seen) for h in sources),
            None if sig is None else sig.data)


def test_one_pass_ike_sa_init_decides_as_the_eight_passes_did() -> None:
    base = _first_request()
    sa, ke, nonce = find(base.payloads, SaPayload), find(base.payloads, KePayload), find(base.payloads, NoncePayload)
    assert sa is not None and ke is not None and nonce is not None
    rest: list[Payload] = [p for p in base.payloads if p not in (sa, ke, nonce)] + _EXTRA
    rng = random.Random(2)
    accepted = refused = 0
    for i in range(120):
        payloads: list[Payload]
        if i % 3 == 0:   # anything: a missing, repeated or reordered SA, KE or Nonce among the rest
            pool: list[Payload] = [sa, ke, nonce, sa, ke, nonce, *rest]
            payloads = rng.sample(pool, rng.randint(0, len(pool)))
        else:
            payloads = [sa, ke, nonce, *rng.sample(rest, rng.randint(0, len(rest)))]
            rng.shuffle(payloads)
        sas = _served(base, payloads)
        if [type(p) for p in payloads].count(SaPayload) != 1 or [type(p) for p in payloads].count(KePayload) != 1 \
                or [type(p) for p in payloads].count(NoncePayload) != 1:
            assert sas == [], payloads
            refused += 1
            continue
        (got,) = sas
        st = got._st
        certreq, frag, redirect, nat, sig = _eight_passes(payloads, base.spi_i)
        assert (st.peer_certreq, st.peer_fragmentation, st.peer_redirect_support, st.nat_peer) == \
            (certreq, frag, redirect, nat), payloads
        assert st.peer_hashes == ike_sa_init._peer_hashes(
            [] if sig is None else [NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, sig)])
        accepted += 1
    assert accepted > 40 and refused > 10   # (both kinds were tried)


def test_accepting_without_asking_the_chooser_gives_what_asking_all_gave() -> None:
    gw = _gateway()
    rng = random.Random(3)
    lists = [tuple(parse_proposals(text)) for text in (
        "aes128gcm16-prfsha256-x25519", "aes256-sha384-prfsha384-ecp384-x25519",
        "aes128-sha256-modp2048,aes256gcm16-prfsha512-ecp256", "default")]
    offers = ["aes128gcm16-prfsha256-x25519", "aes256-sha384-prfsha384-ecp384", "aes128-sha256-modp2048-ecp256",
              "aes256gcm16-prfsha512-ecp256-x25519", "aes256-sha512-prfsha512-ecp521"]
    compared = 0
    for _ in range(300):
        cands = tuple(IkeConfig(f"c{j}", gw.local, gw.remote, rng.choice(lists), gw.children, psk=gw.psk)
                      for j in range(rng.randint(1, 4)))
        offered = parse_proposals(",".join(rng.sample(offers, rng.randint(1, 3))))
        theirs = [p.to_wire(n + 1) for n, p in enumerate(offered)]
        prefer = rng.choice([None, 14, 19, 31])
        for cfg in cands:
            chosen = select_proposal(cfg.proposals, theirs, prefer_group=prefer)
            if chosen is not None:
                asked_all = tuple(c for c in cands if c is cfg or accepts(c.proposals, chosen))
                assert ike_sa_init._accepting(cands, cfg, chosen) == asked_all
                compared += 1
                break
    assert compared > 100


def test_private_address_reads_agree_with_version_and_int() -> None:
    kinds: list[IPAddress] = [ipaddress.IPv4Address("10.3.0.9"), ipaddress.IPv4Interface("10.3.0.200/24"),
             ipaddress.IPv6Address("::ffff:10.3.0.9"), ipaddress.IPv6Address("2001:db8::1"),
             ipaddress.IPv6Interface("::ffff:10.3.0.1/120")]
    for a in kinds:
        for b in kinds:
            t = Ts(min(a, b, key=int) if type(a) is type(b) else a, max(a, b, key=int) if type(a) is type(b) else b)
            assert t.version == t.start.version
            for other in (Ts.parse("10.3.0.0/24"), Ts.parse("::ffff:10.3.0.0/120"), Ts.parse("0.0.0.0/0")):
                got = t.intersect(other)
                if t.start.version != other.start.version:
                    assert got is None
                    continue
                lo, hi = max(int(t.start), int(other.start)), min(int(t.end), int(other.end))
                assert (got is None) == (lo > hi)
                if got is not None:
                    assert (int(got.start), int(got.end)) == (lo, hi)
            # a refusal (SelectorError, a ValueError) as before; never another exception
            with contextlib.suppress(ValueError):
                check_fast_selectors([t], [Ts.parse("10.9.0.0/16")])


def test_cached_connection_properties_belong_to_the_object() -> None:
    gw = _gateway()
    assert gw.names_its_peer is False and gw.lease_proof == "psk rw"
    named = dataclasses.replace(gw, remote=RemoteAuth("psk", Identity.parse("site.example")))
    renamed = dataclasses.replace(named, name="site")
    assert named.names_its_peer is True and renamed.lease_proof == "psk site"
    assert gw.names_its_peer is False and gw.lease_proof == "psk rw"
