"""Review revlate4 F1: the worker's address watch still carries requests inside its sandbox.

h/fixnatt2 (review revnatt F1) opens the watch socket (csrc/addrwatch.c ts_addrwatch_open) with
CAP_NET_ADMIN out of the thread's effective set, so that the kernel's check of the opener's
capabilities (the socket file's credentials) refuses a route change written to it.  But rtnetlink's
check (net/netlink/af_netlink.c __netlink_ns_capable) asks the file's credentials only for a
message sent without a destination address: one sent with sendto() and the kernel's address
({AF_NETLINK, pid 0}) is marked NETLINK_SKB_DST and judged by the sender's capabilities alone
(write() cannot carry an address, which is all the file check guards: a descriptor handed to a
privileged program that writes to it).  The seccomp filter allows sendto and sendmsg (the UDP
sockets need them), so a worker taken over that keeps its capabilities (``user = root``,
docs/privileges.md) still adds or removes the host's addresses and routes through the watch.  With
the same capabilities it may send to the route groups (netlink_allowed asks the sender's
capabilities only): a forged RTM_NEWADDR or RTM_DELADDR reaches every listener of the namespace's
address groups, which can tell it from the kernel's only by its sender's port id -- the control
process's own AddressWatch (services/addrwatch.py, which re-lists the host's addresses on each)
does not look.

And without any capability (the default ``worker_user``) the socket answers dumps: the routes, the
neighbours (the LAN's hosts and their link addresses) and the links, which Landlock keeps from the
same worker in /proc/net.

Real parts in a namespace of the test's own, as test_review_revnatt_addrwatch.py: ``Dataplane()``
(ts_dp_new opened the watch), ``sandbox.apply`` (Landlock and the seccomp filter), then the calls a
worker taken over would make.

Fixed on h/fixwatch: the worker holds no netlink socket at all (the control process watches the
host's addresses and tells the worker each one added, the pipe's ADDR_ADDED: services/addr_feed.py),
and the sandbox refuses it a new one (socket() is EPERM).  So the tests below find no watch (WATCH
0), and a worker taken over has no descriptor to send a route change, a forged notice or a dump
through: each attempt is made with a new socket, which the sandbox refuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# What the sandboxed worker does; the lines it prints are read by the tests below.
SANDBOXED = textwrap.dedent(r'''
    import errno, os, re, socket, struct, sys
    sys.path.insert(0, sys.argv[1])
    from tunsec.dataplane import sandbox
    from tunsec.dataplane.fastpath import Dataplane

    NLMSG = struct.Struct("=IHHII")
    RTM_NEWADDR, RTM_DELADDR, RTM_GETROUTE, RTM_GETNEIGH = 20, 21, 26, 30
    NLMSG_ERROR, NLMSG_DONE = 2, 3
    REQUEST, ACK, DUMP, CREATE, EXCL = 0x1, 0x4, 0x300, 0x400, 0x200

    def say(*parts):
        print(*parts, flush=True)

    def addr_msg(kind, flags, seq, dotted):
        a = socket.inet_aton(dotted)
        body = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 1)   # /32 on lo (ifindex 1)
        body += struct.pack("=HH", 8, 2) + a + struct.pack("=HH", 8, 1) + a   # IFA_LOCAL, IFA_ADDRESS
        return NLMSG.pack(16 + len(body), kind, flags, seq, 0) + body

    def replies(sock, seq):
        """(kind, payload) of the answers to seq until its ack or its dump's end"""
        sock.setblocking(True)
        sock.settimeout(10)
        while True:
            buf = sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(buf):
                n, kind, _, s, _ = NLMSG.unpack_from(buf, off)
                if n < 16:
                    break
                if s == seq:
                    yield kind, buf[off + 16:off + n]
                    if kind in (NLMSG_ERROR, NLMSG_DONE):
                        return
                off += (n + 3) & ~3

    early = sandbox.refuse_io_uring()
    # a listener of the address groups, as the control process's AddressWatch (opened before the
    # sandbox; it stands for any other process's listener on the host)
    listener = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    listener.bind((0, 0x10 | 0x100))   # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    listener.settimeout(5)
    listener_inode = os.fstat(listener.fileno()).st_ino
    dp = Dataplane()   # ts_dp_new: the address watch opened, as in the worker before its sandbox
    inodes = {line.split()[-1] for line in open("/proc/net/netlink").read().splitlines()[1:]
              if line.split()[1] == "0"}
    fds = []
    for n in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{n}")
        except FileNotFoundError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m and m[1] in inodes and int(m[1]) != listener_inode:
            fds.append(int(n))
    say("WATCH", len(fds))
    if sys.argv[2] == "drop":   # the default worker_user: no capability at all
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    sandbox.apply(sandbox.python_path(), [], early)
    try:
        open("/proc/net/route").read()
        say("PROCNET readable")
    except OSError as err:
        say("PROCNET", errno.errorcode.get(err.errno, err.errno))
    if fds:
        watch = socket.socket(fileno=os.dup(fds[0]))   # the worker's own descriptor (F_DUPFD is allowed)
    else:   # none held (h/fixwatch): a worker taken over would need a new one
        try:
            watch = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            say("SOCKET allowed")
        except OSError as err:
            say("SOCKET", errno.errorcode.get(err.errno, err.errno))
            watch = None
    kernel = (0, 0)   # {AF_NETLINK, pid 0, no group}: what write() cannot say

    def attempt(name, call):
        try:
            say(name, call())
        except OSError as err:
            say(name, errno.errorcode.get(err.errno, err.errno))

    def acks(seq):
        return [-struct.unpack_from("=i", p)[0] for k, p in replies(watch, seq) if k == NLMSG_ERROR]

    def write_then_acks(seq, dotted):
        os.write(watch.fileno(), addr_msg(RTM_NEWADDR, REQUEST | ACK | CREATE | EXCL, seq, dotted))
        return acks(seq)

    def sendto_then_acks(seq, dotted):
        watch.sendto(addr_msg(RTM_NEWADDR, REQUEST | ACK | CREATE | EXCL, seq, dotted), kernel)
        return acks(seq)

    def multicast():
        watch.sendto(addr_msg(RTM_DELADDR, 0, 7003, "192.0.2.1"), (0, 0x10))
        return "sent"

    def dump(kind):
        req = NLMSG.pack(16 + 12, kind, REQUEST | DUMP, 7100 + kind, 0) + struct.pack("=BBBBBBBBI", socket.AF_INET,
                                                                                  0, 0, 0, 0, 0, 0, 0, 0)
        watch.sendto(req, kernel)
        got = [k for k, _ in replies(watch, 7100 + kind)]
        return f"{sum(k not in (NLMSG_ERROR, NLMSG_DONE) for k in got)} " + ("DONE" if NLMSG_DONE in got else str(got))

    if watch is None:   # nothing to send through: every attempt below is moot
        for name in ("WRITE", "SENDTO", "MULTICAST", "ROUTES", "NEIGHBOURS"):
            say(name, "none")
    else:
        # 1. a change of the host's addresses, written as revnatt's proof did and sent to the kernel
        attempt("WRITE", lambda: write_then_acks(7001, "192.0.2.98"))
        attempt("SENDTO", lambda: sendto_then_acks(7002, "192.0.2.99"))
        # 2. a forged notification to the address groups
        attempt("MULTICAST", multicast)
        # 3. dumps: the routes and the neighbours, which /proc/net would show
        attempt("ROUTES", lambda: dump(RTM_GETROUTE))
        attempt("NEIGHBOURS", lambda: dump(RTM_GETNEIGH))
    # does the listener get a notice from anyone but the kernel (port id 0)?
    forged = 0
    try:
        while True:
            data, (pid, _groups) = listener.recvfrom(1 << 16)
            if pid != 0:
                forged += 1
    except (TimeoutError, BlockingIOError):
        pass
    say("FORGED", forged)
''')


def _run(tmp_path: Path, mode: str) -> tuple[str, str]:
    from conftest import netns_unavailable

    from tunsec.bench.netns import scratch_netns

    if os.geteuid() != 0:
        pytest.skip("needs root: a namespace, and the worker of user = root")
    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    with scratch_netns("revlate4") as ns:
        path = tmp_path / "revlate4_watch.py"
        path.write_text(SANDBOXED)
        here = os.path.dirname(os.path.abspath(__file__))
        src = str(Path(__file__).resolve().parents[2] / "src")
        for cmd in (["link", "set", "lo", "up"],
                    ["link", "add", "revlate4d0", "type", "veth", "peer", "name", "revlate4d1"],
                    ["addr", "add", "198.51.100.1/24", "dev", "revlate4d0"], ["link", "set", "revlate4d0", "up"],
                    # a LAN host the neighbour table knows
                    ["neigh", "add", "198.51.100.7", "lladdr", "02:00:00:00:00:07", "dev", "revlate4d0"]):
            subprocess.run(["ip", "netns", "exec", ns, "ip", *cmd], check=True, timeout=30)
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(path), src, mode],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy(), cwd=here)
        on_lo = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "addr", "show", "dev", "lo"],
                               capture_output=True, text=True, timeout=30).stdout
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, on_lo


def test_the_root_worker_cannot_change_addresses_through_the_watch_by_sendto(tmp_path: Path) -> None:
    out, on_lo = _run(tmp_path, "root")
    assert "WATCH 0" in out, out   # no netlink socket in the worker (h/fixwatch) ...
    assert "SOCKET EPERM" in out, out   # ... and none to be had inside its sandbox
    assert "PROCNET EACCES" in out, out   # the sandbox is on (Landlock)
    # revnatt F1's write() is refused (h/fixnatt2) ...
    assert "192.0.2.98" not in on_lo, out + on_lo
    # ... and so must be the same request sent to the kernel's address
    assert "SENDTO [0]" not in out, out
    assert "192.0.2.99" not in on_lo, out + on_lo


def test_the_root_worker_cannot_forge_address_notices_to_the_hosts_listeners(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, "root")
    assert "WATCH 0" in out, out
    assert "SOCKET EPERM" in out and "MULTICAST none" in out, out
    # the control process's AddressWatch, charon, NetworkManager: nothing from the worker reaches them
    assert "FORGED 0" in out, out


def test_the_unprivileged_worker_cannot_dump_what_landlock_hides(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, "drop")
    assert "WATCH 0" in out, out
    assert "SOCKET EPERM" in out and "ROUTES none" in out and "NEIGHBOURS none" in out, out
    assert "PROCNET EACCES" in out, out   # /proc/net is not the worker's to read ...
    # ... nor are the routes and the neighbours through the watch
    assert "DONE" not in out, out
