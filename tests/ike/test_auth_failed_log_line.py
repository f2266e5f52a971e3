"""A peer's identity, sent before it is authenticated, in the responder's AUTHENTICATION_FAILED log
line (tunsec.logs, as `tunsec up` configures it): one line of printable characters, whatever the
DN holds (review of 2026-12-03, ninth session: U+2028, NEL, C1 CSI and bidi overrides passed)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator

import pytest
from test_engine import B, initiator_cfg, make_net, only, responder_cfg

from tunsec import logs
from tunsec.ike._der import encode_tlv
from tunsec.ike.constants import IdType
from tunsec.ike.events import AuthFailed
from tunsec.ike.identity import Identity

# what a reader splitting on U+2028 or NEL would take for a line of its own
FORGED = "x\u2028Dec  3 06:00:00 tunsec[1] INFO b-from-a: IKE SA established with 203.0.113.9\x85\x9b2J\u202e"


@pytest.fixture
def root_logger() -> Iterator[None]:
    """logs.configure replaces the root logger's handlers and a few logging flags: put them back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, (logging._srcfile, logging.logThreads, logging.logMultiprocessing)
    yield
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logging._srcfile, logging.logThreads, logging.logMultiprocessing = saved[2]


def _auth_failed_reason() -> str:
    cn = encode_tlv(0x30, encode_tlv(0x06, b"\x55\x04\x0a") + encode_tlv(0x0c, FORGED.encode()))
    dn = Identity(IdType.DER_ASN1_DN, encode_tlv(0x30, encode_tlv(0x31, cn)))
    init = initiator_cfg()
    init = dataclasses.replace(init, local=dataclasses.replace(init.local, id=dn))
    net, a, _ = make_net(init, responder_cfg())
    a.initiate("a-to-b", "net", net.now)
    net.run()
    (failed,) = only(net.take(B), AuthFailed)
    assert FORGED in failed.reason   # the engine passes the text on as it is; the log must escape it
    return failed.reason


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_forged_dn_gives_one_printable_log_line(fmt: str, root_logger: None) -> None:
    reason = _auth_failed_reason()
    out = io.StringIO()
    logs.configure("info", fmt=fmt, stream=out)
    # as IkeService logs an AuthFailed
    logging.getLogger("tunsec.ike").error("%s: AUTHENTICATION_FAILED: %s (%s)", "b-from-a",
                                          "the peer failed authentication", reason)
    (line,) = out.getvalue().splitlines()
    assert line.isprintable(), [c for c in line if not c.isprintable()]
    if fmt == "json":
        assert json.loads(line)["msg"].endswith(f"({reason})")
    else:
        assert "x\\u2028Dec  3 06:00:00" in line and "\\x85\\x9b2J\\u202e" in line
