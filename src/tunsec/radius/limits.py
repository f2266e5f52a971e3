"""The sizes of RADIUS (RFC 2865 §3, §5) the relay lives with, and the largest EAP packet one
Access-Request carries (RFC 3579 §3.1).  Apart from ``messages.py`` (and pyrad), as the engine's EAP
relay (``tunsec.ike.eap.relay``) refuses a client's EAP response that no Access-Request can carry:
the client's doing, to be counted as its failure, not our back end's (review reveap F1).  The bound is
the room this conversation's next Access-Request leaves (messages.eap_room: its User-Name, station and
State, which the RADIUS edge tells with each Access-Challenge), else the most any request with its
User-Name carries (most_eap); MAX_EAP, the worst case of the rest, always fits."""

from __future__ import annotations

MAX_ATTR = 253  # a RADIUS attribute's value (RFC 2865 §5)
MAX_PACKET = 4096  # RFC 2865 §3
HEADER = 20  # Code, Identifier, Length, Authenticator
ATTR_HEADER = 2  # an attribute's Type and Length

# what messages.access_request puts besides the EAP-Message attributes, each at its largest: the
# Message-Authenticator (16 bytes); User-Name, NAS-Identifier, Called- and Calling-Station-Id and the
# server's State (text or octets, at most MAX_ATTR each); Service-Type, NAS-Port-Type and NAS-Port
# (4-byte integers); NAS-IPv6-Address (16 bytes, NAS-IP-Address has 4)
_OTHER_VALUES = (16, MAX_ATTR, MAX_ATTR, MAX_ATTR, MAX_ATTR, MAX_ATTR, 4, 4, 4, 16)
MAX_OTHER = sum(ATTR_HEADER + size for size in _OTHER_VALUES)


def largest_eap(room: int) -> int:
    """The longest EAP packet whose 253-byte pieces, each an attribute, fit into ``room`` bytes."""
    pieces, rest = divmod(room, ATTR_HEADER + MAX_ATTR)
    return pieces * MAX_ATTR + max(rest - ATTR_HEADER, 0)


# the longest EAP packet an Access-Request carries whatever the rest of it (2725 bytes): a client's
# EAP-TLS fragments are 1-1.4 KiB, an EAP-MSCHAPv2 Response 54 bytes
MAX_EAP = largest_eap(MAX_PACKET - HEADER - MAX_OTHER)

# what messages.access_request puts besides the EAP-Message attributes and the User-Name, each at its
# smallest: the Message-Authenticator, Service-Type, NAS-Port-Type, NAS-Port; NAS-Identifier, Called- and
# Calling-Station-Id (empty); no NAS address, no State
MIN_OTHER = sum(ATTR_HEADER + size for size in (16, 4, 4, 4, 0, 0, 0))


def most_eap(user: bytes) -> int:
    """The longest EAP packet an Access-Request with this User-Name could carry, whatever the rest: what a
    conversation may be sent before its back end said the room of its request (messages.eap_room).  A
    longer EAP response is the client's doing, never a request of ours (review revlate8 F3: MAX_EAP, the
    worst case of the rest, refused what a conversation's own request carries)."""
    return largest_eap(MAX_PACKET - HEADER - MIN_OTHER - ATTR_HEADER - len(user[:MAX_ATTR]))
