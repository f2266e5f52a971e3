"""Review reveapimpl F2: the gateway's EAP-MSCHAPv2 state shows the MSK in its repr.

EapAuthenticator._msk (mschapv2.py) is a plain dataclass field: repr() shows its 64 bytes, while
every other holder of an MSK hides it (EapResult.msk and EapPeer._msk with repr=False,
EapTlsAuthenticator._msk, GatewayEap.msk a Secret). From the EAP-Success round until the
client's AUTH, the half-open IKE SA's state (IkeSaState.eap -> GatewayEap.authenticator) holds
it, so repr(st), which test_engine.py::test_info_snapshot_has_no_keys keeps free of keys, carries
the key that the client's and our AUTH payloads are made with (RFC 7296 §2.16). It also stays
there after AUTH failed, for as long as the object lives.

Fails on main (b0ed2386)."""
from __future__ import annotations

from tests.ike.test_engine_eap import NOW, A, B, client, gateway
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.testing import Network


def test_the_half_open_sa_state_during_the_last_eap_round_shows_no_msk() -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([gateway()], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    for _ in range(20):   # until the gateway has sent EAP-Success and waits for the client's AUTH
        assert net.step(), "the exchange ended before the gateway held an MSK"
        st = b.sas[0]._st if b.sas else None
        if st is not None and st.eap is not None and st.eap.msk is not None:
            break
    else:
        raise AssertionError("the gateway never held an MSK")
    msk = st.eap.msk.reveal()
    assert len(msk) == 64
    text = repr(st)
    assert msk.hex() not in text and repr(msk)[2:-1] not in text, "the MSK in repr() of the IKE SA's state"
    assert repr(msk[:16])[2:-1] not in repr(st.eap.authenticator), "the MSK in repr() of the EAP method"
