"""Review revnatt (h/fixnatt500's csrc/addrwatch.c): the fast path's route netlink socket.

F1: the address watch is a route netlink socket the worker holds inside its sandbox, and it can
send as well as read.  The seccomp filter denies socket() so that a worker taken over opens no
netlink socket (csrc/sandbox.c: "... open sockets"); the one ts_dp_new opened before the sandbox
takes requests all the same.  With ``user = root`` (docs/privileges.md: the worker keeps all its
capabilities) a worker taken over can add or remove the host's addresses and routes through it: the
TUN's capture routes and prohibit blocks gone, tunnelled traffic leaves in clear.

F2: every RTM_NEWADDR moves dp->addr_gen on, also one for an address that was there already (an
address changed: its lifetimes, as every IPv6 router advertisement renews a SLAAC address's, which
anyone on the uplink's link may send).  The fix's promise (docs/changes/2026-12-05-fixnatt500.md)
is "one refused call per SA per address added"; an SA whose source stays gone pays a refused
sendmmsg again for each such notification.

Real parts in a namespace of the test's own, as test_review_revcsmall_source_back.py.

Since h/fixwatch (review revlate4 F1) the worker holds no netlink socket at all: the control process
watches the host's addresses and tells the worker each one added (services/addr_feed.py, the pipe's
ADDR_ADDED), which the scripts below run as gso_loop.control_watch."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from shutil import which

import pytest
from gso_loop import run_script

SANDBOXED = textwrap.dedent(r'''
    import errno, os, re, socket, struct, sys
    sys.path.insert(0, sys.argv[1])
    from tunsec.dataplane import sandbox
    from tunsec.dataplane.fastpath import Dataplane

    early = sandbox.refuse_io_uring()
    dp = Dataplane()   # ts_dp_new: the address watch opened, as in the worker before its sandbox
    # the process's route netlink sockets (protocol 0) by inode: the address watch is the only one
    inodes = {line.split()[-1] for line in open("/proc/net/netlink").read().splitlines()[1:]
              if line.split()[1] == "0"}
    links = {}
    for n in os.listdir("/proc/self/fd"):
        try:
            links[int(n)] = os.readlink(f"/proc/self/fd/{n}")
        except FileNotFoundError:   # the listing's own descriptor, closed
            pass
    fds = [fd for fd, link in links.items() if (m := re.fullmatch(r"socket:\[(\d+)\]", link)) and m[1] in inodes]
    print("WATCH", len(fds), flush=True)
    sandbox.apply(sandbox.python_path(), [], early)
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
        print("SOCKET allowed", flush=True)
    except OSError as err:
        print("SOCKET", errno.errorcode.get(err.errno, err.errno), flush=True)
    # RTM_NEWADDR 192.0.2.99/32 on lo (ifindex 1), acknowledged: what a worker taken over would send
    addr = socket.inet_aton("192.0.2.99")
    body = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 1)
    body += struct.pack("=HH", 8, 2) + addr + struct.pack("=HH", 8, 1) + addr   # IFA_LOCAL, IFA_ADDRESS
    flags = 0x1 | 0x4 | 0x400 | 0x200   # NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    if not fds:   # none held (h/fixwatch), none to be had (SOCKET EPERM): nothing to write to
        print("RESULT none", flush=True)
        sys.exit(0)
    try:
        os.write(fds[0], struct.pack("=IHHII", 16 + len(body), 20, flags, 4242, 0) + body)
    except OSError as err:
        print("RESULT write", errno.errorcode.get(err.errno, err.errno), flush=True)
        sys.exit(0)
    os.set_blocking(fds[0], True)
    while True:
        buf = os.read(fds[0], 65536)
        off = 0
        while off + 16 <= len(buf):
            n, kind, _, seq, _ = struct.unpack_from("=IHHII", buf, off)
            if kind == 2 and seq == 4242:   # NLMSG_ERROR: its error, 0 = done
                print("RESULT ack", -struct.unpack_from("=i", buf, off + 16)[0], flush=True)
                sys.exit(0)
            off += (n + 3) & ~3
''')


def _run_in_netns(prefix: str, script: str, tmp_path: Path) -> str:
    from conftest import netns_unavailable

    from tunsec.bench.netns import scratch_netns

    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    with scratch_netns(prefix) as ns:
        path = tmp_path / f"{prefix}.py"
        path.write_text(script)
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(path), here],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
        added = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "addr", "show", "dev", "lo"],
                               capture_output=True, text=True, timeout=30).stdout
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + "\nLO " + added


def test_the_sandboxed_worker_cannot_change_the_hosts_addresses(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the worker of user = root, with its capabilities")
    out = _run_in_netns("revnatt", SANDBOXED, tmp_path)
    assert "WATCH 0" in out, out   # no netlink socket in the worker (h/fixwatch, review revlate4 F1)
    # the sandbox means a worker taken over opens no netlink socket ...
    assert "SOCKET EPERM" in out, out
    # ... and the one it holds must not serve as one: no address added through it
    assert "192.0.2.99" not in out.split("LO ", 1)[1], out
    assert "RESULT ack 0" not in out, out


CHANGED = textwrap.dedent(r'''
    import ipaddress, socket, sys, time
    sys.path.insert(0, sys.argv[1])
    from gso_loop import control_watch, ip, start_loop, stop_loop, tun_up, v6_sockets
    from tunsec.dataplane.pipe import Endpoint

    TUN, CHANGES = "revnatt0", int(sys.argv[2])
    tun = tun_up(TUN)
    ip("addr", "add", "2001:db8::5/128", "dev", "lo", "nodad")   # an address that stays
    udp, peer_sock, peer = v6_sockets()
    gone = Endpoint(ipaddress.ip_address("2001:db8::77"), 4500)   # our address once; not any more
    dp, loop = start_loop(tun, gone, peer, udp6=udp.fileno(), n=0, spi=0x2004)
    told, stop_watch = control_watch(dp)   # the control process's watch, telling the worker
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started = time.monotonic()
    app.sendto(b"x" * 100, ("10.9.0.5", 9))   # refused from 2001:db8::77 once, noted gone
    peer_sock.recv(65535)
    for i in range(CHANGES):
        # no address added: the one that stays renewed (as a router advertisement renews SLAAC's)
        ip("addr", "change", "2001:db8::5/128", "dev", "lo", "valid_lft", str(1000 + i), "preferred_lft", "500")
        # the change is not told (review revlate8 F2); an address added after it is, so once the worker
        # hears of that one the watch has read the change (the kernel's notices come in order)
        marker = f"2001:db8:1::{i + 1}"
        ip("addr", "add", marker + "/128", "dev", "lo", "nodad")
        told.wait_for(marker)
        app.sendto(b"x" * 100, ("10.9.0.5", 9))
        peer_sock.recv(65535)
    elapsed = time.monotonic() - started
    stop_watch()
    stop_loop(dp, loop)
    print("TOLD", told.addrs, flush=True)
    print("RESULT", dp.drops()["io"], int(elapsed), flush=True)
''')


@pytest.mark.skipif(which("strace") is None, reason="strace is not installed")
def test_an_address_changed_is_no_address_added(tmp_path: Path) -> None:
    changes = 5
    trace = tmp_path / "trace"
    out = run_script("revnatt", CHANGED, tmp_path, str(changes),
                     wrap=("strace", "-f", "-qq", "-e", "trace=sendmmsg", "-o", str(trace)))
    io, elapsed = out.split("RESULT")[1].split()
    assert io == "0", out
    # the control process told the worker of no change (review revlate8 F2), only of the addresses added:
    # the markers, and maybe 2001:db8::5's own add once (IPv6 reports it from a work queue after `ip`
    # returned); never of any
    told = ast.literal_eval(out.split("TOLD ", 1)[1].splitlines()[0])
    markers = [f"2001:db8:1::{i + 1}" for i in range(changes)]
    assert [a for a in told if a != "2001:db8::5"] == markers and told.count("2001:db8::5") <= 1, out
    refused = [c for c in trace.read_text().splitlines() if re.search(r"= -1 E", c)]
    assert refused and all("EINVAL" in c for c in refused), refused
    # no address came: the source is tried once, then again only when its 10 s are over
    assert len(refused) <= 1 + int(elapsed) // 10, refused
