"""Evaluation metrics (torchmetrics), accumulated over an epoch and logged at its end.

Classification: balanced accuracy (macro-averaged recall), Cohen's kappa, weighted F1, macro
AUROC. Regression: Pearson r and R², averaged over outputs. Retrieval for alignment lives in
`objectives.topk_retrieval_accuracy`.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCohenKappa,
    MulticlassF1Score,
)
from torchmetrics.regression import PearsonCorrCoef, R2Score

from neurotrain.models.metric_names import CLASSIFICATION_METRICS


def classification_metrics(num_classes: int, prefix: str = "") -> MetricCollection:
    """Update with (probabilities [N, K], labels [N]); keys ``{prefix}balanced_accuracy`` etc."""
    metrics = {
        "balanced_accuracy": MulticlassAccuracy(num_classes, average="macro"),
        "kappa": MulticlassCohenKappa(num_classes),
        "f1_weighted": MulticlassF1Score(num_classes, average="weighted"),
        "auroc": MulticlassAUROC(num_classes, average="macro"),
    }
    return MetricCollection(
        {k: metrics[k] for k in CLASSIFICATION_METRICS}, prefix=prefix, compute_groups=False
    )


def regression_metrics(num_outputs: int = 1, prefix: str = "") -> MetricCollection:
    """Update with (prediction, target), both [N] for one output or [N, K]; keys ``pearson_r``, ``r2``."""
    return MetricCollection(
        {"pearson_r": PearsonCorrCoef(num_outputs=num_outputs), "r2": R2Score(multioutput="uniform_average")},
        prefix=prefix,
    )


def log_metrics(module: pl.LightningModule, metrics: MetricCollection) -> None:
    """Compute, log (each value averaged over outputs) and reset; silent when nothing was updated.

    A validation epoch without labelled samples (e.g. a sanity check on unlabelled data) would
    otherwise make torchmetrics compute on empty state and warn or fail.
    """
    if not any(metric.update_count for metric in metrics.values()):
        return
    module.log_dict({name: value.float().mean() for name, value in metrics.compute().items()})
    metrics.reset()


def update_classification(metrics: Any, logits: Tensor, labels: Tensor) -> None:
    """Update classification ``metrics`` with the labelled rows (label -1 = none): logits [B, K]."""
    labelled = labels >= 0
    if labelled.any():
        metrics.update(logits[labelled].softmax(dim=-1), labels[labelled])


def update_regression(metrics: Any, prediction: Tensor, labels: Tensor) -> None:
    """Update regression ``metrics`` with the complete rows (NaN = missing): prediction [B, K]."""
    target = labels.float().reshape(prediction.shape)  # [B, K]
    complete = torch.isfinite(target).all(dim=1)  # [B]
    if complete.any():
        squeeze = prediction.shape[1] == 1  # torchmetrics wants [N] for one output
        pred, tgt = prediction[complete], target[complete]
        metrics.update(pred.squeeze(1) if squeeze else pred, tgt.squeeze(1) if squeeze else tgt)
