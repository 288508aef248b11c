"""``ShardDataModule(recenter="euclidean")``: each subject's windows whitened by its own reference
covariance, identical to what the evaluation's aligned baselines compute on the same epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.recentring import (
    SHRINKAGE,
    RecentringFit,
    apply_recentring,
    covariance_sum,
    recentring_from_mean,
)
from neurotrain.train.evaluation.alignment import euclidean_align
from neurotrain.train.evaluation.baselines import collect_labelled_epochs
from neurotrain.train.evaluation.inputs import fold_channels

LABELS = {"face-upright": 0, "face-inverted": 0, "house-upright": 1, "house-inverted": 1}


def _dm(eeg_shards: Path, recenter: str, **kw) -> ShardDataModule:
    manifest = json.loads((eeg_shards / "manifest.json").read_text())
    args = {
        "datasets": [str(eeg_shards)],
        "mode": "epochs",
        "tmin": 0.0,
        "tmax": 0.75,
        "label_map": LABELS,
        "channels": fold_channels([manifest], ["s01", "s02"], {})[::4],  # 30 good channels: faster
        "train_split": "all",
        "val_split": "all",
        "selection": {"train": {"subjects": ["s01"]}, "val": {"subjects": ["s02"]}},
        "batch_size": 64,
        "recenter": recenter,
        **kw,
    }
    dm = ShardDataModule(**args)
    dm.setup("fit")
    return dm


def test_recentred_epochs_equal_the_aligned_baselines_inputs(eeg_shards: Path) -> None:
    plain = _dm(eeg_shards, "none")
    aligned = _dm(eeg_shards, "euclidean")
    for stage, subject in (("train", "s01"), ("val", "s02")):
        raw = collect_labelled_epochs(plain.eval_dataloader(stage))
        got = collect_labelled_epochs(aligned.eval_dataloader(stage))
        assert got.sample_ids == raw.sample_ids and set(got.subjects) == {subject}
        expected = euclidean_align(raw.x, raw.subjects)  # what logreg_ea / xdawn_ts_ea read
        assert np.abs(got.x - expected).max() < 1e-3 * np.abs(expected).max()

        # whitened: the subject's mean covariance has (nearly) all its eigenvalues near 1; before,
        # few. (Average-referenced EEG is rank-deficient: its null directions stay near 0.)
        def near_one(x: np.ndarray) -> float:
            cov = np.einsum("nct,ndt->cd", x.astype(np.float64), x) / (len(x) * x.shape[2])
            eig = np.linalg.eigvalsh(cov)
            return float(np.mean((eig > 0.8) & (eig < 1.25)))

        assert near_one(got.x) > 0.7 > 0.3 > near_one(raw.x)
        assert aligned.recentring[stage][subject].windows == len(raw.x)
    # the shuffled training loader applies the same matrices (same windows, another order)
    batch = next(iter(aligned.train_dataloader()))
    ref = collect_labelled_epochs(aligned.eval_dataloader("train"))
    row = {sid: i for i, sid in enumerate(ref.sample_ids)}
    idx = [row[s] for s in batch["sample_id"]]
    assert np.allclose(batch["signal"].numpy(), ref.x[idx], atol=1e-5)


def test_recentring_never_reads_labels_and_leaves_padding_alone(eeg_shards: Path) -> None:
    # No `channels`: each subject's kept channels fill slots 0..n-1, the rest is padding.
    a = _dm(eeg_shards, "euclidean", channels=None)
    b = _dm(eeg_shards, "euclidean", channels=None, label_map={k: 1 - v for k, v in LABELS.items()})
    for stage in ("train", "val"):
        a.eval_dataloader(stage), b.eval_dataloader(stage)  # fitted when a stage's loader is made
        (s,) = a.recentring[stage]
        assert np.array_equal(a.recentring[stage][s].matrix, b.recentring[stage][s].matrix)
    batch = next(iter(a.eval_dataloader("val")))
    mask = batch["channel_mask"]
    assert (~mask).any(), "s02 keeps fewer channels than the widest set: some slots are padding"
    assert torch.all(batch["signal"][~mask] == 0)
    assert len(a.recentring["val"]["s02"].slots) == int(mask[0].sum())


def test_recentring_matrix_whitens_and_names_an_unknown_subject() -> None:
    rng = np.random.default_rng(0)
    mix = np.diag([1.0, 2.0, 3.0, 4.0]) + 0.2 * rng.normal(size=(4, 4))  # well conditioned
    x = np.einsum("cd,ndt->nct", mix, rng.normal(size=(50, 4, 200))).astype(np.float32)
    batch = {
        "signal": torch.from_numpy(np.concatenate([x, np.zeros((50, 2, 200), np.float32)], axis=1)),
        "channel_mask": torch.tensor([[True] * 4 + [False] * 2] * 50),
        "subject": ["a"] * 50,
    }
    fit = RecentringFit(6)
    fit.add(batch)
    table = fit.table()
    assert table["a"].slots.tolist() == [0, 1, 2, 3]
    assert np.allclose(table["a"].matrix, recentring_from_mean(covariance_sum(x) / 50, SHRINKAGE), atol=1e-5)
    apply_recentring(batch, table, "train")
    y = batch["signal"].numpy().astype(np.float64)
    white = np.einsum("nct,ndt->cd", y[:, :4], y[:, :4]) / (50 * 200)
    assert np.allclose(white, np.eye(4), atol=0.08)  # shrinkage whitens the weakest direction to ~0.94
    assert np.all(y[:, 4:] == 0)
    batch["subject"] = ["b"] * 50
    with pytest.raises(RuntimeError, match="subject 'b' in stage 'val'"):
        apply_recentring(batch, table, "val")
    with pytest.raises(ValueError, match="recenter is one of"):
        ShardDataModule(datasets=["x"], recenter="riemann")  # type: ignore[arg-type]
