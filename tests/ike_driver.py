"""A small blocking UDP driver for the engine, for interop tests (tests/ike/test_strongswan.py) and debugging.

``python tests/ike_driver.py SCENARIO.json`` runs one :class:`IkeEndpoint`
over real sockets on ports 500 and 4500 for a while, performs timed actions
and prints every event as a JSON line on stdout (keys never printed). It is
not the daemon: no dataplane, no pipe; ESP is only touched by the
``esp_ping`` action, which sends one ICMP echo through the first Child SA with
its keys and reports whether an authentic ESP reply came back.

Scenario keys: ``local``/``remote`` (IP), ``initiate`` (child name or absent
to only respond), ``name``, ``proposals``, ``esp``, ``local_ts``/``remote_ts``,
``local_id``/``remote_id``, ``psk`` or ``cert``/``key``/``ca`` (PEM paths),
``cookie_threshold``, ``refuse_children`` (``NO_PROPOSAL_CHOSEN`` or ``TS_UNACCEPTABLE``: each answer
that creates a Child SA is refused before it leaves, as the service does when its install fails:
ike/child_refusal.py), ``duration`` and ``actions``: ``[[seconds, action], ...]``
with actions ``rekey_child``, ``rekey_ike``, ``create_child``, ``liveness``,
``delete_child``, ``delete``, ``esp_ping``; an action waits until a Child SA is up.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import fields, is_dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tunsec.ike.auth import PrivateKey
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import IKE_PORT, NATT_PORT, NON_ESP_MARKER
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, Event
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret


def build_config(sc: dict[str, Any]) -> IkeConfig:
    child = child_config(
        sc.get("child", "net"), sc.get("local_ts", "dynamic"), sc.get("remote_ts", "dynamic"), sc.get("esp", "default")
    )
    local_id, remote_id = Identity.parse(sc["local_id"]), Identity.parse(sc.get("remote_id", "%any"))
    psk = Secret(sc["psk"].encode()) if "psk" in sc else None
    if "cert" in sc:
        with open(sc["cert"], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(sc["key"], "rb") as f:
            key = load_pem_private_key(f.read(), None)
        with open(sc["ca"], "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        assert isinstance(key, PrivateKey)
        local = LocalAuth("pubkey", local_id, cert, (), key)
        remote = RemoteAuth("pubkey", remote_id, (ca,))
    else:
        local, remote = LocalAuth("psk", local_id), RemoteAuth("psk", remote_id)
    return IkeConfig(
        sc.get("name", "conn"),
        local,
        remote,
        parse_proposals(sc.get("proposals", "default")),
        (child,),
        psk=psk,
        local_addr=sc["local"],
        remote_addr=sc.get("remote"),
    )


def event_json(event: Event) -> str:
    """An event as JSON; Secrets and bytes are summarised, never printed."""
    out: dict[str, Any] = {"event": type(event).__name__}
    assert is_dataclass(event)
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, Secret):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, tuple):
            value = [str(v) for v in value]
        elif not isinstance(value, int | float | str | bool | type(None) | list):
            value = str(value)
        out[f.name] = value
    return json.dumps(out)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def icmp_echo(src: str, dst: str, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7475, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + icmp


def esp_seal(child: ChildSaUp, seq: int, inner: bytes) -> bytes:
    """RFC 4303/4106 ESP with AES-GCM: SPI | seq | IV | ciphertext+ICV (next header 4 = IPv4)."""
    key = child.key_out.reveal()
    pad = (-(len(inner) + 2)) % 4
    plain = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
    header = struct.pack("!II", child.spi_out, seq)
    iv = os.urandom(8)
    return header + iv + AESGCM(key[:-4]).encrypt(key[-4:] + iv, plain, header)


def esp_open(child: ChildSaUp, packet: bytes) -> bytes:
    key = child.key_in.reveal()
    plain = AESGCM(key[:-4]).decrypt(key[-4:] + packet[8:16], packet[16:], packet[:8])
    return plain[: -2 - plain[-2]]


class Driver:
    def __init__(self, sc: dict[str, Any]) -> None:
        self.sc = sc
        self.config = build_config(sc)
        self.endpoint = IkeEndpoint([self.config], cookie_threshold=sc.get("cookie_threshold", 10))
        self.socks = {}
        for port in (IKE_PORT, NATT_PORT):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((sc["local"], port))
            self.socks[port] = s
        self.t0 = time.monotonic()
        self.child: ChildSaUp | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def flush(self) -> None:
        if refuse := self.sc.get("refuse_children"):
            for sa in self.endpoint.sas:
                for child in list(sa.children):
                    if (old := sa.answer_of(child.unique_id)) is not None:   # collected by the endpoint
                        self.endpoint.replace(old, sa.refuse_child(child.unique_id, refuse == "TS_UNACCEPTABLE"))
        for dgram in self.endpoint.datagrams_to_send(self.now()):
            data = dgram.data if dgram.local_port == IKE_PORT else NON_ESP_MARKER + dgram.data
            self.socks[dgram.local_port].sendto(data, dgram.addr)
        while (item := self.endpoint.next_event()) is not None:
            event = item[1]
            if isinstance(event, ChildSaUp):
                self.child = event
            print(event_json(event), flush=True)

    def act(self, action: str) -> None:
        sa = next((s for s in self.endpoint.sas if not s.is_closed), None)
        if sa is None:
            return
        if action == "rekey_child":
            sa.rekey_child(sa.children[0].unique_id)
        elif action == "rekey_ike":
            sa.rekey()
        elif action == "create_child":
            sa.initiate(self.config.children[0].name)
        elif action == "liveness":
            sa.send_liveness()
        elif action == "delete_child":
            sa.delete_child(sa.children[0].unique_id)
        elif action == "delete":
            sa.delete()
        elif action == "esp_ping" and self.child is not None:
            inner = icmp_echo(self.sc["inner_src"], self.sc["inner_dst"], b"tunsec-ike-driver")
            self.socks[NATT_PORT].sendto(esp_seal(self.child, 1, inner), (self.sc["remote_esp"], NATT_PORT))

    def on_esp(self, packet: bytes) -> None:
        if self.child is None:
            return
        try:
            inner = esp_open(self.child, packet)
        except Exception as exc:
            print(json.dumps({"event": "EspReply", "ok": False, "error": type(exc).__name__}), flush=True)
            return
        ok = len(inner) > 20 and inner[20] == 0 and socket.inet_ntoa(inner[12:16]) == self.sc["inner_dst"]
        print(json.dumps({"event": "EspReply", "ok": ok}), flush=True)

    def run(self) -> None:
        print(json.dumps({"event": "Ready"}), flush=True)  # sockets are bound: peers may start
        if self.sc.get("initiate"):
            self.endpoint.initiate(self.config.name, self.sc["initiate"], self.now())
        actions = sorted((float(t), a) for t, a in self.sc.get("actions", []))
        while self.now() < self.sc.get("duration", 5.0):
            while actions and self.now() >= actions[0][0] and self.child is not None:
                self.act(actions.pop(0)[1])
            self.flush()
            timer = self.endpoint.get_timer()
            wait = 0.05 if timer is None else min(0.05, max(0.0, timer - self.now()))
            readable, _, _ = select.select(list(self.socks.values()), [], [], wait)
            for s in readable:
                data, addr = s.recvfrom(65535)
                port = s.getsockname()[1]
                if port == NATT_PORT and not data.startswith(NON_ESP_MARKER):
                    self.on_esp(data)
                    continue
                ike = data.removeprefix(NON_ESP_MARKER) if port == NATT_PORT else data
                self.endpoint.receive(ike, addr, self.now(), (self.sc["local"], port))
            self.endpoint.handle_timer(self.now())
        self.flush()


def main() -> None:
    with open(sys.argv[1]) as f:
        Driver(json.load(f)).run()


if __name__ == "__main__":
    main()
