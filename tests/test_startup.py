"""What the control process loads and checks at start-up (tunsec.selftest, lazy imports).

A gateway pays for what it is configured to do: the Prometheus client only with
``metrics_listen``, pyOpenSSL only with EAP-TLS, pyroute2's IPRoute without the rest of pyroute2.  And the IKE
algorithms its connections name are tried once before anything is set up, so a crypto
library that lacks one stops the start with a message instead of failing a client.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tunsec import selftest
from tunsec.conf.config import parse_config
from tunsec.daemon import Daemon, StartupError
from tunsec.ike.constants import TransformType
from tunsec.ike.message import Transform
from tunsec.ike.proposals import parse_proposals

GATEWAY = """tunsec {{
  tun = tunsec-t0
  {extra}
}}
pools {{
  rw {{
    addrs = 10.3.0.0/24
  }}
}}
connections {{
  rw {{
    version = 2
    remote_addrs = %any
    proposals = {proposals}
    pools = rw
    local {{
      auth = psk
      id = gw.example.org
    }}
    remote {{
      auth = psk
      id = %any
    }}
    children {{
      net {{
        local_ts = 10.1.0.0/24
        remote_ts = dynamic
        esp_proposals = aes128gcm16
      }}
    }}
  }}
}}
secrets {{
  ike-rw {{
    secret = "a shared secret of some length"
  }}
}}
"""

# a fresh interpreter (this one has imported everything the other tests use): the modules a
# gateway's control process has once its Daemon exists, and whether pyroute2's other names
# still import afterwards (from threads, as the daemon's netlink calls run)
_PROBE = textwrap.dedent("""
    import json, sys
    from tunsec.conf.config import parse_config
    from tunsec.daemon import Daemon
    Daemon(parse_config(sys.stdin.read(), "/nonexistent/tunsec.conf"))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("prometheus_client", "pyroute2", "OpenSSL"))
    import threading
    found = []
    def rest():   # the rest of pyroute2 on demand, asked for by several threads at once
        from pyroute2 import NDB
        found.append(NDB.__module__)
    threads = [threading.Thread(target=rest) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"loaded": loaded, "ndb": found}))
""")


def gateway(extra: str = "", proposals: str = "aes128gcm16-prfsha256-x25519") -> str:
    return GATEWAY.format(extra=extra, proposals=proposals)


def test_a_psk_gateway_without_metrics_loads_neither_prometheus_nor_pyopenssl_nor_all_of_pyroute2() -> None:
    r = subprocess.run([sys.executable, "-c", _PROBE], input=gateway(), capture_output=True, text=True,
                       timeout=60, check=True)
    found = json.loads(r.stdout)
    assert not [m for m in found["loaded"] if m.startswith(("prometheus_client", "OpenSSL"))]
    assert "pyroute2.iproute.linux" in found["loaded"]
    # what pyroute2's package __init__ would have imported: NDB, IPDB, wireless, conntrack
    assert not [m for m in found["loaded"] if m.split(".")[1:2] in (["ndb"], ["ipdb"], ["iwutil"], ["conntrack"])]
    assert found["ndb"] == ["pyroute2.ndb.main"] * 4


def test_the_configured_ike_algorithms_are_each_checked_once() -> None:
    checks = selftest.checks([
        ("a", parse_proposals(["aes128gcm16-prfsha256-x25519", "aes256-sha384-ecp384"])),
        ("b", parse_proposals("aes128gcm16-prfsha256-x25519")),
    ])
    assert sorted((c.kind, c.name) for c in checks) == [
        ("NAT detection hash", "sha1"),   # every IKE_SA_INIT's, whatever the proposals
        ("PRF", "prfsha256"), ("PRF", "prfsha384"),
        ("SK cipher", "aes128gcm16"), ("SK cipher", "aes256-sha384"),
        ("key exchange", "curve25519"), ("key exchange", "ecp384"),
    ]
    assert {c.used_by for c in checks} == {"a"}   # b names nothing new
    assert selftest.run(checks) == 7
    assert selftest.checks([]) == []   # no IKE connection: no IKE to check


def test_the_nat_detection_hash_is_checked_against_a_known_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # SHA-1 is paged in at start (its 64 KiB of libcrypto were the first client's, bench/mem_stages.py),
    # and a hashlib that refuses or miscomputes it stops the start
    [nat] = [c for c in selftest.checks([("rw", parse_proposals("aes128gcm16-prfsha256-x25519"))])
             if c.kind == "NAT detection hash"]
    assert selftest.run([nat]) == 1
    monkeypatch.setattr(selftest, "nat_hash", lambda spi_i, spi_r, addr: bytes(20))
    with pytest.raises(selftest.SelfTestError) as err:
        selftest.run([nat])
    assert "NAT detection hash sha1 (connection rw) failed: SHA-1 gave a wrong known answer" in str(err.value)
    assert "every IKE_SA_INIT needs it" in str(err.value)


def test_an_algorithm_this_crypto_library_cannot_do_fails_naming_it_and_its_connection() -> None:
    broken = selftest.Check("key exchange", (4242,), "group4242", "rw")
    with pytest.raises(selftest.SelfTestError) as err:
        selftest.run([*selftest.checks([("rw", parse_proposals("aes128gcm16-prfsha256-x25519"))]), broken])
    assert "key exchange group4242 (connection rw)" in str(err.value)
    assert "unsupported key exchange group 4242" in str(err.value)


def test_the_daemon_start_checks_every_algorithm_of_its_connections() -> None:
    daemon = Daemon(parse_config(gateway(proposals="aes256gcm16-prfsha384-ecp521-modp2048"), "/nonexistent/t.conf"))
    daemon._self_test()   # the real algorithms of this configuration work with this crypto library
    checks = selftest.checks((c.name, c.ike.proposals) for c in daemon.cfg.connections)
    assert sorted(c.name for c in checks) == ["aes256gcm16", "ecp521", "modp2048", "prfsha384", "sha1"]


def test_a_failed_self_test_is_a_startup_error_and_nothing_is_opened() -> None:
    cfg = parse_config(gateway(), "/nonexistent/t.conf")
    conn = cfg.connections[0]
    spec = conn.ike.proposals[0]
    # a key exchange group no crypto library here implements, in place of curve25519
    unsupported = dataclasses.replace(spec, transforms=(*spec.of_type(TransformType.ENCR), *spec.of_type(
        TransformType.PRF), Transform(TransformType.DH, 4242)))
    conn = dataclasses.replace(conn, ike=dataclasses.replace(conn.ike, proposals=(unsupported,)))
    daemon = Daemon(dataclasses.replace(cfg, connections=(conn,)))
    with pytest.raises(StartupError, match=r"self-test of the IKE key exchange .* \(connection rw\) failed"):
        daemon.prepare()
    assert daemon.tun is None and not daemon.sockets.by_family


def test_the_default_packet_loops_follow_the_cpus_tunsec_may_run_on() -> None:
    """A container or unit pinned to fewer CPUs than the host has gets a loop per CPU it may use."""
    cpus = os.sched_getaffinity(0)
    cfg = parse_config(gateway(), "/nonexistent/t.conf")
    assert Daemon(cfg).nqueues == min(len(cpus), 16)
    try:
        os.sched_setaffinity(0, {min(cpus)})   # this thread only: restored below
        assert Daemon(cfg).nqueues == 1
    finally:
        os.sched_setaffinity(0, cpus)
