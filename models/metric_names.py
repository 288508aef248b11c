"""Metric names and which way each goes, with no heavy import (the CLI and the dashboard read them).

Classification scores are those `metrics.classification_metrics` computes, the classical baselines
report and every results table lists, in this order. A metric is "lower is better" when its name
says it is a loss or an error; the best checkpoint, the dashboard and sweeps all decide so.
"""

from __future__ import annotations

from typing import Literal

# The classification scores every model run, baseline and results table reports, in this order.
CLASSIFICATION_METRICS = ("balanced_accuracy", "kappa", "f1_weighted", "auroc")
# Words that make a metric an error, where lower is better ("val/loss", "test/mse", "wer").
LOWER_IS_BETTER = ("loss", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "wer", "cer")


def metric_mode(name: str) -> Literal["min", "max"]:
    """``"min"`` for a metric whose name says it is an error or loss, else ``"max"``."""
    lowered = name.lower()
    return "min" if any(word in lowered for word in LOWER_IS_BETTER) else "max"
