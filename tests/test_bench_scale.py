"""The scale benchmark's report: the marginal memory per client is the slope between two runs."""

from __future__ import annotations

from tunsec.bench.scale import ScaleResult, format_marginal

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
