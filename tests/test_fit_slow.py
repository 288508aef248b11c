"""Long end-to-end runs on the real example EEG (`pytest -m slow`): pretraining learns, fine-tuning decodes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from test_fit import fit_args

from neurotrain.train.evaluation.statistics import FoldPredictions, chance_level, score_interval
from neurotrain.train.run.lightning_cli import build_cli
from neurotrain.train.run.predictions import read_predictions

pytestmark = pytest.mark.slow


def metric_rows(run: Path, key: str) -> list[tuple[int, float]]:
    with open(run / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_pretraining_lowers_the_loss_and_the_final_finetune_is_above_chance(
    eeg_shards: Path, tmp_path: Path
) -> None:
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
    assert cli.trainer.checkpoint_callback.best_model_score is not None
    # Scored as evaluate scores: the final epoch (no pick of the best epoch on held-out data), on
    # the validation subject, whose trials never reach training; above chance only when the
    # bootstrap interval of its per-epoch predictions excludes the chance level.
    held_out = read_predictions(tmp_path / "ft")
    assert held_out is not None and held_out["epoch"] == 7
    preds = [FoldPredictions(0, 0, tuple(held_out["sample_ids"]), held_out["y_true"], held_out["y_pred"])]
    score, chance = score_interval(preds), chance_level(held_out["y_true"])
    final = metric_rows(tmp_path / "ft", "val/balanced_accuracy")[-1][1]
    assert score.estimate == pytest.approx(final, abs=1e-6)
    assert score.low > chance, f"final-epoch balanced accuracy {score} is not above chance {chance}"
