"""IANA numbers and wire constants of IKEv2 (RFC 7296 §3, RFC 3948 §2.2) used by the engine and by
whoever carries its datagrams: the one definition of the IKE and NAT-T ports and the non-ESP marker."""

from __future__ import annotations

from enum import IntEnum, IntFlag

IKE_HEADER_LEN = 28
# The largest IKE message taken, whole or reassembled from fragments (strongSwan's charon.max_packet):
# anything longer is dropped before it is parsed. Real messages stay far below it (IKE_SA_INIT is a
# few hundred bytes, larger ones are fragmented); a 64 KiB datagram from a spoofed source cost tens of
# milliseconds of parsing. The worker's fast path drops longer ones on port 4500 too
# (csrc/tunsec_dp.h TS_IKE_MAX_MESSAGE, which tests/dataplane/test_c_interface.py holds equal to it).
MAX_IKE_MESSAGE = 10_000
IKE_VERSION = 0x20  # major 2, minor 0
IKE_PORT = 500
NATT_PORT = 4500  # IKE after IKE_SA_INIT, and ESP in UDP (RFC 3948)
# RFC 3948 §2.2: on NATT_PORT, 4 zero bytes where ESP has its SPI mark an IKE message (the caller of
# the engine adds and strips them; the dataplane worker does so for port 4500)
NON_ESP_MARKER = b"\0\0\0\0"


def has_marker(local_port: int, remote_port: int) -> bool:
    """Whether IKE between these ports carries the non-ESP marker: as strongSwan's sender and
    receiver, whenever neither is port 500 (4500, and custom ports, where ESP in UDP may come too)."""
    return IKE_PORT not in (local_port, remote_port)


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37


class HeaderFlag(IntFlag):
    NONE = 0
    INITIATOR = 0x08
    VERSION = 0x10
    RESPONSE = 0x20


class PayloadType(IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDI = 35
    IDR = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSI = 44
    TSR = 45
    SK = 46
    CP = 47
    EAP = 48
    SKF = 53  # Encrypted Fragment (RFC 7383 §2.5)


class ProtocolId(IntEnum):
    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3


class TransformType(IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4
    ESN = 5


class EncrId(IntEnum):
    AES_CBC = 12
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20


class PrfId(IntEnum):
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class IntegId(IntEnum):
    NONE = 0
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class DhGroup(IntEnum):
    NONE = 0
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    CURVE25519 = 31
    CURVE448 = 32


class EsnId(IntEnum):
    NO_ESN = 0
    ESN = 1


class AttributeType(IntEnum):
    KEY_LENGTH = 14


class CfgType(IntEnum):
    """CFG Type of a Configuration payload (RFC 7296 §3.15)."""

    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4


class CfgAttribute(IntEnum):
    """Configuration attributes tunsec sends or reads (RFC 7296 §3.15.1)."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_DNS = 10


class IdType(IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class AuthMethod(IntEnum):
    RSA_SIG = 1
    PSK = 2
    DSS_SIG = 3
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    DIGITAL_SIGNATURE = 14


class CertEncoding(IntEnum):
    X509_SIGNATURE = 4


class TsType(IntEnum):
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8


class HashAlgorithm(IntEnum):
    """RFC 7427 hash algorithm identifiers (SIGNATURE_HASH_ALGORITHMS)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5


class NotifyType(IntEnum):
    # errors (< 16384)
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40  # MOBIKE (RFC 4555 §4.2)
    UNEXPECTED_NAT_DETECTED = 41  # MOBIKE (RFC 4555 §4.2)
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    # status (>= 16384)
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396
    ADDITIONAL_IP4_ADDRESS = 16397  # the rest up to NO_NATS_ALLOWED: MOBIKE (RFC 4555 §4.2)
    ADDITIONAL_IP6_ADDRESS = 16398
    NO_ADDITIONAL_ADDRESSES = 16399
    UPDATE_SA_ADDRESSES = 16400
    COOKIE2 = 16401
    NO_NATS_ALLOWED = 16402
    MULTIPLE_AUTH_SUPPORTED = 16404
    REDIRECT_SUPPORTED = 16406
    REDIRECT = 16407
    REDIRECTED_FROM = 16408
    EAP_ONLY_AUTHENTICATION = 16417
    IKEV2_FRAGMENTATION_SUPPORTED = 16430
    SIGNATURE_HASH_ALGORITHMS = 16431


ERROR_NOTIFY_LIMIT = 16384  # notify types below this are errors (RFC 7296 §3.10.1)


def notify_name(value: int) -> str:
    """Name of a notify type for logs and events; unknown numbers stay numeric."""
    try:
        return NotifyType(value).name
    except ValueError:
        return f"NOTIFY_{value}"


def is_ike_sa_init(data: bytes, response: int) -> bool:
    """An IKE_SA_INIT header (a datagram checked as IKE, or one built by us), a response if
    ``response`` is HeaderFlag.RESPONSE, a request if 0."""
    return (len(data) >= IKE_HEADER_LEN and data[18] == ExchangeType.IKE_SA_INIT
            and data[19] & HeaderFlag.RESPONSE == response)

