"""Review revlate8 F3: the relay refuses, as the client's counted failure, EAP responses the
conversation's own Access-Request carries.

h/fixeap (review reveap F1) bounds a client's EAP response by radius.limits.MAX_EAP, 2725 bytes: what an
Access-Request carries with every other attribute at its largest (a 253-byte User-Name, NAS-Identifier,
Called- and Calling-Station-Id and State).  The real Access-Request of a conversation is much smaller
(FreeRADIUS's State is 16 bytes, a station id ~20, a user name a few dozen), and carries EAP up to
~3.7 KiB: before h/fixeap such a response was relayed and answered.  Now it ends the conversation as the
client's failure, counted towards its address's ban (docs/operations.md), though the docs and the error
say "more than an Access-Request carries".  The clients this hits use an EAP fragment size between 2.7
and ~3.7 KiB (strongSwan's `eap-tls`/`eap-ttls`/`eap-peap` `fragment_size`, 1024 by default, is a
setting; wpa_supplicant's `fragment_size` too): with defaults none does.

The response is checked against messages.access_request itself, with the attributes the relay gives a
conversation of a short user name (tests/radius/test_radius_messages.py's STATION, a 16-byte State)."""

from __future__ import annotations

from test_radius_eap_bound import _eap, _relay_at_round_two
from test_radius_messages import SECRET, STATION

from tunsec.ike.eap.relay import RelayAsk
from tunsec.ike.secret import Secret
from tunsec.radius.limits import MAX_EAP, MAX_PACKET
from tunsec.radius.messages import access_request

SIZE = 3500   # an EAP-TLS fragment of ~3.5 KiB


def test_a_response_this_conversations_access_request_carries_is_relayed() -> None:
    assert SIZE > MAX_EAP
    request = access_request(Secret(SECRET), 1, b"alice", _eap(SIZE), bytes(16), STATION)
    size = len(request.RequestPacket())
    assert size <= MAX_PACKET   # it fits: the RADIUS server would get it, as before h/fixeap
    step = _relay_at_round_two().process(_eap(SIZE))
    assert isinstance(step, RelayAsk), (
        f"an EAP response of {SIZE} bytes, whose Access-Request is {size} of {MAX_PACKET} bytes, was refused as "
        f"the client's counted failure: {step[1].reason!r}")
