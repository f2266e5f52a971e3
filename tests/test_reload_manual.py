"""``tunsec reload`` with manual tunnels, through the daemon's control command into the real
ManualService and the worker's logic and C fast path in-process: a removed tunnel's SAs and
policies leave the worker, an added one is installed, a changed one replaced, an untouched one is
not touched at all; a re-added key never reuses a sequence number (AES-GCM nonce) it had used."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from test_ikeservice_peers import InProcessWorker, ipv4_udp

from tunsec.conf.config import load_config
from tunsec.daemon import Daemon, Sockets
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.runtime import resolved
from tunsec.seqstate import state_file
from tunsec.services.base import ReloadRefused, StartupError
from tunsec.services.manual import check_unique
from tunsec.statedir import init_state_dir

KEY_A = "0x0102030405060708090a0b0c0d0e0f1011121314"
KEY_A2 = "0xa1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4"


def derived(key: str, n: int, direction: str) -> str:
    """A key of its own for tunnel n's key_in or key_out (one key in two SAs is refused): key with its
    last two bytes replaced."""
    return f"{key[:-4]}{n:02x}{1 if direction == 'in' else 2:02x}"


def tunnel(name: str, n: int, key: str = KEY_A, spi_in: int | None = None, local: str = "192.0.2.1") -> str:
    return f"""  {name} {{ local_addr = {local}
    remote_addr = 192.0.2.{10 + n}
    local_ts = 10.1.0.0/24
    remote_ts = 10.2.{n}.0/24
    spi_in = {hex(spi_in or 0xC0010000 + n)}
    key_in = {derived(key, n, "in")}
    spi_out = {hex(0xC0020000 + n)}
    key_out = {derived(key, n, "out")} }}
"""


def conf(tmp: Path, *tunnels: str) -> str:
    return (f"tunsec {{ control_socket = {tmp}/t.sock\n state_dir = {tmp}/state }}\n"
            "manual {\n" + "".join(tunnels) + "}\n")


class Harness:
    def __init__(self, tmp: Path, text: str, init: bool = True) -> None:
        self.tmp = tmp
        self.path = tmp / "tunsec.conf"
        self.path.write_text(text)
        if init:
            init_state_dir(tmp / "state")   # as `tunsec init-state` does once for an installation
        self.daemon = Daemon(resolved(load_config(self.path)))
        self.worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        self.daemon.worker = self.worker  # type: ignore[assignment]
        self.daemon.sockets.binds = Sockets.binds_for(self.daemon.manual.esp_endpoints())

    async def start(self) -> None:
        self.daemon.manual.prepare()
        await self.daemon.manual.start()

    def stop(self) -> None:
        """What the daemon's exit releases (the state directory's lock): another Harness may start."""
        self.daemon.manual.close()

    async def reload(self, text: str) -> dict[str, Any]:
        self.path.write_text(text)
        return await self.daemon._command(json.dumps({"cmd": "reload"}).encode())

    def sas(self) -> set[tuple[int, Direction]]:
        return {(sa.spi, sa.direction) for sa in self.worker.dp.sas()}

    def policy_ids(self) -> set[int]:
        return {p.id for p in self.worker.dp.policies()}

    def requests_for(self, spi: int) -> list[pipe.Message]:
        return [m for m in self.worker.log if isinstance(m, (pipe.Update, pipe.Add)) and m.sa.spi == spi]

    def adds(self, spi: int) -> list[pipe.Add]:
        return [m for m in self.worker.log if isinstance(m, pipe.Add) and m.sa.spi == spi]


def sa_pair(n: int) -> set[tuple[int, Direction]]:
    return {(0xC0010000 + n, Direction.IN), (0xC0020000 + n, Direction.OUT)}


def test_manual_reload_adds_removes_replaces_and_never_reuses_a_sequence_number(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1), tunnel("gone", 2), tunnel("change", 3)))
        await h.start()
        assert h.sas() == sa_pair(1) | sa_pair(2) | sa_pair(3)
        keep_requests = len(h.requests_for(0xC0020001))
        keep_policies = {p.id for p in h.daemon.manual.plans[0].policies}
        gone_policies = {p.id for p in h.daemon.manual.plans[1].policies}
        first = h.adds(0xC0020003)[-1].sa
        assert first.seq_start == 0

        answer = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("change", 3, KEY_A2), tunnel("new", 4)))
        assert answer == {"ok": True, "message": "manual tunnels added: new\nmanual tunnels removed: gone\n"
                                                 "manual tunnels replaced: change"}
        assert h.sas() == sa_pair(1) | sa_pair(3) | sa_pair(4)
        assert not gone_policies & h.policy_ids()
        assert keep_policies <= h.policy_ids()
        assert len(h.requests_for(0xC0020001)) == keep_requests     # keep was not touched
        assert h.adds(0xC0020003)[-1].sa.key == bytes.fromhex(derived(KEY_A2, 3, "out")[2:])

        # back to the first key: it starts past everything that key reserved before (no (key, seq) reused)
        answer = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("change", 3), tunnel("new", 4)))
        assert answer["ok"] and answer["message"] == "manual tunnels replaced: change"
        again = h.adds(0xC0020003)[-1].sa
        assert again.key == first.key and again.seq_start >= first.seq_limit > 0

        # refused as a whole: two tunnels with one inbound SPI; an address no ESP socket is bound to
        before = (h.sas(), h.policy_ids(), len(h.worker.log))
        answer = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("dup", 5, KEY_A2, spi_in=0xC0010001)))
        assert answer["ok"] is False
        assert ":16: manual.dup.spi_in: SPI 0xc0010001 is already the spi_in of another tunnel" in answer["error"]
        answer = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("far", 6, local="192.0.2.99")))
        assert answer["ok"] is False
        assert "needs a restart: ESP-in-UDP on IPv4 192.0.2.99 port 4500 (tunsec listens on 192.0.2.1 port 4500)" \
            in answer["error"]
        answer = await h.reload(conf(tmp_path, tunnel("keep", 1)).replace("local_ts = 10.1.0.0/24", "local_ts = x"))
        assert answer["ok"] is False and f"{h.path}:" in answer["error"]
        assert (h.sas(), h.policy_ids(), len(h.worker.log)) == before
    asyncio.run(body())


def esp_fields(esp: bytes) -> tuple[int, int, bytes, bytes]:
    """(SPI, 32-bit sequence number, explicit IV, ciphertext) of an ESP datagram."""
    spi, seq = struct.unpack("!II", esp[:8])
    return spi, seq, esp[8:16], esp[16:-16]


def test_a_reload_changing_only_spi_out_continues_the_keys_sequence_numbers(tmp_path: Path) -> None:
    """The GCM nonce is salt || sequence number and the SPI is only in the AAD: the same key_out
    under a new spi_out must go on past what it reserved, or the first packets after the reload
    repeat (key, nonce) pairs and ct1 ^ ct2 == pt1 ^ pt2 leaks the plaintexts."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("a", 1)))
        await h.start()
        old = {}
        for i in range(6):
            inner = ipv4_udp("10.1.0.5", "10.2.1.5", bytes([65 + i]) * 40)
            old[esp_fields(h.worker.dp.outbound(inner)[0])[2]] = inner
        first = h.adds(0xC0020001)[-1].sa

        answer = await h.reload(conf(tmp_path, tunnel("a", 1)).replace(hex(0xC0020001), hex(0xC0029999)))
        assert answer == {"ok": True, "message": "manual tunnels replaced: a"}
        new = h.adds(0xC0029999)[-1].sa
        assert new.key == first.key and new.seq_start >= first.seq_limit > 0
        for i in range(6):
            inner = ipv4_udp("10.1.0.5", "10.2.1.5", bytes([97 + i]) * 40)
            spi, seq, iv, _ = esp_fields(h.worker.dp.outbound(inner)[0])
            assert spi == 0xC0029999 and seq > first.seq_limit
            assert iv not in old   # the proof's check: no IV (nonce) of the old SPI comes again
            assert int.from_bytes(iv, "big") > max(int.from_bytes(v, "big") for v in old)
    asyncio.run(body())


def test_a_reload_putting_one_key_into_two_sas_is_refused_naming_both(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("a", 1)))
        await h.start()
        before = (h.sas(), h.policy_ids(), len(h.worker.log))
        shared = derived(KEY_A, 1, "out")
        b = tunnel("b", 2).replace(derived(KEY_A, 2, "out"), shared)
        answer = await h.reload(conf(tmp_path, tunnel("a", 1), b))
        assert answer["ok"] is False
        assert f"manual.b.key_out: the same key as manual.a.key_out ({h.path}:" in answer["error"]
        same = tunnel("a", 1).replace(derived(KEY_A, 1, "in"), shared)   # key_in == key_out
        answer = await h.reload(conf(tmp_path, same))
        assert answer["ok"] is False and "manual.a.key_out: the same key as manual.a.key_in" in answer["error"]
        assert shared[2:] not in answer["error"]
        assert (h.sas(), h.policy_ids(), len(h.worker.log)) == before
    asyncio.run(body())


def test_check_unique_refuses_one_key_in_two_sas_whatever_the_spis(tmp_path: Path) -> None:
    """The service's own check (a reload's config passed the config's): tunnels as parsed."""
    cfg = load_config(_write(tmp_path, conf(tmp_path, tunnel("a", 1), tunnel("b", 2))))
    a, b = cfg.manual
    with pytest.raises(ReloadRefused) as err:
        check_unique([a, dataclasses.replace(b, key_in=a.key_out)])
    assert str(err.value).startswith(f"manual tunnel b ({a.file}:{b.line}) key_in is the same key as manual "
                                     f"tunnel a ({a.file}:{a.line}) key_out: one key in two SAs repeats AES-GCM")
    with pytest.raises(ReloadRefused, match=r"tunnel a .* key_out is the same key as manual tunnel a .* key_in"):
        check_unique([dataclasses.replace(a, key_out=a.key_in)])
    check_unique([a, b])


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "check.conf"
    path.write_text(text)
    return path


def with_esn(text: str, on: bool) -> str:
    return text.replace("    key_out", f"    esn = {'yes' if on else 'no'}\n    key_out")


def test_a_key_used_with_esn_past_2_to_the_32_is_refused_without_esn_and_continues_with_it(tmp_path: Path) -> None:
    """Both keys went past 2^32 with ESN.  Without ESN their SAs would start at 2^32-1 at most (the
    state file lowered to it): the install failed with a traceback, and ESN on again sent the same
    sequence numbers (GCM nonces) under key_out again.  A reload to esn = no is refused, so is a
    start; the files stay as they were; with ESN the keys go on past 2^32 + 10."""
    past = (1 << 32) + 10

    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, with_esn(tunnel("a", 1), True)))
        await h.start()
        keys = [h.adds(0xC0020001)[-1].sa.key, h.requests_for(0xC0010001)[-1].sa.key]
        h.stop()
        files = [state_file(tmp_path / "state", k) for k in keys]
        for f in files:   # where a long-running ESN SA's refills left them
            f.write_text(json.dumps({**json.loads(f.read_text()), "limit": past}))
        h = Harness(tmp_path, conf(tmp_path, with_esn(tunnel("a", 1), True)), init=False)
        await h.start()
        sas = (h.sas(), h.policy_ids(), len(h.worker.log))
        before = [f.read_bytes() for f in files]
        answer = await h.reload(conf(tmp_path, with_esn(tunnel("a", 1), False)))
        assert answer["ok"] is False
        assert "manual tunnel a: " in answer["error"] and any(str(f) in answer["error"] for f in files)
        assert "key used with ESN past 2^32: it cannot be used without ESN; generate new keys" in answer["error"]
        assert (h.sas(), h.policy_ids(), len(h.worker.log)) == sas
        assert [f.read_bytes() for f in files] == before
        reserved = h.adds(0xC0020001)[-1].sa.seq_limit
        h.stop()

        h = Harness(tmp_path, conf(tmp_path, with_esn(tunnel("a", 1), False)), init=False)
        with pytest.raises(StartupError, match="key used with ESN past 2\\^32: it cannot be used without ESN"):
            await h.start()
        assert not h.worker.log
        h.stop()
        assert [f.read_bytes() for f in files] == before

        h = Harness(tmp_path, conf(tmp_path, with_esn(tunnel("a", 1), True)), init=False)
        await h.start()
        out = h.adds(0xC0020001)[-1].sa
        assert out.esn and out.seq_start == reserved > past
        _, _, iv, _ = esp_fields(h.worker.dp.outbound(ipv4_udp("10.1.0.5", "10.2.1.5", b"x" * 40))[0])
        assert int.from_bytes(iv, "big") == reserved + 1   # the 64-bit sequence number: past every one used
        h.stop()
    asyncio.run(body())
