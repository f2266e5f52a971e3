"""One road-warrior client's set-up as the control process asks it of the worker over the pipe:
GETSPI, the Child SA's install (UPDATE of the inbound SA, ADD of the outbound one, SPDADD of its
policy), IKE_SPI_ADD (its IKE SA is established: our SPI gets the reserve) and SEND_IKE (the
IKE_AUTH answer).  What bench/install_cost.py and bench/pipe_cost.py
send and count."""

from __future__ import annotations

import ipaddress

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import (
    Action,
    Add,
    Alg,
    Direction,
    Endpoint,
    GetSpi,
    IkeSpiAdd,
    Lifetime,
    Policy,
    SaSpec,
    Selector,
    SendIke,
    SpdAdd,
    Update,
)

A = ipaddress.ip_address
LOCAL, PEER = Endpoint(A("192.0.2.1"), 4500), Endpoint(A("198.51.100.1"), 4500)   # the gateway, the client
NET_LO, NET_HI = A("10.1.0.0"), A("10.1.0.255")   # the gateway's network
# an IKE_AUTH datagram (its size, 300 bytes): an IKE header whose length field is the datagram's, as
# the worker's C path passes up no other (csrc/dp.c, ike_event), then the SK payload's bytes
IKE_AUTH = (bytes.fromhex("0123456789abcdef" "fedcba9876543210" "2e202308" "00000001") + (300).to_bytes(4, "big")
            + bytes(272))
SPI_LO, SPI_HI = 0xC0000000, 0xCFFFFFFF   # the range GETSPI asks in


def setup_requests(req_id: int, vip: ipaddress.IPv4Address | ipaddress.IPv6Address, spi_in: int, spi_out: int,
                   reqid: int, policy_id: int) -> list[pipe.Message]:
    """The client's six requests, ids ``req_id`` on: its Child SA between NET_LO..NET_HI and its
    virtual IP ``vip``, AES-GCM-128, lifetimes soft 3000 s and hard 3600 s; its IKE SA's SPI of ours
    and its peer id both made from ``reqid``.  SEND_IKE is the last."""
    sel_out, sel_in = Selector(NET_LO, NET_HI, vip, vip), Selector(vip, vip, NET_LO, NET_HI)
    soft, hard = Lifetime(seconds=3000), Lifetime(seconds=3600)
    inbound = SaSpec(spi=spi_in, direction=Direction.IN, alg=Alg.AES128GCM16, key=bytes(20), esn=False,
                     replay_window=4096, reqid=reqid, selectors=(sel_in,), local=LOCAL, remote=PEER,
                     soft=soft, hard=hard)
    outbound = SaSpec(spi=spi_out, direction=Direction.OUT, alg=Alg.AES128GCM16, key=bytes(20), esn=False,
                      replay_window=0, reqid=reqid, selectors=(sel_out,), local=LOCAL, remote=PEER,
                      soft=soft, hard=hard)
    return [GetSpi(req_id, SPI_LO, SPI_HI, 0), Update(req_id + 1, inbound), Add(req_id + 2, outbound),
            SpdAdd(req_id + 3, Policy(policy_id, 100, Action.PROTECT, reqid, sel_out)),
            IkeSpiAdd(req_id + 4, (0x5A00000000000000 + reqid).to_bytes(8, "big"), reqid),
            SendIke(req_id + 5, IKE_AUTH, PEER)]
