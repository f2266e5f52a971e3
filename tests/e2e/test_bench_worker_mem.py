"""bench/worker_mem.py still runs to the end and reports (tests/benchrun.py says why).

Here because the bench starts a real worker in a network namespace of its own (random name)."""

from __future__ import annotations

from benchrun import figures, run_bench


def test_worker_mem_installs_every_client_and_passes_their_packets() -> None:
    out = run_bench("worker_mem.py", "--clients", "3")
    n, window, _installed, _after, sent, got, sas, policies = figures(
        r"{n} clients, window {n}: {n} KiB per client installed, {n} KiB per client after one packet "
        r"each way \({n} out, {n} in; {n} SAs, {n} policies\)", out)
    assert (n, window) == (3, 4096)
    assert (sas, policies) == (6, 3)      # an inbound and an outbound SA and a policy per client
    assert got == 3 and sent >= 3         # one ESP packet in per client; out: at least one each
    before, installed, after = figures(r"worker RSS before {n} KiB, installed {n} KiB, after traffic {n} KiB", out)
    assert before > 0 and installed > 0 and after > 0
