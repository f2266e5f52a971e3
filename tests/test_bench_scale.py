"""The scale benchmark's report: the marginal memory per client is the slope between two runs."""

from __future__ import annotations

import re
import time

import pytest

from tunsec.bench import scale
from tunsec.bench.netns import Host
from tunsec.bench.procs import SchedSampler
from tunsec.bench.scale_clients import (
    ClientTimes,
    burst_seconds,
    client_times,
    retransmissions,
    retransmissions_by_message,
)
from tunsec.bench.scale_conf import client_addresses, client_swanctl
from tunsec.bench.scale_report import ScaleResult, format_marginal, format_table, gateway_drops

MIB = 2**20


def run(gateway: str, clients: int, after_mib: float, reason: str = "") -> ScaleResult:
    return ScaleResult(gateway, clients, rss_before=80 * MIB, rss_after=int(after_mib * MIB), reason=reason)


def test_marginal_memory_is_the_slope_between_the_smallest_and_largest_run() -> None:
    runs = [run("tunsec", 100, 86.0), run("strongswan", 100, 12.0),
            run("tunsec", 1000, 98.0), run("strongswan", 1000, 32.0)]
    assert format_marginal(runs).splitlines() == [
        "tunsec: 13.7 KiB per additional client (N = 100 -> 1000)",      # 12 MiB / 900
        "strongswan: 22.8 KiB per additional client (N = 100 -> 1000)",  # 20 MiB / 900
    ]


def test_no_marginal_from_one_run_or_a_failed_one() -> None:
    assert format_marginal([run("tunsec", 100, 86.0)]) == ""
    assert format_marginal([run("tunsec", 100, 86.0), run("tunsec", 1000, 98.0, reason="3 not up")]) == ""


def _row(table: str, label: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(f"| {label} "))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_the_settled_row_comes_from_the_later_sample_and_leaves_the_after_row_alone() -> None:
    t = ScaleResult("tunsec", 100, rss_before=80 * MIB, rss_after=82 * MIB, rss_settled=81 * MIB,
                    rss_main_before=50 * MIB, rss_main_after=51 * MIB, rss_main_settled=int(50.5 * MIB))
    s = ScaleResult("strongswan", 100, rss_before=9 * MIB, rss_after=12 * MIB, rss_settled=12 * MIB,
                    rss_main_before=9 * MIB, rss_main_after=12 * MIB, rss_main_settled=12 * MIB)
    table = format_table([t, s])
    assert _row(table, "gateway KiB per client") == ["20.5", "30.7", "0.67"]
    assert _row(table, "gateway KiB per client, settled (RSS 3 s after the burst)") == ["10.2", "30.7", "0.33"]
    assert _row(table, "  of which main process, settled") == ["5.1", "30.7", "0.17"]
    unsampled = format_table([ScaleResult("tunsec", 100, rss_before=80 * MIB, rss_after=82 * MIB)])
    assert _row(unsampled, "gateway KiB per client, settled (RSS 3 s after the burst)") == ["-"]


LOG = """\
23:59:59.900 00[DMN] Starting IKE charon daemon (strongSwan 5.9.8, Linux 6.1.0, x86_64)
23:59:59.950 12[CFG] added vici connection: rw1
23:59:59.950 12[IKE] initiating IKE_SA rw1[1] to 192.0.2.1
23:59:59.960 12[IKE] initiating IKE_SA rw2[2] to 192.0.2.1
23:59:59.990 14[IKE] IKE_SA rw1[1] established between 192.0.2.2[rw1@example.org]...192.0.2.1[gw.example.org]
00:00:04.100 16[IKE] retransmit 1 of request with message ID 0
00:00:04.150 15[IKE] IKE_SA rw2[2] established between 192.0.2.2[rw2@example.org]...192.0.2.1[gw.example.org]
""".splitlines()


def test_burst_is_first_init_to_last_client_up_by_the_log_timestamps_across_midnight() -> None:
    assert burst_seconds(LOG, 2) == pytest.approx(4.2)
    assert burst_seconds(LOG[:5], 1) == pytest.approx(0.04)


def test_no_burst_unless_every_client_came_up() -> None:
    assert burst_seconds(LOG, 3) is None
    assert burst_seconds(LOG[:5], 2) is None
    assert burst_seconds([], 1) is None


def test_client_times_give_the_clients_pace_and_each_clients_setup_across_midnight() -> None:
    times = client_times(LOG)
    assert times.pace() == pytest.approx(0.01)                   # rw1 at .950, rw2 at .960
    assert times.setup_seconds() == pytest.approx([0.04, 4.19])  # rw1 .950 -> .990, rw2 .960 -> 04.150
    assert client_times(LOG[:3]).setup_seconds() == []           # initiated, never up
    assert client_times([]).pace() is None


def test_retransmissions_are_counted_from_the_log() -> None:
    assert retransmissions(LOG) == 1
    assert retransmissions(LOG[:5]) == 0


def test_retransmissions_by_message_tell_the_init_from_the_auth() -> None:
    auth = "00:00:04.200 17[IKE] retransmit 2 of request with message ID 1"
    assert retransmissions_by_message([*LOG, auth, auth]) == {0: 1, 1: 2}
    assert retransmissions_by_message(LOG[:5]) == {}


def test_the_gateways_drops_are_the_non_zero_counters_of_its_status() -> None:
    doc = {"drops": {"ike_proven_source": 40, "esp_replay": 0, "pipe_ike_proven_source": 3},
           "ike_drops": {"half_open_limit": 0, "cookie_required": 2, "esp_on_ike_port": 0},
           "ike_refused": {"auth_retry": 1},
           "ike_held": {"held_dropped": 5, "spi_waits": 9}, "worker": {"late_answers": 0, "pid": 7},
           "ike_sends_unanswered": 4, "ike_reserve_refused": 0, "ike_sas": []}
    assert gateway_drops(doc) == {"drops.ike_proven_source": 40, "drops.pipe_ike_proven_source": 3,
                                  "ike_drops.cookie_required": 2, "ike_refused.auth_retry": 1,
                                  "ike_held.held_dropped": 5, "ike_sends_unanswered": 4}
    assert gateway_drops({}) == {}
    t = ScaleResult("tunsec", 1000, retransmits=43, retransmits_auth=43, gateway_drops={"drops.ike_proven_source": 40})
    table = format_table([t])
    assert _row(table, "  of IKE_AUTH (message ID 1)") == ["43"]
    assert _row(table, "gateway drops (tunsec status, all counters)") == ["40"]
    assert "tunsec's drops: drops.ike_proven_source 40" in table


def test_the_log_clock_maps_to_wall_time_today_or_yesterday() -> None:
    now = time.time()
    lt = time.localtime(now)
    of_day = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + now % 1
    assert ClientTimes({}, {}, of_day).wall(0.5) == pytest.approx(now + 0.5, abs=0.01)
    # a time of day later than now (by more than an hour) was yesterday's
    later = ClientTimes({}, {}, (of_day + 7200) % 86400).wall(0.0)
    assert later == pytest.approx(now + 7200 - 86400, abs=0.01)


def test_sched_shares_are_interpolated_between_the_samples_around_the_window() -> None:
    sampler = SchedSampler([])
    sampler.samples = [(100.0, 1.0, 0.0), (100.5, 1.2, 0.1), (101.0, 1.5, 0.4), (101.5, 1.5, 0.4)]
    assert sampler.shares(100.5, 101.0) == pytest.approx((0.6, 0.6))     # 0.3 s on a CPU, 0.3 waiting in 0.5 s
    assert sampler.shares(100.25, 100.75) == pytest.approx((0.5, 0.4))   # 1.1 -> 1.35 s, 0.05 -> 0.25 s
    assert sampler.shares(101.0, 101.5) == pytest.approx((0.0, 0.0))     # slept
    assert sampler.shares(101.0, 100.0) is None
    assert sampler.shares(99.0, 100.5) is None                           # before the first sample
    assert SchedSampler([]).shares(0.0, 1.0) is None


@pytest.mark.parametrize("prefix", ["", "Sc", "1a", "a b", "a/b", "abcdefghi"])
def test_a_namespace_prefix_that_could_not_name_a_namespace_safely_is_refused(
        prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--ns-prefix names the benchmark's namespaces (prefix-a-XXXXXX): one with a space, a slash, a
    capital or too long is refused before any namespace is made, naming the option."""
    with pytest.raises(SystemExit) as exc:
        scale.main(["--ns-prefix", prefix, "--clients", "1"])
    assert exc.value.code == 2
    assert "--ns-prefix" in (err := capsys.readouterr().err) and "lower-case letters and digits" in err


def test_the_namespace_prefix_reaches_the_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefix given is the one TwoHosts makes the namespaces with (not the default sc)."""
    seen: list[str] = []

    class Stop(Exception):
        pass

    def two_hosts(*, ipv6: bool, prefix: str, keep_workdir: bool) -> None:
        seen.append(prefix)
        raise Stop

    monkeypatch.setattr(scale, "TwoHosts", two_hosts)
    monkeypatch.setattr(scale, "precheck", lambda: None)
    with pytest.raises(Stop):
        scale.main(["--ns-prefix", "cpu1", "--clients", "1", "--gateways", "tunsec"])
    assert seen == ["cpu1"]


def test_the_clients_spread_over_their_source_addresses_in_turn() -> None:
    """scale.py --client-addresses K: client k from the (k - 1) mod K-th address, the first the host's own."""
    me = Host("b", "192.0.2.2", "2001:db8::2", "10.2.0.1", "fd00:2::1", "10.2.0.0/24", "fd00:2::/64")
    gw = Host("a", "192.0.2.1", "2001:db8::1", "10.1.0.1", "fd00:1::1", "10.1.0.0/24", "fd00:1::/64")
    assert client_addresses(me, 1) == ["192.0.2.2"]
    assert client_addresses(me, 3) == ["192.0.2.2", "192.0.2.100", "192.0.2.101"]
    conf = client_swanctl(me, gw, "k", 4, client_addresses(me, 3))
    assert re.findall(r"local_addrs = (\S+)", conf) == ["192.0.2.2", "192.0.2.100", "192.0.2.101", "192.0.2.2"]
    assert re.findall(r"local_addrs = (\S+)", client_swanctl(me, gw, "k", 2)) == ["192.0.2.2"] * 2
