"""Held-out predictions of a classifier (or a one-output regressor), as its last validation made them.

``evaluate`` compares methods on identical epochs (`train.evaluation.statistics`): that needs each
epoch's predicted class, not only the epoch's scores. `HeldOutPredictions` keeps what every
validation batch of a classifier predicts (the module's ``validation_step`` returns its logits as
``output``) and writes, at the end of each validation, the run folder's
``predictions/val-rank<R>.json``; the file of the last validation (the final epoch's, the scores
``evaluate`` reports) is the one left. `read_predictions` merges the ranks' files.

    {"epoch": 9, "step": 250, "sample_ids": [...], "y_true": [...], "y_pred": [...]}   # [N] each

A regressor's (float labels) ``y_true``/``y_pred`` are the target and predicted values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from neurotrain.datamodules.io.files import atomic_write_json

PREDICTIONS_DIR = "predictions"


class HeldOutPredictions(Callback):
    """Write each validation's labelled epochs: sample id, true and predicted class (per rank)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / PREDICTIONS_DIR
        self._rows: dict[str, list] = {}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = {"sample_ids": [], "y_true": [], "y_pred": []}

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not isinstance(outputs, dict) or "output" not in outputs:
            return
        if not isinstance(batch, dict) or "sample_id" not in batch or "labels" not in batch:
            return
        labels = batch["labels"].detach().cpu()
        if labels.ndim != 1:
            return
        output = outputs["output"].detach().float().cpu()
        if labels.is_floating_point():  # a regressor (continuous target): its predicted values
            if output.ndim != 2 or output.shape[1] != 1:
                return  # several outputs per window: not kept here
            keep = torch.isfinite(labels)
            predicted = output[:, 0]
        else:
            keep = labels >= 0
            predicted = output.argmax(dim=-1)
        self._rows["sample_ids"] += [
            str(s) for s, k in zip(batch["sample_id"], keep.tolist(), strict=True) if k
        ]
        self._rows["y_true"] += labels[keep].tolist()
        self._rows["y_pred"] += predicted[keep].tolist()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._rows.get("sample_ids"):
            return
        record = {"epoch": int(trainer.current_epoch), "step": int(trainer.global_step), **self._rows}
        atomic_write_json(self.folder / f"val-rank{trainer.global_rank}.json", record)


def read_predictions(run_dir: str | Path) -> dict[str, Any] | None:
    """The last validation's predictions of a run, all ranks merged (sorted by sample id); None if none."""
    files = sorted((Path(run_dir) / PREDICTIONS_DIR).glob("val-rank*.json"))
    if not files:
        return None
    parts = [json.loads(f.read_text()) for f in files]
    rows = sorted(
        (sid, t, p)
        for part in parts
        for sid, t, p in zip(part["sample_ids"], part["y_true"], part["y_pred"], strict=True)
    )
    return {
        "epoch": parts[0]["epoch"],
        "step": parts[0]["step"],
        "sample_ids": [r[0] for r in rows],
        "y_true": [r[1] for r in rows],
        "y_pred": [r[2] for r in rows],
    }
