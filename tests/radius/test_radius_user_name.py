"""Who the client is after an Access-Accept (tunsec.radius.proven): the Accept's User-Name when it
names another user than the EAP identity the client gave; that identity when the method the server
ran checks a credential of it (MSCHAPv2...) or trust_eap_identity says so; else nobody. Against a
scripted RADIUS server on loopback (ephemeral ports), and the rule itself."""
from __future__ import annotations

import asyncio

import pytest
from test_radius_messages import STATION
from test_radius_relay import ask, scripted, server

from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.radius.messages import ACCESS_ACCEPT, ACCESS_CHALLENGE
from tunsec.radius.proven import proven_user, request_method
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusSettings

SUCCESS = (79, b"\x03\x11\x00\x04")
PEAP_START = b"\x01\x10\x00\x06\x19\x20"     # EAP-Request, type 25 (PEAP), Start flag
MSCHAPV2 = b"\x01\x10\x00\x06\x1a\x01"       # EAP-Request, type 26 (MSCHAPv2), a Challenge (cut short)


def accept_after(challenge: bytes, attrs: list[tuple[int, bytes]], trust: bool = False) -> RelayReply:
    """One Access-Challenge carrying ``challenge``, then an Access-Accept with ``attrs``."""
    async def main() -> RelayReply:
        _, port = await scripted([(ACCESS_CHALLENGE, [(79, challenge), (24, b"s")]),
                                  (ACCESS_ACCEPT, [SUCCESS, *attrs])])
        relay = RadiusRelay(RadiusSettings((server("fr", port),), retransmit_timeout=0.5, trust_eap_identity=trust))
        await relay.round("sa-1", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        out = await relay.round("sa-1", ask(b"\x02\x10\x00\x06\x03\x1a", False), STATION)
        relay.close()
        return out

    return asyncio.run(main())


def accepted_line(caplog: pytest.LogCaptureFixture) -> str:
    (line,) = [r.getMessage() for r in caplog.records if "accepted user" in r.getMessage()]
    return line


def test_a_tunnelled_methods_user_name_is_the_user_and_the_log_names_both_escaped(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tunsec.radius"):
        out = accept_after(PEAP_START, [(1, b"mallory\n\x1b[2J")])
    assert out.outcome is RelayOutcome.ACCEPT and out.user == b"mallory\n\x1b[2J"
    # the client said 'alice'; the server authenticated someone else: both named, control bytes escaped
    assert accepted_line(caplog).endswith("accepted user 'alice' as user 'mallory\\n\\x1b[2J'")
    assert "\x1b" not in caplog.text


@pytest.mark.parametrize("attrs", [[], [(1, b"alice")]], ids=["no User-Name", "User-Name echoed"])
def test_a_tunnelled_method_that_names_no_other_user_leaves_the_identity_unproven(
        attrs: list[tuple[int, bytes]], caplog: pytest.LogCaptureFixture) -> None:
    """FreeRADIUS copies the request's User-Name into an EAP Accept without one: an echo is no proof."""
    with caplog.at_level("INFO", logger="tunsec.radius"):
        out = accept_after(PEAP_START, attrs)
    assert out.outcome is RelayOutcome.ACCEPT and out.user is None
    assert accepted_line(caplog).endswith(
        "accepted user 'alice' (PEAP and no other User-Name in the Access-Accept: the EAP identity is unproven)")
    assert accept_after(PEAP_START, attrs, trust=True).user == b"alice"   # trust_eap_identity = yes


def test_mschapv2_proves_the_identity_whose_password_it_checked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tunsec.radius"):
        out = accept_after(MSCHAPV2, [(1, b"alice")])
    assert out.user == b"alice" and accepted_line(caplog).endswith("accepted user 'alice'")
    assert accept_after(MSCHAPV2, []).user == b"alice"


@pytest.mark.parametrize("names, why", [
    ([b"alice", b"mallory"], "2 User-Name attributes"),
    ([b"al\x00ice"], "a User-Name that holds a NUL byte"),   # the rule of an EAP identity (eap.identity.fault)
    ([b""], "a User-Name that is empty"),
])
def test_an_accept_whose_user_name_names_no_one_fails_the_client(names: list[bytes], why: str) -> None:
    out = accept_after(MSCHAPV2, [(1, n) for n in names])
    assert out.outcome is RelayOutcome.FAILED and out.msk is None
    assert out.reason.endswith(f"accepted it with {why}: no user to take the client for"), out.reason


@pytest.mark.parametrize("method, user_name, trusted, proven", [
    (25, b"bob", False, b"bob"),        # PEAP: the inner user, named
    (21, b"alice", False, None),        # TTLS: an echo of the outer identity
    (13, None, False, None),            # EAP-TLS: a certificate the server need not match to it
    (13, None, True, b"alice"),         # ... unless the settings say the server does
    (None, None, False, None),          # an Accept without any challenge: no method ran
    (4, None, False, b"alice"), (6, None, False, b"alice"), (26, None, False, b"alice"), (52, None, False, b"alice"),
    (26, b"Alice", False, b"Alice"),    # the server's spelling of the user
])
def test_the_rule(method: int | None, user_name: bytes | None, trusted: bool, proven: bytes | None) -> None:
    assert proven_user(b"alice", user_name, method, trusted) == proven


def test_only_requests_of_a_method_count() -> None:
    assert request_method(PEAP_START) == 25 and request_method(MSCHAPV2) == 26
    for eap in (b"\x01\x10\x00\x05\x01", b"\x02\x10\x00\x06\x03\x19", b"\x03\x10\x00\x04", b"\x01\x10"):
        assert request_method(eap) is None   # Identity, a Nak (a response), Success, short
