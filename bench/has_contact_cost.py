#!/usr/bin/env python3
"""What an initiator's INITIAL_CONTACT question costs a gateway holding N road warriors (review
revperf R2): IkeEndpoint._has_contact, asked once per IKE_AUTH we send, before h/fixaddr (a pass over
every established IKE SA of our identity, its peer's identity compared with the connection's remote
id: a DN parsed per SA once the DN cache of 256 overflows) and now (the indexes, ike/contacts.py).

    python3 bench/has_contact_cost.py [--clients 10000] [--repeat 5]

The gateway's IKE SAs are made up (what _has_contact reads of an IkeSa), put in a real IkeEndpoint
and its indexes as _collect_one puts them; the question is a site connection's (same local identity,
remote id a DN or an FQDN no road warrior has: the worst case, nothing found).  CPU per question,
the best of --repeat.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config  # noqa: E402
from tunsec.ike.endpoint import IkeEndpoint  # noqa: E402
from tunsec.ike.identity import Identity  # noqa: E402
from tunsec.ike.proposals import parse_proposals  # noqa: E402
from tunsec.ike.sa import State  # noqa: E402
from tunsec.ike.secret import Secret  # noqa: E402
from tunsec.policy.pad import identity_allowed, same_ip  # noqa: E402


def before(endpoint: IkeEndpoint, st: Any) -> bool:
    """_has_contact before h/fixaddr (after h/fixhost's F1)."""
    family = ipaddress.ip_address(st.remote_addr[0]).version
    return any(sa.state is State.ESTABLISHED and sa.config.local.id == st.config.local.id
               and ((sa.config.remote_addr is not None and same_ip(sa.remote_addr[0], st.remote_addr[0]))
                    or ((sent := sa.peer_sent_id) is not None and identity_allowed(st.config.remote.id, sent)
                        and ipaddress.ip_address(sa.remote_addr[0]).version == family))
               for sa in endpoint._sas.values())


def gateway(n: int, kind: str) -> tuple[IkeEndpoint, Any]:
    local = LocalAuth("psk", Identity.parse("C=CH, O=tunsec, CN=gw" if kind == "dn" else "gw.example"))
    base = IkeConfig("rw", local, RemoteAuth("psk"), parse_proposals("aes128gcm16-prfsha256-curve25519"),
                     (child_config("net", "10.9.0.0/16", "dynamic", "aes128gcm16"),),
                     psk=Secret(b"bench secret of some length"), local_addr="192.0.2.1")
    site = dataclasses.replace(base, name="site", remote_addr="192.0.2.50",
                               remote=RemoteAuth("psk", Identity.parse("C=CH, O=tunsec, CN=peer" if kind == "dn"
                                                                       else "peer.example")))
    endpoint = IkeEndpoint([base, site])
    for i in range(n):
        peer = Identity.parse(f"C=CH, O=tunsec, CN=client{i}" if kind == "dn" else f"client{i}@example")
        sa: Any = SimpleNamespace(local_spi=i.to_bytes(8, "big"), state=State.ESTABLISHED, config=base,
                                  peer_sent_id=peer, remote_addr=(f"198.51.{i // 250 % 250}.{i % 250 + 1}", 4500))
        endpoint._sas[sa.local_spi] = sa
        endpoint._by_address.follow(sa)
        endpoint._by_identity.follow(sa)
    return endpoint, SimpleNamespace(config=site, remote_addr=("192.0.2.50", 500))


def best(fn: Callable[[], object], repeat: int) -> float:
    """CPU seconds of one ``fn()``, the best of ``repeat``."""
    return min(timeit.repeat(fn, timer=time.process_time, number=1, repeat=repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for kind in ("dn", "fqdn"):
        endpoint, st = gateway(args.clients, kind)
        assert before(endpoint, st) is False and endpoint._has_contact(st) is False
        old = best(lambda e=endpoint, s=st: before(e, s), args.repeat)
        new = best(lambda e=endpoint, s=st: [e._has_contact(s) for _ in range(1000)], args.repeat) / 1000
        print(f"N={args.clients} road warriors, {kind} identities: before {old * 1e3:.1f} ms per question, "
              f"now {new * 1e6:.1f} us", flush=True)


if __name__ == "__main__":
    main()
