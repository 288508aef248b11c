"""Classical baselines on the same epochs as the models: synthetic checks and the real face/house figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurotrain.train.evaluation.baselines import (
    classification_scores,
    collect_epochs,
    cross_validate,
    fit_and_score,
)

FACE_HOUSE = {"face-upright": 0, "face-inverted": 0, "house-upright": 1, "house-inverted": 1}


def synthetic_erp(n: int = 200, channels: int = 8, times: int = 64, seed: int = 0):
    """Class 1 carries a spatially structured bump at mid-epoch, buried in noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, channels, times))
    bump = np.exp(-0.5 * ((np.arange(times) - times / 2) / 4) ** 2)
    pattern = rng.standard_normal(channels)
    x += 0.8 * y[:, None, None] * pattern[None, :, None] * bump[None, None, :]
    return x.astype(np.float32), y


@pytest.mark.parametrize("name", ["logreg", "xdawn_ts"])
def test_baselines_decode_a_synthetic_erp(name: str) -> None:
    x, y = synthetic_erp()
    scores = fit_and_score(name, x[:150], y[:150], x[150:], y[150:])
    assert scores["balanced_accuracy"] > 0.85 and scores["auroc"] > 0.9
    shuffled = fit_and_score(name, x[:150], np.random.default_rng(1).permutation(y[:150]), x[150:], y[150:])
    assert shuffled["balanced_accuracy"] < 0.7  # no signal, no score


def test_scores_of_known_predictions() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    s = classification_scores(y, proba)
    assert s["balanced_accuracy"] == 0.75 and s["auroc"] == 1.0 and s["kappa"] == pytest.approx(0.5)


def test_within_subject_face_vs_house_matches_the_reference_figures(eeg_shards: Path) -> None:
    """DATA.md (measured before any code): logistic regression 0.87, XDAWN + tangent space 0.94 on s02."""
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

    dm = ShardDataModule(
        datasets=[str(eeg_shards)], mode="epochs", tmin=0.0, tmax=0.75, label_map=FACE_HOUSE, batch_size=64
    )
    dm.setup("fit")
    x, y, subjects = collect_epochs(dm.val_dataloader())
    assert set(subjects) == {"s02"} and len(y) > 700 and abs(np.mean(y) - 0.5) < 0.05
    x = x[:, :, ::2]  # 128 Hz, as the reference figures
    logreg = np.mean([f["balanced_accuracy"] for f in cross_validate("logreg", x, y)])
    xdawn = np.mean([f["balanced_accuracy"] for f in cross_validate("xdawn_ts", x, y)])
    assert logreg > 0.82 and xdawn > 0.88, (logreg, xdawn)
