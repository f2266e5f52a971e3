"""Review revtrap F2: the load's warning (conf/named_overlap.py) misses two overlaps the claims refuse.

h/fixtrap claims a named connection's configured selectors (services/ike/configured_claims.py) against
every peer of a connection of %any, resolved as the trap policies are: ``dynamic`` as the named
connection's remote address.  named_overlap_warnings compares only the %any connections' fixed
remote_ts with the named ones' fixed remote_ts:

- a road-warrior connection's pool: its clients ask for remote_ts = dynamic (their lease), never
  compared; a pool inside a named site's network (here all of it) gets every client its lease and
  then its Child SA refused (TS_UNACCEPTABLE: exchanges/child.py _not_others narrows the lease away),
  for as long as the configuration names the site, up or down -- with no word at load;
- a named connection's ``dynamic`` remote_ts (host to host, or a site's gateway address itself): it
  is claimed as its remote address (198.51.100.2/32), and a hub's spoke asking for the network around
  it is refused; the warning skips every dynamic selector.

Both are parse_config, as the existing warning's test (test_ikeservice_configured_claims.py).
"""

from __future__ import annotations

import itertools

import pytest

from tunsec.conf.config import parse_config
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.selector import Ts
from tunsec.services.ike.configured_claims import ConfiguredClaims

CONF = """
connections {{
    any {{
        {any_extra}
        local {{ auth = psk
                 id = gw.example }}
        remote {{ auth = psk
                  id = %any }}
        children {{ net {{ local_ts = 10.1.0.0/16
                          remote_ts = {any_ts} }} }}
    }}
    site {{
        remote_addrs = 198.51.100.2
        local {{ auth = psk
                 id = gw.example }}
        remote {{ auth = psk
                  id = site.example }}
        children {{ net {{ local_ts = {site_local}
                          remote_ts = {site_ts}
                          start_action = trap }} }}
    }}
}}
pools {{ rw {{ addrs = 10.3.0.0/24 }} }}
secrets {{ ike {{ secret = "a shared secret of some length" }} }}
"""

CASES = {
    # road warriors leased 10.3.0.x, all inside the named site's 10.3.0.0/24
    "pool": dict(any_extra="pools = rw", any_ts="dynamic", site_local="10.1.0.0/16", site_ts="10.3.0.0/24"),
    # the named site's remote_ts dynamic: claimed as 198.51.100.2, inside the hub's 198.51.100.0/24
    "dynamic": dict(any_extra="", any_ts="198.51.100.0/24", site_local="10.1.0.0/16", site_ts="dynamic"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_overlap_the_configured_claims_refuse_is_warned_about_at_load(case: str) -> None:
    cfg = parse_config(CONF.format(**CASES[case]), "tunsec.conf")
    # what the running service claims for the named site (as IkeService's construction does)
    claims = TsClaims()
    ConfiguredClaims(claims, itertools.count(1)).follow(cfg.connections)
    spoke = Peer("someone.example", "psk any")
    asked = Ts.parse("10.3.0.7/32" if case == "pool" else "198.51.100.0/24")
    assert claims.overlaps(spoke, [asked], [Ts.parse("10.1.0.0/16")], by_name=False), "not claimed (the premise)"
    warned = [w for w in cfg.warnings if "site" in w.message and "connections.any" in w.key]
    assert warned, f"{case}: the claims refuse {asked} to every client of 'any', and the load said nothing: " \
        f"{[w.message for w in cfg.warnings]}"
