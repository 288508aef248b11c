"""Euclidean alignment: each subject re-centred to an identity mean covariance, from its own epochs
and never its labels; it undoes per-subject mixing that defeats a pooled classifier."""

from __future__ import annotations

import inspect

import numpy as np

from neurotrain.train.evaluation import alignment
from neurotrain.train.evaluation.alignment import SHRINKAGE, euclidean_align
from neurotrain.train.evaluation.baselines import (
    Epochs,
    classification_scores,
    fit_and_predict,
    predict_on_loaders,
)


def mean_cov(x: np.ndarray) -> np.ndarray:
    """The mean of the epochs' (uncentred) covariances ``x x^T / T``."""
    return np.mean(x @ x.transpose(0, 2, 1), axis=0) / x.shape[-1]


def spd(rng: np.random.Generator, c: int, lo: float, hi: float) -> np.ndarray:
    """A random symmetric positive-definite mixing: random axes, log-uniform gains in [lo, hi]."""
    q, _ = np.linalg.qr(rng.standard_normal((c, c)))
    return q @ np.diag(np.exp(rng.uniform(np.log(lo), np.log(hi), c))) @ q.T


def mixed_subjects(seed: int, subjects: int = 6, n: int = 60, c: int = 12, t: int = 32, amp: float = 0.4):
    """One ERP source model for everyone (class ±pattern × bump in white noise), seen through a
    per-subject mixing ``x_s = A_s x``."""
    rng = np.random.default_rng(seed)
    pattern = rng.standard_normal(c)
    bump = np.exp(-0.5 * ((np.arange(t) - t / 2) / 3) ** 2)
    xs, ys, groups = [], [], []
    for s in range(subjects):
        y = rng.integers(0, 2, n)
        x = rng.standard_normal((n, c, t)) + amp * (2 * y - 1)[:, None, None] * pattern[:, None] * bump
        xs.append(spd(rng, c, 0.01, 100.0) @ x)
        ys.append(y)
        groups += [f"s{s}"] * n
    return np.concatenate(xs), np.concatenate(ys), np.array(groups)


def test_each_group_is_recentred_to_identity() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([spd(rng, 6, 0.5, 2.0) @ rng.standard_normal((40, 6, 200)) for _ in range(3)])
    groups = np.repeat(["a", "b", "c"], 40)
    aligned = euclidean_align(x, groups)
    assert aligned.shape == x.shape and aligned.dtype == np.float64
    for g in "abc":
        before, after = mean_cov(x[groups == g]), mean_cov(aligned[groups == g])
        assert np.abs(before - np.eye(6)).max() > 0.3
        assert np.abs(after - np.eye(6)).max() < 2 * SHRINKAGE  # identity up to the shrinkage
    # a group's alignment reads that group's epochs only
    assert np.allclose(euclidean_align(x[groups == "b"], groups[groups == "b"]), aligned[groups == "b"])


def test_average_referenced_data_does_not_blow_up() -> None:
    """Average reference: rank C-1 covariances. The shrinkage keeps R^{-1/2} finite; the null
    direction stays empty and the others are whitened."""
    rng = np.random.default_rng(1)
    x = spd(rng, 8, 0.5, 2.0) @ rng.standard_normal((50, 8, 100))
    x = (x - x.mean(axis=1, keepdims=True)).astype(np.float32)
    aligned = euclidean_align(x, np.zeros(50, int))
    assert np.isfinite(aligned).all() and np.abs(aligned).max() < 10  # whitened: unit variance
    eig = np.linalg.eigvalsh(mean_cov(aligned))
    assert eig[0] < 1e-6 and np.allclose(eig[1:], 1, atol=2 * SHRINKAGE)
    assert np.abs(aligned.sum(axis=1)).max() < 1e-3  # still average-referenced


def test_alignment_undoes_per_subject_mixing() -> None:
    """Leave-one-subject-out logistic regression: the mixing defeats the pooled classifier, the
    aligned one recovers most of it.

    The mixings are symmetric positive-definite: alignment recovers ``A_s x`` only up to an
    orthogonal ``(A_s R A_s^T)^{-1/2} A_s R^{1/2}`` per subject, which for white sources and
    symmetric ``A_s`` is the identity; a general mixing would leave per-subject rotations, which
    no re-centring can undo.
    """
    x, y, groups = mixed_subjects(seed=0)
    one_group = np.zeros(len(groups), int)  # a single reference for everyone: not per subject
    scores = {}
    for label, name, g in (
        ("plain", "logreg", groups),
        ("pooled", "logreg_ea", one_group),
        ("aligned", "logreg_ea", groups),
    ):
        per_subject = []
        for s in np.unique(groups):
            tr, te = groups != s, groups == s
            proba = fit_and_predict(
                name, x[tr], y[tr], x[te], params={"C": 1e-2}, subjects_train=g[tr], subjects_test=g[te]
            )
            per_subject.append(classification_scores(y[te], proba)["balanced_accuracy"])
        scores[label] = float(np.mean(per_subject))
    assert scores["aligned"] >= scores["plain"] + 0.15 and scores["aligned"] > 0.85, scores
    # whitening everyone with one pooled reference already helps here; the per-subject reference more
    assert scores["aligned"] >= scores["pooled"] + 0.02, scores


def test_alignment_never_reads_labels(monkeypatch) -> None:
    assert list(inspect.signature(euclidean_align).parameters) == ["x", "groups", "shrinkage"]
    x, y, groups = mixed_subjects(seed=1, subjects=3, n=30)
    # the reference is a function of a group's set of epochs: reordering them (here, by label) only
    # reorders the output
    order = np.lexsort((y, groups))
    assert np.allclose(euclidean_align(x[order], groups[order]), euclidean_align(x, groups)[order])
    seen: list[np.ndarray] = []
    real = alignment.euclidean_align
    monkeypatch.setattr(alignment, "euclidean_align", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    train = Epochs(x[groups != "s2"], y[groups != "s2"], groups[groups != "s2"], [str(i) for i in range(60)])
    test = Epochs(x[groups == "s2"], y[groups == "s2"], groups[groups == "s2"], [str(i) for i in range(30)])
    predict_on_loaders(["logreg_ea"], train, test, 128.0)
    clean = list(seen)
    seen.clear()
    rng = np.random.default_rng(2)
    shuffled = predict_on_loaders(
        ["logreg_ea"], train._replace(y=rng.permutation(train.y)), test._replace(y=1 - test.y), 128.0
    )
    assert len(clean) == len(seen) == 2 and all(
        np.array_equal(a, b) for a, b in zip(clean, seen, strict=True)
    )
    assert shuffled["logistic regression, aligned"]["params"] == {"C": 1e-3}
