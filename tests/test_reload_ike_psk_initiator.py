"""Review revpsk2 F2 (fixed): the reload judged every established SA of a %any PSK connection by
``psk_for(remote_id)``, also the SAs it *initiated*.  Since h/fixpsk2 (revpsk F1) an initiator
verifies the responder with ``config.psk`` (its own group key), whatever IDr comes back; but the
reload still asks which entry the responder's IDr picks.  Adding an entry for the hub's identity
(e.g. for another connection to it) makes the reload delete our own initiated SA, whose key (the
group key, unchanged) still proves both ends.  Fails on main c4197df: the SA is deleted.
"""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

from tunsec.conf.config import load_config
from tunsec.ike.identity import Identity
from tunsec.ike.state import State
from tunsec.services.ike.revoked import removed_psk_users

KEY = "0s" + base64.b64encode(b"the group key of gw, long enough!").decode()
HUBKEY = "0s" + base64.b64encode(b"hub's key for another connection").decode()


def conf(tmp: Path, with_hub_entry: bool) -> list:
    hub = f"  ike-hub {{ id-gw = gw.example\n id-hub = hub.example\n secret = {HUBKEY} }}\n" if with_hub_entry else ""
    text = ("connections {\n  rw { local_addrs = 192.0.2.1\n remote_addrs = 198.51.100.7\n"
            "  local { auth = psk\n id = gw.example }\n"
            "  remote { auth = psk }\n"
            "  children { net { local_ts = 10.1.0.0/16\n remote_ts = 10.2.0.0/16 } } }\n}\n"
            f"secrets {{\n  ike-gw {{ id = gw.example\n secret = {KEY} }}\n{hub}}}\n")
    path = tmp / f"swanctl{int(with_hub_entry)}.conf"
    path.write_text(text)
    return load_config(path).connections


def test_an_initiated_sa_is_not_logged_out_by_an_entry_added_for_the_responders_idr(tmp_path: Path) -> None:
    (old,), (new,) = conf(tmp_path, False), conf(tmp_path, True)
    assert old.ike.psk is not None and new.ike.psk == old.ike.psk   # our key, and what the hub proves: unchanged
    deleted: list[float] = []
    sa = SimpleNamespace(name="rw", local_spi=b"\1" * 8, state=State.ESTABLISHED, is_initiator=True,
                         remote_addr=("198.51.100.7", 500), delete=deleted.append)
    up = SimpleNamespace(ev=SimpleNamespace(remote_id=Identity.parse("hub.example")))
    svc = SimpleNamespace(endpoint=SimpleNamespace(sas=[sa]), ike_up={sa.local_spi: up})
    out = removed_psk_users(svc, [(old, new)], 1.0)   # type: ignore[arg-type]
    assert out == [] and deleted == [], out
