"""Review revrekey F5: the claims backstop (installs._child_registered: a Child SA whose remote
selectors another peer's Child SA booked in the same pump, after the engine's check) deletes the new
Child SA with ``sa.delete_child``, which raises KeyError when the engine no longer has it: the peer
pipelined a DELETE of it (its own SPI, which it chose) behind its CREATE_CHILD_SA, and both were
handled before the pump (a batch read from port 500, or datagrams held while the SPI pool refilled,
spis.py, delivered together).  The event handler catches it: "handling ChildSaUp failed: internal
error" with a traceback, counted in event_errors; what the peer sent is bad input from an
authenticated peer, which gets a clear line or a counted drop, never a traceback.  The other uses
of delete_child in the service check that the engine still lists the Child SA
(install_failed.delete_in_engine, installs.expired through _child_of_sa)."""

from __future__ import annotations

import asyncio

from test_ikeservice_rekey import established

from tunsec.ike.constants import ExchangeType, ProtocolId
from tunsec.ike.exchanges.create_child_sa import CreateChildTask
from tunsec.ike.identity import Identity
from tunsec.ike.message import DeletePayload, decode_header
from tunsec.ike.ts import Ts
from tunsec.policy.claims import Peer


def test_a_backstop_delete_of_a_child_sa_the_peer_deleted_in_the_same_batch_is_no_internal_error() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        gw = pair.svc["b"]
        client = pair.ike("a")
        client.initiate("net")                            # a second Child SA of child "net"
        pair.svc["a"]._pump()
        pending = client._pending
        assert pending is not None and isinstance(pending.task, CreateChildTask)
        proposed = pending.task.proposed
        assert proposed is not None
        (request,) = [d for s, d, _ in pair.wire if s == "a"]
        pair.wire.clear()
        # ... and, without waiting for the answer, a DELETE of it (message ID + 1; the SPI it chose)
        delete = DeletePayload(ProtocolId.ESP, 4, (proposed.spi_in.to_bytes(4, "big"),))
        (pipelined,) = client._encode(ExchangeType.INFORMATIONAL, decode_header(request).message_id + 1,
                                      [delete], response=False)
        peer, here = (pair.ip("a"), 4500), (pair.ip("b"), 4500)
        gw.receive(request, peer, here)                   # the engine answers it: a ChildSaUp waits
        # another peer's Child SA over the same remote selectors, booked in this pump before it
        gw.ts_claims.add(10**6, "tun", Peer(Identity.parse("c.example"), "psk tun"), [Ts.parse("10.1.0.0/16")],
                         [Ts.parse("10.2.0.0/16")])
        gw.receive(pipelined, peer, here)                 # the engine deletes it: a ChildSaDown waits
        gw._pump()
        assert gw.event_errors == 0

    asyncio.run(body())
