"""atheris target: the IKEv2 message codec (tunsec.ike.message).

Every datagram on UDP 500/4500 reaches decode_message() before anything is
authenticated, and the plaintext of an SK payload reaches decode_payloads().
The codec promises to raise DecodeError (or a subclass) and nothing else, and
what it decodes encodes back to a message that decodes to the same value.

Input: first byte even -> the rest is a whole datagram (decode_message);
odd -> byte 1 is the first payload type and the rest an SK plaintext
payload chain (decode_payloads).

Run: python3 fuzz/ike_message.py [libFuzzer flags] [corpus dirs]   (see fuzz/README.md)
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tunsec.ike.message import DecodeError, Message, decode_message, decode_payloads, encode_payloads


def check_datagram(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except DecodeError:
        return
    again = decode_message(msg.encode())
    if again != msg:
        raise AssertionError(f"round trip changed the message:\n{msg!r}\n{again!r}")


def check_chain(first_type: int, data: bytes) -> None:
    try:
        payloads = decode_payloads(first_type, data)
    except DecodeError:
        return
    if not payloads:
        return
    encoded = encode_payloads(payloads)
    again = decode_payloads(payloads[0].ptype, encoded)
    if again != payloads:
        raise AssertionError(f"round trip changed the payloads:\n{payloads!r}\n{again!r}")
    # the same payloads framed as a message decode back to themselves too
    msg = Message(b"\x01" * 8, b"\x02" * 8, 35, 0x08, 1, payloads)
    if decode_message(msg.encode()) != msg:
        raise AssertionError("message built from decoded payloads does not round trip")


def test_one_input(data: bytes) -> None:
    if len(data) >= 2 and data[0] & 1:
        check_chain(data[1], data[2:])
    else:
        check_datagram(data[1:])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
