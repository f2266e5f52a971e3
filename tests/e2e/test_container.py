"""The tunsec image (docker/Dockerfile) end to end: two containers, IKEv2 between them.

Each container runs in a network namespace of a TwoHosts topology (podman's own
networks stay out: `--network ns:`), as the image's non-root user, with every
capability dropped but the four tunsec needs for IKE (NET_ADMIN for the TUN,
its MTU and routes; NET_BIND_SERVICE for UDP 500; SETUID and SETGID to start the
worker as the image's tunsec-dp user), `--device /dev/net/tun`, a
read-only root file system and no-new-privileges.  The configurations are the
two-site example's (docker/examples/, mounted by docker/compose.yaml), whose
addresses are the topology's, with a fresh PSK.  The image is built once per
session by docker/build-image.sh (`make image`), which the layer cache makes
quick after the first time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ike_peers import ping_both_ways

from tunsec.bench.netns import Host, TwoHosts, wait_until

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/tunsec:latest"
IMAGE_UID = 990          # docker/Dockerfile: useradd --uid 990 tunsec
WORKER_UID = 991         # docker/Dockerfile: useradd --uid 991 tunsec-dp
# + SETUID, SETGID: the worker becomes a user of its own (the control process gives them up after)
CAPS_IKE = ["NET_ADMIN", "NET_BIND_SERVICE", "SETUID", "SETGID"]
# podman on these machines: crun rejects the hybrid cgroup layout, and the default
# RLIMIT_NOFILE is above what the host allows (shared/notes/containers.md)
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
# one worker builds the image and runs every test that uses it (`pytest -n N --dist loadgroup`, tests/README.md)
pytestmark = pytest.mark.xdist_group("podman-image")


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (or found up to date in the layer cache) once."""
    assert shutil.which("podman"), "podman missing: bash scripts/install-deps.sh installs it"
    start = time.monotonic()
    r = subprocess.run(["bash", str(ROOT / "docker/build-image.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env={**os.environ, "IMAGE": IMAGE, "ENGINE": "podman"}, check=False)
    assert r.returncode == 0, f"image build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    print(f"\nimage {IMAGE} ready in {time.monotonic() - start:.1f} s")
    return IMAGE


class Container:
    """One tunsec container in a namespace of the topology."""

    def __init__(self, topo: TwoHosts, host: Host, conf_text: str, image: str, caps: list[str]) -> None:
        self.host = host
        self.name = f"tunsec-{self.host.ns}"
        self.conf = topo.workdir / f"{self.host.ns}.conf"
        self.conf.write_text(conf_text)
        self.conf.chmod(0o600)
        os.chown(self.conf, IMAGE_UID, IMAGE_UID)    # readable by the image's user only
        self.image = image
        self.caps = caps

    def run(self) -> None:
        r = podman("run", "--detach", "--name", self.name, *LIMITS,
                   "--network", f"ns:/run/netns/{self.host.ns}",
                   "--cap-drop", "ALL", *(f"--cap-add={c}" for c in self.caps),
                   "--device", "/dev/net/tun", "--read-only", "--security-opt", "no-new-privileges",
                   "--volume", f"{self.conf}:/etc/tunsec/tunsec.conf:ro",
                   "--health-interval", "disable",      # no systemd timers here; run by hand below
                   self.image)
        assert r.returncode == 0, f"podman run {self.name}: {r.stderr}"

    def state(self) -> dict[str, Any]:
        r = podman("inspect", "--format", "{{json .State}}", self.name)
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def logs(self) -> str:
        r = podman("logs", self.name)
        return (r.stdout + r.stderr)[-4000:]

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, timeout=30)

    def status(self) -> dict[str, Any] | None:
        r = self.exec("tunsec", "status", "-c", "/etc/tunsec/tunsec.conf", "--json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def established(self) -> list[dict[str, Any]]:
        doc = self.status()
        sas = doc["ike_sas"] if doc else []
        return [sa for sa in sas if sa["state"] == "established" and sa["children"]]

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", "--time", "2", self.name)


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False, prefix="tc") as t:
        yield t


def example_conf(site: str, psk: str) -> str:
    """docker/examples/site-X.conf with its placeholder secret replaced."""
    text = (ROOT / f"docker/examples/site-{site}.conf").read_text()
    placeholder = re.search(r'secret = "(CHANGE-ME[^"]*)"', text)
    assert placeholder, "the example's secret line changed"
    return text.replace(placeholder.group(1), psk)


@pytest.fixture
def pair(topo: TwoHosts, image: str) -> Iterator[tuple[Container, Container]]:
    psk = secrets.token_urlsafe(32)
    a = Container(topo, topo.a, example_conf("a", psk), image, CAPS_IKE)
    b = Container(topo, topo.b, example_conf("b", psk), image, CAPS_IKE)
    try:
        yield a, b
    finally:
        for c in (a, b):
            c.remove()      # before the namespaces go


def test_two_containers_ike_traffic_status_and_clean_stop(topo: TwoHosts, pair: tuple[Container, Container]) -> None:
    a, b = pair
    b.run()     # the responder first and ready, so the initiator's first IKE_SA_INIT finds it
    # "tunsec up" (what READY=1 means under systemd) comes after IKE has inbound SPIs to hand out
    assert wait_until(lambda: "tunsec up:" in b.logs(), 30), f"{b.name} did not start:\n{b.logs()}"
    a.run()
    for c in (a, b):
        assert wait_until(lambda c=c: bool(c.established()), 30), f"{c.name}: no IKE SA:\n{c.logs()}"  # type: ignore[misc]

    # the SA as `tunsec status` inside each container shows it: one IKE SA, its child's SPIs crossed
    (sa_a,), (sa_b,) = a.established(), b.established()
    assert (sa_a["initiator"], sa_b["initiator"]) == (True, False)
    assert (sa_a["spi_i"], sa_a["spi_r"]) == (sa_b["spi_i"], sa_b["spi_r"])
    (ch_a,), (ch_b,) = sa_a["children"], sa_b["children"]
    assert (ch_a["spi_in"], ch_a["spi_out"]) == (ch_b["spi_out"], ch_b["spi_in"])

    ping_both_ways(topo)
    # the image's HEALTHCHECK (tunsec status as the image's user) passes
    hc = podman("healthcheck", "run", a.name, timeout=30)
    assert hc.returncode == 0, f"healthcheck: {hc.stdout} {hc.stderr}"
    # not root inside, and nothing but the granted capabilities (CapBnd): what --cap-drop ALL left
    st = a.exec("cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in st.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[1] == str(IMAGE_UID)
    # CAP_NET_ADMIN | CAP_NET_BIND_SERVICE | CAP_SETUID | CAP_SETGID
    assert int(fields["CapBnd"], 16) == (1 << 12) | (1 << 10) | (1 << 7) | (1 << 6)
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapAmb"], 16) == 0   # given up once set up
    # the worker runs as the image's other user, which may not read the configuration
    status = a.status()
    assert status is not None
    worker = a.exec("cat", f"/proc/{status['worker']['pid']}/status").stdout
    wfields = dict(line.split(":\t", 1) for line in worker.splitlines() if ":\t" in line)
    assert wfields["Uid"].split() == [str(WORKER_UID)] * 4 and int(wfields["CapEff"], 16) == 0
    assert "Permission denied" in podman("exec", "--user", str(WORKER_UID), a.name, "cat",
                                         "/etc/tunsec/tunsec.conf").stderr

    for c in (a, b):
        r = podman("stop", "--time", "10", c.name, timeout=30)
        assert r.returncode == 0, f"podman stop {c.name}: {r.stderr}"
        state = c.state()
        # 0, not 137 (SIGKILL after the timeout) or 1: tunsec shut down on SIGTERM as PID 1
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), c.logs()
        assert "tunsec stopped" in c.logs()


def test_ike_on_port_500_needs_net_bind_service(topo: TwoHosts, image: str) -> None:
    """NET_BIND_SERVICE is needed, not just granted: without it the bind to UDP 500 fails, and says so."""
    c = Container(topo, topo.a, example_conf("a", secrets.token_urlsafe(32)), image, ["NET_ADMIN"])
    try:
        c.run()
        assert wait_until(lambda: c.state()["Status"] == "exited", 30), c.logs()
        assert c.state()["ExitCode"] == 1
        assert "cannot start" in c.logs() and "Permission denied" in c.logs(), c.logs()
    finally:
        c.remove()


def test_review_revcontainer_image_has_no_setuid_or_setgid_files(image: str) -> None:
    """Review revcontainer F4: nothing in the image raises privilege on exec.  tunsec runs no program
    (updown scripts are the operator's own, run as the service user), yet the Debian base brings su,
    mount, umount, passwd, chsh, chfn, newgrp, gpasswd, chage, expiry (setuid root) and unix_chkpwd
    (setgid shadow).  The documented `podman run` and compose file set no-new-privileges, which makes
    them inert; a deployment without it (Kubernetes' allowPrivilegeEscalation defaults to true, a
    `docker run` written by hand) hands a control process taken over from the network (uid 990)
    a way to root in the container: uid 0 with the bounding set the container was given."""
    r = podman("run", "--rm", *LIMITS, "--network", "none", "--user", "0", "--entrypoint", "find", image,
               "/", "-xdev", "-type", "f", "-perm", "/6000")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [], f"setuid/setgid files in {image}: {r.stdout.split()}"
