"""What the engine keeps of a network cut out of our proposal for another peer's claim, and how it
tells that the network is free again (review revclaims3 F3; services/ike/widen.py acts on it).

Our Child SA's ChildSaUp names what outside_others_claims cut out (``cut``), in IKE_AUTH as in
CREATE_CHILD_SA; a rekey, ours or the peer's, keeps the selectors and so the cut; IkeSa.regained
says whether some of it is nobody else's now.  It is not while the claim is held (the other peer's
own, a manual tunnel's), and is once it is released; a new Child SA of the child then carries the
network (a rekey cannot: it keeps its selectors, as strongSwan's does).  Two engines in memory."""
from __future__ import annotations

from test_engine_full_tunnel_beside_manual import SITE
from test_engine_proposal_outside_claims import _holds, _pair
from test_engine_vips import GW, only

from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.testing import Network
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.selector import Ts

BRANCH = Peer(Identity.parse("branch.example"), "psk branch")
LAN = (Ts.parse("10.1.0.0/24"),)
CUT = (Ts.parse("10.8.0.0/16"),)


def _settle(net: Network) -> list[object]:
    net.run(until=net.now + 5)
    return list(net.take(SITE))


def _up(events: list[object]) -> ChildSaUp:
    assert not only(events, NegotiationFailed), events   # type: ignore[arg-type]
    (up,) = only(events, ChildSaUp)   # type: ignore[arg-type]
    return up  # type: ignore[no-any-return]


def test_the_cut_is_named_kept_by_rekeys_and_regained_once_released() -> None:
    claims = TsClaims()
    claims.add(2, "branch", BRANCH, CUT, LAN, by_name=True)
    net, me = _pair(claims, ("net", "0.0.0.0/0"), ("lan", "10.5.0.0/16"))
    me.initiate("home", "net", net.now)   # IKE_AUTH
    first = _up(_settle(net))
    assert first.cut == CUT and not _holds(first.remote_ts, "10.8.0.0/16")
    sa = me.sas[0]
    sa.initiate("lan")                     # CREATE_CHILD_SA, nothing cut from it
    assert _up(_settle(net)).cut == ()
    assert not sa.regained(first.unique_id)   # still branch's
    sa.rekey_child(first.unique_id)        # our rekey keeps the selectors, and the cut with them
    ours = _up(_settle(net))
    assert ours.rekey_of == first.unique_id and ours.cut == CUT and set(ours.remote_ts) == set(first.remote_ts)
    claims.remove(2)                       # branch's IKE SA goes: 10.8.0.0/16 is nobody's
    assert sa.regained(ours.unique_id)
    sa.rekey_child(ours.unique_id)         # a rekey still keeps the narrowed selectors (RFC 7296 §2.9.2)
    again = _up(_settle(net))
    assert not _holds(again.remote_ts, "10.8.0.0/16") and again.cut == CUT and sa.regained(again.unique_id)
    sa.initiate("net")                     # what widen.py does: a new Child SA of the child
    wide = _up(_settle(net))
    assert wide.rekey_of is None and wide.cut == () and wide.remote_ts == (Ts.parse("0.0.0.0/0"),)


def test_the_peers_rekey_of_a_narrowed_child_sa_keeps_its_cut() -> None:
    claims = TsClaims()
    claims.add(2, "branch", BRANCH, CUT, LAN, by_name=True)
    net, me = _pair(claims, ("net", "0.0.0.0/0"))
    me.initiate("home", "net", net.now)
    first = _up(_settle(net))
    (hub_sa,) = net.nodes[GW].sas
    hub_sa.rekey_child(hub_sa.children[0].unique_id)
    theirs = _up(_settle(net))
    assert theirs.rekey_of == first.unique_id and not theirs.initiator and theirs.cut == CUT
    assert not me.sas[0].regained(theirs.unique_id)
    claims.remove(2)
    assert me.sas[0].regained(theirs.unique_id)
