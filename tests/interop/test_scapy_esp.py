"""tunsec's wire format against an implementation nobody here wrote: scapy's
ESP (scapy.layers.ipsec.SecurityAssociation, AES-GCM, NAT-T UDP header).

tunsec runs in namespace A on a real TUN; the test plays the peer from
namespace B with real UDP sockets.  scapy builds ESP that tunsec must decrypt
into A's kernel (a UDP socket there receives the payload), and scapy opens
the ESP tunsec sends when A's kernel routes plaintext into the tunnel."""

from __future__ import annotations

import secrets
import socket

import pytest
from conftest import TunnelOptions, TunsecPair
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

from tunsec.bench.netns import TwoHosts, wait_until

APP_PORT, PEER_PORT = 5555, 7777
SPI_IN, SPI_OUT = 0xC0010001, 0xC0020001


def scapy_sa(spi: int, key_hex: str, esn: bool, src: str, dst: str) -> SecurityAssociation:
    return SecurityAssociation(
        ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(key_hex), auth_algo="NULL",
        tunnel_header=IP(src=src, dst=dst), nat_t_header=UDP(sport=4500, dport=4500),
        esn_en=esn, esn=0,
    )


@pytest.fixture(params=[("aes128gcm16", False), ("aes128gcm16", True), ("aes256gcm16", False),
                        ("aes256gcm16", True)], ids=lambda p: f"{p[0]}-esn={p[1]}")
def tunnel(request: pytest.FixtureRequest, topo: TwoHosts) -> TunsecPair:
    esp, esn = request.param
    pair = TunsecPair(topo, TunnelOptions(esp=esp, esn=esn))
    pair.start(pair.a)
    return pair


def _peer_socket(topo: TwoHosts) -> socket.socket:
    s = topo.socket(topo.b, socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((topo.b.outer4, 4500))
    s.settimeout(5)
    return s


def _app_socket(topo: TwoHosts, family: int) -> socket.socket:
    s = topo.socket(topo.a, family, socket.SOCK_DGRAM)
    s.bind((topo.a.inner4 if family == socket.AF_INET else topo.a.inner6, APP_PORT))
    s.settimeout(5)
    return s


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["inner4", "inner6"])
def test_scapy_esp_into_tunsec(tunnel: TunsecPair, family: int) -> None:
    topo, esn = tunnel.topo, tunnel.o.esn
    sa = scapy_sa(SPI_IN, tunnel.o.keys["ba"], esn, topo.b.outer4, topo.a.outer4)
    with _peer_socket(topo) as peer, _app_socket(topo, family) as app:
        for seq in (1, 2, 7):
            payload = secrets.token_bytes(100 + seq)
            if family == socket.AF_INET:
                inner = IP(src=topo.b.inner4, dst=topo.a.inner4) / UDP(sport=PEER_PORT, dport=APP_PORT) / payload
            else:
                inner = IPv6(src=topo.b.inner6, dst=topo.a.inner6) / UDP(sport=PEER_PORT, dport=APP_PORT) / payload
            wire = sa.encrypt(inner, seq_num=seq)
            peer.sendto(bytes(wire[UDP].payload), (topo.a.outer4, 4500))
            got, src = app.recvfrom(65535)
            assert got == payload
            assert src[0] == (topo.b.inner4 if family == socket.AF_INET else topo.b.inner6)
            assert src[1] == PEER_PORT
            last = wire
        # the same packet again is a replay: counted, not delivered
        peer.sendto(bytes(last[UDP].payload), (topo.a.outer4, 4500))
        app.settimeout(0.5)
        with pytest.raises(TimeoutError):
            app.recvfrom(65535)
    # counted when the worker got to it: not always within the half second above on a loaded machine
    assert wait_until(lambda: tunnel.a.status_json(topo)["drops"]["replay"] >= 1, 10)
    doc = tunnel.a.status_json(topo)
    assert doc["drops"]["replay"] == 1
    (sa_in,) = [s for s in doc["sas"] if s["direction"] == "in"]
    assert sa_in["packets"] == 3 and sa_in["seq"] == 7


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["inner4", "inner6"])
def test_tunsec_esp_opened_by_scapy(tunnel: TunsecPair, family: int) -> None:
    topo, esn = tunnel.topo, tunnel.o.esn
    sa = scapy_sa(SPI_OUT, tunnel.o.keys["ab"], esn, topo.a.outer4, topo.b.outer4)
    peer_inner = topo.b.inner4 if family == socket.AF_INET else topo.b.inner6
    with _peer_socket(topo) as peer, _app_socket(topo, family) as app:
        for n in range(3):
            payload = secrets.token_bytes(200 + n)
            app.sendto(payload, (peer_inner, PEER_PORT))
            esp, src = peer.recvfrom(65535)
            assert src == (topo.a.outer4, 4500)
            pkt = IP(src=topo.a.outer4, dst=topo.b.outer4) / UDP(sport=4500, dport=4500) / ESP(esp)
            assert pkt[ESP].spi == SPI_OUT and pkt[ESP].seq == n + 1
            inner = sa.decrypt(pkt)
            layer = IP if family == socket.AF_INET else IPv6
            assert inner.haslayer(layer)
            assert inner[layer].dst == peer_inner
            assert inner[UDP].dport == PEER_PORT and inner[UDP].sport == APP_PORT
            assert bytes(inner[UDP].payload) == payload
