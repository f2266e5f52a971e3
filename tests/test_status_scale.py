"""`tunsec status` of a gateway with thousands of clients: every part of building and rendering it
is linear in the clients (a pass over every Child SA per IKE SA took seconds at a few thousand,
on the event loop).  Counted, not timed: calls of the callables and passes over the lists."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace
from typing import Any

from tunsec.ike.sa import State
from tunsec.services.ike import status as ike_status
from tunsec.services.ike.handles import Handles
from tunsec.status import render

N = 2000


class _IkeSa(SimpleNamespace):
    """What status reads of an IkeSa; hashed by identity, as IkeSa is."""

    __hash__ = object.__hash__


def _ike_sa(i: int, state: State = State.ESTABLISHED) -> Any:
    return _IkeSa(name="rw", state=state, is_initiator=False, remote_addr=(f"198.51.{i // 250}.{i % 250}", 4500),
                           local_ip="192.0.2.1", local_port=4500, mobike=True, spi_i=i.to_bytes(8, "big"),
                           spi_r=(i + 1).to_bytes(8, "big"), local_spi=(i + 1).to_bytes(8, "big"))


def _child(i: int, handle: int) -> Any:
    return SimpleNamespace(child="net", spi_in=0xC0000000 + i, spi_out=0x10000000 + i, alg="aes256gcm16", esn=False,
                           reqid=i, remote=SimpleNamespace(addr=f"198.51.{i // 250}.{i % 250}", port=4500),
                           local=SimpleNamespace(addr="192.0.2.1", port=4500), local_ts=(), remote_ts=(),
                           established=time.time(), ike=handle)


def test_ike_sas_of_thousands_of_clients_asks_once_per_ike_sa() -> None:
    """N clients with a Child SA each, and one rekeyed: its old IKE SA and its successor share the
    handle, the Child SA shows under the successor only."""
    handles = Handles()
    sas = [_ike_sa(i) for i in range(N)]
    for i, sa in enumerate(sas):
        handles[sa] = i
    old = _ike_sa(N, State.REKEYED)
    handles[old] = 7   # rekeyed: it got client 7's handle first, its successor holds it too
    handles[sas[7]] = 7
    sas.append(old)
    children = [_child(i, i) for i in range(N)]
    calls = {"handle_of": 0, "live_sa": 0}

    def handle_of(sa: Any) -> int | None:
        calls["handle_of"] += 1
        return handles.get(sa)

    def live_sa(handle: int) -> Any:
        calls["live_sa"] += 1
        return handles.live(handle)

    out = ike_status.ike_sas(sas, {}, children, handle_of, live_sa)
    assert calls["handle_of"] + calls["live_sa"] <= 3 * len(sas), calls   # was N² (4 million)
    assert [len(x["children"]) for x in out] == [1] * N + [0]
    assert out[7]["children"][0]["spi_in"] == f"{0xC0000007:08x}"
    assert out[1234]["children"][0]["reqid"] == 1234


def test_handles_answer_as_the_scan_over_every_ike_sa_did() -> None:
    """Handles.live (O(the handle's SAs)) against the pass over every IKE SA it replaced, through
    a random run of handles given, taken over by successors, and given up."""
    rng = random.Random(5)
    handles, plain = Handles(), {}
    sas = [_ike_sa(i, rng.choice([State.ESTABLISHED, State.REKEYED, State.CLOSED])) for i in range(300)]
    for step in range(3000):
        sa = rng.choice(sas)
        if rng.random() < 0.6:
            handle = rng.randrange(40)
            handles[sa] = handle
            plain[sa] = handle
        else:
            assert handles.pop(sa, None) == plain.pop(sa, None)
        if step % 10:
            continue
        sa.state = rng.choice([State.ESTABLISHED, State.REKEYED, State.CLOSED])
        for h in range(40):
            scan = [s for s, x in plain.items() if x == h]
            want = next((s for s in scan if s.state not in (State.REKEYED, State.CLOSED)), scan[0] if scan else None)
            assert handles.live(h) is want
            assert [id(s) for s in handles.sas_of(h)] == [id(s) for s in scan]
        assert dict(handles.items()) == plain and len(handles) == len(plain)


class _CountedList(list[Any]):
    """A list that counts the passes over it."""

    passes = 0

    def __iter__(self) -> Any:
        self.passes += 1
        return super().__iter__()


def test_render_of_thousands_of_clients_reads_the_sas_once() -> None:
    sas = _CountedList()
    ikes = []
    for i in range(N):
        remote = f"198.51.{i // 250}.{i % 250}[4500]"
        si, so = f"{0xC0000000 + i:08x}", f"{0x10000000 + i:08x}"
        for spi, direction in ((si, "in"), (so, "out")):
            sas.append({"spi": spi, "direction": direction, "state": "mature", "alg": "aes256gcm16", "esn": False,
                        "replay_window": 64, "seq": 100, "age_seconds": 10, "local": "192.0.2.1[4500]",
                        "remote": remote, "packets": i, "bytes": 100 * i, "replay_drops": 0})
        ikes.append({"name": "rw", "state": "ESTABLISHED", "remote": remote, "proposal": "p", "spi_i": "0",
                     "spi_r": "0", "initiator": False, "local_id": "gw", "remote_id": f"c{i}", "age_seconds": 1,
                     "children": [{"name": "net", "spi_in": si, "spi_out": so, "remote": remote, "alg": "aes256gcm16",
                                   "esn": False, "age_seconds": 1, "local_ts": ["0.0.0.0/0"],
                                   "remote_ts": [f"10.3.{i // 250}.{i % 250}/32"]}]})
    doc = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
           "uptime_seconds": 1, "udp_offloads": [], "tunnels": [], "policies": [], "drops": {},
           "sas": sas, "ike_sas": ikes}
    text = render(doc).splitlines()
    assert sas.passes <= 2   # was once per IKE SA
    at = text.index("rw: IKEv2 ESTABLISHED with 198.51.4.234[4500], p, SPIs 0_i 0_r, gw <-> c1234, up 1s")
    assert text[at + 2] == "    in  1234 packets, 123400 bytes, drops: replay 0"
    assert text[at + 3] == "    out 1234 packets, 123400 bytes"
