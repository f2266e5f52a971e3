"""Review revwiden F3: what checking a narrowed Child SA costs grows with the product of its cut and
the claims (services/ike/widen.py, exchanges/child.py regained).

A hub with many sites, each holding one /24 of 10.8.0.0/13 (contiguous: the proposal of a full
tunnel around them is two pieces, well within side_limit), brings up a full tunnel (0.0.0.0/0)
after them (the upstream reconnecting): its ChildSaUp.cut holds one piece per site claim.  Then
- IkeSa.regained (one per check: every hold-off after a release, each install of the narrowed SA or
  its rekeys) cuts every piece of the cut with all the claims held, each time sorting them all
  (Ts.without_all): N pieces x N claims;
- Widening.released (every TsClaims.remove: each site's Child SA rekey, move or delete) compares
  every claim released with every piece of every narrowed Child SA's cut.
Counted in selector operations, not timed.  Two engines in memory for the first; the second is
Widening itself, beside a stand-in of the service's children."""
from __future__ import annotations

import asyncio
import ipaddress
import types

import pytest
from test_engine_proposal_outside_claims import _pair
from test_engine_regained import LAN, _settle, _up

from tunsec.ike.identity import Identity
from tunsec.policy.claims import Claim, Peer, TsClaims
from tunsec.policy.selector import Ts
from tunsec.services.ike import widen

N = 1000   # sites: 10.8.0.0/24 ... 10.11.231.0/24


def _site_net(i: int) -> Ts:
    return Ts.parse(f"{ipaddress.ip_address('10.8.0.0') + 256 * i}/24")


def _sites() -> TsClaims:
    claims = TsClaims()
    for i in range(N):
        claims.add(10 + i, f"site{i}", Peer(Identity.parse(f"site{i}.example"), f"psk site{i}"),
                   (_site_net(i),), LAN, by_name=True)
    return claims


def test_a_regained_check_costs_not_the_cut_times_the_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = _sites()
    net, me = _pair(claims, ("net", "0.0.0.0/0"))
    me.initiate("home", "net", net.now)
    up = _up(_settle(net))
    assert len(up.remote_ts) == 2 and len(up.cut) == N   # one piece cut per site's claim
    claims.remove(10 + N - 1)   # one site gone (the last: every piece before it is swept first)
    work = [0]
    without_all = Ts.without_all

    def counted(self: Ts, others: list[Ts]) -> list[Ts]:
        work[0] += len(others)   # the claims it sorts and sweeps
        return without_all(self, others)
    monkeypatch.setattr(Ts, "without_all", counted)
    assert me.sas[0].regained(up.unique_id)
    # about the claims once (N), as the proposal itself costs; main sorts all of them for each piece
    assert work[0] <= 4 * N, f"{work[0]} selectors swept for one check of {N} pieces among {N} claims"


def test_a_release_costs_not_every_piece_of_every_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    cut = tuple(_site_net(i) for i in range(N))
    calls = [0]
    meets = widen._meets

    def counted(a: Ts, b: Ts) -> bool:
        calls[0] += 1
        return meets(a, b)
    monkeypatch.setattr(widen, "_meets", counted)

    async def body() -> None:
        claims = TsClaims()
        children = {h: types.SimpleNamespace(handle=h, ike=h, child="net", conn=f"up{h}") for h in (1, 2)}
        svc = types.SimpleNamespace(ts_claims=claims, children=children)
        w = widen.Widening(svc)  # type: ignore[arg-type]
        w._narrowed = {1: cut, 2: cut}   # two narrowed Child SAs (two upstreams), as installed() books them
        # a claim elsewhere (a road warrior's lease 192.0.2.7) is released: it meets no cut
        w.released([Claim(99, "rw", Peer("rw", "eap"), Ts.parse("192.0.2.7/32"))])
        for attempt in w._attempts.values():
            if attempt.timer is not None:
                attempt.timer.cancel()
    asyncio.run(body())
    # a lookup per narrowed Child SA (a bisect of its sorted cut), not a pass over all its pieces
    assert calls[0] <= 64, f"{calls[0]} comparisons for one claim released beside 2 cuts of {N} pieces"
