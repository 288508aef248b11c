"""What a score needs next to it to be read: the held-out set's size and the score of chance.

A classifier's fit writes the labels of its last validation to ``<run>/predictions/val-rank<R>.json``
(`neurotrain.train.run.predictions`, one file per rank: ``{"epoch", "step", "sample_ids", "y_true",
"y_pred"}``); this module reads only their ``y_true`` (this layer does not import ``train.run``; the
folder name is the format's). From the class counts it gives the number of held-out epochs and the
chance level of a metric: what a classifier that ignores its input scores.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PREDICTIONS_GLOB = "predictions/val-rank*.json"


@dataclass(frozen=True)
class HeldOut:
    """The labels a run was last validated on: ``n`` epochs, ``counts`` per class."""

    n: int
    counts: dict[str, int]


def read_held_out(run_dir: Path) -> HeldOut | None:
    """The held-out labels of a run's last validation (all ranks), or None when it wrote none.

    Regression targets (float labels) have no classes: None. An unreadable file is skipped.
    """
    counts: Counter[str] = Counter()
    for path in sorted(run_dir.glob(PREDICTIONS_GLOB)):
        try:
            labels = json.loads(path.read_text()).get("y_true") or []
        except (OSError, ValueError, AttributeError):
            continue
        if any(isinstance(y, float) for y in labels):  # a regressor's targets
            return None
        counts.update(str(int(y)) for y in labels)
    n = sum(counts.values())
    return HeldOut(n, dict(sorted(counts.items()))) if n else None


def chance_level(metric: str, held_out: HeldOut | None) -> float | None:
    """The score of a constant/uninformed classifier on ``held_out`` for ``metric``, None if unknown.

    Balanced accuracy: 1 / classes present; accuracy: the majority class's share (as
    `neurotrain.train.evaluation.statistics.chance_level`); AUROC: 0.5; Cohen's kappa: 0.
    """
    if held_out is None or not held_out.counts:
        return None
    name = metric.rsplit("/", 1)[-1].lower()
    if "bal" in name and "acc" in name:
        return 1.0 / len(held_out.counts)
    if name in ("acc", "accuracy") or name.endswith("_acc"):
        return max(held_out.counts.values()) / held_out.n
    if "auroc" in name or name == "auc":
        return 0.5
    if "kappa" in name:
        return 0.0
    if name in ("loss", "cross_entropy", "nll"):  # cross-entropy of predicting the class shares
        return -sum(c / held_out.n * math.log(c / held_out.n) for c in held_out.counts.values())
    return None
