"""Review revcontainer F1: the shipped systemd unit's SystemCallFilter leaves the worker's sandbox out.

contrib/systemd/tunsec.service allows `@system-service` and answers every other call EPERM
(SystemCallErrorNumber=EPERM).  The worker sandboxes itself with `seccomp(2)` (csrc/sandbox.c, its
io_uring filter and the main filter) and `landlock_*` (tunsec.dataplane.sandbox), none of which
`@system-service` holds (`systemd-analyze syscall-filter @system-service`).  Under the unit the
worker's seccomp call then fails EPERM, which sandbox.apply() takes for a failure of a part the kernel
has: the worker stops ("cannot sandbox the worker: seccomp: Operation not permitted; tunsec {
worker_sandbox = no } runs it without"), so tunsec does not start as shipped, and the way out the
log offers removes the sandbox altogether.

This test does what the unit's filter does to those calls, without starting a service on the host:
it reads the unit's SystemCallFilter= lines, expands them with systemd-analyze, and in a child
process installs a seccomp filter that answers EPERM for each of the sandbox's own calls the unit
does not allow (a stand-in for systemd's filter, which is stacked the same way: seccomp filters
are inherited and every one is consulted).  Then the worker's two sandbox steps run there, as the
worker runs them (refuse_io_uring before the event loop, apply once set up).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from daemon import requires

from tunsec.dataplane import sandbox

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib/systemd/tunsec.service"
# the calls the worker's sandbox makes that a syscall allow-list may leave out, by architecture
SANDBOX_CALLS = {
    "x86_64": {"seccomp": 317, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
               "landlock_restrict_self": 446},
    "aarch64": {"seccomp": 277, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
                "landlock_restrict_self": 446},
}

pytestmark = requires(None if shutil.which("systemd-analyze") else "systemd-analyze not installed (apt-get "
                      "install systemd)", "systemd unit filter")

# the child: a filter answering EPERM for the numbers in argv[2] (JSON), then the worker's steps
CHILD = """import ctypes, json, os, struct, sys
sys.path.insert(0, sys.argv[1])
denied = json.loads(sys.argv[2])
def stmt(code, k): return struct.pack("HBBI", code, 0, 0, k)
def jeq(k, jt, jf): return struct.pack("HBBI", 0x15, jt, jf, k)
prog = [stmt(0x20, 0)]                                   # A = seccomp_data.nr
for i, nr in enumerate(denied):                          # nr in denied: jump to the EPERM below
    prog.append(jeq(nr, len(denied) - i, 0))
prog += [stmt(0x06, 0x7FFF0000), stmt(0x06, 0x00050000 | 1)]   # RET ALLOW; RET ERRNO(EPERM)
buf = ctypes.create_string_buffer(b"".join(prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0                   # PR_SET_NO_NEW_PRIVS, as the unit's NoNewPrivileges
fp = Fprog(len(prog), ctypes.addressof(buf))
assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0, ctypes.get_errno()   # PR_SET_SECCOMP, MODE_FILTER
from tunsec.dataplane import sandbox
early = sandbox.refuse_io_uring()
try:
    out = sandbox.apply(sandbox.python_path(), [], early)
except sandbox.SandboxError as err:
    print(json.dumps({"error": str(err)}))
else:
    print(json.dumps({"applied": list(out.applied), "missing": list(out.missing)}))
"""


def unit_filters() -> tuple[set[str], set[str]]:
    """The unit's allowed and denied calls, its SystemCallFilter= lines expanded by systemd-analyze."""
    allowed: set[str] = set()
    denied: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.partition("=")[2].strip()
        into = denied if value.startswith("~") else allowed
        for token in value.lstrip("~").split():
            if token.startswith("@"):
                out = subprocess.run(["systemd-analyze", "syscall-filter", token], capture_output=True, text=True,
                                     check=True).stdout
                into.update(w for w in out.split() if not w.startswith(("#", "@")))
            else:
                into.add(token.partition(":")[0])
    return allowed, denied


def refused_by_unit(calls: dict[str, int]) -> dict[str, int]:
    allowed, denied = unit_filters()
    assert allowed, f"{UNIT} has no SystemCallFilter allow-list any more: this test's premise changed"
    return {name: nr for name, nr in calls.items() if name not in allowed or name in denied}


def test_worker_sandbox_works_under_the_units_syscall_filter() -> None:
    calls = SANDBOX_CALLS.get(platform.machine())
    assert calls is not None, f"no syscall numbers for {platform.machine()} here"
    refused = refused_by_unit(calls)
    host_landlock = sandbox.landlock_abi() > 0
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "src"), json.dumps(sorted(refused.values()))],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    # main: {"error": "seccomp: Operation not permitted"}, the worker stops and tunsec does not start
    assert "error" not in got, (f"the worker cannot sandbox itself under {UNIT.name} (calls it refuses: "
                                f"{sorted(refused)}): {got['error']}")
    assert "seccomp" in got["applied"], got
    if host_landlock:
        # the kernel has Landlock; the unit must not take it away silently (a warning, no file rules)
        assert any(a.startswith("landlock") for a in got["applied"]), (
            f"Landlock lost under {UNIT.name} (calls it refuses: {sorted(refused)}): {got}")


def test_the_stand_in_filter_passes_without_refusals() -> None:
    """The stand-in filter itself does not break the sandbox: with nothing refused it is all applied."""
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "src"), json.dumps([])],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert "seccomp" in got.get("applied", []), got
