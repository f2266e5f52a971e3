"""tunsec <-> tunsec with IKEv2, end to end in two namespaces.

A initiates (start_action = start), B only responds (start_action = none);
both read the same swanctl.conf connection text (tests/ike_peers.py) with
PSK authentication. The failure cases check what a user sees: the log lines
on both sides, `tunsec status`, and that no traffic passes.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import control
import pytest
from ike_peers import CHILD, CONN, Conn, TunsecIke, iperf3_tcp, ping_both_ways, tunsec_counters

from tunsec.bench.netns import TwoHosts, wait_until

IKE_DEFAULT = "aes128gcm16-prfsha256-curve25519"


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def pair(topo: TwoHosts, a: dict[str, Any] | None = None, b: dict[str, Any] | None = None,
         start: bool = True) -> tuple[TunsecIke, TunsecIke]:
    """Initiator A and responder B; B starts first so A's first IKE_SA_INIT finds it."""
    side_a = TunsecIke(topo, replace(Conn(topo.a, topo.b, start_action="start"), **(a or {})))
    side_b = TunsecIke(topo, replace(Conn(topo.b, topo.a), **(b or {})))
    if start:
        side_b.start()
        side_a.start()
    return side_a, side_b


def no_ike_sas(side: TunsecIke) -> bool:
    return side.ike_sas() == []


def nothing_installed(side: TunsecIke) -> bool:
    """No PROTECT policy and no SA in the worker but the larval inbound ones IKE keeps ready."""
    doc = side.status()
    return doc["policies"] == [] and all(sa["state"] == "larval" for sa in doc["sas"])


def only_ike_left(side: TunsecIke) -> bool:
    """The IKE SA is up without children, and the worker holds nothing of them."""
    doc = side.status()
    return ([(sa["state"], sa["children"]) for sa in doc["ike_sas"]] == [("established", [])]
            and doc["policies"] == [] and all(sa["state"] == "larval" for sa in doc["sas"]))


def no_traffic(topo: TwoHosts) -> bool:
    return not topo.ping(topo.a, topo.b.inner4, count=1, src=topo.a.inner4, timeout=1)


def test_psk_tunnel_carries_traffic_and_both_sides_agree(topo: TwoHosts) -> None:
    a, b = pair(topo)
    sa_a, sa_b = a.wait_established(), b.wait_established()
    # one IKE SA, seen from both ends
    assert (sa_a["initiator"], sa_b["initiator"]) == (True, False)
    assert (sa_a["spi_i"], sa_a["spi_r"]) == (sa_b["spi_i"], sa_b["spi_r"])
    assert sa_a["spi_i"] != "0" * 16 and sa_a["spi_r"] != "0" * 16
    assert sa_a["proposal"] == sa_b["proposal"] == f"IKE:{IKE_DEFAULT}"
    assert (sa_a["local_id"], sa_a["remote_id"]) == (sa_b["remote_id"], sa_b["local_id"]) \
        == ("ts-a.tunsec.test", "ts-b.tunsec.test")
    assert sa_a["remote"] == f"{topo.b.outer4}[4500]" and sa_b["remote"] == f"{topo.a.outer4}[4500]"
    # one Child SA: each side's inbound SPI is the other's outbound
    (ch_a,), (ch_b,) = sa_a["children"], sa_b["children"]
    assert ch_a["name"] == ch_b["name"] == CHILD
    assert (ch_a["spi_in"], ch_a["spi_out"]) == (ch_b["spi_out"], ch_b["spi_in"])
    assert ch_a["spi_in"] != ch_a["spi_out"]
    assert ch_a["alg"] == ch_b["alg"] == "aes128gcm16"
    assert (ch_a["local_ts"], ch_a["remote_ts"]) == (ch_b["remote_ts"], ch_b["local_ts"]) \
        == ([topo.a.inner_net4], [topo.b.inner_net4])

    ping_both_ways(topo)
    received = iperf3_tcp(topo, seconds=2)
    assert received > 1_000_000
    ctr_a, ctr_b = tunsec_counters(a, ch_a), tunsec_counters(b, ch_b)
    assert ctr_a["out"]["bytes"] >= received       # everything B's iperf3 got went through A's outbound SA
    assert ctr_b["in"]["packets"] >= ctr_a["out"]["packets"] > 1000
    assert ctr_a["in"]["packets"] > 0 and ctr_a["in"]["auth_drops"] == ctr_b["in"]["auth_drops"] == 0
    # the human view of the same
    human = a.cli("status").stdout
    assert f"{sa_a['spi_i']}_i {sa_a['spi_r']}_r*" in human
    assert f"{ch_a['spi_in']}_i {ch_a['spi_out']}_o" in human


def test_terminate_deletes_both_sides_and_initiate_brings_it_back(topo: TwoHosts) -> None:
    a, b = pair(topo)
    first = a.wait_established()["children"][0]
    b.wait_established()
    ping_both_ways(topo, count=1)
    # the worker's gauges (its live C allocations, its SPD) follow the Child SA out and back in
    up = a.status()["worker"]["gauges"]

    r = a.cli("terminate", "--ike", CONN)
    assert r.returncode == 0, r.stderr
    assert "deleting 1 IKE SA" in r.stdout
    b.wait_log(r"tun: IKE SA closed: deleted by peer")
    b.wait_log(rf"CHILD_SA {CHILD} {first['spi_out']}_i {first['spi_in']}_o deleted: deleted by peer")
    assert wait_until(lambda: no_ike_sas(a) and no_ike_sas(b), 10), (a.ike_sas(), b.ike_sas())
    assert nothing_installed(a) and nothing_installed(b)
    assert no_traffic(topo)
    down = a.status()["worker"]["gauges"]
    assert down["live_cipher_contexts"] < up["live_cipher_contexts"] and down["spd_entries"] < up["spd_entries"]
    again = a.cli("terminate", "--ike", CONN)
    assert again.returncode != 0 and "no IKE SA" in again.stderr + again.stdout

    r = a.cli("initiate", "--child", CHILD)
    assert r.returncode == 0, r.stderr
    second = a.wait_established()["children"][0]
    b.wait_established()
    assert {second["spi_in"], second["spi_out"]}.isdisjoint({first["spi_in"], first["spi_out"]})
    ping_both_ways(topo, count=2)
    back = a.status()["worker"]["gauges"]
    assert back["live_cipher_contexts"] > down["live_cipher_contexts"] and back["spd_entries"] == up["spd_entries"]

    # --child: that Child SA goes, its IKE SA stays (and carries the next one)
    r = a.cli("terminate", "--child", CHILD)
    assert r.returncode == 0, r.stderr
    b.wait_log(rf"CHILD_SA {CHILD} {second['spi_out']}_i {second['spi_in']}_o deleted: deleted by peer")
    assert wait_until(lambda: only_ike_left(a) and only_ike_left(b), 10)
    assert no_traffic(topo)
    assert a.cli("initiate", "--child", CHILD).returncode == 0
    second = a.wait_established()["children"][0]
    b.wait_established()
    ping_both_ways(topo, count=1)

    # and the other direction: the responder deletes, the initiator hears it
    r = b.cli("terminate", "--ike", CONN)
    assert r.returncode == 0, r.stderr
    a.wait_log(r"tun: IKE SA closed: deleted by peer")
    a.wait_log(rf"CHILD_SA {CHILD} {second['spi_in']}_i {second['spi_out']}_o deleted: deleted by peer")
    assert wait_until(lambda: no_ike_sas(a) and no_ike_sas(b), 10)
    assert no_traffic(topo)


def test_wrong_psk_fails_authentication_on_both_sides(topo: TwoHosts) -> None:
    a, b = pair(topo, a={"psk": "not the secret B has"})
    line_b = b.wait_log(r"ERROR tun: AUTHENTICATION_FAILED from .*").group(0)
    line_a = a.wait_log(r"ERROR tun: AUTHENTICATION_FAILED from .*").group(0)
    assert "the peer failed authentication" in line_b and "pre-shared key" in line_b
    assert "the peer refused our authentication" in line_a
    # each side names where the other's IKE_AUTH came from (after the float to 4500), before any reason
    assert f"AUTHENTICATION_FAILED from {topo.a.outer4}[4500]: " in line_b, line_b
    assert f"AUTHENTICATION_FAILED from {topo.b.outer4}[4500]: " in line_a, line_a
    assert wait_until(lambda: no_ike_sas(a) and no_ike_sas(b), 10)
    assert "CHILD_SA" not in a.log_text() + b.log_text()
    assert no_traffic(topo)
    for side in (a, b):
        assert nothing_installed(side)
        assert "not the secret" not in side.log_text()


def test_no_common_proposal_names_both_lists(topo: TwoHosts) -> None:
    theirs = "aes256-sha512-modp4096"
    a, b = pair(topo, a={"proposals": theirs})
    line_b = b.wait_log(r"ERROR tun: NO_PROPOSAL_CHOSEN: .*").group(0)
    line_a = a.wait_log(r"ERROR tun: NO_PROPOSAL_CHOSEN: .*").group(0)
    # the responder saw both lists, the initiator knows its own
    assert re.search(r"received IKE:aes256-\S*sha512\S*-modp4096", line_b), line_b
    assert f"configured IKE:{IKE_DEFAULT}" in line_b, line_b
    assert re.search(r"IKE:aes256-\S*sha512\S*-modp4096", line_a), line_a
    assert wait_until(lambda: no_ike_sas(a) and no_ike_sas(b), 10)
    assert nothing_installed(a) and nothing_installed(b)
    assert no_traffic(topo)


def test_selectors_that_cannot_be_narrowed_give_ts_unacceptable(topo: TwoHosts) -> None:
    # A asks for 10.9.0.0/24 behind B; B only has 10.2.0.0/24 for A
    a, b = pair(topo, a={"remote_ts": "10.9.0.0/24"})
    b.wait_log(rf"ERROR tun child {CHILD}: TS_UNACCEPTABLE")
    a.wait_log(rf"ERROR tun child {CHILD}: TS_UNACCEPTABLE")
    # the IKE SA stays up (as in strongSwan), without children
    for side in (a, b):
        (sa,) = side.ike_sas()
        assert sa["state"] == "established" and sa["children"] == []
    assert "CHILD_SA net up" not in a.log_text() + b.log_text()
    assert nothing_installed(a) and nothing_installed(b)
    assert no_traffic(topo)


def test_initiator_gives_up_when_the_peer_never_answers(topo: TwoHosts) -> None:
    a, _ = pair(topo, start=False)
    # a quick schedule through the tunsec-only retransmit_* settings (strongSwan's defaults take ~3 minutes)
    text = a.conf.read_text().replace(
        "  log_level = debug\n",
        "  log_level = debug\n  retransmit_timeout = 0.2\n  retransmit_base = 1.5\n  retransmit_tries = 3\n")
    a.conf.write_text(text)
    a.start()      # B runs no tunsec: IKE_SA_INIT goes unanswered
    a.wait_log(r"ERROR tun: peer did not answer after 3 retransmissions; giving up")
    retransmits = re.findall(r"tun: retransmit (\d+) of message 0", a.log_text())
    assert retransmits == ["1", "2", "3"]
    assert wait_until(lambda: no_ike_sas(a), 10), a.ike_sas()
    assert no_traffic(topo)


def test_close_action_start_rebuilds_what_the_peer_deleted(topo: TwoHosts) -> None:
    a, b = pair(topo, a={"extra_child": "        close_action = start\n"})
    first = a.wait_established()
    b.wait_established()
    assert b.cli("terminate", "--ike", CONN).returncode == 0
    a.wait_log(r"tun: IKE SA closed: deleted by peer")
    a.wait_log(rf"close_action: re-initiating child {CHILD}|close_action = start: re-initiating child {CHILD}")
    assert wait_until(lambda: any(sa["spi_i"] != first["spi_i"] for sa in a.established()), 15), a.log_tail()
    b.wait_established()
    ping_both_ways(topo, count=1)


def test_keyingtries_retries_then_gives_up(topo: TwoHosts) -> None:
    a, _ = pair(topo, a={"extra_conn": "    keyingtries = 2\n"}, start=False)
    text = a.conf.read_text().replace(
        "  log_level = debug\n",
        "  log_level = debug\n  retransmit_timeout = 0.2\n  retransmit_base = 1.5\n  retransmit_tries = 1\n")
    a.conf.write_text(text)
    a.start()      # nobody answers
    a.wait_log(r"tun: keying try 1 of 2 failed; trying again")
    a.wait_log(r"ERROR tun: giving up after 2 keying tries")
    assert len(re.findall(r"peer did not answer after 1 retransmissions", a.log_text())) == 2
    assert wait_until(lambda: no_ike_sas(a), 10), a.ike_sas()


def test_worker_death_renegotiates_the_children(topo: TwoHosts) -> None:
    a, b = pair(topo)
    before = a.wait_established()
    b.wait_established()
    ping_both_ways(topo, count=1)
    old_pid = a.status()["worker"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    # the daemon restarts the worker; the IKE SA survives and its child is rekeyed into the new one
    # (until the new worker runs, status answers "worker unavailable")
    assert wait_until(lambda: (st := control.status_if_ok(a.sock)) is not None and st["worker"]["restarts"] == 1,
                      15), a.log_tail()
    assert wait_until(lambda: bool(a.established()) and a.established()[0]["children"][0]["spi_in"]
                      != before["children"][0]["spi_in"], 20), a.log_tail()
    after = a.established()[0]
    assert after["spi_i"] == before["spi_i"]          # same IKE SA
    assert wait_until(lambda: topo.ping(topo.a, topo.b.inner4, count=1, src=topo.a.inner4, timeout=1), 15)
    ping_both_ways(topo, count=2)
