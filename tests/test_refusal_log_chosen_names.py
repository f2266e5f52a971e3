"""Review revpool2 (second round on h/fixpeerdos2): whose share a refusal line takes.

refusal_log.py's docstring and docs/operations.md promise that a peer who chooses its own name
counts under its connection and source address: "one not authenticated, or by an unproven
eap-radius name, counts under its connection and source address", "so that made-up names share
their source's lines".  refusal_log.peer_key keeps that promise only for an IKE SA that is not up:
an established one is keyed by trusted.peer_of, its identity and proof, and

- F1: an unproven eap-radius identity (Identity.tag) is equal only to itself, so every established
  unproven IKE SA is a peer of its own: one source holds up to max_ike_sas x UNPROVEN_NAMES_PER_SOURCE
  (32 by default) of them, each with a full burst per kind;
- F2: on a group-PSK connection (remote.id %any, one key) every holder names itself as it likes, and
  each made-up name is a peer of its own: one host, any number of names, each a full burst per kind
  (up to the table's 1024 peers: 5,120 lines a minute per kind where fixpeerdos2's docs say 5 for the
  source, and main before the branch passed 5 for everyone).

F1 at unit level (peer_key and the RefusalLogs limiter with real IkeSaUp records; an unproven identity
needs a RADIUS server's Accept, which changes nothing in how the key is chosen); F2 through a real
IkeService with the worker's request handling (test_refusal_log_per_peer's set-up): clients of the
gateway's group-PSK connection behind one NAT address, each with a made-up name, asking again and
again to rekey their Child SA to other selectors (refused: TS_UNACCEPTABLE).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from test_ikeservice_peers import PSK, run
from test_ikeservice_ts_claims import PROPOSALS, Client, TsGateway, refusals

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.events import IkeSaUp, NegotiationFailed
from tunsec.ike.identity import Identity
from tunsec.ike.ike_sa_cap import UNPROVEN_NAMES_PER_SOURCE
from tunsec.ike.ts import Ts
from tunsec.services.ike import refusal_log

SOURCE = "192.0.2.7"    # one client host (or one NAT)
NAT = "203.0.113.9"
TRIES = 12              # more than a limiter's burst, per IKE SA


def _service(ups: dict[bytes, IkeSaUp]) -> Any:
    """What refusal_log reads of an IkeService: its established IKE SAs' records, the DoS limits'
    IPv6 prefix, the limiters."""
    return SimpleNamespace(ike_up={spi: SimpleNamespace(ev=ev) for spi, ev in ups.items()},
                           endpoint=SimpleNamespace(limits=SimpleNamespace(ipv6_source_prefix=64)),
                           refusals=refusal_log.RefusalLogs(),
                           _admit_log=lambda sa: 0)


def _up(spi: bytes, peer: Identity, proof: str, addr: str) -> IkeSaUp:
    return IkeSaUp("rw", spi, b"r" * 8, Identity.parse("gw.example"), peer, (addr, 4500), 4500,
                   "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519", proof=proof)


def _sa(spi: bytes, peer: Identity, proof: str, addr: str) -> Any:
    return SimpleNamespace(local_spi=spi, peer_id=peer, config=SimpleNamespace(lease_proof=proof),
                           name="rw", remote_addr=(addr, 4500))


def test_f1_established_unproven_ike_sas_of_one_source_share_its_refusal_lines() -> None:
    """Review revpool2 F1: the IKE SAs one source may hold with unproven eap-radius names (8 x 4 with the default
    max_ike_sas_per_identity), all established, each asking TRIES times for something refused
    (NegotiationFailed with peer_request, as create_child_sa.respond emits): the source's lines pass
    as one peer's, BURST a period.  On main each IKE SA is a peer of its own (peer_of of a tagged
    identity): 32 x BURST lines from one address, and a proven user's 8 IKE SAs get only BURST."""
    n = 8 * UNPROVEN_NAMES_PER_SOURCE
    names = [Identity.parse("alice@example.org").unproven() for _ in range(n)]   # the same name, or any
    spis = [b"u%07d" % i for i in range(n)]
    service = _service({spi: _up(spi, peer, "eap-radius", SOURCE) for spi, peer in zip(spis, names, strict=True)})
    sas = [_sa(spi, peer, "eap-radius", SOURCE) for spi, peer in zip(spis, names, strict=True)]

    keys = {refusal_log.peer_key(service, sa, "rw") for sa in sas}
    assert len(keys) == 1, f"one source's unproven IKE SAs are {len(keys)} peers of the refusal lines"

    passed = 0
    for sa in sas:
        for _ in range(TRIES):
            ev = NegotiationFailed("rw", "TS_UNACCEPTABLE", "refused", peer_request=True)
            passed += refusal_log.failure(service, sa, ev) is not None
    assert passed <= refusal_log.BURST, f"{passed} refusal lines from one source's unproven names"


def test_f2_made_up_names_of_a_group_psk_share_their_sources_refusal_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Review revpool2 F2: four clients of the gateway's group-PSK connection (remote.id %any: any holder of the key
    names itself) behind one NAT address, each with a made-up name, each asking TRIES times to
    rekey its Child SA to other selectors (refused: TS_UNACCEPTABLE, counted every time).  As the
    unproven names, the names one source makes up share its lines: BURST a period.  On main each
    name is a peer (trusted.peer_of): 4 x BURST lines, and 1024 names would pass 1024 x BURST a
    minute for this one kind (5 before fixpeerdos2, for all peers together)."""
    caplog.set_level(logging.INFO, logger="tunsec")
    n = 4
    clients = tuple(Client(f"made-up-{i}.example", f"10.2.{i + 1}.0/24") for i in range(n))

    def lines() -> list[str]:
        return [m for r in caplog.records if "rekey of Child SA" in (m := r.getMessage()) and "10.2.20" in m]

    async def body() -> None:
        gw = TsGateway(n, mobike=False, clients=clients, remote_ts="10.2.0.0/16")
        gw.nat = {i: (NAT, 40001 + i) for i in range(n)}   # one host (or NAT), several ports
        await gw.start()
        for i in range(n):
            gw.connect(i)
            await gw.settle()
        assert {str(r.ev.remote_addr[0]) for r in gw.service.ike_up.values()} == {NAT}
        assert len({str(r.ev.remote_id) for r in gw.service.ike_up.values()}) == n
        for i in range(n):
            sa = gw.site_sa(i)
            (child,) = sa.children
            child.local_ts = (Ts.parse(f"10.2.20{i}.0/24"),)
            for _ in range(TRIES):
                sa.rekey_child(child.unique_id)
                await gw.settle()
            assert [e.reason for e in refusals(gw, i)] == ["TS_UNACCEPTABLE"] * TRIES
        assert gw.service.events.rekey_ts_refused[("gw", "net")] == n * TRIES   # each one counted
    run(body())
    assert len(lines()) <= refusal_log.BURST, f"{len(lines())} lines for one NAT address's made-up names"



def test_f2_one_group_psk_holders_made_up_names_silence_another_peers_refusal_line() -> None:
    """Review revpool2 F2, what it costs: R3's promise ("one client asking again and again spends its own lines, and the
    other clients' refusals are still logged") does not hold against one holder of a group PSK.
    From one address it names 1100 IKE SAs as it likes (more than a limiter's table of 1024 peers)
    and has each refused BURST + 1 times; then bob, another client of the connection from another
    address, is refused once: his line is held.  On main the made-up names fill the table with
    spent limiters, and bob's new entry takes the smallest one's (Space-Saving's overestimate), so
    one client silences every other client's lines of the kind; keyed by their source, the names
    are one peer and bob's line passes."""
    config = IkeConfig("rw", LocalAuth("psk", Identity.parse("gw.example")), RemoteAuth("psk"), PROPOSALS,
                       (child_config("net", "10.1.0.0/16", "10.2.0.0/16", "aes128gcm16"),), psk=PSK)
    assert config.remote.id.is_any and not config.peer_psks   # a group PSK: any holder names itself
    names = [Identity.parse(f"made-up-{i}.example") for i in range(1100)]
    spis = [b"g%07d" % i for i in range(len(names))]
    bob = Identity.parse("bob.example")
    ups = {spi: _up(spi, peer, config.lease_proof, NAT) for spi, peer in zip(spis, names, strict=True)}
    service = _service({**ups, b"bob00000": _up(b"bob00000", bob, config.lease_proof, SOURCE)})
    service.refusals.refused.clock = lambda: 0.0   # all within one period, however slow the machine

    def refused(spi: bytes, peer: Identity, addr: str) -> bool:
        sa = SimpleNamespace(local_spi=spi, peer_id=peer, config=config, name="rw", remote_addr=(addr, 4500))
        ev = NegotiationFailed("rw", "TS_UNACCEPTABLE", "refused", peer_request=True)
        return refusal_log.failure(service, sa, ev) is not None   # type: ignore[arg-type]

    for spi, peer in zip(spis, names, strict=True):
        for _ in range(refusal_log.BURST + 1):
            refused(spi, peer, NAT)
    assert refused(b"bob00000", bob, SOURCE), "bob's one refusal was held behind one client's made-up names"
