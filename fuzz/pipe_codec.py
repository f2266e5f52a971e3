"""atheris target: the pipe codec (tunsec.dataplane.pipe) between the control
process and the dataplane worker.

The worker decodes whatever arrives on its end of the pipe and answers a
malformed request with an error reply, so decode() must raise PipeError and
nothing else (what its quick ways take, its general way decodes the same),
error_reply() must answer every PipeError with a bare header (it echoes the
type byte even when unknown, so the reply need not decode), and a decoded
message encodes to bytes that decode to the same message.

A batch (pipe.batch: several messages in one datagram) splits without raising, into the messages
before any framing fault; each goes through the checks above, and a whole batch of two or more
packs back to the same bytes.

Input: one datagram as it would arrive on the SOCK_SEQPACKET pair.

Run: python3 fuzz/pipe_codec.py [libFuzzer flags] [corpus dirs]   (see fuzz/README.md)
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tunsec.dataplane.pipe import HEADER_LEN, MAX_MESSAGE, PipeError, batch, decode, encode, error_reply
    from tunsec.dataplane.pipe.decoding import _decode


def test_one_input(data: bytes) -> None:
    if not batch.is_batch(data):
        one_message(data)
        return
    messages, wrong = batch.split(data)
    if wrong is None and len(messages) > 1 and batch.pack(messages, 0, MAX_MESSAGE) != (data, len(messages)):
        raise AssertionError("a whole batch did not pack back to its bytes")
    for msg in messages:
        one_message(msg)


def one_message(data: bytes) -> None:
    try:
        msg = decode(data)
    except PipeError as err:
        reply = error_reply(err)
        if reply is not None and len(reply) != HEADER_LEN:
            raise AssertionError(f"error reply of {len(reply)} bytes") from err
        return
    if _decode(data) != msg:   # decode's quick ways: only what its general way decodes the same
        raise AssertionError(f"the quick way decoded another message than the general way:\n{msg!r}")
    encoded = encode(msg)
    again = decode(encoded)
    if again != msg:
        raise AssertionError(f"round trip changed the message:\n{msg!r}\n{again!r}")
    if encode(again) != encoded:
        raise AssertionError("encoding is not stable")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
