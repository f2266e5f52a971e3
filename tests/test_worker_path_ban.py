"""Failed authentications of IKE SAs opened through the worker ban that path only (review revworker F1).

services/ike/worker_path.py: an IKE SA whose IKE_SA_INIT came up from the worker (port 4500, the
source address the worker claims) counts its failures in a ban of its own, which refuses IKE_SA_INITs
arriving through the worker (a brute force straight to 4500 is still banned by tunsec), and its lines
say AUTHENTICATION_FAILED in a form the shipped fail2ban filter does not take; the port-500 ban and
fail2ban stay for what the control process's own sockets saw.  `tunsec unban` lifts both.

The same harness as test_worker_forged_auth_ban.py: a real IkeService over the in-process worker, a
real IKE engine with a wrong PSK whose datagrams go up as pipe IKE events, the log through tunsec.logs
read with fail2ban-regex and the shipped filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from pathlib import Path

from f2b import fail2ban_regex
from test_ikeservice_peers import Gateway, run, site_ip
from test_worker_forged_auth_ban import _forge_failure

from tunsec import logs
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Errno

TAG = " (through the worker's port 4500, not for fail2ban)"   # worker_path.TAG, as an operator reads it


def test_failures_through_the_worker_ban_the_worker_path_in_words_fail2ban_does_not_take(
        tmp_path: Path, root_logger: None) -> None:
    """Fails before the fix: the failures counted in the main (port-500) ban, none in a worker-path ban."""
    out = io.StringIO()
    logs.configure("info", fmt="text", stream=out)

    async def go() -> None:
        gw = Gateway(1)
        await gw.start()
        svc = gw.service
        source = site_ip(0)
        for _ in range(svc.auth_ban.settings.max):
            await _forge_failure(gw, source)
        now = time.monotonic()
        assert not svc.auth_ban.bans(now), "the port-500 ban counted failures the worker may have made up"
        assert [b.source for b in svc.worker_path.ban.bans(now)] == [source]
        doc = svc.status(pipe.Reply(1, pipe.MsgType.DUMP, Errno.OK))   # tunsec status lists it apart
        assert not doc["auth_bans"] and [b["source"] for b in doc["auth_bans_worker_path"]] == [source]
        # the next IKE_SA_INIT through the worker from that source is refused, before the engine sees it
        dropped = svc.endpoint.stats.auth_banned
        with contextlib.suppress(AssertionError, TimeoutError):   # refused: no IKE_SA_INIT answer, no failure
            await asyncio.wait_for(_forge_failure(gw, source), 2)
        assert svc.endpoint.stats.auth_banned > dropped
        text = out.getvalue()
        assert f"AUTHENTICATION_FAILED{TAG} from {source}" in text
        assert f"banned: AUTHENTICATION_FAILED{TAG} from {source}" in text
        log = tmp_path / "tunsec.log"
        log.write_text(text)
        assert not fail2ban_regex(log)
        # this path's ban lifts as the main one does (Daemon._unban_command lifts both)
        assert gw.service.worker_path.ban.lift(source) and not svc.worker_path.ban.bans(time.monotonic())

    run(go())
