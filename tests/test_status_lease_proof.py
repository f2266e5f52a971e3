"""Review reveapfix F2 (fixed on h/fixproof): since h/fixeapid a lease is bound to (identity, proof),
so one name may hold two leases in one pool (a group-PSK client that calls itself alice, and the EAP
user alice), but `tunsec status` showed each lease as pool, address, identity, online: two rows
"alice", nothing saying which is the EAP user's.  An operator asked "what is alice's address?" (or
acting on it: a DAE by Framed-IP, a firewall rule) could not tell them apart.  Now each row carries
``proof`` (IkeConfig.lease_proof), in the JSON and the text status.

Both tests failed on main as merged (aee160c): the two rows differed only by address."""
from __future__ import annotations

from tunsec.ike.identity import Identity
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.services.ike.status import leases
from tunsec.status import render


def _pools() -> AddressPools:
    pools = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    alice = Identity.parse("alice")
    assert pools.acquire(("v4",), alice, 4, "192.0.2.5", "eap-mschapv2") is not None
    assert pools.acquire(("v4",), alice, 4, "192.0.2.6", "psk branches") is not None
    return pools


def test_status_says_how_each_alice_proved_herself() -> None:
    rows = leases(_pools())
    assert len(rows) == 2
    without_address = [{k: v for k, v in r.items() if k != "address"} for r in rows]
    assert without_address[0] != without_address[1], f"two leases of 'alice', told apart by nothing: {rows}"
    assert {(r["identity"], r["proof"]) for r in rows} == {("alice", "eap-mschapv2"), ("alice", "psk branches")}


def test_the_text_status_says_it_too() -> None:
    base = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
            "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {}}
    text = render({**base, "leases": leases(_pools())})
    assert "10.3.0.1 online alice (eap-mschapv2)" in text and "10.3.0.2 online alice (psk branches)" in text, text
