"""Which process owns a running run, and whether that process still lives.

A run that is `running` when its owner has died was interrupted mid-step. The owner is recorded as
host, pid and the process start time, so a recycled pid is not mistaken for the original process.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) may contain spaces; fields after the last ')' are fixed
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def owner_alive(owner: str) -> bool:
    """False only when we can tell the owner is gone: same host, and the pid is dead or reused."""
    host, _, rest = owner.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    current = _start_ticks(int(pid_text))
    return bool(current) and current == ticks
