"""The run folder, ``<root>/<run_name>/``: its file names and the record ``summary.json``.

Readable without Lightning or W&B, so the dashboard, sweeps and chained commands read runs cheaply:

    config.yaml     the resolved config (LightningCLI writes it)
    metrics.csv     every logged value (`csv_logger.RunCSVLogger`)
    summary.json    status, timing, best/final monitored metric, provenance (`run_record.RunRecord`)
    media/          figures made at validation
    checkpoints/    best-k and last.ckpt
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neurotrain.datamodules.io.files import atomic_write_json

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
MEDIA_DIR = "media"
MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")


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
