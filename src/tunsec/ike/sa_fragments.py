"""IKE fragmentation glue of an IKE SA (RFC 7383; the codec is ``fragments.py`` and ``sk.py``).

Outbound, :func:`encode` returns a message as one datagram or as Encrypted Fragment
datagrams; inbound, :func:`on_fragment` verifies each fragment as it arrives (§2.6),
keeps it until the message is complete, and hands the reassembled message to the same
code as an unfragmented one. An incomplete message is dropped after REASSEMBLY_TIMEOUT.

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .constants import ExchangeType, HeaderFlag
from .events import Address
from .exchanges.base import Response
from .fragments import FragmentRejected, Reassembly, max_message_len
from .message import DecodeError, Message, Payload, SkfPayload, decode_payloads, encode_payloads
from .sa_requester import heard_response
from .sa_responder import _decode_inner, _Refuse, foreign
from .sk import IntegrityError, encrypt_fragments, encrypt_message, fragment_content_len, open_sealed, sealed_len

if TYPE_CHECKING:
    from .sa import IkeSa

log = logging.getLogger(__name__)

# ints: an IntFlag's | and & make a new enum member each time (two per message)
_INITIATOR, _RESPONSE = int(HeaderFlag.INITIATOR), int(HeaderFlag.RESPONSE)


def encode(self: IkeSa, exchange: int, message_id: int, payloads: list[Payload], response: bool) -> tuple[bytes, ...]:
    """The message as one datagram, or as its fragments (RFC 7383) if it does not fit."""
    flags = (_INITIATOR if self._st.is_initiator else 0) | (_RESPONSE if response else 0)
    msg = Message(self._st.spi_i, self._st.spi_r, exchange, flags, message_id, tuple(payloads))
    if exchange == ExchangeType.IKE_SA_INIT:
        return (msg.encode(),)  # never fragmented: there are no keys yet
    tx = self._st.tx
    assert tx is not None
    limit = self._fragment_limit()
    inner = encode_payloads(msg.payloads)  # once, for the size check and the encryption
    if limit is None or sealed_len(len(inner), tx) <= limit:
        return (encrypt_message(msg, tx, inner),)
    fragments = encrypt_fragments(msg, tx, fragment_content_len(tx, limit), inner)
    self._frag_stats.messages_fragmented += 1
    self._frag_stats.fragments_sent += len(fragments)
    log.debug("%s: splitting IKE message %d into %d fragments of at most %d bytes",
              self.name, message_id, len(fragments), limit)
    return tuple(fragments)


def fragment_limit(self: IkeSa) -> int | None:
    """The largest IKE message we send whole; None if we send no fragments (fragments.py)."""
    st = self._st
    mode = st.config.fragmentation
    if mode == "force" or (mode == "yes" and st.peer_fragmentation):
        return max_message_len(st.config.fragment_size, st.remote_addr[0], st.local_port, st.remote_addr[1])
    return None


def on_fragment(self: IkeSa, msg: Message, datagram: bytes, addr: Address, local: Address | None) -> None:
    """An Encrypted Fragment message: verified before it is kept (§2.6); the message
    it completes goes where an unfragmented one would."""
    skf = msg.payloads[-1]
    assert isinstance(skf, SkfPayload)
    if self._st.rx is None or msg.exchange == ExchangeType.IKE_SA_INIT:
        return
    pending = self._pending
    if msg.is_response:
        if pending is None or msg.message_id != pending.message_id or msg.exchange != pending.task.exchange:
            return
        buffer = self._reassembly.setdefault(True, Reassembly())
    else:
        if foreign(self, addr):
            return
        last = self._last_response
        if last is not None and msg.message_id == last.message_id:
            # a retransmitted request: only its first fragment, once verified, gets the response again
            # (§2.6.1), so neither each fragment nor a forged one multiplies our answer. Verified, not
            # compared with the fragment we got: the peer may send it again in smaller fragments
            # (§2.5.2), or in fragments where it first sent the message whole (the cap still holds)
            if msg.message_id + 1 == self._peer_id and skf.number == 1:
                if self._verified(msg, datagram):
                    self._resend(last, addr)
                else:
                    self._drops.retransmit_not_identical += 1
            return
        if msg.message_id != self._peer_id:   # out of the window: dropped before any decryption, counted
            self._frag_stats.fragments_dropped += 1   # (review revfrag F2)
            return
        buffer = self._reassembly.setdefault(False, Reassembly())
    whole = self._store_fragment(buffer, msg, skf, datagram)
    if whole is None:
        return
    first, plain = whole
    if msg.is_response:
        assert pending is not None
        try:
            payloads = decode_payloads(first, plain)
        except DecodeError:
            return  # as an unfragmented response that does not parse: keep retransmitting
        heard_response(self, local)   # where the last fragment arrived, as for a whole response
        self._accept_response(pending, payloads)
        return
    try:
        payloads = _decode_inner(first, plain)
    except _Refuse as refusal:
        self._respond(msg, Response([refusal.payload]), addr, None)
        return
    self._serve(msg, payloads, addr, local, None)


def store_fragment(
    self: IkeSa, buffer: Reassembly, msg: Message, skf: SkfPayload, datagram: bytes
) -> tuple[int, bytes] | None:
    """Verify and keep one fragment; the whole message's (first payload type, plaintext) once complete."""
    assert self._st.rx is not None
    stats = self._frag_stats
    try:
        plain = open_sealed(datagram, msg, self._st.rx)
    except IntegrityError:
        stats.fragments_dropped += 1
        log.debug("%s: fragment %d/%d of message %d failed verification", self.name, skf.number, skf.total,
                  msg.message_id)
        return None
    try:
        whole = buffer.add(msg.message_id, skf, plain, self._now)
    except FragmentRejected as exc:
        stats.fragments_dropped += 1
        log.debug("%s: fragment %d/%d of message %d dropped: %s", self.name, skf.number, skf.total,
                  msg.message_id, exc)
        return None
    stats.fragments_received += 1
    if whole is not None:
        stats.messages_reassembled += 1
        log.debug("%s: reassembled message %d from %d fragments", self.name, msg.message_id, skf.total)
    return whole


def verified(self: IkeSa, msg: Message, datagram: bytes) -> bool:
    assert self._st.rx is not None
    try:
        open_sealed(datagram, msg, self._st.rx)
    except IntegrityError:
        self._frag_stats.fragments_dropped += 1
        return False
    return True


def expire_reassembly(self: IkeSa, now: float) -> None:
    """Drop an incomplete message once REASSEMBLY_TIMEOUT passed since its first fragment."""
    for key, buffer in list(self._reassembly.items()):
        deadline = buffer.deadline
        if deadline is not None and now >= deadline:
            dropped = buffer.clear()
            del self._reassembly[key]
            self._frag_stats.fragments_dropped += dropped
            log.debug("%s: incomplete fragmented message dropped after its timeout", self.name)
