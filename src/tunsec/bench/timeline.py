"""A per-client timeline of a tunsec gateway's road-warrior set-ups (``bench/scale.py --timeline``).

``python3 -m tunsec.bench.timeline --out FILE -m tunsec up -c CONF`` runs ``tunsec up`` with a few
of the control process's functions wrapped to append one JSON line per step to FILE (monotonic
time, the IKE SA's initiator SPI):

- ``rx``: an IKE datagram enters the service (IKE_SA_INIT from port 500; IKE_AUTH via the worker);
- ``tx``: the service sends one (IKE_SA_INIT answers on port 500; IKE_AUTH answers as SEND_IKE);
- ``install``: a Child SA's install requests are sent (IKE SA, inbound SPI), or the task that awaits
  their answers (one queued behind other changes: a rekey) starts waiting ...
- ``acked``: ... and its last request has ended (its answer read), or that task runs again;
- ``pipe_tx`` / ``pipe_rx``: a request to the worker is sent (UPDATE/ADD: its SPI) / its answer read.

A client's install is sent with its UPDATE (``pipe_tx`` with the inbound SPI of the IKE SA's Child
SA) and answered with the last answer to the requests sent with it (ADD, SPDADD: the next ids).

:func:`summarize` turns the file into the phases per client (medians and the slowest) and what
the last client waited for.  The wrapping costs the control process some CPU: use it to see
where the time goes, not to measure speed.
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

IKE_SA_INIT, IKE_AUTH = 34, 35
_MSG_TYPES: dict[int, str] = {}


def _ike(data: bytes) -> tuple[str, int, bool] | None:
    """(initiator SPI, exchange type, is a response) of an IKE message; None if too short."""
    if len(data) < 28:
        return None
    return data[:8].hex(), data[18], bool(data[19] & 0x20)


def install(out: IO[str]) -> None:
    """Wrap the control process's functions (before ``tunsec up`` builds anything)."""
    from tunsec.dataplane import client, pipe
    from tunsec.services.ike import service, sockets

    _MSG_TYPES.update({int(t): t.name for t in pipe.MsgType})

    def note(kind: str, **fields: Any) -> None:
        out.write(json.dumps({"t": time.monotonic(), "ev": kind, **fields}) + "\n")

    receive = service.IkeService.receive

    def traced_receive(self: Any, data: bytes, remote: tuple[str, int], local: Any = None,
                       unmarked: bool = False) -> None:
        if (head := _ike(data)) is not None:
            note("rx", spi=head[0], x=head[1], resp=head[2])
        receive(self, data, remote, local, unmarked)

    send = sockets.IkeSockets.send

    def traced_send(self: Any, datagram: Any) -> None:
        if (head := _ike(datagram[0])) is not None:
            note("tx", spi=head[0], x=head[1], resp=head[2])
        send(self, datagram)

    answered = service.IkeService._answered

    async def traced_answered(self: Any, state: Any, sent: Any, add: Any) -> Any:
        sa = self._ike_sa(state.ike)
        spi = sa.spi_i.hex() if sa is not None else ""
        note("install", spi=spi, spi_in=state.spi_in)
        try:
            return await answered(self, state, sent, add)
        finally:
            note("acked", spi=spi, spi_in=state.spi_in)

    # a new Child SA with nothing before it sends its install in the turn that negotiated it and books
    # the answers from the pipe's reader (installs._start_install): no task, so _answered is not on
    # its path; the send and the end of its last request are
    send_install = service.IkeService._send_install

    def traced_send_install(self: Any, state: Any, ev: Any, release: Any) -> Any:
        started = send_install(self, state, ev, release)
        if started is not None:
            sa = self._ike_sa(state.ike)
            note("install", spi=sa.spi_i.hex() if sa is not None else "", spi_in=state.spi_in)
        return started

    install_ended = service.IkeService._install_ended

    def traced_install_ended(self: Any, state: Any, ev: Any, release: Any, started: Any, _last: object = None) -> None:
        sa = self._ike_sa(state.ike)
        note("acked", spi=sa.spi_i.hex() if sa is not None else "", spi_in=state.spi_in)
        install_ended(self, state, ev, release, started, _last)

    request_soon = client.WorkerClient.request_soon

    def traced_request_soon(self: Any, build: Callable[[int], Any], then: Any = None, failed: Any = None,
                            late: Any = None) -> Any:
        def traced_build(req_id: int) -> Any:
            built = build(req_id)
            msg = pipe.decode(built) if isinstance(built, bytes) else built   # pipe.direct's: an install
            sa = getattr(msg, "sa", None)
            note("pipe_tx", id=req_id, type=type(msg).__name__, **({"spi_in": sa.spi} if sa is not None else {}))
            return built
        return request_soon(self, traced_build, then, failed, late)

    received = client.WorkerClient._received

    def traced_received(self: Any, data: bytes, *rest: Any) -> None:
        if len(data) >= 16:
            _, kind, _, req_id, flags = struct.unpack_from("!BBHIB", data)
            note("pipe_rx", id=req_id, type=_MSG_TYPES.get(kind, str(kind)), reply=bool(flags & 1))
        received(self, data, *rest)

    service.IkeService.receive = traced_receive   # type: ignore[method-assign]
    sockets.IkeSockets.send = traced_send   # type: ignore[method-assign]
    service.IkeService._answered = traced_answered
    service.IkeService._send_install = traced_send_install
    service.IkeService._install_ended = traced_install_ended
    client.WorkerClient.request_soon = traced_request_soon   # type: ignore[method-assign]
    client.WorkerClient._received = traced_received   # type: ignore[method-assign,assignment]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tunsec.bench.timeline")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("-m", dest="module", required=True, help="the module to run (tunsec)")
    args, rest = ap.parse_known_args(argv)
    out = open(args.out, "w", buffering=1, encoding="utf-8")   # noqa: SIM115 (open while tunsec runs)
    install(out)
    sys.argv = [args.module, *rest]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    return 0


# --------------------------------------------------------------------------- the summary


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def client_phases(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per IKE SA (initiator SPI) the first time of each step: init_rx, init_tx, auth_rx, install,
    acked, auth_tx (responder's view)."""
    events = list(events)
    steps: dict[str, dict[str, float]] = {}

    def first(spi: str, name: str, t: float) -> None:
        steps.setdefault(spi, {}).setdefault(name, t)

    ike_of = {e["spi_in"]: e["spi"] for e in events if e["ev"] == "install" and e["spi"]}
    answered = {e["id"]: e["t"] for e in events if e["ev"] == "pipe_rx" and e["reply"]}
    for e in events:
        if e["ev"] == "rx" and not e["resp"] and e["x"] in (IKE_SA_INIT, IKE_AUTH):
            first(e["spi"], "init_rx" if e["x"] == IKE_SA_INIT else "auth_rx", e["t"])
        elif e["ev"] == "tx" and e["resp"] and e["x"] in (IKE_SA_INIT, IKE_AUTH):
            first(e["spi"], "init_tx" if e["x"] == IKE_SA_INIT else "auth_tx", e["t"])
        elif e["ev"] == "pipe_tx" and e["type"] == "Update" and (ike := ike_of.get(e["spi_in"])) is not None:
            first(ike, "install", e["t"])
            times = [answered[i] for i in (e["id"], e["id"] + 1, e["id"] + 2) if i in answered]
            if times:
                first(ike, "acked", max(times))
    order = ("init_rx", "init_tx", "auth_rx", "install", "acked", "auth_tx")
    return {spi: s for spi, s in steps.items() if all(k in s for k in order)}


def pipe_round_trips(events: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Seconds from sending a request to reading its (last) answer, by request type."""
    sent: dict[int, tuple[str, float]] = {}
    out: dict[str, list[float]] = {}
    for e in events:
        if e["ev"] == "pipe_tx":
            sent[e["id"]] = (e["type"], e["t"])
        elif e["ev"] == "pipe_rx" and e["reply"] and e["id"] in sent:
            kind, t0 = sent.pop(e["id"])
            out.setdefault(kind, []).append(e["t"] - t0)
    return out


def summarize(events: list[dict[str, Any]]) -> str:
    phases = client_phases(events)
    if not phases:
        return "timeline: no complete client set-up recorded"
    t0 = min(s["init_rx"] for s in phases.values())
    spans = [
        ("IKE_SA_INIT rx -> tx (answer)", "init_rx", "init_tx"),
        ("IKE_SA_INIT tx -> IKE_AUTH rx (client, wire)", "init_tx", "auth_rx"),
        ("IKE_AUTH rx -> install sent", "auth_rx", "install"),
        ("install sent -> acked", "install", "acked"),
        ("acked -> IKE_AUTH tx (answer)", "acked", "auth_tx"),
        ("IKE_SA_INIT rx -> IKE_AUTH tx", "init_rx", "auth_tx"),
    ]
    lines = [f"timeline of {len(phases)} clients (ms; first IKE_SA_INIT at 0)",
             f"{'phase':46} {'median':>8} {'p90':>8} {'max':>8} {'sum':>9}"]
    for label, a, b in spans:
        d = sorted((s[b] - s[a]) * 1000 for s in phases.values())
        lines.append(f"{label:46} {statistics.median(d):8.1f} {d[int(0.9 * (len(d) - 1))]:8.1f} {d[-1]:8.1f} "
                     f"{sum(d):9.1f}")
    for label, key in (("first IKE_SA_INIT rx", "init_rx"), ("last IKE_SA_INIT rx", "init_rx"),
                       ("last IKE_SA_INIT answered", "init_tx"), ("first IKE_AUTH rx", "auth_rx"),
                       ("last IKE_AUTH rx", "auth_rx"), ("last install acked", "acked"),
                       ("last IKE_AUTH answered", "auth_tx")):
        pick = min if label.startswith("first") else max
        lines.append(f"{label:46} {(pick(s[key] for s in phases.values()) - t0) * 1000:8.1f}")
    last = max(phases.values(), key=lambda s: s["auth_tx"])
    lines.append("the last client: " + ", ".join(f"{k} {(last[k] - t0) * 1000:.1f}"
                                                  for k in ("init_rx", "init_tx", "auth_rx", "install", "acked",
                                                            "auth_tx")))
    for kind, rtts in sorted(pipe_round_trips(events).items()):
        d = sorted(x * 1000 for x in rtts)
        lines.append(f"pipe {kind:12} n={len(d):5} round trip ms median {statistics.median(d):6.1f} "
                     f"p90 {d[int(0.9 * (len(d) - 1))]:6.1f} max {d[-1]:6.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
