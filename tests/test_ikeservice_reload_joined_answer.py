"""Review revops (fifteenth session) of h/opcmd: an initiate that joined a re-creation, then a reload replacing
the connection (reload.py: recreate.stop(self, name)). The joined initiate's answer blames the operator's
terminate (recreate.STOPPED = "terminated by the operator"), though no terminate was given: the reload ended
it."""

from __future__ import annotations

import dataclasses
import types

from test_ikeservice_install_failed import TwoChildPair, our_rekey_fails
from test_ikeservice_peers import run

from tunsec.services.ike.commands import joined_answer


def test_a_joined_initiate_ended_by_a_reload_does_not_say_terminated_by_the_operator() -> None:
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        joined = a.initiate("tun", "net")   # no settle: the re-creation is still under way at the reload
        assert joined is not None and not joined.done()
        changed = dataclasses.replace(a.connections["tun"], keyingtries=5)
        await a.reload(types.SimpleNamespace(connections=[changed], radius=None))  # type: ignore[arg-type]
        assert joined.done()
        answer = await joined_answer(joined, "tun", "net", None)
        assert answer["ok"] is False
        assert "terminated by the operator" not in answer["error"], answer["error"]
    run(body())
