"""Review revsecrets F2: the gateway's EAP-MSCHAPv2 state shows the MSK in its repr.

EapPeer, EapResult and the EAP-TLS authenticator keep their MSK out of repr (field(repr=False));
EapAuthenticator's ``_msk`` is a plain dataclass field, and the authenticator sits in GatewayEap,
which sits in IkeSaState (dataclasses with the default repr): any repr of a gateway's half-open IKE
SA (a debug line, an exception's text, a test's assertion message) prints the MSK, the key that
authenticates both AUTH payloads of the IKE SA (RFC 7296 section 2.16)."""

from __future__ import annotations

import itertools

from tunsec.ike.eap import mschapv2 as ms
from tunsec.ike.exchanges.ike_auth_eap import GatewayEap
from tunsec.ike.message import IdPayload

PASSWORD = "Correct-Horse-9"


def _rand() -> object:
    counter = itertools.count(1)
    return lambda n: bytes([next(counter) & 0xFF]) * n


def _authenticated() -> tuple[ms.EapAuthenticator, bytes]:
    """A gateway's authenticator after a successful MSCHAPv2 round, and the MSK it derived."""
    server = ms.EapAuthenticator(lambda user: PASSWORD if user == b"alice" else None, None,
                                 rand=_rand())  # type: ignore[arg-type]
    peer = ms.EapPeer(b"alice", PASSWORD)
    req = server.start()
    for _ in range(6):
        resp = peer.process(req)
        assert resp is not None
        req, result = server.process(resp)
        if result is not None:
            assert result.ok and len(result.msk) == 64
            return server, result.msk
    raise AssertionError("EAP did not finish")


def _shown(text: str, key: bytes) -> bool:
    return any(probe in text for probe in (repr(key)[2:34], key.hex()[:32], key[:16].hex()))


def test_the_gateways_mschapv2_authenticator_keeps_the_msk_out_of_its_repr() -> None:
    server, msk = _authenticated()
    assert not _shown(repr(server), msk), "EapAuthenticator's repr shows the MSK"
    assert PASSWORD not in repr(server)


def test_a_gateways_eap_state_keeps_the_msk_out_of_its_repr() -> None:
    server, msk = _authenticated()
    held = GatewayEap(server, IdPayload(True, 2, b"alice"), ())
    assert not _shown(repr(held), msk), "GatewayEap's repr (IkeSaState.eap) shows the MSK"
