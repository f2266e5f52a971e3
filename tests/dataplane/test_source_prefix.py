"""The worker's per-source limits count an IPv6 sender under dos.ipv6_source_prefix, as the control
process's do (ike/dos_source.py): the fast path's share of unknown IKE queued (csrc/dp.c source_hash)
and the pipe writer's (pipeio._source_key).  Until h/fixobs both stayed at /64 whatever it was set
to: with 128 a LAN's hosts of one /64 were one sender, with 48 a site spreading over its /48's
/64s had a share per /64.  An established IKE SA's sender still counts by its whole address
(test_ike_known_share_lan.py).  The worker over the real pipe: test_worker_source_prefix.py."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import pytest
from esp_ref import c_addr, ike_message
from tunsec.dataplane._fastpath import lib

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, DataplaneError, Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.dataplane.pipeio import PipeWriter
from tunsec.ike import dos_source

MARKER = b"\0\0\0\0"
SHARE = 32   # TS_IKE_PER_SOURCE, PipeWriter.MAX_IKE_PER_SENDER


def _at(address: str) -> Endpoint:
    return Endpoint(ipaddress.ip_address(address), 4500)


def _in_one_64(k: int) -> Endpoint:
    return _at(f"2001:db8:1:2::{k + 1:x}")


def _in_one_48(k: int) -> Endpoint:
    return _at(f"2001:db8:1:{k + 1:x}::1")


def _slot(dp: Dataplane, ep: Endpoint) -> int:
    return int(lib.ts_test_ike_source_slot(dp._dp, c_addr(ep)))


def _two_apart(dp: Dataplane, address: Callable[[int], Endpoint]) -> tuple[Endpoint, Endpoint]:
    """Two senders of address's range whose slots differ under dp's prefix: the slots are a keyed
    hash (a random key per context), so two addresses share one now and then."""
    first = address(0)
    return first, next(ep for k in range(1, 255) if _slot(dp, ep := address(k)) != _slot(dp, first))


def _queued_in_c(dp: Dataplane, a: Endpoint, b: Endpoint) -> int:
    """SHARE unknown IKE datagrams from a, then SHARE from b: how many the fast path queued."""
    return sum(dp.inbound(MARKER + ike_message(bytes([i])), a if i < SHARE else b)[1] is Drop.NONE
               for i in range(2 * SHARE))


def test_c_128_gives_two_addresses_of_one_64_a_share_each() -> None:
    dp = Dataplane()
    dp.set_ipv6_source_prefix(128)
    a, b = _two_apart(dp, _in_one_64)
    assert _queued_in_c(dp, a, b) == 2 * SHARE
    assert dp.drops()["ike_source_limit"] == 0


def test_c_48_gives_two_64s_of_one_48_one_share() -> None:
    dp = Dataplane()
    a, b = _two_apart(dp, _in_one_48)   # apart at the default, /64
    dp.set_ipv6_source_prefix(48)
    assert _queued_in_c(dp, a, b) == SHARE
    assert dp.drops()["ike_source_limit"] == SHARE


def test_c_the_default_is_64() -> None:
    dp = Dataplane()
    assert dos_source.DEFAULT_IPV6_SOURCE_PREFIX == lib.TS_IPV6_SOURCE_PREFIX_DEFAULT == 64
    assert len({_slot(dp, _in_one_64(k)) for k in range(64)}) == 1
    assert len({_slot(dp, _in_one_48(k)) for k in range(64)}) > 1   # 64 /64s in one of 256 slots: 256^-63


@pytest.mark.parametrize("bits", [-1, 0, 129, 1 << 40])
def test_c_refuses_a_prefix_length_that_is_none(bits: int) -> None:
    with pytest.raises(DataplaneError, match="set_ipv6_source_prefix: EINVAL"):
        Dataplane().set_ipv6_source_prefix(bits)


def test_the_worker_takes_what_the_configuration_takes() -> None:
    # conf's dos.ipv6_source_prefix (tests/conf/test_dos.py) and the worker's option share the bounds
    bounds = dos_source.MIN_IPV6_SOURCE_PREFIX, dos_source.MAX_IPV6_SOURCE_PREFIX
    assert bounds == (32, 128)
    for bits in (*bounds, 64):
        Dataplane().set_ipv6_source_prefix(bits)


class _Loop:   # the writer only asks to be woken when the pipe drains
    def add_writer(self, *a: object) -> None: ...
    def remove_writer(self, *a: object) -> None: ...


def _waiting_in_writer(prefix: int | None, a: Endpoint, b: Endpoint) -> tuple[int, int]:
    """SHARE unknown IKE events from a, then SHARE from b, while the pipe is full: how many wait in
    the pipe writer, and how many it dropped over their sender's share."""
    control, chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        control.setblocking(False)
        chan.setblocking(False)
        loop = _Loop()
        writer = (PipeWriter(chan, loop, lambda _pause: None) if prefix is None  # type: ignore[arg-type]
                  else PipeWriter(chan, loop, lambda _pause: None, prefix))  # type: ignore[arg-type]
        n = 0
        while not writer.queue:   # fill the pipe: what follows waits
            writer.send(b"old answer %d" % n)
            n += 1
        writer.queue.clear()
        writer.answers_waiting = 0
        for i in range(2 * SHARE):
            writer.send(pipe.encode(pipe.Ike(data=ike_message(bytes([i])), remote=a if i < SHARE else b)),
                        is_event=True)
        return len(writer.ike), writer.dropped_ike_source
    finally:
        control.close()
        chan.close()


def test_pipe_writer_128_gives_two_addresses_of_one_64_a_share_each() -> None:
    a, b = _in_one_64(0), _in_one_64(1)
    assert _waiting_in_writer(None, a, b) == (SHARE, SHARE)   # the default: one /64, one share
    assert _waiting_in_writer(128, a, b) == (2 * SHARE, 0)


def test_pipe_writer_48_gives_two_64s_of_one_48_one_share() -> None:
    a, b = _in_one_48(0), _in_one_48(1)
    assert _waiting_in_writer(None, a, b) == (2 * SHARE, 0)   # the default: two /64s, two shares
    assert _waiting_in_writer(48, a, b) == (SHARE, SHARE)
    # IPv4 is its address whatever the prefix
    v4 = _at("198.51.100.7"), _at("198.51.100.8")
    assert _waiting_in_writer(48, *v4) == (2 * SHARE, 0)
