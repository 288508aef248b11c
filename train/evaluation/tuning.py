"""Nested selection of a model's settings: a grid tried on the inner split, never on the scored fold.

``neurotrain evaluate --tune`` carves an inner split out of each outer fold's training part
(`folds.inner_fold`: whole training subjects held out for cross-subject folds, a stratified
share of each class and subject otherwise). Every combination of the grid is fitted on the
inner-train part and validated on the inner-validation part after every epoch; the combination
and epoch count with the best inner balanced accuracy are chosen (ties: the earlier
combination, then fewer epochs), and the outer fit is run once with them. The outer fold's
scored epochs are read by none of this: they are not in the inner selection, and only the
inner runs' ``metrics.csv`` is read.

The grid is a mapping of dotted config keys to values (a YAML file given with ``--tune_grid``)::

    model.init_args.optimizer.lr: [3.0e-4, 1.0e-3, 3.0e-3]
    model.init_args.dropout: [0.0, 0.1]

Without one the learning rate is tried at a third, once and three times the config's value.
The epoch count is always chosen (1 … ``trainer.max_epochs``), so early stopping is part of the
selection too. Note: the outer fit's learning-rate schedule spans the chosen epochs, the inner
run's spanned ``max_epochs``; the chosen count is where the inner run validated best.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neurotrain.train.tracking.run_folder import METRICS_FILE

LR_KEY = "model.init_args.optimizer.lr"
EPOCHS_KEY = "trainer.max_epochs"
SCORE = "balanced_accuracy"


class TuneError(ValueError):
    """The grid does not apply to the config (unknown key, empty list)."""


@dataclass
class Tuned:
    """What one outer fold's tuning tried and chose (JSON-able with `as_dict`)."""

    chosen: dict[str, Any]
    table: list[dict[str, Any]] = field(default_factory=list)  # every (combination, epoch) and its score

    def as_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "table": self.table}


def load_grid(path: str | Path | None, config: Any) -> dict[str, list[Any]]:
    """The grid of ``path`` (YAML mapping), or the default learning-rate grid; keys checked.

    ``config`` is the fold config (a jsonargparse Namespace); every key must exist in it.
    """
    if path is None:
        lr = config.get(LR_KEY) if has_key(config, LR_KEY) else None
        if lr is None:
            return {}
        lr = float(lr)
        return {LR_KEY: [lr / 3, lr, lr * 3]}
    try:
        grid = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TuneError(f"{path}: cannot read the grid: {exc}") from exc
    if not isinstance(grid, dict) or not grid:
        raise TuneError(f"{path}: a grid is a mapping of config keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise TuneError(f"{path}: {key} needs a non-empty list of values")
        if key == EPOCHS_KEY:
            raise TuneError(f"{path}: {EPOCHS_KEY} is chosen per epoch from the inner runs; leave it out")
        if not has_key(config, key):
            raise TuneError(f"{path}: {key} is not a key of the config")
    return {str(k): list(v) for k, v in grid.items()}


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, in grid order (the first key varies slowest)."""
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def inner_scores(run: Path) -> list[tuple[int, float]]:
    """``(epochs trained, inner-validation balanced accuracy)`` of every epoch-end validation."""
    with open(run / METRICS_FILE) as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"val/{SCORE}") and r.get("epoch") not in (None, "")]
    if not rows:
        raise RuntimeError(f"{run}: no validation metrics were logged")
    return [(int(float(r["epoch"])) + 1, float(r[f"val/{SCORE}"])) for r in rows]


def choose(tried: list[tuple[dict[str, Any], list[tuple[int, float]]]]) -> Tuned:
    """The best (combination, epochs) of the inner runs; ties go to the earlier one, then fewer epochs."""
    table = [
        {"params": params, "epochs": epochs, SCORE: score}
        for params, scores in tried
        for epochs, score in scores
    ]
    if not table:
        raise RuntimeError("the inner runs gave no validation scores")
    best = max(enumerate(table), key=lambda it: (it[1][SCORE], -it[0]))[1]
    return Tuned(chosen={**best["params"], EPOCHS_KEY: best["epochs"]}, table=table)


def has_key(config: Any, key: str) -> bool:
    """Whether the (jsonargparse) config holds the dotted ``key``."""
    try:
        config[key]
    except (KeyError, AttributeError):
        return False
    return True
