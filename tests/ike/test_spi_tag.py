"""Our IKE SPIs' tags (ike/spi_tag.py): the control process's SipHash is the fast path's (fixed vectors,
the same as csrc/test/test_ike_tag.c's, and random keys and addresses against the C function); an SPI
carries the tag for the address it was made for and no other; the endpoint tags the SPIs of the SAs it
makes for the peer's address, a rekey's and both roles' alike, so the worker can tell the IKE_AUTH of a
client that got our IKE_SA_INIT answer from a spoofed datagram (docs/pipe.md)."""

from __future__ import annotations

import ipaddress
import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_engine_more import A, B, cfg, only

from tunsec.dataplane import siphash
from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaRekeyed
from tunsec.ike.spi_tag import IkeSpiTag, SipHash, make_ike_spi, siphash24_bytes
from tunsec.ike.testing import EPOCH, Network

KEY = bytes(range(16))
DP = Dataplane()


# the pure-Python reference (ike/ without the compiled module) and the compiled one the service takes
SIPHASHES = [pytest.param(siphash24_bytes, id="python"), pytest.param(siphash.compiled, id="c")]


@pytest.mark.parametrize("hasher", SIPHASHES)
def test_fixed_vectors_are_the_fast_paths(hasher: SipHash) -> None:
    tag = IkeSpiTag(KEY, siphash=hasher)
    r = bytes.fromhex("01020304")
    assert tag.tag(r, "192.0.2.1").hex() == "bac91004"
    assert tag.tag(r, "192.0.2.2").hex() == "ac97d092"
    assert tag.tag(r, "2001:db8::1").hex() == "520dd960"


@given(key=st.binary(min_size=16, max_size=16), r=st.integers(0, 2**32 - 1),
       addr=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_python_and_c_agree(key: bytes, r: int, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    ours = IkeSpiTag(key).tag(r.to_bytes(4, "big"), str(addr))
    assert int.from_bytes(ours, "big") == DP.ike_spi_tag(key, r, Endpoint(addr, 4500))
    assert IkeSpiTag(key, siphash=siphash.compiled).tag(r.to_bytes(4, "big"), str(addr)) == ours


@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=40))
def test_the_compiled_siphash_is_the_reference(key: bytes, data: bytes) -> None:
    # every tail length (0-7 bytes past a word) and several words, beyond what a tag's 9 or 21 bytes take
    assert siphash.compiled(key, data) == siphash24_bytes(key, data)


@pytest.mark.parametrize(("key", "data"), [(b"", b"abcdefgh"), (b"\x01", b"abcdefgh"), (bytes(8), b"abcdefgh"),
                                         (bytes(17), b"x"), (bytearray(16), b"x"), (bytes(16), bytearray(b"x"))])
def test_the_compiled_siphash_refuses_a_key_not_of_16_bytes(key: bytes, data: bytes) -> None:
    """Review T F5: C reads 16 bytes through the key's pointer, past a shorter key's end."""
    with pytest.raises(ValueError, match="SipHash takes a 16-byte key and bytes"):
        siphash.compiled(key, data)


def test_an_spi_carries_the_tag_for_its_address_only() -> None:
    tag = IkeSpiTag.new()
    spis = {make_ike_spi(os.urandom, tag, "198.51.100.7") for _ in range(200)}
    assert len(spis) == 200 and all(len(s) == 8 and any(s) for s in spis)
    assert all(tag.carries(s, "198.51.100.7") for s in spis)
    assert not any(tag.carries(s, "198.51.100.8") for s in spis)
    assert not any(IkeSpiTag.new().carries(s, "198.51.100.7") for s in spis)   # another key
    # a name still to resolve gets a random SPI (it carries no tag for any address we could check)
    assert len(make_ike_spi(os.urandom, tag, "vpn.example.com")) == 8
    assert tag.key.hex() not in repr(tag) and repr(tag.key) not in repr(tag)


def test_the_endpoint_tags_both_roles_and_rekeyed_sas_for_the_peers_address() -> None:
    tag_a, tag_b = IkeSpiTag.new(), IkeSpiTag.new()
    rng_a, rng_b = random.Random(1), random.Random(2)
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)], rng_a.randbytes, wall_clock=lambda: EPOCH, spi_tag=tag_a))
    b = net.add(B, IkeEndpoint([cfg(False)], rng_b.randbytes, wall_clock=lambda: EPOCH, spi_tag=tag_b))
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    (sa_a,), (sa_b,) = a.sas, b.sas
    assert tag_a.carries(sa_a.spi_i, B) and not tag_a.carries(sa_a.spi_i, A)   # ours as initiator, for B
    assert tag_b.carries(sa_b.spi_r, A)                                        # ours as responder, for A
    sa_b.rekey()
    net.run()
    assert only(net.take(B), IkeSaRekeyed)
    (new_b,) = b.sas
    assert tag_b.carries(new_b.local_spi, A)


def test_a_rotated_key_still_carries_the_tags_of_the_one_before_and_no_older() -> None:
    tag = IkeSpiTag.new()
    old = make_ike_spi(os.urandom, tag, "198.51.100.7")
    tag.rotate()
    new = make_ike_spi(os.urandom, tag, "198.51.100.7")
    assert tag.carries(old, "198.51.100.7") and tag.carries(new, "198.51.100.7")
    assert IkeSpiTag(tag.key).carries(new, "198.51.100.7") and not IkeSpiTag(tag.key).carries(old, "198.51.100.7")
    tag.rotate()
    assert not tag.carries(old, "198.51.100.7") and tag.carries(new, "198.51.100.7")


def test_the_compiled_siphash_where_built_and_the_reference_where_not(monkeypatch: pytest.MonkeyPatch) -> None:
    assert siphash.siphash24() is siphash.compiled   # this tree is built (the worker's tests need it)
    monkeypatch.setattr(siphash, "_lib", None)
    assert siphash.siphash24() is siphash24_bytes
