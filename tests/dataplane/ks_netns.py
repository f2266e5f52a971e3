"""What the kill switch's namespace tests share: a user with nothing (uid 65534, no capability), `ip` in
a namespace, and a device's TUN owner as the kernel shows it."""

from __future__ import annotations

import subprocess

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"]


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True).stdout


def owner(ns: str, device: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{device}/owner"],
                          capture_output=True, text=True).stdout.strip()
