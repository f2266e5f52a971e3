"""Review reveap F2: without ``eap_id``, eap-radius takes IDi whole as the EAP identity, NUL bytes
included, where an EAP-Identity answer (``eap_id = %any``, eap/identity.parse_response) and an
Access-Accept's User-Name (radius/messages._user_name) with a NUL byte are refused.

FreeRADIUS reads the User-Name as a C string in places (its ``suffix`` realm module, the ``files``
lookup): an IDi of ``alice\\0<anything>`` with alice's password is accepted as alice.  When the
Access-Accept carries no User-Name of its own (a server that does not copy the request's into it, as
FreeRADIUS does by default; here FreeRADIUS with it removed in post-auth), the relay takes the EAP
identity for the proven user (EAP-MSCHAPv2 binds it: radius/proven.py), and the gateway's peer is
``alice\\0<anything>``: for each suffix a user of its own, with its own lease, its own ``unique`` and
``max_ike_sas_per_identity`` count, untouched by alice's INITIAL_CONTACT (review reveapid F1's "one
password, many peers", on the one path that still lets it through).

Real parts: FreeRADIUS 3 in a network namespace of this test (prefix ``reveap``), the gateway's
RadiusRelay and the engine's EapRelay/_BackendRound in a process there; the client's side is the
engine's own EAP-MSCHAPv2 peer, naming itself ``alice`` inside MSCHAPv2 as a client would.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from freeradius import FreeRadius, requires_freeradius

from tunsec.bench.netns import TwoHosts

pytestmark = [requires_freeradius]

SECRET, USER, PASSWORD = "reveap-radius-secret", "alice", "Alice-pw-7"

# run in the namespace: one conversation with IDi ``sys.argv[1]`` (hex) as the EAP identity, as
# ike_auth_eap.start does without eap_id, and the identity the gateway takes the peer for
_CLIENT = r"""
import asyncio, ipaddress, json, sys
from tunsec.ike.eap.mschapv2 import EapPeer
from tunsec.ike.eap.relay import EapRelay, RelayAsk
from tunsec.ike.events import AuthFailed, EapRelayRequest
from tunsec.ike.exchanges.ike_auth_eap import AuthError, GatewayEap, _BackendRound, _relayable_idi
from tunsec.ike.secret import Secret
from tunsec.radius.messages import Station
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusServer, RadiusSettings

class St:
    name = "rw"
    def __init__(self):
        self.events = []
    def emit(self, ev):
        self.events.append(ev)

async def main(idi, secret, user, password):
    try:
        _relayable_idi(idi)
    except AuthError as exc:
        return {"refused": str(exc)}
    server = RadiusServer("fr", ipaddress.ip_address("127.0.0.1"), Secret(secret.encode()))
    radius = RadiusRelay(RadiusSettings((server,), retransmit_timeout=1.0, retransmit_tries=2))
    relay = EapRelay(idi)
    ge, st, peer = GatewayEap(relay, idi=None, request=()), St(), EapPeer(user.encode(), password)
    ask, first = relay.start(), True
    station = Station("gw", "127.0.0.1", "127.0.0.1[4500]", "198.51.100.7[4500]", 1)
    try:
        for _ in range(6):
            assert isinstance(ask, RelayAsk)
            ev = EapRelayRequest("rw", ask.identity, ask.eap, ("198.51.100.7", 4500), first)
            reply = await radius.round("sa", ev, station)
            first = False
            _BackendRound(ge, []).resume(st, reply)
            if ge.msk is not None or any(isinstance(e, AuthFailed) for e in st.events):
                break
            ask = relay.process(peer.process(reply.eap))
    finally:
        radius.close()
    failed = [e.reason for e in st.events if isinstance(e, AuthFailed)]
    return {"failed": failed, "peer": ge.peer.data.hex() if ge.msk is not None and ge.peer is not None else None}

print(json.dumps(asyncio.run(main(bytes.fromhex(sys.argv[1]), *sys.argv[2:]))))
"""


class NoUserNameInAccept(FreeRadius):
    """FreeRADIUS whose Access-Accept names nobody: the User-Name rlm_eap copies from the request is
    removed in post-auth (servers that send none behave so)."""

    def write(self) -> None:
        super().write()
        site = self.dir / "sites-enabled" / "default"
        text = site.read_text()
        site.write_text(text.replace("\npost-auth {\n", "\npost-auth {\n\tupdate reply {\n\t\tUser-Name !* ANY\n"
                                     "\t}\n", 1))


@pytest.fixture
def radius() -> Iterator[tuple[TwoHosts, FreeRadius]]:
    with TwoHosts(ipv6=False, prefix="reveap") as topo:
        server = NoUserNameInAccept(topo, topo.a, SECRET, {USER: PASSWORD})
        server.start()
        try:
            yield topo, server
        finally:
            server.stop()


def _login(topo: TwoHosts, idi: bytes, password: str = PASSWORD) -> dict[str, object]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(["ip", "netns", "exec", topo.a.ns, "env", f"PYTHONPATH={src}", sys.executable, "-c",
                          _CLIENT, idi.hex(), SECRET, USER, password], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_an_idi_with_a_nul_byte_is_not_a_user_of_its_own(radius: tuple[TwoHosts, FreeRadius]) -> None:
    topo, _ = radius
    plain = _login(topo, b"alice")
    assert plain.get("peer") == b"alice".hex(), plain   # the guard: alice logs in as alice
    assert _login(topo, b"alice", "wrong").get("failed"), "a wrong password must fail"
    for idi in (b"alice\x00x", b"alice\x00y"):
        got = _login(topo, idi)
        peer = got.get("peer")
        assert peer in (None, b"alice".hex()), (
            f"IDi {idi!r} with alice's password became the user {bytes.fromhex(str(peer))!r}, a peer of its own "
            f"(its own lease, unique and IKE SA count): {got}")
