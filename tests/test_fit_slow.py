"""Long end-to-end runs on the real example EEG (`pytest -m slow`): pretraining learns, fine-tuning decodes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from test_fit import fit_args

from neurotrain.train.run.lightning_cli import build_cli

pytestmark = pytest.mark.slow


def metric_rows(run: Path, key: str) -> list[tuple[int, float]]:
    with open(run / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_pretraining_lowers_the_loss_and_finetuning_beats_chance(eeg_shards: Path, tmp_path: Path) -> None:
    pre = fit_args(
        "eeg_pretrain",
        eeg_shards,
        tmp_path,
        "pre",
        "--trainer.max_steps=300",
        "--trainer.max_epochs=50",
        "--trainer.log_every_n_steps=1",
        "--trainer.limit_val_batches=5",
    )
    build_cli(pre)
    losses = [v for _, v in metric_rows(tmp_path / "pre", "train/loss")]
    first, last = losses[0], float(np.median(losses[-30:]))  # median: robust to an outlier batch
    assert last < 0.8 * first, f"masked-reconstruction loss went from {first:.3f} to {last:.3f}"
    # on the held-out subject too: clearly below where it started (0.83 -> ~0.65 measured)
    val = [v for _, v in metric_rows(tmp_path / "pre", "val/loss")]
    assert val[-1] < 0.9 * val[0], f"validation loss did not fall clearly: {val}"

    ft = fit_args(
        "eeg_finetune",
        eeg_shards,
        tmp_path,
        "ft",
        "--trainer.max_epochs=8",
        "--trainer.log_every_n_steps=10",
        f"--model.init_from={tmp_path / 'pre' / 'checkpoints' / 'last.ckpt'}",
    )
    cli = build_cli(ft)
    # held-out data: the validation subject, whose trials never reach training
    auroc = [v for _, v in metric_rows(tmp_path / "ft", "val/auroc")]
    bal = [v for _, v in metric_rows(tmp_path / "ft", "val/balanced_accuracy")]
    assert max(auroc) > 0.55 and max(bal) > 0.53, f"held-out AUROC {auroc}, balanced accuracy {bal}"
    assert cli.trainer.checkpoint_callback.best_model_score is not None
