"""bench/ctlmem.py, bench/ike_burst.py, bench/status_build.py, bench/has_contact_cost.py and
bench/host_addresses_cost.py still run to the end and report
(tests/benchrun.py says why).

No namespaces but host_addresses_cost.py's own (root): they run the gateway (or its status) in
process with fake sockets and worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from benchrun import figures, run_bench


def test_ctlmem_brings_every_client_up_and_reports_per_client_figures() -> None:
    out = run_bench("ctlmem.py", "--clients", "3", "--top", "60")
    clients, _took, ike_sas, child_sas = figures(r"{n} clients up in {n} s; gateway IKE SAs {n}, Child SAs {n}", out)
    # the 20 clients of the warm-up burst, then the 3 measured
    assert (clients, ike_sas, child_sas) == (3, 23, 23)
    _rss0, _rss1, _kib, cpu = figures(r"gateway RSS {n} -> {n} MiB: {n} KiB per client; CPU {n} ms per client", out)
    assert cpu > 0
    # one IKE SA and one lease more per client: the live-object census sees what it counts
    assert figures(r"\n\s*{n}  tunsec\.ike\.sa\.IkeSa\n", out) == (1.0,)
    assert figures(r"\n\s*{n}  tunsec\.policy\.pools\.Lease\n", out) == (1.0,)


def test_ike_burst_reports_the_gateways_cpu_per_client() -> None:
    out = run_bench("ike_burst.py", "--clients", "3")
    n, total, clients, gateway, per_client = figures(
        r"N = {n}: CPU {n} s, clients {n} s, gateway {n} s = {n} ms per client", out)
    assert n == 3
    assert total > 0 and clients > 0 and gateway > 0 and per_client > 0
    assert figures(r"best: gateway {n} ms per client", out)[0] > 0


def test_status_build_reports_the_builds_before_and_now_side_by_side() -> None:
    out = run_bench("status_build.py", "--clients", "50", "--repeat", "1")
    for what in ("scrape", "status"):
        n, cpu_before, cpu_now, _ratio, held_before, held_now, _held_ratio, size = figures(
            rf"\n\s*{{n}} {what}\s+{{n}}s\s+{{n}}s\s+{{n}}\s+{{n}}ms\s+{{n}}ms\s+{{n}}\s+{{n}} MB", out)
        assert n == 50 and cpu_before > 0 and cpu_now > 0 and held_before > 0 and held_now > 0 and size > 0


def test_ike_burst_timeline_records_every_clients_install(tmp_path: Path) -> None:
    """The direct install path (a new Child SA's requests sent in the turn that negotiated it, no task)
    is recorded: each client's install and its answers are in the timeline's phases."""
    out = run_bench("ike_burst.py", "--clients", "3", "--timeline", str(tmp_path / "tl"))
    assert "no complete client set-up recorded" not in out
    assert figures(r"timeline of {n} clients", out) == (3.0,)
    sent_to_acked = figures(r"install sent -> acked\s+{n}\s+{n}\s+{n}\s+{n}", out)
    assert all(x > 0 for x in sent_to_acked)


def test_has_contact_cost_reports_before_and_now() -> None:
    out = run_bench("has_contact_cost.py", "--clients", "300", "--repeat", "1")
    for kind in ("dn", "fqdn"):
        n, before, now = figures(rf"N={{n}} road warriors, {kind} identities: before {{n}} ms per question, "
                                 rf"now {{n}} us", out)
        assert n == 300 and before > 0 and now > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a network namespace of its own (root)")
def test_host_addresses_cost_reports_before_and_now() -> None:
    out = run_bench("host_addresses_cost.py", "--addresses", "50", "--repeat", "1")
    n, before, per_change, notices, full = figures(
        r"N={n}: before, per burst: {n} ms \(pyroute2 dump\); now, per change: {n} us \({n} notices\), "
        r"a full dump \(start, missed changes\): {n} ms", out)
    assert n == 50 and notices == 50 and before > 0 and per_change > 0 and full >= 0
