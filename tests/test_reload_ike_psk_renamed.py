"""Review revpsk2 F1 (fixed): the reload's PSK logout decided by the entry's *name*, not by whether
the key the user proved still proves it.  Renaming ``ike-site1`` to ``ike-site1-laptop`` (same ids,
same secret) logged site1 out, though its key is unchanged and would prove it again at once; a key
changed under the same name (a real credential change) logs no one out, as before."""

from __future__ import annotations

import base64
from pathlib import Path

from test_ikeservice_peers import GW, PSK, run
from test_reload_ike import ConfiguredGateway, down_events

SECRET = "0s" + base64.b64encode(PSK.reveal()).decode()


def conf(names: dict[int, str]) -> str:
    entries = "".join(f"  ike-{n} {{ id-gw = gw.example\n id-user = site{i}.example\n secret = {SECRET} }}\n"
                      for i, n in names.items())
    return ("tunsec { control_socket = /nonexistent/tunsec.sock }\n"
            "connections {\n  rw { local_addrs = " + GW + "\n"
            "  local { auth = psk\n id = gw.example }\n"
            "  remote { auth = psk }\n"
            "  children { net { local_ts = 10.1.0.0/16\n remote_ts = 10.2.0.0/16\n"
            "  esp_proposals = aes128gcm16 } } }\n}\n"
            "secrets {\n" + entries + "}\n")


def test_renaming_an_entry_keeping_ids_and_key_logs_no_one_out(tmp_path: Path) -> None:
    async def body() -> None:
        gw = ConfiguredGateway(2)
        gw.path = tmp_path / "swanctl.conf"
        gw.path.write_text(conf({0: "site0", 1: "site1"}))
        await gw.start()
        for i in range(2):
            gw.connect(i)
        await gw.settle()
        assert all(gw.children_of(i) for i in range(2))

        answer = await gw.reload(conf({0: "site0", 1: "site1-laptop"}))   # renamed only
        assert answer["ok"], answer
        assert "PSK users" not in answer["message"], answer
        assert down_events(gw, 1) == [] and gw.children_of(1)

    run(body())
