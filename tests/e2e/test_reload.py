"""`tunsec reload` (and SIGHUP) between two tunsec in two namespaces, with three IKE connections:
x carries a continuous ping while A's configuration drops y and gains z and `tunsec reload` runs.
Not one ping may be lost on x; y's SAs go on both sides (B is told with a DELETE); z comes up.
A broken file is refused with its file and line, and everything keeps running."""

from __future__ import annotations

import grp
import os
import re
import signal
import subprocess
from collections.abc import Iterator

import pytest
from ike_peers import PSK, Conn, TunsecIke

from tunsec.bench.netns import Host, TwoHosts, wait_until

# name -> (the child's third octet on both sides; x is the hosts' own inner networks)
NETS = {"x": 0, "y": 5, "z": 7}


def connection(name: str, me: Host, peer: Host, start: str, octet: int | None = None) -> str:
    octet = NETS[name] if octet is None else octet
    mine, theirs = me.inner_net4.split(".")[:2], peer.inner_net4.split(".")[:2]
    return f"""  {name} {{
    local_addrs = {me.outer4}
    remote_addrs = {peer.outer4}
    encap = yes
    proposals = aes128gcm16-prfsha256-curve25519
    local {{ auth = psk
            id = {name}-{me.ns[:4]}.tunsec.test }}
    remote {{ auth = psk
             id = {name}-{peer.ns[:4]}.tunsec.test }}
    children {{ {name}net {{ local_ts = {'.'.join(mine)}.{octet}.0/24
                     remote_ts = {'.'.join(theirs)}.{octet}.0/24
                     esp_proposals = aes128gcm16
                     start_action = {start} }} }}
  }}
"""


def write(side: TunsecIke, peer: Host, names: str, start: str, tail: str = "",
          octets: dict[str, int] | None = None) -> None:
    text = side.conf.read_text().split("connections {")[0]
    octets = octets or {}
    side.conf.write_text(text + "connections {\n" + "".join(connection(n, side.host, peer, start, octets.get(n))
                                                           for n in names)
                         + f'}}\nsecrets {{ ike {{ secret = "{PSK}" }} }}\n' + tail)


def names_up(side: TunsecIke) -> list[str]:
    return sorted(sa["name"] for sa in side.ike_sas() if sa["state"] == "established" and sa["children"])


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def test_reload_keeps_the_untouched_tunnel_and_applies_the_rest(topo: TwoHosts) -> None:
    a = TunsecIke(topo, Conn(topo.a, topo.b))
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    write(a, topo.b, "xy", "start")
    write(b, topo.a, "xyz", "none")     # B can answer z already; A adds it by reloading
    b.start()
    a.start()
    assert wait_until(lambda: names_up(a) == names_up(b) == ["x", "y"], 20), (a.log_tail(), b.log_tail())
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    x_before = next(sa for sa in a.ike_sas() if sa["name"] == "x")
    assert [p for p in a.status()["policies"] if "10.2.5.0-" in p["selector"]]   # y's, until the reload

    # 300 pings 0.1 s apart through x while A's configuration changes under it (30 s: the reloads
    # below take longer than 15 s when the suite's workers load the machine)
    ping = subprocess.Popen(["ip", "netns", "exec", topo.a.ns, "ping", "-n", "-q", "-c", "300", "-i", "0.1",
                             "-W", "2", "-I", topo.a.inner4, topo.b.inner4], stdout=subprocess.PIPE, text=True)
    try:
        write(a, topo.b, "xz", "start")
        # tunsec runs as its user since it started: a file only root may read is refused, saying so
        a.wait_log(rf"{re.escape(str(a.conf))} is not readable by tunsec: `tunsec reload` and SIGHUP will fail")
        r = a.cli("reload")
        assert r.returncode == 1 and "cannot read: Permission denied" in r.stderr, r.stderr
        assert "runs as tunsec since it started" in r.stderr and "chgrp tunsec" in r.stderr
        os.chown(a.conf, -1, grp.getgrnam("tunsec").gr_gid)
        a.conf.chmod(0o640)
        r = a.cli("reload")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[:2] == ["IKE connections added: z", "IKE connections removed: y"], r.stdout
        # z's remote network has no route yet, and tunsec (user tunsec, no CAP_NET_ADMIN) may not add one
        assert "routes not added (tunsec may not change routes, no CAP_NET_ADMIN): as root run " \
            "ip route add 10.2.7.0/24 dev tunsec0" in r.stdout, r.stdout
        b.wait_log(r"y: IKE SA closed: deleted by peer")
        assert wait_until(lambda: names_up(a) == names_up(b) == ["x", "z"], 20), (a.log_tail(), b.log_tail())
        # a broken file: refused, naming file and line; the running configuration stays
        write(a, topo.b, "xz", "start", tail="connections {\n  bad { remote_addrs = 300.1.1.1 }\n}\n")
        r = a.cli("reload")
        assert r.returncode == 1
        assert re.search(rf"{re.escape(str(a.conf))}:\d+: .*remote_addrs", r.stderr), r.stderr
        assert "nothing changed" in r.stderr
        assert ping.poll() is None, "the ping ended before the reloads did: it proves nothing"
        out, _ = ping.communicate(timeout=40)
    finally:
        if ping.poll() is None:
            ping.kill()
    assert "\n300 packets transmitted, 300 received, 0% packet loss" in out, out
    x_after = next(sa for sa in a.ike_sas() if sa["name"] == "x")
    assert (x_after["spi_i"], x_after["children"][0]["spi_in"]) == (x_before["spi_i"],
                                                                      x_before["children"][0]["spi_in"])
    assert not [sa for sa in a.ike_sas() + b.ike_sas() if sa["name"] == "y"]
    assert not [p for side in (a, b) for p in side.status()["policies"] if "10.2.5.0-" in p["selector"]
                or "10.1.5.0-" in p["selector"]]

    # SIGHUP does the same: z goes (B is told), x stays
    write(a, topo.b, "x", "start")
    assert a.proc is not None
    a.proc.send_signal(signal.SIGHUP)
    b.wait_log(r"z: IKE SA closed: deleted by peer")
    assert wait_until(lambda: names_up(a) == ["x"], 10)
    a.wait_log(r"reload: IKE connections removed: z")
    assert topo.ping(topo.a, topo.b.inner4, count=3, src=topo.a.inner4)


def tun_routes(side: TunsecIke) -> list[str]:
    out = side.topo.run(side.host, ["ip", "-4", "route", "show", "dev", "tunsec0", "table", "116"]).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_reload_removes_the_routes_no_tunnel_needs_any_more(topo: TwoHosts) -> None:
    """A reload takes the routes of removed and changed tunnels off the TUN (a network another
    tunnel still routes stays) and routes the new ones. tunsec runs as root here: it may."""
    a = TunsecIke(topo, Conn(topo.a, topo.b), tunsec_extra="  user = root\n")
    b_net = ".".join(topo.b.inner_net4.split(".")[:2])
    # w routes y's network too; no peer runs: the routes follow the configuration alone
    write(a, topo.b, "xyzw", "none", octets={"w": NETS["y"]})
    a.start()
    assert tun_routes(a) == [f"{b_net}.0.0/24", f"{b_net}.5.0/24", f"{b_net}.7.0/24"], a.log_tail()

    # y goes (w still needs its network), z moves to .8
    write(a, topo.b, "xzw", "none", octets={"w": NETS["y"], "z": 8})
    r = a.cli("reload")
    assert r.returncode == 0, r.stderr
    assert f"routes removed: {b_net}.7.0/24" in r.stdout and f"routes added: {b_net}.8.0/24" in r.stdout, r.stdout
    assert tun_routes(a) == [f"{b_net}.0.0/24", f"{b_net}.5.0/24", f"{b_net}.8.0/24"]

    write(a, topo.b, "x", "none")
    r = a.cli("reload")
    assert r.returncode == 0, r.stderr
    assert tun_routes(a) == [f"{b_net}.0.0/24"], r.stdout
    a.stop()
