"""Baseline hyper-parameters are chosen on the inner split alone, recorded, and used; the resampling
before the baselines filters out what would alias."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurotrain.train.evaluation.baselines import (
    BASELINES,
    DEFAULTS,
    GRIDS,
    TITLES,
    Epochs,
    baseline_inputs,
    downsample,
    make_pipeline,
    predict_on_loaders,
    tune,
)

C, T = 8, 32


def erp(n: int, seed: int, amp: float = 0.5, subject: str = "s1") -> Epochs:
    """Class 1 carries a fixed spatial pattern times a mid-epoch bump, in white noise."""
    rng = np.random.default_rng(seed)
    pattern = np.random.default_rng(0).standard_normal(C)  # the same pattern in every part
    bump = np.exp(-0.5 * ((np.arange(T) - T / 2) / 3) ** 2)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, C, T)) + amp * y[:, None, None] * pattern[None, :, None] * bump[None, None, :]
    return Epochs(
        x.astype(np.float32), y.astype(np.int64), np.array([subject] * n), [f"{seed}-{i}" for i in range(n)]
    )


def loader(epochs: Epochs, batch: int = 32) -> list[dict]:
    """The batches a ``ShardDataModule`` loader yields (the keys the baselines read), with a padded
    channel and an unlabelled window that must be dropped."""
    n = len(epochs.y)
    signal = np.concatenate([epochs.x, np.zeros((n, 1, T), np.float32)], axis=1)
    mask = np.ones((n, C + 1), bool)
    mask[:, -1] = False
    out = []
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        out.append(
            {
                "signal": torch.from_numpy(np.concatenate([signal[sl], signal[sl][:1]])),
                "channel_mask": torch.from_numpy(np.concatenate([mask[sl], mask[sl][:1]])),
                "labels": torch.from_numpy(np.r_[epochs.y[sl], -1]),
                "subject": [*epochs.subjects[sl].tolist(), "unlabelled"],
                "sample_id": [*epochs.sample_ids[sl], "unlabelled"],
            }
        )
    return out


INNER_TRAIN, INNER_VAL, OUTER_TRAIN, OUTER_TEST = erp(120, 1), erp(80, 2), erp(150, 3), erp(80, 4)


def table(tuned) -> list[float]:
    return [row["balanced_accuracy"] for row in tuned.table]


def test_grids_are_small_ordered_and_cover_every_baseline() -> None:
    assert set(GRIDS) == set(DEFAULTS) == set(BASELINES) == set(TITLES)
    assert TITLES["logreg_ea"] == "logistic regression, aligned"
    assert TITLES["xdawn_ts_ea"] == "XDAWN + tangent space, aligned"
    for name, grid in GRIDS.items():
        assert int(np.prod([len(v) for v in grid.values()])) <= 9, name
        assert all(list(v) == sorted(v) for v in grid.values())  # strongest regularisation first
        assert set(grid) == set(DEFAULTS[name])


def test_tuning_reads_only_the_inner_split() -> None:
    """Poisoning the outer parts' labels (and the scored epochs' signals) changes nothing chosen."""
    names = ["logreg", "logreg_ea"]
    inner = (loader(INNER_TRAIN), loader(INNER_VAL))
    clean = predict_on_loaders(names, loader(OUTER_TRAIN), loader(OUTER_TEST), 128.0, inner=inner)
    rng = np.random.default_rng(7)
    poisoned_test = OUTER_TEST._replace(
        y=1 - OUTER_TEST.y, x=rng.standard_normal(OUTER_TEST.x.shape).astype(np.float32)
    )
    poisoned_train = OUTER_TRAIN._replace(y=rng.permutation(OUTER_TRAIN.y))
    poisoned = predict_on_loaders(names, loader(poisoned_train), loader(poisoned_test), 128.0, inner=inner)
    for n in names:
        a, b = clean[TITLES[n]], poisoned[TITLES[n]]
        assert a["params"] == b["params"] and a["tuning"] == b["tuning"]
        assert len(a["tuning"]) == len(GRIDS[n]["C"])
        assert a["y_true"] != b["y_true"] and a["scores"] != b["scores"]  # the poison reached the outer parts
        json.dumps(a)  # the entry is JSON-able as cached


def test_inner_validation_drives_the_choice() -> None:
    """Flipped inner-validation labels turn every inner score s into 1 - s, so the choice moves."""
    tuned = tune("logreg", INNER_TRAIN, INNER_VAL)
    flipped = tune("logreg", INNER_TRAIN, INNER_VAL._replace(y=1 - INNER_VAL.y))
    assert np.allclose(table(flipped), 1 - np.array(table(tuned)))
    assert len(set(table(tuned))) > 1 and tuned.params != flipped.params
    assert tuned.params == tuned.table[int(np.argmax(table(tuned)))]["params"]
    noisy = INNER_VAL._replace(
        x=INNER_VAL.x + 3 * np.random.default_rng(5).standard_normal(INNER_VAL.x.shape)
    )
    assert table(tune("logreg", INNER_TRAIN, noisy)) != table(tuned)
    assert tune("logreg", INNER_TRAIN, INNER_VAL) == tuned  # deterministic


def test_ties_go_to_the_earlier_grid_entry() -> None:
    """C this small predicts one class throughout: every entry scores 0.5; the first listed wins."""
    tiny = tune("logreg", INNER_TRAIN, INNER_VAL, grid={"C": [1e-9, 1e-8, 1e-7]})
    assert table(tiny) == [0.5, 0.5, 0.5] and tiny.params == {"C": 1e-9}
    assert tune("logreg", INNER_TRAIN, INNER_VAL, grid={"C": [1e-7, 1e-9]}).params == {"C": 1e-7}


def test_the_chosen_parameters_are_recorded_and_used() -> None:
    tuned = tune("logreg", INNER_TRAIN, INNER_VAL)
    entry = predict_on_loaders(["logreg"], OUTER_TRAIN, OUTER_TEST, 128.0, inner=(INNER_TRAIN, INNER_VAL))[
        "logistic regression"
    ]
    assert entry["params"] == tuned.params and entry["tuning"] == tuned.table
    pipe = make_pipeline("logreg", **tuned.params)
    assert pipe.get_params()["clf__C"] == tuned.params["C"]
    pipe.fit(baseline_inputs("logreg", OUTER_TRAIN.x), OUTER_TRAIN.y)
    assert entry["y_pred"] == pipe.predict(baseline_inputs("logreg", OUTER_TEST.x)).tolist()
    other = next(c for c in GRIDS["logreg"]["C"] if c != tuned.params["C"])
    given = predict_on_loaders(
        ["logreg"],
        OUTER_TRAIN,
        OUTER_TEST,
        128.0,
        params={"logreg": {"C": other}},
        inner=(INNER_TRAIN, INNER_VAL),
    )["logistic regression"]
    assert given["params"] == {"C": other} and "tuning" not in given  # given settings are not re-tuned
    fixed = make_pipeline("logreg", C=other).fit(OUTER_TRAIN.x.astype(np.float64), OUTER_TRAIN.y)
    assert given["y_pred"] == fixed.predict(OUTER_TEST.x.astype(np.float64)).tolist()
    untuned = predict_on_loaders(["logreg"], OUTER_TRAIN, OUTER_TEST, 128.0)["logistic regression"]
    assert untuned["params"] == DEFAULTS["logreg"] and "tuning" not in untuned


def test_xdawn_parameters_reach_the_pipeline() -> None:
    pipe = make_pipeline("xdawn_ts_ea", seed=3, nfilter=2, C=10.0)
    assert pipe.get_params()["xdawn__nfilter"] == 2 and pipe.get_params()["clf__C"] == 10.0
    grid = {"C": [1.0], "nfilter": [2, 4]}
    tuned = tune("xdawn_ts", INNER_TRAIN, INNER_VAL, grid=grid)
    assert [row["params"] for row in tuned.table] == [{"C": 1.0, "nfilter": 2}, {"C": 1.0, "nfilter": 4}]
    json.dumps(tuned._asdict())
    with pytest.raises(ValueError, match="takes"):
        make_pipeline("logreg", nfilter=2)
    with pytest.raises(ValueError, match="not run"):
        predict_on_loaders(["logreg"], OUTER_TRAIN, OUTER_TEST, 128.0, params={"xdawn_ts": {"C": 1.0}})


def test_downsampling_filters_what_would_alias() -> None:
    """256 -> 128 Hz: a 100 Hz tone (above the new 64 Hz Nyquist) is removed, not folded to 28 Hz;
    a 10 Hz tone passes unchanged."""
    sfreq, t = 256.0, np.arange(512) / 256.0
    high = np.sin(2 * np.pi * 100 * t)[None, None, :]
    low = np.sin(2 * np.pi * 10 * t)[None, None, :]
    mid = slice(32, -32)  # away from the epoch's edges
    sliced = high[..., ::2]
    assert np.sqrt(np.mean(sliced[..., mid] ** 2)) > 0.6  # plain slicing: the tone aliases, undamped
    filtered = downsample(high, sfreq, 128.0)
    assert filtered.shape == sliced.shape
    assert np.sqrt(np.mean(filtered[..., mid] ** 2)) < 0.01
    kept = downsample(low, sfreq, 128.0)
    assert np.max(np.abs(kept[..., mid] - low[..., ::2][..., mid])) < 0.01
    assert downsample(low, 128.0, 128.0) is low  # already at most max_sfreq: untouched
