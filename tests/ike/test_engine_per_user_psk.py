"""Per-user PSKs on a road-warrior connection (review reveapid F3).

A connection of ``remote.id = %any`` with one ``secrets.ike-USER { id-gw = GW  id-user = USER }``
per user: each user proves (and the gateway answers with) the key of that user, chosen by the IDi the
peer sends (ike/psk.py).  Before, the load picked one entry for everyone (find_psk with %any: the
first that named the gateway): carol's key made anyone dave, and dave's own key was refused.
The gateway's configuration is loaded from swanctl.conf text, as the daemon loads it; the clients are
engines of their own, each with the PSK it knows, all over the in-memory network."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from tunsec.conf.config import parse_config
from tunsec.conf.diff import credentials_only
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

GW_ADDR = "192.0.2.1"
CAROL, DAVE = b"carol's own pre-shared key", b"dave's own pre-shared key"
PER_USER = """\
secrets {
    ike-carol {
        id-gw = gw.example
        id-user = carol.example
        secret = "carol's own pre-shared key"
    }
    ike-dave {
        id-gw = gw.example
        id-user = dave.example
        secret = "dave's own pre-shared key"
    }
}
"""


def _conf(secrets: str, remote_id: str = "") -> str:
    return f"""\
connections {{
    rw {{
        local_addrs = 192.0.2.1
        pools = rw
        local {{
            auth = psk
            id = gw.example
        }}
        remote {{
            auth = psk
            {f"id = {remote_id}" if remote_id else ""}
        }}
        children {{
            net {{
                local_ts = 10.9.0.0/16
                remote_ts = dynamic
            }}
        }}
    }}
}}
pools {{
    rw {{
        addrs = 10.3.0.0/24
    }}
}}
{secrets}
tunsec {{
    tun = tunsec0
}}
"""


def _gateway(secrets: str = PER_USER) -> IkeConfig:
    (conn,) = parse_config(_conf(secrets), "swanctl.conf").connections
    return conn.ike


def _client(ident: str, psk: bytes, addr: str) -> IkeConfig:
    return IkeConfig("home", LocalAuth("psk", Identity.parse(ident)), RemoteAuth("psk", Identity.parse("gw.example")),
                     parse_proposals("default"), (child_config("net", "dynamic", "10.9.0.0/16"),),
                     psk=Secret(psk), local_addr=addr, remote_addr=GW_ADDR, vips=(ipaddress.ip_address("0.0.0.0"),))


def _logins(gw: IkeConfig, logins: list[tuple[str, bytes]]) -> tuple[dict[str, bool], list[AuthFailed]]:
    """Each (IDi, PSK) logs in from an address of its own: whether its IKE SA came up (on the client,
    which checked the gateway's AUTH too), and the gateway's AuthFailed events."""
    pool = AddressPools([PoolConfig.parse_addrs("rw", "10.3.0.0/24")])
    net = Network()
    net.add(GW_ADDR, IkeEndpoint([gw], address_pool=pool))
    up: dict[str, bool] = {}
    failed: list[AuthFailed] = []
    for n, (ident, psk) in enumerate(logins):
        addr = f"198.51.100.{n + 2}"
        net.add(addr, IkeEndpoint([_client(ident, psk, addr)])).initiate("home", "net", net.now)
        net.run(until=net.now + 5)
        up[f"{ident} with {psk.decode()}"] = any(isinstance(e, IkeSaUp) for e in net.take(addr))
        failed += [e for e in net.take(GW_ADDR) if isinstance(e, AuthFailed)]
    return up, failed


def test_the_reviews_proof_each_user_logs_in_with_their_own_psk_only() -> None:
    """The review's proof (reveapid F3), as it stood: dave with his own key gets in; carol's key
    does not make her dave."""
    up, _ = _logins(_gateway(), [("dave.example", DAVE), ("dave.example", CAROL)])
    assert up == {"dave.example with dave's own pre-shared key": True,
                  "dave.example with carol's own pre-shared key": False}


def test_carols_psk_with_idi_dave_is_refused_and_counted() -> None:
    up, failed = _logins(_gateway(), [("dave.example", CAROL)])
    assert up == {"dave.example with carol's own pre-shared key": False}
    (ev,) = failed
    assert ev.counts, "a wrong key for the IDi sent must count towards the ban like any wrong PSK"
    assert "secrets.ike-dave" in ev.reason and "does not match" in ev.reason


def test_each_user_is_accepted_with_their_own_psk_and_the_gateway_answers_with_it() -> None:
    """The client checks the gateway's AUTH with its own key: the gateway must make it with that key
    (RFC 7296 §2.15), not with the first entry's."""
    up, failed = _logins(_gateway(), [("dave.example", DAVE), ("carol.example", CAROL)])
    assert up == {"dave.example with dave's own pre-shared key": True,
                  "carol.example with carol's own pre-shared key": True}
    assert failed == []


@pytest.mark.parametrize("ident", ["mallory.example", "gw.example"])
def test_an_idi_without_an_entry_is_refused_counted_and_named_without_a_secret(ident: str) -> None:
    """No entry names mallory, and none is a group key: every key is refused, carol's (the entry the
    load used to pick for everyone) included.  The gateway's own identity selects no user's entry."""
    up, failed = _logins(_gateway(), [(ident, CAROL), (ident, DAVE)])
    assert set(up.values()) == {False}
    assert len(failed) == 2 and all(ev.counts for ev in failed)
    for ev in failed:
        assert ev.reason == f"no pre-shared key in secrets for gw.example and peer identity {ident}"
        assert "pre-shared key\"" not in ev.reason and "own" not in ev.reason   # no secret's text


@pytest.mark.parametrize("group", [
    "ike-all {\n secret = \"a group key for everyone here\"\n}",
    "ike-all {\n id = %any\n secret = \"a group key for everyone here\"\n}",
    "ike-gw {\n id = gw.example\n secret = \"a group key for everyone here\"\n}",   # the README's
])
def test_a_group_psk_lets_in_users_without_an_entry_of_their_own_but_not_as_one_who_has(group: str) -> None:
    """A group key (no ids, %any, or only the gateway's id) still proves any identity without an entry
    of its own (erin), as before; dave has his own entry, and the group key no longer proves dave
    (strongSwan's verifier would try both).  Before, the group key was the connection's one key: it
    proved dave, and dave's own key was refused."""
    gw = _gateway(PER_USER.replace("secrets {\n", "secrets {\n" + group + "\n"))
    group_key = b"a group key for everyone here"
    up, _ = _logins(gw, [("erin.example", group_key), ("mallory.example", b"not the group key at all, no"),
                         ("dave.example", group_key), ("dave.example", DAVE)])
    assert list(up.values()) == [True, False, False, True]


def test_entries_naming_only_the_users_load_and_work() -> None:
    """strongSwan's own road-warrior layout (swanctl/rw-psk-fqdn): entries that name the user alone.
    The load refused it before ("no PSK in secrets for local id gw.example and remote id %any")."""
    secrets = PER_USER.replace("        id-gw = gw.example\n", "")
    gw = _gateway(secrets)
    assert gw.psk is None and [e.name for e in gw.peer_psks] == ["ike-carol", "ike-dave"]
    up, _ = _logins(gw, [("carol.example", CAROL), ("carol.example", DAVE)])
    assert list(up.values()) == [True, False]


def test_a_changed_user_psk_is_a_credential_change_of_the_connection() -> None:
    """reload (conf/diff.py): dave's new key is a new credential of the connection (SAs kept, new
    logins use it); before, the connection carried carol's key only, and dave's change went unseen."""
    old, new = _gateway(), _gateway(PER_USER.replace("dave's own", "dave's new"))
    assert credentials_only(old, new)
    assert not credentials_only(old, _gateway())
    up, _ = _logins(new, [("dave.example", DAVE), ("dave.example", b"dave's new pre-shared key")])
    assert list(up.values()) == [False, True]


def test_no_psk_shows_in_the_config_repr() -> None:
    gw = _gateway()
    text = repr(gw) + repr(dataclasses.replace(gw, name="again"))
    assert "own pre-shared key" not in text and "ike-dave" in text


def test_a_named_remote_id_keeps_the_key_picked_at_load() -> None:
    """Site to site: the remote id is one identity, its entry is found when the file is loaded."""
    gw = parse_config(_conf(PER_USER, "dave.example"), "swanctl.conf").connections[0].ike
    assert gw.peer_psks == () and gw.psk == Secret(DAVE)


def test_the_index_picks_what_a_pass_over_every_entry_picks() -> None:
    """IkeConfig.psk_for looks a peer's entry up by its identity (PskIndex: a pass over 10,000 users'
    entries took ~0.1 s per IKE_AUTH); the answer is psk_for_peer's over all of them, for names in
    another case, DNs in another string encoding, group keys and %any among other ids alike."""
    from tunsec.ike.psk import PskEntry, PskIndex, psk_for_peer  # here: the other tests run on main too

    gw = Identity.parse("gw.example")
    printable = Identity(IdType.DER_ASN1_DN, x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, "erin", _type=_ASN1Type.PrintableString)]).public_bytes())
    utf8 = Identity(IdType.DER_ASN1_DN, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erin")]).public_bytes())
    assert printable.data != utf8.data and printable.matches(utf8)

    def entry(name: str, *ids: Identity | str) -> PskEntry:
        return PskEntry(tuple(i if isinstance(i, Identity) else Identity.parse(i) for i in ids),
                        Secret(name.encode() * 4), name)
    sets = [
        [entry("carol", gw, "carol.example"), entry("dave", gw, "Dave.Example"), entry("erin", gw, printable)],
        [entry("group", gw), entry("dave", "dave.example"), entry("any-and-frank", "%any", "frank.example")],
        [entry("nobody-but-us", "gw.example"), entry("none")],
        [entry("a", "x.example", "y.example"), entry("b", "y.example")],
    ]
    peers = [Identity.parse(p) for p in ("carol.example", "DAVE.example", "frank.example", "gw.example",
                                          "mallory.example", "y.example", "x.example", "email:dave.example",
                                          "email:Frank.example", "email:carol.example")] + [utf8]
    for entries in sets:
        index = PskIndex(entries, gw)
        for peer in peers:
            assert index.lookup(peer) is psk_for_peer(entries, gw, peer), (entries, peer)
    assert PskIndex(sets[0], gw).lookup(utf8) is sets[0][2]
    assert PskIndex(sets[0], gw).lookup(Identity.parse("DAVE.example")) is sets[0][1]
