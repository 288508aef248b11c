"""Worker processes of ``neurotrain shard --workers N`` end when the run that started them dies.

A ``ProcessPoolExecutor`` worker whose parent is killed outright (SIGKILL of the main process,
not of its process group) would otherwise go on taking the recordings already queued to it,
write their shards after the run is gone, and then wait forever on a queue nobody feeds. So the
pool's initializer (`init_worker`) makes each worker end with its parent:

* on Linux the kernel sends it SIGTERM when the parent dies (``PR_SET_PDEATHSIG`` through
  ``prctl``); the handler removes the temporary folder of the recording being written and exits;
* elsewhere a watchdog thread checks the parent every second and exits when it is gone;
* and before each recording `exit_if_orphaned` checks again, so a recording already queued to
  a worker is never started for a dead run.

The temporary folders of a worker killed before it could clean up are removed by the next run
(``writer.remove_dead_temp``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

from neurotrain.datamodules.io.processes import pid_alive, signal_on_parent_death
from neurotrain.datamodules.sharding.writer import remove_own_temp

ORPHANED_EXIT = 3  # exit status of a worker that ended because its run had died
_parent: int | None = None  # the pid of the run that started this worker (None: not a worker)


def init_worker(parent: int) -> None:
    """Pool initializer: end this worker when ``parent`` (the main ``shard`` process) dies."""
    global _parent
    _parent = parent
    signal.signal(signal.SIGTERM, _on_parent_death)
    if not signal_on_parent_death(signal.SIGTERM):
        threading.Thread(target=_watch_parent, name="shard-parent-watch", daemon=True).start()
    exit_if_orphaned()  # the parent died before the signal was armed


def parent_gone() -> bool:
    """True in a worker whose run has died (it was re-parented, or the parent pid no longer runs)."""
    return _parent is not None and (os.getppid() != _parent or not pid_alive(_parent))


def exit_if_orphaned() -> None:
    """In a worker of a dead run: remove what it is writing and exit at once (no result to send)."""
    if parent_gone():
        remove_own_temp()
        os._exit(ORPHANED_EXIT)


def _on_parent_death(signum: int, frame: FrameType | None) -> None:
    # Runs in the worker's main thread between two bytecodes: the writer is not mid-call, so its
    # temporary folder can go. SIGTERM from anyone else (a user, a job scheduler) ends it the same way.
    remove_own_temp()
    os._exit(ORPHANED_EXIT)


def _watch_parent() -> None:
    while True:
        time.sleep(1.0)
        if parent_gone():
            os._exit(ORPHANED_EXIT)  # another thread may be writing: its folder is the next run's to remove
