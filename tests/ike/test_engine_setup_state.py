"""An established IKE SA keeps nothing of its setup (a gateway holds thousands of them for hours).

Two engines on a fake clock bring up a road-warrior IKE SA (PSK, a virtual IP from a pool), then
rekey it. On both sides, from the established IKE SA (and from the one its rekey made), nothing
is reachable that only the setup needed: the IKE_SA_INIT messages and the nonces as they crossed
the wire, SK_pi/SK_pr and the other derived keys but SK_d, a DH private key, an AESGCM object
(cryptography's holds two OpenSSL contexts), or the peer's signature hash algorithms.
"""

from __future__ import annotations

import gc
import ipaddress
import types
from collections.abc import Iterator

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.dh import KeyExchange
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.message import NoncePayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

GW, CLIENT = "192.0.2.1", "198.51.100.7"
PSK = Secret(b"a shared secret of some length")
PROPOSALS = "aes128gcm16-prfsha256-curve25519"


def configs() -> tuple[IkeConfig, IkeConfig]:
    gateway = IkeConfig("rw", LocalAuth("psk", Identity.parse("gw.example")), RemoteAuth("psk"),
                        parse_proposals(PROPOSALS), (child_config("net", "10.1.0.0/24", "dynamic", "aes128gcm16"),),
                        psk=PSK, local_addr=GW, pools=("v4",))
    client = IkeConfig("home", LocalAuth("psk", Identity.parse("c1.example")),
                       RemoteAuth("psk", Identity.parse("gw.example")), parse_proposals(PROPOSALS),
                       (child_config("net", "dynamic", "10.1.0.0/24", "aes128gcm16"),),
                       psk=PSK, local_addr=CLIENT, remote_addr=GW, vips=(ipaddress.ip_address("0.0.0.0"),))
    return gateway, client


# what the walk does not enter: shared, long-lived things that are not this SA's state (the endpoint
# and, through bound methods, everything it holds; configuration; code)
OPAQUE = (IkeEndpoint, Network, IkeConfig, type, types.ModuleType, types.FunctionType, types.MethodType,
          types.BuiltinFunctionType)


def reachable(sa: IkeSa) -> Iterator[object]:
    """Every object reachable from ``sa`` (not entering OPAQUE ones or other IKE SAs)."""
    seen = {id(sa)}
    todo: list[object] = [sa]
    while todo:
        obj = todo.pop()
        yield obj
        for ref in gc.get_referents(obj):
            if id(ref) in seen or isinstance(ref, OPAQUE) or (isinstance(ref, IkeSa) and ref is not sa):
                continue
            seen.add(id(ref))
            todo.append(ref)


def setup_material(net: Network) -> list[bytes]:
    """The IKE_SA_INIT messages and the nonces in them, as they crossed the wire (rekey nonces too)."""
    out = []
    for sent in net.log:
        msg = decode_message(sent.data[4:] if sent.data[:4] == bytes(4) else sent.data)
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            out.append(sent.data)
            out += [p.data for p in msg.payloads if isinstance(p, NoncePayload)]
    return out


def assert_setup_forgotten(sa: IkeSa, material: list[bytes]) -> None:
    assert sa.state is State.ESTABLISHED
    st = sa._st
    assert st.keys is not None and len(st.keys.d) == 32   # SK_d stays: Child SA keys, the next SKEYSEED
    assert [len(k) for k in (st.keys.ai, st.keys.ar, st.keys.ei, st.keys.er, st.keys.pi, st.keys.pr)] == [0] * 6
    assert not st.peer_hashes
    # the rekey's nonces are only seen encrypted on the wire: checked here
    assert (st.nonce_i, st.nonce_r, st.init_request, st.init_response) == (b"", b"", b"", b"")
    kept = list(reachable(sa))
    assert not [o for o in kept if isinstance(o, AESGCM | KeyExchange)]
    blobs = [o for o in kept if isinstance(o, bytes) and len(o) >= 16]
    assert not [b for b in blobs if any(m in b for m in material)], "setup material is still reachable"


def test_established_ike_sa_keeps_nothing_of_its_setup() -> None:
    net = Network()
    gateway_cfg, client_cfg = configs()
    pools = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    gw = net.add(GW, IkeEndpoint([gateway_cfg], address_pool=pools))
    client = net.add(CLIENT, IkeEndpoint([client_cfg]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    for side in (gw, client):
        (sa,) = side.sas
        assert sa.children   # the first Child SA was keyed from the nonces before they went
        assert_setup_forgotten(sa, setup_material(net))

    # the IKE SA a rekey makes: its nonces and the old SA's are gone, its keys are SK_d alone
    old_spi_i = client.sas[0].spi_i
    client.sas[0].rekey()
    net.run(until=net.now + 5)
    material = setup_material(net)
    assert len(material) >= 4   # the walk has something to look for: both INIT messages, both nonces
    for side in (gw, client):
        (sa,) = [s for s in side.sas if s.state is State.ESTABLISHED]
        assert sa.children
        assert sa._st.spi_i != old_spi_i   # the new one
        assert_setup_forgotten(sa, material)
