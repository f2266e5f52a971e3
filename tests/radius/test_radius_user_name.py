"""Who the client is after an Access-Accept (RFC 2865 §5.1): the Accept's User-Name, the user the
server authenticated, which with a tunnelled method (PEAP, TTLS) need not be the EAP identity the
client gave outside the tunnel; without one that identity is unproven unless the settings trust it.
Against a scripted RADIUS server on loopback (ephemeral ports)."""
from __future__ import annotations

import asyncio

import pytest
from test_radius_messages import STATION
from test_radius_relay import ask, scripted, server

from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.radius.messages import ACCESS_ACCEPT
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusSettings

SUCCESS = (79, b"\x03\x11\x00\x04")


def accept(attrs: list[tuple[int, bytes]], trust: bool = False) -> RelayReply:
    async def main() -> RelayReply:
        _, port = await scripted([(ACCESS_ACCEPT, [SUCCESS, *attrs])])
        relay = RadiusRelay(RadiusSettings((server("fr", port),), retransmit_timeout=0.5, trust_eap_identity=trust))
        out = await relay.round("sa-1", ask(b"\x02\x0f\x00\x0a\x01alice", True), STATION)
        relay.close()
        return out

    return asyncio.run(main())


def accepted_line(caplog: pytest.LogCaptureFixture) -> str:
    (line,) = [r.getMessage() for r in caplog.records if "accepted user" in r.getMessage()]
    return line


def test_the_accepts_user_name_is_the_user_and_the_log_names_both_escaped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tunsec.radius"):
        out = accept([(1, b"mallory\n\x1b[2J")])
    assert out.outcome is RelayOutcome.ACCEPT and out.user_name == b"mallory\n\x1b[2J"
    # the client said 'alice'; the server authenticated someone else: both named, control bytes escaped
    assert accepted_line(caplog).endswith("accepted user 'alice' as user 'mallory\\n\\x1b[2J'")
    assert "\x1b" not in caplog.text


def test_an_accept_naming_the_same_user_logs_it_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tunsec.radius"):
        out = accept([(1, b"alice")])
    assert out.user_name == b"alice" and accepted_line(caplog).endswith("accepted user 'alice'")


def test_without_user_name_the_identity_is_unproven_unless_trusted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tunsec.radius"):
        out = accept([])
    assert out.outcome is RelayOutcome.ACCEPT and out.user_name is None and not out.trusted
    assert accepted_line(caplog).endswith("(no User-Name in the Access-Accept: the EAP identity is unproven)")
    caplog.clear()
    with caplog.at_level("INFO", logger="tunsec.radius"):
        out = accept([], trust=True)
    assert out.user_name is None and out.trusted
    assert accepted_line(caplog).endswith("accepted user 'alice'")


@pytest.mark.parametrize("names, why", [
    ([b"alice", b"mallory"], "2 User-Name attributes"),
    ([b"al\x00ice"], "an empty User-Name or one with a NUL byte"),
    ([b""], "an empty User-Name or one with a NUL byte"),
])
def test_an_accept_whose_user_name_names_no_one_fails_the_client(names: list[bytes], why: str) -> None:
    out = accept([(1, n) for n in names])
    assert out.outcome is RelayOutcome.FAILED and out.msk is None
    assert out.reason.endswith(f"accepted it with {why}: no user to take the client for"), out.reason
