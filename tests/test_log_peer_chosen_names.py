"""Which names share their source's log lines (refusal_log.peer_key, chosen_name, up_key) beyond
review revpool2's proofs (test_refusal_log_chosen_names.py): a group entry among a connection's
per-peer PSKs (or one with %any among its ids) proves any name its holders give, as a group PSK
does, while a per-peer entry and a named peer keep their identity's share from anywhere; and the
churn line of an IKE rekey (services/ike/ikesas.py) takes the same share as the IKE SA's other lines.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from test_ikeservice_peers import PSK, Gateway, run

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.events import IkeSaRekeyed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.psk import PskEntry
from tunsec.ike.secret import Secret
from tunsec.services.ike import churn_log, refusal_log

GW_ID = Identity.parse("gw.example")
NAT, ELSEWHERE = "203.0.113.9", "192.0.2.7"
CAROL = Identity.parse("carol.example")


def _config(remote: RemoteAuth, psk: Secret | None = PSK, peer_psks: tuple[PskEntry, ...] = ()) -> IkeConfig:
    return IkeConfig("rw", LocalAuth("psk", GW_ID), remote, parse_proposals("aes128gcm16-prfsha256-curve25519"),
                     (child_config("net", "10.1.0.0/16", "10.2.0.0/16", "aes128gcm16"),), psk=psk,
                     peer_psks=peer_psks)


def _keys(config: IkeConfig, peer: Identity, addrs: tuple[str, ...]) -> set[object]:
    """peer_key of an IKE SA of ``peer`` from each of ``addrs``, established and not yet."""
    ups: dict[bytes, Any] = {}
    sas = []
    for n, addr in enumerate(addrs):
        for up in (False, True):
            spi = b"%s%d%d" % (str(peer).encode(), n, up)
            if up:
                ev = IkeSaUp("rw", spi, b"r" * 8, GW_ID, peer, (addr, 4500), 4500, "x", proof=config.lease_proof)
                ups[spi] = SimpleNamespace(ev=ev)
            sas.append(SimpleNamespace(local_spi=spi, peer_id=peer, config=config, name="rw", remote_addr=(addr, 4500)))
    service: Any = SimpleNamespace(ike_up=ups, endpoint=SimpleNamespace(limits=SimpleNamespace(ipv6_source_prefix=64)))
    return {refusal_log.peer_key(service, sa, "rw") for sa in sas}


def test_a_group_entry_among_per_peer_psks_proves_chosen_names_counted_by_source() -> None:
    """A connection of %any with per-peer entries and a group key among them: carol's own entry
    keeps her identity's share from two addresses; names the group key proves from one address are
    that address's (one key for all of them), and from another address another."""
    config = _config(RemoteAuth("psk"), psk=None, peer_psks=(
        PskEntry((CAROL,), Secret(b"carol's own key of some length"), "ike-carol"),
        PskEntry((), Secret(b"the group key of some length..."), "ike-group")))
    assert refusal_log.chosen_name(config, Identity.parse("made-up.example"))
    assert not refusal_log.chosen_name(config, CAROL)
    (carol,) = _keys(config, CAROL, (NAT, ELSEWHERE))
    assert carol != ("rw", NAT)
    made_up = set().union(*(_keys(config, Identity.parse(f"made-up-{i}.example"), (NAT,)) for i in range(5)))
    assert made_up == {("rw", NAT)}, "each of the group key's names from one address is a peer of its own"
    assert _keys(config, Identity.parse("made-up-0.example"), (ELSEWHERE,)) == {("rw", ELSEWHERE)}
    # an entry naming dave and %any proves any name (psk.proves_any_name): dave's too
    dave = Identity.parse("dave.example")
    mixed = _config(RemoteAuth("psk"), psk=None, peer_psks=(
        PskEntry((CAROL,), Secret(b"carol's own key of some length"), "ike-carol"),
        PskEntry((dave, Identity.parse("%any")), Secret(b"dave's or anyone's key of length"), "ike-dave")))
    assert refusal_log.chosen_name(mixed, dave) and refusal_log.chosen_name(mixed, Identity.parse("x.example"))
    assert not refusal_log.chosen_name(mixed, CAROL)


def test_named_peers_certificates_and_eap_accounts_keep_their_identitys_share() -> None:
    """A connection that names its peer (one PSK for one identity), a CA's certificates and EAP
    accounts: the identity's share, wherever its IKE SAs come from; a group PSK's name: its source's."""
    # what chosen_name and peer_key read of a certificate's and an EAP account's connection
    others: list[Any] = [SimpleNamespace(remote=SimpleNamespace(method=m), lease_proof=m)
                         for m in ("pubkey", "eap-mschapv2", "eap-radius")]
    for config in (_config(RemoteAuth("psk", CAROL)), *others):
        assert not refusal_log.chosen_name(config, CAROL)
        assert len(_keys(config, CAROL, (NAT, ELSEWHERE))) == 1, config.remote.method
    assert _keys(_config(RemoteAuth("psk")), CAROL, (NAT, ELSEWHERE)) == {("rw", NAT), ("rw", ELSEWHERE)}


def test_ike_rekeys_of_a_group_psks_made_up_names_share_their_sources_churn_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    """Four clients of the gateway's group-PSK connection behind one NAT address, each with its own
    name, each rekeying its IKE SA TRIES times: the "IKE SA rekeyed" lines (churn_log) pass as one
    peer's, BURST a period.  ikesas.py charged them to trusted.peer_of of the IkeSaUp, a share per
    made-up name (and per unproven eap-radius IKE SA: review revpool2 F1, F2): 4 x BURST."""
    tries, n = churn_log.BURST + 2, 4

    async def body() -> None:
        gw = Gateway(n, mobike=False)
        gw.nat = {i: (NAT, 40001 + i) for i in range(n)}
        await gw.start()
        for i in range(n):
            gw.connect(i)
            await gw.settle()
        assert len({str(r.ev.remote_id) for r in gw.service.ike_up.values()}) == n
        with caplog.at_level(logging.INFO, logger="tunsec"):
            for i in range(n):
                for _ in range(tries):
                    gw.site_sa(i).rekey()
                    await gw.settle()
        done = [sum(isinstance(e, IkeSaRekeyed) for e in events) for events in gw.site_events]
        assert done == [tries] * n   # each one happened
    run(body())
    rekeyed = [r for r in caplog.records if r.levelno >= logging.INFO and "IKE SA rekeyed" in r.getMessage()]
    assert len(rekeyed) <= churn_log.BURST, f"{len(rekeyed)} IKE rekey lines for one NAT address's names"
