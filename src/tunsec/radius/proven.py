"""Who a client is once a RADIUS server accepted it: the user the gateway may act on behalf of
(INITIAL_CONTACT, ``unique``, a shared lease, the selector claims).

The EAP identity a client gives is its own word. A server that runs a method whose credential it
looks up by that identity (EAP-MSCHAPv2, MD5, GTC, pwd) proves it. A tunnelled method (PEAP, TTLS,
FAST, TEAP) proves the user inside the tunnel, whom the outer identity need not name, and EAP-TLS
proves a certificate a server need not match to it (FreeRADIUS does neither by default). Such a
server names the user it authenticated in the Access-Accept's User-Name (RFC 2865 §5.1; FreeRADIUS
with ``use_tunneled_reply`` and the inner User-Name in the reply), but FreeRADIUS also copies the
request's User-Name into every EAP Accept that has none: a User-Name equal to the EAP identity
proves no more than its absence. So:

- a User-Name other than the EAP identity is the user (the server says whom it authenticated);
- else the EAP identity, if the method proves it or ``trust_eap_identity`` says the server ties it
  to the credentials;
- else nobody: the EAP identity is unproven (``None``).
"""

from __future__ import annotations

# EAP method types (IANA "EAP Method Types") whose server checks a credential of the EAP identity
BINDING_METHODS = frozenset({4, 6, 26, 52})   # MD5-Challenge, GTC, MSCHAPv2, pwd
METHOD_NAMES = {4: "EAP-MD5", 6: "EAP-GTC", 13: "EAP-TLS", 21: "EAP-TTLS", 25: "PEAP", 26: "EAP-MSCHAPv2",
                43: "EAP-FAST", 52: "EAP-pwd", 55: "TEAP"}
_REQUEST = 1
_NOT_METHODS = (1, 2, 3)   # Identity, Notification, Nak


def request_method(eap: bytes) -> int | None:
    """The method an EAP request of the server runs (its type), or None if it is none."""
    if len(eap) < 5 or eap[0] != _REQUEST or eap[4] in _NOT_METHODS:
        return None
    return eap[4]


def method_name(method: int | None) -> str:
    return "no EAP method" if method is None else METHOD_NAMES.get(method, f"EAP method {method}")


def proven_user(identity: bytes, user_name: bytes | None, method: int | None, trusted: bool) -> bytes | None:
    """The user the Accept proves (see the module's doc), or None: the EAP identity is unproven."""
    if user_name is not None and user_name != identity:
        return user_name
    if trusted or method in BINDING_METHODS:
        return identity
    return None
