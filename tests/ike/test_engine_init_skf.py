"""Review revfrag F3: an IKE_SA_INIT request that ends in an Encrypted Fragment payload is dropped
without a count.

init_request.init_request (endpoint.py's) checks SA, KE and Nonce but not what else the request
holds; an SKF payload is a valid last payload to the codec (message.decode_payloads), so the request passes, an IkeSa is
made for it (an SPI drawn, the SA registered) and its receive() hands it to the fragment path,
which ignores every IKE_SA_INIT (sa_fragments.on_fragment): the SA stays IDLE and the endpoint drops
it ("cannot happen after init_request"). Nothing counts it: not ``malformed``, not ``init_refused``
(whose requests count towards the COOKIE demand), so a flood of them is invisible in ``tunsec
status`` and the metrics, and each still costs an IkeSa made and thrown away (RFC 7383 §2.5: SKF
is never used in IKE_SA_INIT).
"""

from __future__ import annotations

import dataclasses

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.message import SkfPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret

A, B = "192.0.2.1", "192.0.2.2"


def _cfg(initiator: bool) -> IkeConfig:
    ids = ("moon", "sun") if initiator else ("sun", "moon")
    return IkeConfig(
        "c", LocalAuth("psk", Identity.parse(ids[0])), RemoteAuth("psk", Identity.parse(ids[1])),
        parse_proposals("aes128-sha256-ecp256"),
        (child_config("net", "10.1.0.0/16", "10.2.0.0/16", "aes128gcm16"),),
        psk=Secret(b"revfrag"), local_addr=A if initiator else B, remote_addr=B if initiator else None)


def _init_with_skf() -> bytes:
    a = IkeEndpoint([_cfg(True)])
    a.initiate("c", "net", 0.0)
    request = decode_message(a.datagrams_to_send(0.0)[0].data)
    skf = SkfPayload(0, 1, 1, bytes(40))
    return dataclasses.replace(request, payloads=(*request.payloads, skf)).encode()


def test_an_ike_sa_init_request_with_an_skf_payload_is_a_counted_drop() -> None:
    b = IkeEndpoint([_cfg(False)])
    before = dataclasses.asdict(b.stats)
    b.receive(_init_with_skf(), (A, 500), 1.0, local_addr=(B, 500))
    assert b.datagrams_to_send(1.0) == []   # not answered, nothing kept (as on main)
    assert not b.sas and b.half_open == 0
    after = dataclasses.asdict(b.stats)
    counted = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert counted, "dropped without a count"
