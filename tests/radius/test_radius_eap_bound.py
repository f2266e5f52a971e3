"""The largest EAP response the relay passes on (radius.limits.MAX_EAP) is what the largest
Access-Request carries: review reveap F1's fix refuses a larger one in the engine, as the client's
counted failure, so none reaches ``access_request`` to end as our back end's TooLarge.

Checked against messages.access_request itself, with every other attribute at its largest (a
253-byte User-Name, NAS-Identifier, Called- and Calling-Station-Id and State, a NAS-IPv6-Address):
the bound fills the 4096 bytes exactly.  An attribute added to the Access-Request without the bound
following fails here."""
from __future__ import annotations

import pytest
from test_radius_messages import SECRET

from tunsec.ike.eap.packet import EapCode, EapPacket
from tunsec.ike.eap.relay import EapRelay, RelayAsk, RelayOutcome, RelayReply
from tunsec.ike.secret import Secret
from tunsec.radius.limits import MAX_ATTR, MAX_EAP, MAX_PACKET, most_eap
from tunsec.radius.messages import Station, TooLarge, access_request

LONGEST = Station("n" * MAX_ATTR, "2001:db8::1", "c" * MAX_ATTR, "d" * MAX_ATTR, 0xFFFFFFFF)


def _eap(size: int, ident: int = 7) -> bytes:
    """An EAP-TLS response (type 13) of ``size`` bytes in all."""
    return EapPacket(EapCode.RESPONSE, ident, 13, bytes(size - 5)).encode()


def test_the_largest_eap_response_fills_the_largest_access_request() -> None:
    pkt = access_request(Secret(SECRET), 1, b"u" * MAX_ATTR, _eap(MAX_EAP), b"s" * MAX_ATTR, LONGEST)
    assert len(pkt.RequestPacket()) == MAX_PACKET
    with pytest.raises(TooLarge):
        access_request(Secret(SECRET), 1, b"u" * MAX_ATTR, _eap(MAX_EAP + 1), b"s" * MAX_ATTR, LONGEST)


def _relay_at_round_two() -> EapRelay:
    """A conversation whose server sent its first request (identifier 7)."""
    relay = EapRelay(b"alice")
    assert isinstance(relay.start(), RelayAsk)
    challenge = EapPacket(EapCode.REQUEST, 7, 13, b"\x20").encode()   # EAP-TLS Start
    _, result = relay.reply(RelayReply(RelayOutcome.CHALLENGE, challenge, reason="backend"))
    assert result is None
    return relay


@pytest.mark.parametrize("size", [MAX_EAP - 1, MAX_EAP])
def test_a_response_an_access_request_carries_is_relayed(size: int) -> None:
    step = _relay_at_round_two().process(_eap(size))
    assert isinstance(step, RelayAsk) and step.eap == _eap(size)


@pytest.mark.parametrize("size", [most_eap(b"alice") + 1, 5000, 65535])
def test_a_larger_response_is_the_clients_failure_before_radius(size: int) -> None:
    """Larger than any Access-Request with its User-Name carries (the back end said no room: most_eap;
    with the room it says, tests/radius/test_radius_eap_room.py)."""
    step = _relay_at_round_two().process(_eap(size))
    assert not isinstance(step, RelayAsk), f"an EAP response of {size} bytes was relayed: our back end's failure"
    out, result = step
    assert EapPacket.decode(out).code is EapCode.FAILURE and not result.ok
    assert result.reason == (f"EAP response of {size} bytes, more than this conversation's Access-Request carries "
                             f"({most_eap(b'alice')})")
