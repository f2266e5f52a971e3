"""Review revcontainer F3: `tunsec status` keeps the capabilities it was started with.

In the image, `podman exec tunsec tunsec status` and the HEALTHCHECK (every 30 s) run as the
image's user with what podman gives every process of the container: the `--cap-add` set as
ambient capabilities, so CapPrm = CapEff = CapAmb = NET_ADMIN, NET_BIND_SERVICE, SETUID, SETGID
(measured with the documented `podman run` line; the daemon's processes hold none once up).  The
CLI needs none of them: it connects to a unix socket and prints the answer of a server that runs
as the same uid and parses every IKE message from the network.  It keeps them all while it reads
and decodes that answer.

Here the real CLI runs as podman exec starts it (setpriv: a non-root uid, those four as ambient
capabilities, no-new-privs) against a socket of the test's; the server reads the sets of the
process at the other end (SO_PEERCRED) while that process waits for the answer.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from reachable import python_argv, scratch_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starts the CLI as another user with capabilities")

CAPS = "+net_admin,+net_bind_service,+setuid,+setgid"       # docs/containers.md's --cap-add set
AS_PODMAN_EXEC = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps", CAPS,
                  "--ambient-caps", CAPS, "--no-new-privs"]


def peer_status(conn: socket.socket) -> dict[str, str]:
    pid, _, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def serve_once(listener: socket.socket, seen: dict[str, str]) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(10)
        conn.recv(65536)                     # the request: the CLI now waits for the answer
        seen.update(peer_status(conn))
        conn.sendall(b'{"error": "test server"}\n')


def test_tunsec_status_holds_no_capability_while_it_reads_the_answer() -> None:
    with scratch_dir("revcontainer-cli-") as d:
        path = d / "tunsec.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen(1)
        listener.settimeout(30)
        seen: dict[str, str] = {}
        server = threading.Thread(target=serve_once, args=(listener, seen))
        server.start()
        try:
            r = subprocess.run([*python_argv(AS_PODMAN_EXEC), "-m", "tunsec", "status", "--socket", str(path)],
                               capture_output=True, text=True, timeout=60, check=False)
        finally:
            server.join(35)
            listener.close()
    assert seen, f"the CLI never asked: {r.stdout} {r.stderr}"
    assert seen["Uid"].split()[0] == "65534"
    held = {k: seen[k] for k in ("CapPrm", "CapEff", "CapAmb")}
    # main: all three 00000000000014c0 (NET_ADMIN, NET_BIND_SERVICE, SETUID, SETGID)
    assert all(int(v, 16) == 0 for v in held.values()), (
        f"tunsec status talks to the server holding capabilities it does not need: {held}")
