"""An IKE_SA_INIT request before anything is kept for it (``endpoint.py``): whether it is
well-formed enough to answer, what identifies it (a retransmission finds the SA made for it), its
nonce, and the stateless answers to it (a COOKIE, a REDIRECT), for which nothing is kept either."""

from __future__ import annotations

import hashlib

from .constants import ExchangeType, HeaderFlag
from .events import Address
from .message import DecodeError, KePayload, Message, NoncePayload, NotifyPayload, SaPayload, decode_message

ZERO_SPI = bytes(8)


def init_request(message_id: int, datagram: bytes) -> Message | None:
    """The IKE_SA_INIT request if it is well-formed enough to answer (RFC 7296 §1.2, §3.1);
    ``datagram``'s header checks out (header_fields)."""
    if message_id != 0 or datagram[8:16] != ZERO_SPI or not any(datagram[0:8]):
        return None
    try:
        msg = decode_message(datagram)
    except DecodeError:
        return None
    kinds = [type(p) for p in msg.payloads]
    if kinds.count(SaPayload) != 1 or kinds.count(KePayload) != 1 or kinds.count(NoncePayload) != 1:
        return None
    # (indexes, not next(genexpr): a generator left unfinished is closed with a GeneratorExit
    # raised in it, ~3k instructions each, and every IKE_SA_INIT came here)
    sa = msg.payloads[kinds.index(SaPayload)]
    ke = msg.payloads[kinds.index(KePayload)]
    assert isinstance(sa, SaPayload) and isinstance(ke, KePayload)
    if not sa.proposals or not ke.data:
        return None
    return msg


def init_digest(datagram: bytes, addr: Address) -> bytes:
    """What identifies an IKE_SA_INIT request in the endpoint's ``_by_init``: a hash of its bytes
    (strongSwan's init_hash: a new request that reuses an SPIi is a new negotiation; its nonce and
    KE are random) and, unlike strongSwan's, of the address and port it came from, as the key there
    always was."""
    digest = hashlib.blake2b(f"{addr[0]} {addr[1]} ".encode(), digest_size=16)
    digest.update(datagram)
    return digest.digest()


def find_nonce(msg: Message) -> bytes:
    for p in msg.payloads:   # (init_request made sure there is one)
        if isinstance(p, NoncePayload):
            return p.data
    raise ValueError("an IKE_SA_INIT request without a nonce")


def stateless_answer(msg: Message, notify: NotifyPayload) -> bytes:
    """The IKE_SA_INIT response that carries only ``notify`` (a COOKIE, a REDIRECT), encoded."""
    reply = Message(
        msg.spi_i,
        ZERO_SPI,
        ExchangeType.IKE_SA_INIT,
        int(HeaderFlag.RESPONSE),
        0,
        (notify,),
    )
    return reply.encode()


def answer_source(local: Address | None) -> str | None:
    """Where a stateless answer leaves from: the address the request came to, if the socket said."""
    return local[0] if local and local[0] not in ("0.0.0.0", "::") else None
