"""Whether a process still runs: the one liveness check for run records, sweeps and shard workers."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` runs on this host (also when another user owns it).

    A zombie (exited, not yet reaped by its parent) is not alive: a process killed a moment ago
    stays one until its parent waits for it, and its work is over.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """The process state ``Z`` in ``/proc/<pid>/stat`` (Linux); False where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")"
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
