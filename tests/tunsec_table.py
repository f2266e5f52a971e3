"""tunsec's routing table (dataplane/routetable.py), where its routes are, as the tests read it."""

from __future__ import annotations

import subprocess

from tunsec.dataplane.routetable import TABLE


def show(family: str = "-4", *args: str, ns: str | None = None) -> str:
    """`ip [-n ns] FAMILY route show table 116 ARGS`; "" where the family's table holds no route and never did
    (ip says that the table does not exist)."""
    where = ["-n", ns] if ns else []
    argv = ["ip", *where, family, "route", "show", "table", str(TABLE), *args]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode and "table does not exist" not in r.stderr:
        raise subprocess.CalledProcessError(r.returncode, argv, r.stdout, r.stderr)
    return r.stdout


def proto_routes(ns: str) -> str:
    """tunsec's routes (its proto, 116) in every table, both families, as ip prints them, one a line, each
    starting with its destination (a throw route's "throw " left out: an exclude route, exclude.py)."""
    out = ""
    for family in ("-4", "-6"):
        argv = ["ip", "-n", ns, family, "route", "show", "table", "all", "proto", "116"]
        out += subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return "".join(ln.removeprefix("throw ") + "\n" for ln in out.splitlines())
