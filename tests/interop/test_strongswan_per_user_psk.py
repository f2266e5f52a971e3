"""Per-user PSKs on a tunsec gateway's ``remote.id = %any`` connection, with strongSwan clients (review
reveapid F3): ``secrets { ike-carol { id-gw = GW  id-user = carol ... }  ike-dave { ... } }``.  Each
user comes up with their own key (the gateway checks the IDi's entry, and answers with its AUTH made
with that key, which charon checks); dave's identity with carol's key is refused, logged as a wrong
key of secrets.ike-dave.  Before, the connection's one key was the first entry's (carol's): dave's
own key was refused and carol's made her dave.

StarHosts: tunsec on the gateway G, charon (kernel-libipsec) as the client on A (carol) and B (dave),
each asking for a virtual IP of the pool."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from ike_peers import Charon, TunsecIke, requires_strongswan
from roadwarrior import GatewayConn, Pool, RoadWarriorConn

from tunsec.bench.netns import Host, StarHosts, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    requires_strongswan,
]

GW = "gw.tunsec.test"
CAROL, DAVE = "carol.tunsec.test", "dave.tunsec.test"
KEYS = {CAROL: "carol's own pre-shared key 0123", DAVE: "dave's own pre-shared key 456789"}
POOL = Pool("rw4", "10.3.0.0/24")


@dataclass(frozen=True)
class PerUserGateway(GatewayConn):
    """The gateway, for any identity (any_peer), with one secrets entry per user: (GW, user)."""

    keys: tuple[tuple[str, str], ...] = tuple(KEYS.items())

    def secrets(self) -> str:
        keys = "".join(f'  ike-{user.split(".")[0]} {{\n    id-gw = {self.my_id()}\n    id-user = {user}\n'
                       f'    secret = "{key}"\n  }}\n' for user, key in self.keys)
        return f"secrets {{\n{keys}}}\n"


@dataclass(frozen=True)
class User(RoadWarriorConn):
    """A road warrior whose identity is ``user`` (its secret: ike-peers {user, GW, psk})."""

    user: str = ""

    def my_id(self) -> str:
        return self.user


@pytest.fixture
def star() -> Iterator[StarHosts]:
    with StarHosts(prefix="fixpsk") as t:
        yield t


def test_each_user_up_with_their_own_psk_and_refused_with_anothers(star: StarHosts) -> None:
    g, a, b = star.g, star.a, star.b
    gw = TunsecIke(star, PerUserGateway(g, a, fixed_address=False, any_peer=True, pools=(POOL,), gateway_id=GW))

    def user(host: Host, name: str, key: str) -> User:
        return User(host, star.gateway_for(host), vips=("0.0.0.0",), remote_ts=g.inner_net4,
                    gateway_id=GW, user=name, psk=key)
    carol = Charon(star, user(a, CAROL, KEYS[CAROL]))
    dave = Charon(star, user(b, DAVE, KEYS[CAROL]))    # dave's identity, carol's key
    gw.start()
    for c in (carol, dave):
        c.start()

    r = dave.initiate()
    assert r.returncode != 0, f"dave's identity with carol's key came up:\n{r.stdout[-1500:]}\n{gw.log_tail()}"
    line = gw.wait_log(r"PSK AUTH value does not match \(wrong pre-shared key\?\) \(secrets\.ike-dave\)").group(0)
    assert KEYS[CAROL] not in gw.log_text() and KEYS[DAVE] not in gw.log_text(), line
    assert gw.ike_sas() == []

    dave.write(psk=KEYS[DAVE])
    dave.swanctl_ok("--load-creds", "--noprompt")
    for c in (carol, dave):
        r = c.initiate()
        assert r.returncode == 0, f"swanctl --initiate in {c.host.ns}: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: len(gw.established()) == 2, 15), gw.log_tail()
    assert sorted(sa["remote_id"] for sa in gw.established()) == [CAROL, DAVE]
    assert all(len(sa["remote_vips"]) == 1 for sa in gw.established())

    # reload with dave's key changed: a new credential of the connection; carol's IKE SA stays,
    # dave logs in again with his new key
    (spi_carol,) = [sa["spi_i"] for sa in gw.established() if sa["remote_id"] == CAROL]
    new_key = "dave's new pre-shared key abcdef"
    gw.write(keys=((CAROL, KEYS[CAROL]), (DAVE, new_key)))
    gw.readable_by_tunsec()
    r = gw.cli("reload")
    assert r.returncode == 0 and "new credentials" in r.stdout, f"{r.stdout}{r.stderr}"
    dave.swanctl_ok("--terminate", "--ike", "tun")
    assert wait_until(lambda: [sa["remote_id"] for sa in gw.established()] == [CAROL], 15), gw.log_tail()
    dave.write(psk=new_key)
    dave.swanctl_ok("--load-creds", "--noprompt")
    r = dave.initiate()
    assert r.returncode == 0, f"dave with his new key: {r.stdout[-1500:]}\n{gw.log_tail()}"
    assert wait_until(lambda: len(gw.established()) == 2, 15), gw.log_tail()
    assert spi_carol in [sa["spi_i"] for sa in gw.established() if sa["remote_id"] == CAROL]
