"""The run folder, ``<root>/<run_name>/``: its file names and the record ``summary.json``.

Readable without Lightning or W&B, so the dashboard, sweeps and chained commands read runs cheaply:

    config.yaml     the resolved config (LightningCLI writes it)
    metrics.csv     every logged value (`csv_logger.RunCSVLogger`)
    summary.json    status, timing, best/final monitored metric, provenance (`run_record.RunRecord`)
    media/          figures made at validation
    checkpoints/    best-k and last.ckpt
    .run.lock       held by the live process of the run (`run_lock.RunLock`); .run.owner.json says who
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from neurotrain.datamodules.io.files import atomic_write_json

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
METRICS_ASIDE_FILE = ".metrics.csv.resume"  # metrics.csv moved aside while a resume reopens it
CONFIG_FILE = "config.yaml"
MEDIA_DIR = "media"
MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"  # a file, or a DeepSpeed checkpoint folder
LAST_CHECKPOINT = re.compile(r"^last(-v?\d+)?\.ckpt$")  # Lightning's last.ckpt and its versions
LOCK_FILE = ".run.lock"
OWNER_FILE = ".run.owner.json"


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked: in use by a live run, or holding one already."""


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` atomically, keys in the order the record builds them."""
    atomic_write_json(Path(run_dir) / SUMMARY_FILE, summary, sort_keys=False, indent=2, default=str)


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of a run folder, or None when absent or unreadable (a run that never got far)."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def checkpoint_files(run_dir: str | Path) -> list[Path]:
    """The checkpoints in ``<run_dir>/checkpoints`` (files or DeepSpeed folders), newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    try:
        found = [p for p in folder.iterdir() if p.suffix == CHECKPOINT_SUFFIX]
    except OSError:
        return []
    return sorted(found, key=_mtime, reverse=True)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` of the run folder (what ``--ckpt_path last`` resumes), or None."""
    return next((p for p in checkpoint_files(run_dir) if LAST_CHECKPOINT.match(p.name)), None)


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a run continues from: its ``last.ckpt``, else its newest checkpoint, else None."""
    return last_checkpoint(run_dir) or next(iter(checkpoint_files(run_dir)), None)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
