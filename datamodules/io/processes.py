"""Processes: whether one still runs, and a child that ends with its parent.

The one liveness check (`pid_alive`) for run records, sweeps and shard workers, and the one way a
child asks the kernel to signal it when its parent dies (`signal_on_parent_death`), used by sweep
trials and shard workers.
"""

from __future__ import annotations

import os
import signal
import sys
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


def signal_on_parent_death(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies, even by SIGKILL.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); returns whether it is armed, so a caller elsewhere
    can watch the parent another way. Check the parent once more afterwards: it may have died
    before the call.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig)) == 0
    except (OSError, AttributeError):
        return False


_PR_SET_PDEATHSIG = 1
