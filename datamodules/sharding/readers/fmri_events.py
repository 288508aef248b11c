"""The BIDS ``events.tsv`` of an fMRI run: its blocks or trials as the sample's events.

``sub-01_task-x_run-1_bold.nii.gz`` has its events in ``sub-01_task-x_run-1_events.tsv`` beside
it. Each row with an ``onset`` becomes ``{"onset": s, "duration": s, "label": trial_type}``
(the format the EEG path writes, onsets in seconds from the run's start), so ``mode: epochs``
with a ``label_map`` cuts labelled windows around fMRI blocks as it does around EEG events.
The label is ``trial_type``, else ``value``; rows without one (``n/a``) and rows outside the run
are left out (and counted in the warning). A table that cannot be read is a `ShardError` naming
it: an events file that is silently dropped would leave a labelled dataset unlabelled.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from neurotrain.datamodules.sharding.options import ShardError

log = logging.getLogger(__name__)


def events_path(run: Path) -> Path | None:
    """The ``*_events.tsv`` beside a ``*_bold`` run, or None."""
    stem = re.split(r"_(?:space|desc|res|den)-|_bold", run.name, maxsplit=1)[0]
    candidate = run.with_name(stem + "_events.tsv")
    return candidate if candidate.is_file() else None


def run_events(run: Path, duration_s: float) -> list[dict[str, Any]]:
    """The run's events, sorted by onset; [] without an events table."""
    import pandas as pd

    path = events_path(run)
    if path is None:
        return []
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], dtype={"trial_type": str, "value": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ShardError(str(run), f"cannot read its events table {path}: {exc}") from exc
    if "onset" not in table.columns:
        raise ShardError(str(run), f"events table {path} has no onset column")
    column = "trial_type" if "trial_type" in table.columns else "value" if "value" in table.columns else None
    if column is None:
        log.warning("%s: no trial_type or value column; its events are not used", path)
        return []
    out, left_out = [], 0
    for onset, duration, label in zip(
        table["onset"], table.get("duration", [0.0] * len(table)), table[column], strict=True
    ):
        onset, duration = float(onset), float(duration) if duration == duration else 0.0
        if label != label or not math.isfinite(onset) or not 0.0 <= onset < duration_s:
            left_out += 1
            continue
        out.append({"onset": round(onset, 6), "duration": round(duration, 6), "label": str(label).strip()})
    if left_out:
        log.warning("%s: %d rows without a label or outside the run are left out", path, left_out)
    return sorted(out, key=lambda e: e["onset"])
