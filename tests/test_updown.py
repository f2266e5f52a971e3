"""updown scripts: strongSwan's environment (tunsec.updown.environments) and running them (updown.run)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from pathlib import Path

import pytest

from tunsec.policy.pad import narrow
from tunsec.policy.selector import Ts, check_fast_selectors
from tunsec.updown import ChildEvent, UpdownError, _Down, _DownIndex, environments, parse_command, run


def event(**kw: object) -> ChildEvent:
    base = dict(up=True, child="net", interface="tunsec0", reqid=7, ike_unique_id=3, me="192.0.2.1",
                peer="192.0.2.2", peer_port=4500, my_id="moon.example", peer_id="sun.example",
                local_ts=(Ts.parse("10.1.0.0/24"),), remote_ts=(Ts.parse("10.2.0.0/16"),))
    base.update(kw)
    return ChildEvent(**base)  # type: ignore[arg-type]


def test_site_to_site_child_gets_strongswans_variables() -> None:
    (env,) = environments(event())
    assert {k: v for k, v in env.items() if k != "PATH"} == {
        "PLUTO_VERSION": "1.1", "PLUTO_VERB": "up-client", "PLUTO_CONNECTION": "net", "PLUTO_INTERFACE": "tunsec0",
        "PLUTO_REQID": "7", "PLUTO_PROTO": "esp", "PLUTO_UNIQUEID": "3", "PLUTO_ME": "192.0.2.1",
        "PLUTO_MY_ID": "moon.example", "PLUTO_MY_CLIENT": "10.1.0.0/24", "PLUTO_MY_PORT": "0",
        "PLUTO_MY_PROTOCOL": "0", "PLUTO_PEER": "192.0.2.2", "PLUTO_PEER_ID": "sun.example",
        "PLUTO_PEER_CLIENT": "10.2.0.0/16", "PLUTO_PEER_PORT": "0", "PLUTO_PEER_PROTOCOL": "0",
        "PLUTO_UDP_ENC": "4500", "TUNSEC_PEER_ID_PROVEN": "1",
    }


def test_road_warrior_verbs_sourceips_dns_and_one_call_per_family() -> None:
    v4, v6 = ipaddress.ip_address("10.3.0.1"), ipaddress.ip_address("fd00:3::1")
    dns = (ipaddress.ip_address("10.1.0.53"), ipaddress.ip_address("fd00:1::53"))
    envs = environments(event(up=False, local_ts=(Ts.host(v4), Ts.host(v6)),
                              remote_ts=(Ts.parse("10.1.0.0/24"), Ts.parse("fd00:1::/64")),
                              own_vips=(v4, v6), dns=dns))
    assert [e["PLUTO_VERB"] for e in envs] == ["down-client", "down-client-v6"]
    assert [e["PLUTO_MY_CLIENT"] for e in envs] == ["10.3.0.1/32", "fd00:3::1/128"]
    assert envs[0]["PLUTO_MY_SOURCEIP"] == "10.3.0.1" and envs[0]["PLUTO_MY_SOURCEIP6_1"] == "fd00:3::1"
    assert envs[0]["PLUTO_DNS4_1"] == "10.1.0.53" and envs[0]["PLUTO_DNS6_1"] == "fd00:1::53"
    assert "PLUTO_PEER_SOURCEIP" not in envs[0]


def test_host_to_host_child_is_up_host_and_gateway_sees_peer_sourceip() -> None:
    (env,) = environments(event(local_ts=(Ts.host("192.0.2.1"),), remote_ts=(Ts.host("10.3.0.9"),),
                                peer_vips=(ipaddress.ip_address("10.3.0.9"),), hostaccess=True))
    assert env["PLUTO_VERB"] == "up-host"
    assert env["PLUTO_PEER_SOURCEIP"] == env["PLUTO_PEER_SOURCEIP4_1"] == "10.3.0.9"
    assert env["PLUTO_HOST_ACCESS"] == "1"


def test_icmp_selectors_carry_type_and_code_as_ports() -> None:
    (env,) = environments(event(local_ts=(Ts.parse("10.1.0.0/24[icmp/0x0800]"),),
                                remote_ts=(Ts.parse("10.2.0.0/16[icmp/0x0800]"),)))
    assert (env["PLUTO_MY_PROTOCOL"], env["PLUTO_MY_PORT"], env["PLUTO_PEER_PORT"]) == ("1", "8", "0")


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty command"),
    ("updown.sh", "write the script's absolute path"),
    ("'/bin/x", "cannot split the command"),
])
def test_bad_commands(text: str, message: str) -> None:
    with pytest.raises(UpdownError, match=message):
        parse_command(text)


def _script(tmp_path: Path, body: str) -> tuple[str, ...]:
    path = tmp_path / "updown.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return parse_command(f"'{path}' 'an arg; not a shell'")


def test_script_runs_without_a_shell_with_only_pluto_variables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = _script(tmp_path, f'printf "%s|" "$1" > {out}; env | sort >> {out}\n')
    (env,) = environments(event())
    assert asyncio.run(run(argv, env))
    text = out.read_text()
    assert text.startswith("an arg; not a shell|")           # one argument, no shell splitting it
    names = {line.split("=", 1)[0] for line in text.split("|", 1)[1].splitlines()}
    assert names - {"PWD", "SHLVL", "_"} == set(env)          # nothing of tunsec's own environment


def test_failure_and_timeout_are_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tunsec.updown")
    (env,) = environments(event())
    assert not asyncio.run(run(_script(tmp_path, "echo broken; exit 3\n"), env))
    assert "updown" in caplog.text and "up-client for net: broken" in caplog.text
    assert "exited with status 3" in caplog.text
    assert not asyncio.run(run(_script(tmp_path, "exec sleep 30\n"), env, timeout=0.2))
    assert "killed after 0 s without finishing" in caplog.text
    assert not asyncio.run(run(("/nonexistent/updown",), env))
    assert "cannot run it" in caplog.text


# an identity as the peer sent it (str(Identity) of an FQDN): a line of its own, a terminal command, a NUL
HOSTILE_ID = "evil\nPLUTO_VERB=down-client\n\x1b[2J\u2028\x85\u202e\x00x.example"


def test_a_peers_identity_reaches_the_script_printable(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = _script(tmp_path, f'printf "%s" "$PLUTO_PEER_ID" > {out}\n')
    (env,) = environments(event(peer_id=HOSTILE_ID, my_id="moon\tjürgen"))
    assert asyncio.run(run(argv, env))   # a NUL once made create_subprocess_exec raise: no script ran
    assert out.read_text() == "evil?PLUTO_VERB=down-client??[2J????x.example"
    assert env["PLUTO_VERB"] == "up-client" and env["PLUTO_MY_ID"] == "moon?jürgen"   # letters stay
    assert all(v.isprintable() for v in env.values())


def test_an_environment_it_cannot_pass_is_logged_not_raised(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tunsec.updown")
    out = tmp_path / "out"
    (env,) = environments(event())
    env["PLUTO_PEER_ID"] = "nul\x00inside"   # as environments() gave it before it replaced them
    assert not asyncio.run(run(_script(tmp_path, f"touch {out}\n"), env))
    assert not out.exists()
    assert "up-client for net: cannot run it: embedded null byte" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_child_runs_the_script_once_per_pair_the_fast_path_installs() -> None:
    """A client's TSi (its VIP, UDP) and a TSr of 0/0 UDP plus 254 TCP /32s, narrowed to a
    full-tunnel child: the engine accepts it (one protocol-compatible pair); the script once ran
    for all 255 same-family pairs at up and again at down."""
    vip = Ts.parse("10.3.0.7/32")
    tsr = [Ts.parse("0.0.0.0/0[udp]")] + [Ts.parse(f"192.168.{i}.1/32[tcp]") for i in range(254)]
    local, remote = narrow(tsr, [Ts.parse("0.0.0.0/0")]), narrow([Ts.parse("10.3.0.7/32[udp]")], [vip])
    check_fast_selectors(local, remote)   # what the engine asks: no error
    (env,) = environments(event(local_ts=tuple(local), remote_ts=tuple(remote), peer_vips=(vip.start,)))
    assert (env["PLUTO_MY_CLIENT"], env["PLUTO_MY_PROTOCOL"], env["PLUTO_PEER_CLIENT"], env["PLUTO_PEER_PROTOCOL"]) \
        == ("0.0.0.0/0", "17", "10.3.0.7/32", "17")
    assert environments(event(local_ts=(Ts.parse("10.1.0.0/24[tcp]"),),
                              remote_ts=(Ts.parse("10.2.0.0/16[udp]"),))) == []   # never installed


def test_an_unproven_identity_is_no_peer_id_and_a_proven_eap_one_is_the_xauth_id() -> None:
    """eap-radius after a tunnelled method whose server named no user: the name the client gave
    is not PLUTO_PEER_ID (nor strongSwan's PLUTO_XAUTH_ID), a script keying per-user rules on
    those would give it that user's; the flag says so; the groups RADIUS gave are the server's word."""
    (env,) = environments(event(peer_id="alice", peer_id_proven=False, eap_id="alice", groups=("staff", "vpn\n")))
    assert (env["PLUTO_PEER_ID"], env["TUNSEC_PEER_ID_PROVEN"], env["TUNSEC_PEER_UNPROVEN_ID"]) == ("", "0", "alice")
    assert "PLUTO_XAUTH_ID" not in env
    assert (env["TUNSEC_PEER_GROUP_1"], env["TUNSEC_PEER_GROUP_2"]) == ("staff", "vpn?")
    (env,) = environments(event(peer_id="alice", eap_id="alice"))
    assert (env["PLUTO_PEER_ID"], env["PLUTO_XAUTH_ID"], env["TUNSEC_PEER_ID_PROVEN"]) == ("alice", "alice", "1")
    assert "TUNSEC_PEER_UNPROVEN_ID" not in env and "TUNSEC_PEER_GROUP_1" not in env


def _plain_scan(downs: list[_Down], ranges: list[tuple[int, int, int]]) -> set[int]:
    """The queued downs that overlap any of ``ranges``, by looking at every one (what the index replaces)."""
    return {id(d) for d in downs
            if any(f == fam and a <= hi and lo <= b for f, a, b in d.ranges for fam, lo, hi in ranges)}


def _random_range(rng: random.Random) -> tuple[int, int, int]:
    fam = rng.choice((4, 6))
    top = 1 << (32 if fam == 4 else 128)
    kind = rng.random()
    base = rng.randrange(256) if rng.random() < 0.7 else rng.randrange(top)   # crowded near 0: overlaps
    if kind < 0.5:
        return fam, base, base                                      # a host
    width = 1 << rng.choice((1, 2, 4, 8, 16, 24) if kind < 0.95 else (32 if fam == 4 else 128,))
    lo = base - base % width if width < top else 0
    return fam, lo, min(lo + width - 1, top - 1)                    # a subnet, now and then everything


def test_the_queued_downs_index_finds_what_a_plain_scan_finds() -> None:
    """Random host and subnet downs (both families, some spanning everything) added and removed;
    every query (hosts, subnets, several ranges) answers what comparing against each down does."""
    rng = random.Random(20261203)
    index, downs = _DownIndex(), []
    loop = asyncio.new_event_loop()
    try:
        for step in range(3000):
            if downs and rng.random() < 0.3:
                gone = downs.pop(rng.randrange(len(downs)))
                index.remove(gone)
            else:
                down = _Down(tuple({_random_range(rng) for _ in range(rng.choice((1, 1, 2, 3)))}),
                             loop.create_future())
                downs.append(down)
                index.add(down)
            query = [_random_range(rng) for _ in range(rng.choice((1, 2)))]
            assert {id(d) for d in index.overlapping(query)} == _plain_scan(downs, query), (step, query)
        for down in downs:
            index.remove(down)
        assert index.overlapping([(4, 0, (1 << 32) - 1), (6, 0, (1 << 128) - 1)]) == set()
    finally:
        loop.close()
