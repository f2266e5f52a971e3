"""The processes descended from one, found through /proc/PID/task/TID/children (Linux 3.5+,
CONFIG_PROC_CHILDREN), whatever their session or process group.

A script killed at its timeout goes with its process group (scriptrun.kill_group), but a child it
put in a session of its own (``setsid``, a tool that daemonizes) is in none of it (review
revupdown2 F4): its pid is read here before the kill, while it is still the script's descendant
(once its parent dies it belongs to the init, and nothing names it as the script's any more).
A double-forked daemon whose middle process exited already is out of reach: it was the init's
before the kill; scripts are told to start nothing that must not outlive them (configuration.md).
"""

from __future__ import annotations

import os

# how many descendants one walk reads at most: a script that forks without end costs a bounded walk
MAX_DESCENDANTS = 1024


def descendants(pid: int, limit: int = MAX_DESCENDANTS) -> list[int]:
    """``pid``'s descendants, parents before their children, at most ``limit``; [] where /proc does
    not say (a kernel without CONFIG_PROC_CHILDREN, a process gone)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < limit:
        for kid in _children(todo.pop(0)):
            if len(found) < limit and kid not in found:
                found.append(kid)
                todo.append(kid)
    return found


def _children(pid: int) -> list[int]:
    """The children of each of ``pid``'s threads (each thread's own: a process's are their union)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except (OSError, ValueError):   # the thread ended meanwhile
            continue
    return out
