"""One live run per run folder: a lock held for the whole run, and what a new run finds there.

    lock, resume = claim_run_folder(run_dir, fit=True, ckpt_path=cfg.ckpt_path)   # global rank zero
    try:
        ...                                   # the run
    finally:
        lock.release()

The lock is ``filelock.FileLock(<run_dir>/.run.lock)`` (``flock``), taken without waiting by the
process of global rank zero before it writes anything into the folder and held until the run
ends; the kernel drops it when that process dies, even by SIGKILL, so a dead run never blocks
its folder. Beside it, ``.run.owner.json`` records the holder (pid, host, start time, command)
for the refusal message; it is removed on release and overwritten by the next holder.

What a ``fit`` finds in the folder decides how it starts (`claim_run_folder`):

- a live run (the lock is held): refused, naming its pid, host and start time;
- ``--ckpt_path last`` (or a path) and a checkpoint to continue from: the run resumes, keeping
  ``metrics.csv``, ``summary.json`` and the W&B run;
- no ``--ckpt_path`` (or ``last`` with no ``last.ckpt``) and checkpoints in ``checkpoints/`` (a
  finished, crashed or killed run): **refused**, with a message telling to pass ``--ckpt_path
  last`` (or the newest checkpoint) or to choose another ``--run_name``; nothing is overwritten;
- no ``--ckpt_path`` and a record without any checkpoint (a run that died before its first
  checkpoint): **started over with a warning**: its ``metrics.csv``, ``summary.json`` and
  ``media/`` are removed (its W&B files stay under ``wandb/``, a separate W&B run);
- an empty or new folder: the run starts.

``validate``, ``test`` and ``predict`` take the lock too (one live process per folder) but
keep their folder as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

from neurotrain.datamodules.io.files import atomic_write_json
from neurotrain.train.tracking.run_folder import (
    LOCK_FILE,
    MEDIA_DIR,
    METRICS_ASIDE_FILE,
    METRICS_FILE,
    OWNER_FILE,
    SUMMARY_FILE,
    RunFolderError,
    checkpoint_files,
    last_checkpoint,
    read_summary,
)


class RunFolderBusy(RunFolderError):
    """The run folder's lock is held: another process runs in it now."""


class RunLock:
    """The lock of one run folder, held by this process from `acquire` to `release`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / LOCK_FILE), timeout=0, thread_local=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self, command: str | None = None) -> RunLock:
        """Take the lock now (creating the folder) or raise `RunFolderBusy` naming the holder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunFolderBusy(busy_message(self.run_dir)) from None
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command or " ".join(sys.argv)[:500],
        }
        try:
            atomic_write_json(self.run_dir / OWNER_FILE, owner, indent=2)
        except OSError as exc:  # the lock is what matters; the record only names the holder
            rank_zero_warn(f"could not write {self.run_dir / OWNER_FILE}: {exc}")
        return self

    def release(self) -> None:
        """Give the lock back (a no-op when not held) and remove this process's owner record."""
        if not self.held:
            return
        owner = read_owner(self.run_dir) or {}
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            (self.run_dir / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release(force=True)


def read_owner(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``.run.owner.json`` of a run folder (who holds or last held its lock), or None."""
    try:
        return json.loads((Path(run_dir) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None


def busy_message(run_dir: Path) -> str:
    owner = read_owner(run_dir)
    if not owner:
        who = "another process (its owner record is not written yet)"
    else:
        who = (
            f"a running process: pid {owner.get('pid')} on host {owner.get('host')}, "
            f"started {owner.get('started')}"
        )
        if owner.get("command"):
            who += f" ({owner['command']})"
    return f"run folder {run_dir} is in use by {who}; wait for it to end or choose another --run_name"


def claim_run_folder(
    run_dir: str | Path, *, fit: bool, ckpt_path: str | None, command: str | None = None
) -> tuple[RunLock, bool]:
    """Lock ``run_dir`` for this run and decide how it starts (the module docstring's rules).

    Returns the held lock and ``resume``: whether the run continues the folder's record
    (``metrics.csv``, ``summary.json``, W&B run). Raises `RunFolderBusy` when a live run holds the
    folder, and `RunFolderError` when a ``fit`` without a checkpoint to continue from would
    overwrite one that has checkpoints; the lock is released before either is raised.
    """
    run_dir = Path(run_dir)
    lock = RunLock(run_dir).acquire(command)
    try:
        resume = _decide(run_dir, fit=fit, ckpt_path=ckpt_path)
    except BaseException:
        lock.release()
        raise
    return lock, resume


def _decide(run_dir: Path, *, fit: bool, ckpt_path: str | None) -> bool:
    if not fit:
        return bool(ckpt_path)
    if ckpt_path and (str(ckpt_path) != "last" or last_checkpoint(run_dir)):
        return True  # a path (or hpc, registry): Lightning loads it; the record continues
    checkpoints = checkpoint_files(run_dir)
    if checkpoints:
        raise RunFolderError(refusal_message(run_dir, checkpoints))
    if any((run_dir / name).exists() for name in (SUMMARY_FILE, METRICS_FILE, METRICS_ASIDE_FILE)):
        _start_over(run_dir)
    return False


def refusal_message(run_dir: Path, checkpoints: list[Path]) -> str:
    summary = read_summary(run_dir) or {}
    status = summary.get("status") or "unknown"
    if status == "running":  # its lock was free: the process is gone
        status = "killed"
    step = summary.get("global_step")
    held = f"{status}{f', step {step}' if step is not None else ''}, {len(checkpoints)} checkpoint(s)"
    last = last_checkpoint(run_dir)
    resume = "--ckpt_path last" if last else f"--ckpt_path {checkpoints[0]}"
    return (
        f"run folder {run_dir} already holds a run ({held}); continue it with {resume}, "
        "or choose another --run_name"
    )


def _start_over(run_dir: Path) -> None:
    summary = read_summary(run_dir) or {}
    rank_zero_warn(
        f"run folder {run_dir} holds a run without any checkpoint (status "
        f"{summary.get('status') or 'unknown'}, started {summary.get('started') or 'unknown'}); it is "
        f"started over: its {METRICS_FILE}, {SUMMARY_FILE} and {MEDIA_DIR}/ are removed"
    )
    for name in (METRICS_FILE, SUMMARY_FILE, METRICS_ASIDE_FILE):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / MEDIA_DIR, ignore_errors=True)
