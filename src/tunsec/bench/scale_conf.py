"""The scale benchmark's configurations: swanctl.conf for the road-warrior gateway (the same text
for tunsec and charon) and for the clients' charon, and strongswan.conf tuning for many IKE SAs."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from tunsec.bench.netns import Host

CONN, CHILD, POOL = "rw", "net", "rw"
POOL4 = "10.3.0.0/16"            # 65534 addresses: room for any N the benchmark runs
GATEWAY_ID = "gw.example.org"
PROPOSALS, ESP_PROPOSALS = "aes128gcm16-prfsha256-x25519", "aes128gcm16"


def client_id(k: int) -> str:
    return f"rw{k}@example.org"


def dos_settings(clients: int) -> tuple[int, int]:
    """(cookie threshold, half-open limit) for both gateways: above the burst, so no COOKIE and no drop."""
    return 2 * clients + 10, 4 * clients + 10


# --------------------------------------------------------------------------
# Configurations (swanctl.conf syntax, shared by tunsec and charon)
# --------------------------------------------------------------------------


def gateway_swanctl(gw: Host, psk: str, pool: str = POOL4) -> str:
    """The road-warrior gateway: any address, any identity with the PSK, a pool, remote_ts = dynamic."""
    return f"""pools {{
  {POOL} {{
    addrs = {pool}
  }}
}}
connections {{
  {CONN} {{
    version = 2
    local_addrs = {gw.outer4}
    remote_addrs = %any
    encap = yes
    proposals = {PROPOSALS}
    pools = {POOL}
    unique = no
    local {{
      auth = psk
      id = {GATEWAY_ID}
    }}
    remote {{
      auth = psk
      id = %any
    }}
    children {{
      {CHILD} {{
        local_ts = {gw.inner_net4}
        remote_ts = dynamic
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
      }}
    }}
  }}
}}
secrets {{
  ike-rw {{
    secret = "{psk}"
  }}
}}
"""


def client_addresses(me: Host, n: int) -> list[str]:
    """The clients' source addresses: ``me``'s, and n - 1 more of its /24 from .100 on (added to its
    veth by RoadWarriors.start).  One address is N road warriors behind one NAT; several spread them
    as road warriors from several places come, each address with the gateway's per-address limits."""
    base = ipaddress.ip_interface(f"{me.outer4}/24").network
    return [me.outer4, *(str(base[100 + i]) for i in range(n - 1))]


def client_swanctl(me: Host, gw: Host, psk: str, clients: int, addresses: Sequence[str] = ()) -> str:
    """N connections ``rw1..rwN`` in one charon, each its own identity and virtual IP, started on load;
    connection K from ``addresses[(K - 1) % len(addresses)]`` (default: ``me``'s address)."""
    addrs = list(addresses) or [me.outer4]
    conns = "".join(f"""  {CONN}{k} {{
    version = 2
    local_addrs = {addrs[(k - 1) % len(addrs)]}
    remote_addrs = {gw.outer4}
    encap = yes
    vips = 0.0.0.0
    proposals = {PROPOSALS}
    local {{
      auth = psk
      id = {client_id(k)}
    }}
    remote {{
      auth = psk
      id = {GATEWAY_ID}
    }}
    children {{
      {CHILD} {{
        local_ts = dynamic
        remote_ts = {gw.inner_net4}
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
        start_action = start
      }}
    }}
  }}
""" for k in range(1, clients + 1))
    return f"connections {{\n{conns}}}\nsecrets {{\n  ike-rw {{\n    secret = \"{psk}\"\n  }}\n}}\n"


# parallel `swanctl --terminate` calls of RoadWarriors.terminate_all
TERMINATE_PARALLEL = 8
# charon's worker threads that long-running jobs hold for good with kernel-libipsec: receiver,
# sender, scheduler, watcher and libipsec's four (seen in a thread dump of the client charon)
CHARON_RESIDENT_THREADS = 8


def charon_tuning(clients: int, *, gateway: bool) -> str:
    """strongswan.conf lines for many IKE SAs: a hashed SA table; on the gateway the DoS limits.

    The clients' charon gets more worker threads than its default 16: a `swanctl --terminate`
    holds one thread while it waits for the DELETE's answer, and the DELETE (and the answer)
    need another.  16 minus the 8 resident ones left exactly 8, so 8 parallel terminates that
    came in before charon had run any of their DELETE jobs took every thread: nothing was sent
    until the first terminate's own timeout freed one (all 8 took the full timeout)."""
    lines = "  ikesa_table_size = 1024\n  ikesa_table_segments = 16\n"
    if gateway:
        # cookie_threshold_ip too: strongSwan 5.9's per-IP cookie threshold (default 3) sent COOKIEs
        # to this one-address burst, and the clients' charon drops an IKE_SA_INIT answer that comes
        # back while it still holds the SA it sent the cookie retry from ("ignoring request with
        # ID 0, already processing"): that client retransmitted after 4 s, so strongSwan's N = 100
        # took 0.4 s or 4.4 s.  Real road warriors come from many addresses and never reach it.
        cookies, half_open = dos_settings(clients)
        lines += (f"  cookie_threshold = {cookies}\n  cookie_threshold_ip = {cookies}\n"
                  f"  block_threshold = {half_open}\n")
    else:
        # reuse_ikesa = no: each connection is its own road warrior, so nothing to reuse, and with
        # reuse on every initiation walks all the IKE SAs charon holds, waiting for each one another
        # thread has checked out (answers being processed): the faster the gateway answered, the
        # slower the clients started (1000 took 7.8 s to initiate against strongSwan's gateway, 3.2 s
        # without), which capped the faster gateway's figure at the clients' rate.
        threads = CHARON_RESIDENT_THREADS + 2 * TERMINATE_PARALLEL + 8
        lines += f"  install_virtual_ip = yes\n  threads = {threads}\n  reuse_ikesa = no\n"
    return lines
