"""Per-user PSKs at their edges (review revpsk, after h/fixpsk; the layout: test_engine_per_user_psk).

F1: an initiator of ``remote.id = %any`` checks the responder's AUTH with the key it proved itself
with, never with the entry the responder's IDr names (another gateway's key, or a user's own).
F3: a group key proves no identity whose text an entry names under another type.
F4: a DN IDi costs a lookup, not a comparison with every entry naming a DN."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from test_engine_per_user_psk import GW_ADDR, PER_USER, _client, _conf, _gateway

from tunsec.conf.config import parse_config
from tunsec.ike import identity
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.exchanges import ike_auth
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.psk import PskEntry, PskIndex, psk_for_peer
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

CAROL_ADDR = "198.51.100.2"
GROUP = b"a group key for everyone here"
KEY2 = b"key of carol and gw2, 0123456789"

# carol's client: her key for gw1 (an entry naming her alone, hers for any gateway) and gw2's
CLIENT = f"""\
connections {{
    home {{
        local_addrs = {CAROL_ADDR}
        remote_addrs = {GW_ADDR}
        local {{
            auth = psk
            id = carol.example
        }}
        remote {{
            auth = psk
        }}
        children {{
            net {{
                local_ts = 10.2.0.0/24
                remote_ts = 10.9.0.0/16
            }}
        }}
    }}
}}
secrets {{
    ike-home {{
        id = carol.example
        secret = "key of carol for gw1, 0123456789"
    }}
    ike-gw2 {{
        id-a = carol.example
        id-b = gw2.example
        secret = "{KEY2.decode()}"
    }}
}}
tunsec {{
    tun = tunsec0
}}
"""


def _impostor(ident: str, key: bytes, addr: str, monkeypatch: pytest.MonkeyPatch) -> IkeConfig:
    """A responder at ``addr`` answering as ``ident`` with ``key``: it cannot check the initiator's
    AUTH (it lacks that key), nor needs to; the rest is the real engine."""
    real = ike_auth._verify_psk

    def verify(st, peer_id, octets, auth):  # type: ignore[no-untyped-def]
        return None if st.config.name == "impostor" else real(st, peer_id, octets, auth)

    monkeypatch.setattr(ike_auth, "_verify_psk", verify)
    return IkeConfig("impostor", LocalAuth("psk", Identity.parse(ident)), RemoteAuth("psk", Identity.any()),
                     parse_proposals("default"), (child_config("net", "0.0.0.0/0", "0.0.0.0/0"),),
                     psk=Secret(key), local_addr=addr)


def _initiate(cfg: IkeConfig, at: str, impostor: IkeConfig, child: str = "net") -> list[IkeSaUp]:
    net = Network()
    net.add(impostor.local_addr or "", IkeEndpoint([impostor]))
    net.add(at, IkeEndpoint([cfg])).initiate(cfg.name, child, net.now)
    net.run(until=net.now + 5)
    return [e for e in net.take(at) if isinstance(e, IkeSaUp)]


def test_a_client_of_any_refuses_a_responder_proving_another_gateways_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """F1: gw2's holder at gw1's address, IDr gw2.example, AUTH with gw2's key (which carol's file
    holds): before, carol's connection to gw1 came up with it, her traffic for gw1 going to gw2."""
    (conn,) = parse_config(CLIENT, "swanctl.conf").connections
    assert conn.ike.psk == Secret(b"key of carol for gw1, 0123456789")
    assert _initiate(conn.ike, CAROL_ADDR, _impostor("gw2.example", KEY2, GW_ADDR, monkeypatch)) == []
    # and the responder that proves carol's own key is accepted, whatever IDr it gives
    ok = _impostor("gw1.example", b"key of carol for gw1, 0123456789", GW_ADDR, monkeypatch)
    assert [str(e.remote_id) for e in _initiate(conn.ike, CAROL_ADDR, ok)] == ["gw1.example"]


def test_a_gateway_initiating_of_any_refuses_a_user_answering_with_their_own_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """F1, the gateway's side: a connection of %any with remote_addrs, whose own key is the group
    key; dave, answering with IDr dave.example and his own key, was accepted as the peer."""
    text = _conf(PER_USER.replace("secrets {\n", "secrets {\n ike-gw {\n id = gw.example\n secret = \""
                                  + GROUP.decode() + "\"\n}\n"))
    text = text.replace("        pools = rw\n", "        remote_addrs = 198.51.100.7\n")
    gw = parse_config(text, "swanctl.conf").connections[0].ike
    assert gw.psk == Secret(GROUP)
    dave = _impostor("dave.example", b"dave's own pre-shared key", "198.51.100.7", monkeypatch)
    assert _initiate(gw, GW_ADDR, dave) == []


def test_the_group_key_does_not_prove_daves_name_in_another_type() -> None:
    """F3: IDi RFC822_ADDR "dave.example" (email:dave.example) matches no entry (ike-dave names the
    FQDN), so it got the group key, and showed as "dave.example" in logs, status, RADIUS, DAE."""
    gw = _gateway(PER_USER.replace("secrets {\n", "secrets {\n ike-gw {\n id = gw.example\n secret = \""
                                   + GROUP.decode() + "\"\n}\n"))
    net = Network()
    net.add(GW_ADDR, IkeEndpoint([gw], address_pool=AddressPools([PoolConfig.parse_addrs("rw", "10.3.0.0/24")])))
    for n, ident in enumerate(("email:dave.example", "email:DAVE.example", "erin.example")):
        addr = f"198.51.100.{n + 9}"
        net.add(addr, IkeEndpoint([_client(ident, GROUP, addr)])).initiate("home", "net", net.now)
        net.run(until=net.now + 5)
    # erin, who has no entry under any type, still logs in with the group key
    assert [str(e.remote_id) for e in net.take(GW_ADDR) if isinstance(e, IkeSaUp)] == ["erin.example"]


def test_psk_for_peer_and_the_index_refuse_the_group_key_to_a_named_text_in_another_type() -> None:
    gw = Identity.parse("gw.example")
    group, dave = PskEntry((gw,), Secret(GROUP), "ike-gw"), PskEntry((gw, Identity.parse("dave.example")),
                                                                      Secret(b"d" * 32), "ike-dave")
    entries = [group, dave]
    index = PskIndex(entries, gw)
    for peer, want in (("email:dave.example", None), ("dave.example", dave), ("Dave.Example", dave),
                       ("email:erin.example", group)):
        ident = Identity.parse(peer)
        assert psk_for_peer(entries, gw, ident) is want, peer
        assert index.lookup(ident) is want, peer


def test_a_dn_idi_is_not_compared_with_every_dn_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """F4: PskIndex ranked every entry naming a DN for every DN IDi, each with dn_equal (whose parse
    cache holds 256 names): 1,000 DN entries ~60 ms per IKE_AUTH, at an unauthenticated peer's will.
    Counted, not timed: a DN IDi is compared with the entries that can be its own only."""
    gw = Identity.parse("gw.example")
    entries = [PskEntry((gw, Identity.parse(f"C=CH, O=Org, CN=user{i}")), Secret(b"k" * 32), f"ike-u{i}")
               for i in range(1000)]
    index = PskIndex(entries, gw)
    calls = 0
    real = identity.dn_equal

    def counting(a: bytes, b: bytes) -> bool:
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(identity, "dn_equal", counting)
    assert index.lookup(Identity.parse("C=CH, O=Org, CN=user7")) is entries[7]
    # the same DN in another string type (PrintableString for UTF8String) finds it too
    printable = Identity(IdType.DER_ASN1_DN, x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org"),
        x509.NameAttribute(NameOID.COMMON_NAME, "user8", _type=_ASN1Type.PrintableString)]).public_bytes())
    assert printable.data != entries[8].ids[1].data and index.lookup(printable) is entries[8]
    calls = 0
    assert index.lookup(Identity.parse("C=CH, O=Org, CN=nobody")) is None
    assert calls <= 8, f"one DN IDi was compared {calls} times (1,000 DN entries)"


def test_the_index_is_built_with_the_configuration_not_at_the_first_login() -> None:
    """F4: built lazily at the first IKE_AUTH, on the event loop (10,000 entries ~70 ms, 100,000
    ~0.8 s); the daemon loads the configuration off the loop (daemon.reload: asyncio.to_thread)."""
    gw = _gateway()
    assert "_psk_index" in vars(gw)
