"""A peer's identity, sent before it is authenticated, in the responder's AUTHENTICATION_FAILED log
line (tunsec.logs, as `tunsec up` configures it): one line of printable characters, whatever the
DN holds (review of 2026-12-03, ninth session: U+2028, NEL, C1 CSI and bidi overrides passed); the
peer's real address right after AUTHENTICATION_FAILED, before anything the peer chose, whose text is
quoted as one string literal (eleventh session: a DN ending "failed from 203.0.113.9" was the only
address in the line)."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import logging
from collections.abc import Iterator

import pytest
from test_engine import B, initiator_cfg, make_net, only, responder_cfg
from test_ikeservice_peers import GW, Gateway, psk_ike, run, site_ip, site_net

from tunsec import logs
from tunsec.ike._der import encode_tlv
from tunsec.ike.config import RemoteAuth
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
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
    logging.getLogger("tunsec.ike").error("%s: AUTHENTICATION_FAILED from %s[%d]: %s (%r)", "b-from-a",
                                          "198.51.100.1", 4500, "the peer failed authentication", reason)
    (line,) = out.getvalue().splitlines()
    assert line.isprintable(), [c for c in line if not c.isprintable()]
    if fmt == "json":
        assert json.loads(line)["msg"].endswith(f"({reason!r})")
    else:
        assert "x\\u2028Dec  3 06:00:00" in line and "\\x85\\x9b2J\\u202e" in line



# a client's DN written to read as the end of a log line naming another address (bait for fail2ban),
# with both quotes in it: the one that would close repr's quoting must come out escaped
BAIT = "alice\" ') EAP-MSCHAPv2 failed from 203.0.113.9"


def _gateway_log(fmt: str) -> str:
    """What a real IkeService (test_ikeservice_peers' gateway) logs when site 0 asserts a DN that
    says BAIT, not the identity the gateway accepts."""
    cn = encode_tlv(0x30, encode_tlv(0x06, b"\x55\x04\x03") + encode_tlv(0x0c, BAIT.encode()))
    dn = Identity(IdType.DER_ASN1_DN, encode_tlv(0x30, encode_tlv(0x31, cn)))
    out = io.StringIO()
    logs.configure("info", fmt=fmt, stream=out)

    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        # the gateway accepts one identity only, as a road warrior gateway names its users
        ours = gw.service.endpoint._configs["gw"]
        gw.service.endpoint.set_configs([dataclasses.replace(ours, remote=RemoteAuth("psk", Identity.parse("CN=bob")))])
        cfg = psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(0), GW,
                      site_net(0), "10.1.0.0/16")
        cfg = dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, id=dn), force_encap=True)
        gw.sites[0] = IkeEndpoint([cfg])
        gw.connect(0)
        await gw.settle()

    run(go())
    return out.getvalue()


def test_the_gateways_line_names_the_peers_real_address_first_and_quotes_what_it_sent(root_logger: None) -> None:
    (line,) = [ln for ln in _gateway_log("text").splitlines() if "AUTHENTICATION_FAILED" in ln]
    head, _, rest = line.partition(" (")
    # the address the IKE_AUTH came from (site 0's, on 4500 as forced encapsulation floats it), right
    # after the fixed words and before anything the peer chose
    assert head.endswith(f"ERROR gw: AUTHENTICATION_FAILED from {site_ip(0)}[4500]: the peer failed authentication")
    assert "203.0.113.9" not in head
    # the rest, up to the closing parenthesis, is one quoted string literal holding the peer's text
    assert rest.endswith(")"), line
    reason = ast.literal_eval(rest[:-1])
    assert isinstance(reason, str) and BAIT in reason, line


def test_the_gateways_json_line_has_the_peers_address_as_a_field_of_its_own(root_logger: None) -> None:
    (doc,) = [json.loads(ln) for ln in _gateway_log("json").splitlines() if "AUTHENTICATION_FAILED" in ln]
    assert (doc["remote"], doc["remote_port"]) == (site_ip(0), 4500)
    assert doc["msg"].startswith(f"gw: AUTHENTICATION_FAILED from {site_ip(0)}[4500]: "), doc
    assert BAIT in ast.literal_eval(doc["msg"].partition(" (")[2][:-1])
