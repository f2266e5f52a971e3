"""tunsec as an EAP-MSCHAPv2 client sends no EAP response to a gateway that did not prove itself
with a certificate of the identity the client names (RFC 7296 §2.16; review N1).

An MSCHAPv2 Response lets its receiver test password guesses offline, so it must not reach a holder
of the group PSK, nor another user's certificate of the same CA.  IkeConfig refuses such client
configs; the engine refuses too for a config built around that check (defence in depth): the
gateway's authenticator, the real one, never sees a single EAP packet from the client.
"""
from __future__ import annotations

import datetime

import pytest

from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, HeaderFlag
from tunsec.ike.eap.mschapv2 import EapAuthenticator, EapResult
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import EPOCH, Network, make_ca, make_cert

A, B = "192.0.2.1", "192.0.2.2"
CA = make_ca()
GW = make_cert(CA, "sun", san=["sun.example"])
MALLORY = make_cert(CA, "mallory", san=["mallory@example.org"])  # a user's certificate of the same CA
NOW = EPOCH + datetime.timedelta(days=30)
PASSWORD = b"Bob-pw-2"
GROUP_PSK = Secret(b"the group psk every road warrior has")
RIGHT_REMOTE = RemoteAuth("pubkey", Identity.parse("sun.example"), cas=(CA.cert,))


def client(remote: RemoteAuth) -> IkeConfig:
    """The client, with ``remote`` set around IkeConfig's own check (what an older config let through)."""
    cfg = IkeConfig("rw", LocalAuth("eap-mschapv2", Identity.parse("bob"), eap_id="bob"), RIGHT_REMOTE,
                    parse_proposals("default"), (child_config("net", "10.1.0.0/16", "10.2.0.0/16"),),
                    eap_secrets=(EapSecret(("bob",), Secret(PASSWORD)),), psk=GROUP_PSK, local_addr=A,
                    remote_addr=B)
    object.__setattr__(cfg, "remote", remote)
    return cfg


def impostor(local: LocalAuth, users: tuple[EapSecret, ...] = ()) -> IkeConfig:
    """A gateway asking for EAP-MSCHAPv2, proving itself by ``local`` (psk is refused by IkeConfig)."""
    cfg = IkeConfig("gw", LocalAuth("pubkey", Identity.parse("sun.example"), GW.cert, private_key=GW.key),
                    RemoteAuth("eap-mschapv2", Identity.any(), eap_id=""), parse_proposals("default"),
                    (child_config("net", "10.2.0.0/16", "10.1.0.0/16"),), psk=GROUP_PSK, eap_secrets=users,
                    local_addr=B, half_open_timeout=10.0)
    object.__setattr__(cfg, "local", local)
    return cfg


@pytest.fixture
def gateway_received(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every EAP packet the gateway's (real) authenticator is given."""
    seen: list[bytes] = []
    real = EapAuthenticator.process

    def process(self: EapAuthenticator, raw: bytes) -> tuple[bytes, EapResult | None]:
        seen.append(raw)
        return real(self, raw)

    monkeypatch.setattr(EapAuthenticator, "process", process)
    return seen


CASES = {
    "gateway-by-group-psk": (RemoteAuth("psk", Identity.parse("sun.example")),
                             LocalAuth("psk", Identity.parse("sun.example"))),
    "any-certificate-of-the-ca": (RemoteAuth("pubkey", Identity.any(), cas=(CA.cert,)),
                                  LocalAuth("pubkey", Identity.parse("mallory@example.org"), MALLORY.cert,
                                            private_key=MALLORY.key)),
}


@pytest.mark.parametrize("case", CASES)
def test_no_eap_response_to_a_gateway_not_named_by_its_certificate(case: str, gateway_received: list[bytes]) -> None:
    remote, gateway_auth = CASES[case]
    net = Network()
    a = net.add(A, IkeEndpoint([client(remote)], wall_clock=lambda: NOW))
    net.add(B, IkeEndpoint([impostor(gateway_auth)], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    net.run(until=60.0)
    events = net.take(A)
    assert gateway_received == []   # no EAP-Identity, no MSCHAPv2 Response
    auth_requests = [s for s in net.log if s.src[0] == A and decode_header(s.data).exchange == ExchangeType.IKE_AUTH
                     and not decode_header(s.data).flags & HeaderFlag.RESPONSE]
    assert len(auth_requests) == 1  # the first IKE_AUTH (IDi, no EAP) and nothing after it
    (failed,) = [e for e in events if isinstance(e, AuthFailed)]
    assert not failed.by_peer and failed.reason.startswith("no EAP response to a gateway that did not prove itself")
    assert not any(isinstance(e, (IkeSaUp, ChildSaUp)) for e in events)
    assert a.sa_count == 0


def test_the_named_gateway_still_gets_the_eap_response(gateway_received: list[bytes]) -> None:
    """The same client and gateway, the gateway named by its certificate: EAP runs and the SAs come up."""
    net = Network()
    a = net.add(A, IkeEndpoint([client(RIGHT_REMOTE)], wall_clock=lambda: NOW))
    net.add(B, IkeEndpoint([impostor(LocalAuth("pubkey", Identity.parse("sun.example"), GW.cert,
                                               private_key=GW.key), (EapSecret(("bob",), Secret(PASSWORD)),))],
                               wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    net.run(until=5.0)
    events = net.take(A)
    assert gateway_received and any(isinstance(e, ChildSaUp) for e in events)


@pytest.mark.parametrize("remote", [CASES["gateway-by-group-psk"][0], CASES["any-certificate-of-the-ca"][0]])
def test_ike_config_refuses_an_eap_client_without_a_named_certificate_gateway(remote: RemoteAuth) -> None:
    with pytest.raises(ValueError, match="local auth = eap-mschapv2 needs remote auth = pubkey and a remote id"):
        IkeConfig("rw", LocalAuth("eap-mschapv2", Identity.parse("bob"), eap_id="bob"), remote,
                  eap_secrets=(EapSecret(("bob",), Secret(PASSWORD)),), psk=GROUP_PSK)
