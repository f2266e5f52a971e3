"""eap-radius without ``eap_id`` relays IDi as the EAP identity: held to the one rule of an EAP
identity (eap.identity.fault: not empty, at most 253 bytes, no NUL), as an EAP-Identity answer and
an Access-Accept's User-Name are (review reveap F2).  FreeRADIUS takes ``alice\\0x`` with alice's
password for alice (tests/radius/test_review_reveap_idi_nul.py); here it is refused before the
back end is asked, with AUTHENTICATION_FAILED and a line that names the way out (``eap_id = %any``).
A binary IDi still serves where it is not relayed: eap-radius with ``eap_id = %any``, eap-mschapv2.

Two engines on the test network (tunsec.ike.testing), the backend is the test (test_engine_eap_relay)."""
from __future__ import annotations

import dataclasses

import pytest
from test_engine_eap_relay import NOW, A, B, MschapBackend, client, gateway, only, relay

from tunsec.ike.config import EapSecret, RemoteAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, Event, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network

NUL_KEYID = "@#" + b"alice\x00x".hex()   # KEY_ID alice\0x
NUL_FQDN = "alice\x00x.example"


def _login(ike_id: str, eap_id: str, method: str = "eap-radius") -> tuple[list[Event], list[Event], MschapBackend]:
    """alice (EAP identity alice, her password) with IDi ``ike_id``: the gateway's and the client's
    events, and what the backend was asked."""
    net = Network()
    gw_cfg = gateway(eap_id=eap_id)
    if method != "eap-radius":
        gw_cfg = dataclasses.replace(gw_cfg, remote=RemoteAuth(method, Identity.any(), eap_id=eap_id),
                                     eap_secrets=(EapSecret(("alice",), Secret(b"Alice-pw-1")),))
    gw = net.add(B, IkeEndpoint([gw_cfg], wall_clock=lambda: NOW))
    net.add(A, IkeEndpoint([client(ike_id=ike_id)], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    backend = MschapBackend(passwords={Identity.parse(ike_id).data: "Alice-pw-1", b"alice": "Alice-pw-1"})
    relay(net, gw, backend, until=20.0)
    return [e for _, e in net.events[B]], [e for _, e in net.events[A]], backend


@pytest.mark.parametrize("ike_id", [NUL_KEYID, NUL_FQDN], ids=["keyid", "fqdn"])
def test_an_idi_with_a_nul_byte_is_refused_before_the_backend_is_asked(ike_id: str) -> None:
    events, client_events, backend = _login(ike_id, eap_id="")
    assert not backend.asked, f"IDi {ike_id!r} was relayed as the EAP identity {backend.asked[0].identity!r}"
    assert not only(events, IkeSaUp) and not only(client_events, IkeSaUp)
    (failed,) = only(events, AuthFailed)
    assert "holds a NUL byte" in failed.reason and "eap_id = %any" in failed.reason, failed.reason
    assert failed.counts   # the client's doing: towards its address's ban
    # the client heard AUTHENTICATION_FAILED (the gateway's refusal)
    assert any(e.by_peer for e in only(client_events, AuthFailed)), client_events


def test_a_binary_idi_is_served_with_eap_id_any() -> None:
    """The way the refusal names: the EAP identity comes from EAP-Identity, IDi is not relayed."""
    events, _, backend = _login(NUL_KEYID, eap_id="%any")
    (up,) = only(events, IkeSaUp)
    assert up.remote_id == Identity.of_user(b"alice") and backend.asked[0].identity == b"alice"


def test_a_binary_idi_still_logs_in_with_eap_mschapv2() -> None:
    """Only eap-radius relays IDi: the gateway's own EAP-MSCHAPv2 (eap_id = %any) takes any IDi as before."""
    events, _, _ = _login(NUL_KEYID, eap_id="%any", method="eap-mschapv2")
    (up,) = only(events, IkeSaUp)
    assert up.remote_id == Identity.of_user(b"alice")


@pytest.mark.parametrize("ike_id", ["192.168.0.5", "192.168.1.5", "2001:db8::5"], ids=["v4-nul", "v4", "v6"])
def test_an_address_idi_is_refused_as_binary_with_the_way_out(ike_id: str) -> None:
    """Windows' default IDi is its IP address: binary, no user name, with a zero byte or not (review
    revlate8: "holds a NUL byte" said nothing of what was wrong, and one without went to the server as a
    User-Name no server knows)."""
    events, _, backend = _login(ike_id, eap_id="")
    assert not backend.asked, f"IDi {ike_id!r} was relayed as the EAP identity {backend.asked[0].identity!r}"
    (failed,) = only(events, AuthFailed)
    kind = "an IPv6 address" if ":" in ike_id else "an IPv4 address"
    assert f"IDi is {kind} ({ike_id}), binary" in failed.reason and "eap_id = %any" in failed.reason, failed.reason
    assert "NUL" not in failed.reason and failed.counts


def test_an_address_idi_is_served_with_eap_id_any() -> None:
    events, _, backend = _login("192.168.0.5", eap_id="%any")
    (up,) = only(events, IkeSaUp)
    assert up.remote_id == Identity.of_user(b"alice") and backend.asked[0].identity == b"alice"
