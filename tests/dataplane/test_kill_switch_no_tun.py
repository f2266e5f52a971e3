"""The daemon's kill switch before it opens a TUN (Daemon.__init__'s KillSwitch("")) is no kill switch:
it adds, removes and judges no device.  The in-process reload harnesses (test_reload_manual.Harness and
the like) reload routes on a stand-in TUN with it, and each such reload made a real device of the name
"" marks (tsks97e6e20b) in the test host's own namespace, shared by every test worker and left there.
A namespace of the test's own (unshare --net), so the host's devices are never at stake."""

from __future__ import annotations

import json
import textwrap
from ipaddress import ip_network

from test_review_revperf_host_addresses import NEEDS_ROOT, run_in_own_netns

from tunsec.dataplane.killswitch import KillSwitch

_PROBE = textwrap.dedent("""
    import json, subprocess
    from ipaddress import ip_network
    from tunsec.dataplane.killswitch import KillSwitch

    def devices():
        return sorted(line.split(":")[1].strip() for line in
                      subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines())

    before = devices()
    ks = KillSwitch("")
    failed = ks.ensure([ip_network("10.2.1.0/24")]) + ks.keep_only([ip_network("10.2.1.0/24")])
    after = devices()   # before close(): a harness that never stops cleanly leaves what is there now
    ks.close()
    print(json.dumps({"before": before, "after": after, "failed": failed, "held": sorted(map(str, ks.held))}))
""")


@NEEDS_ROOT
def test_the_kill_switch_of_no_tun_touches_no_device() -> None:
    out = json.loads(run_in_own_netns(_PROBE).splitlines()[-1])
    assert out["after"] == out["before"], out   # no tsks device made
    assert out["failed"] == [] and out["held"] == [], out


def test_the_kill_switch_of_no_tun_has_no_networks() -> None:
    ks = KillSwitch("")
    assert ks.keep_only([]) == [] and ks.ensure([ip_network("10.2.1.0/24")]) == [] and ks.held == set()
