"""Bootstrap intervals and verdicts of ``neurotrain.train.evaluation.statistics`` on synthetic folds.

Every data set is made here from fixed seeds: 5 outer folds × 3 seeds of ~200 epochs, where a
method is "correct with probability p" on each epoch independently (per method and seed).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from neurotrain.train.evaluation.statistics import (
    FoldPredictions,
    Interval,
    chance_level,
    paired_difference,
    score_interval,
    verdict,
)

FOLDS, SEEDS, N = 5, 3, 200


def labels(n: int = N, folds: int = FOLDS, classes: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Per fold, ``y_true`` [n] with roughly balanced classes."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, classes, n) for _ in range(folds)]


def method(ys: list[np.ndarray], p_correct: float, seed: int, seeds: int = SEEDS, classes: int = 2):
    """FoldPredictions of a method correct with probability ``p_correct`` on each epoch, per seed."""
    rng = np.random.default_rng(seed)
    out = []
    for f, y in enumerate(ys):
        ids = tuple(f"f{f}-e{i}" for i in range(len(y)))
        for s in range(seeds):
            wrong = (y + rng.integers(1, classes, len(y))) % classes  # some other class
            out.append(FoldPredictions(f, s, ids, y, np.where(rng.random(len(y)) < p_correct, y, wrong)))
    return out


def test_better_method_beats_and_reversed_is_below():
    ys = labels()
    good, worse = method(ys, 0.85, seed=1), method(ys, 0.70, seed=2)
    diff = paired_difference(good, worse)
    assert 0.10 < diff.estimate < 0.20
    assert diff.low > 0 and diff.excludes_zero()
    assert (diff.n_folds, diff.n_seeds, diff.confidence) == (FOLDS, SEEDS, 0.95)
    assert verdict(diff) == "beats"
    back = paired_difference(worse, good)
    assert back.high < 0 and verdict(back) == "below"
    assert back.estimate == pytest.approx(-diff.estimate, abs=1e-12)


def test_identical_methods_give_a_zero_interval():
    preds = method(labels(), 0.8, seed=3)
    diff = paired_difference(preds, list(preds))
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.excludes_zero()
    assert verdict(diff, margin=0.02) == "matches"
    assert verdict(diff, margin=0.0) == "inconclusive"


def test_equal_methods_on_few_epochs_are_inconclusive_not_matching():
    ys = labels(n=40)
    diff = paired_difference(method(ys, 0.8, seed=4), method(ys, 0.8, seed=5))
    assert diff.low < 0 < diff.high
    assert diff.high - diff.low > 0.04
    assert verdict(diff, margin=0.02) == "inconclusive"


def test_interval_covers_the_true_score_and_shrinks_with_more_epochs():
    small = score_interval(method(labels(n=400, seed=6), 0.75, seed=7))
    large = score_interval(method(labels(n=1600, seed=8), 0.75, seed=9))
    assert small.low <= 0.75 <= small.high
    assert large.low <= 0.75 <= large.high
    assert 0.35 < (large.high - large.low) / (small.high - small.low) < 0.7


def test_seeds_are_averaged_not_counted_as_data():
    one = [p for p in method(labels(), 0.75, seed=10) if p.seed == 0]
    thrice = [FoldPredictions(p.fold, s, p.sample_ids, p.y_true, p.y_pred) for p in one for s in range(3)]
    a, b = score_interval(one), score_interval(thrice)
    assert (b.n_seeds, a.n_seeds) == (3, 1)
    for field in ("estimate", "low", "high"):
        assert getattr(b, field) == pytest.approx(getattr(a, field), abs=1e-12)
    other = [p for p in method(labels(), 0.6, seed=11) if p.seed == 0]
    other3 = [FoldPredictions(p.fold, s, p.sample_ids, p.y_true, p.y_pred) for p in other for s in range(3)]
    d1, d3 = paired_difference(one, other), paired_difference(thrice, other3)
    assert (d3.low, d3.high) == pytest.approx((d1.low, d1.high), abs=1e-12)


def test_mismatched_or_missing_folds_raise_naming_fold_and_seed():
    ys = labels()
    a, b = method(ys, 0.8, seed=12), method(ys, 0.7, seed=13)
    renamed = [
        FoldPredictions(p.fold, p.seed, ("other", *p.sample_ids[1:]), p.y_true, p.y_pred)
        if (p.fold, p.seed) == (2, 1)
        else p
        for p in b
    ]
    with pytest.raises(ValueError, match=r"fold 2 seed 1.*identical epochs"):
        paired_difference(a, renamed)
    relabelled = [
        FoldPredictions(p.fold, p.seed, p.sample_ids, 1 - p.y_true, p.y_pred) if p.fold == 3 else p for p in b
    ]
    with pytest.raises(ValueError, match=r"fold 3 seed 0.*identical epochs"):
        paired_difference(a, relabelled)
    with pytest.raises(ValueError, match=r"fold 4 seed 0 is in a but missing in b"):
        paired_difference(a, [p for p in b if (p.fold, p.seed) != (4, 0)])
    with pytest.raises(ValueError, match=r"fold 1 seed 2 is in b but missing in a"):
        paired_difference([p for p in a if p.fold != 1 or p.seed != 2], b)
    with pytest.raises(ValueError, match=r"fold 2 seed 1 is scored on other epochs than seed 0"):
        score_interval(renamed)


def test_reproducible_and_chance_levels():
    preds = method(labels(), 0.7, seed=14)
    first = score_interval(preds, seed=3)
    assert score_interval(preds, seed=3) == first
    assert score_interval(preds, seed=4).low != first.low
    assert set(first.as_dict()) == {"estimate", "low", "high", "confidence", "n_folds", "n_seeds"}
    assert chance_level(np.array([0, 1, 1, 0, 1])) == 0.5
    assert chance_level(np.array([0, 1, 2, 2, 1, 0])) == pytest.approx(1 / 3)
    assert chance_level(np.array([0, 0, 0, 1]), "accuracy") == 0.75
    with pytest.raises(ValueError, match="no chance level"):
        chance_level(np.array([0, 1]), "f1")


@pytest.mark.parametrize("classes", [2, 3])
def test_shuffled_labels_contain_chance(classes):
    ys = labels(classes=classes, seed=15 + classes)
    rng = np.random.default_rng(20 + classes)
    preds = [
        FoldPredictions(p.fold, p.seed, p.sample_ids, p.y_true, rng.permutation(p.y_true))
        for p in method(ys, 1.0, seed=0, classes=classes)
    ]
    iv = score_interval(preds)
    assert iv.low <= chance_level(ys[0]) == 1 / classes <= iv.high


def _reference(a, b, metric, n_resamples, seed, confidence=0.95) -> Interval:
    """The protocol written out independently: (fold, class) strata of two or more epochs, drawn in
    scipy's order (one ``integers`` call per stratum, all resamples at once), shared by seeds and by
    both methods; mean over folds of seed-averaged a - b; percentile interval of that distribution."""
    rng = np.random.default_rng(seed)
    fold_ids = sorted({p.fold for p in a})
    by = {(p.fold, p.seed): p for p in a}
    seeds = {f: sorted(s for g, s in by if g == f) for f in fold_ids}
    strata, fixed = [], {f: [] for f in fold_ids}
    for f in fold_ids:
        y = by[f, seeds[f][0]].y_true
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            if idx.size > 1:
                strata.append((f, idx))
            else:
                fixed[f].append(idx)
    draws = [(f, idx[rng.integers(0, idx.size, (n_resamples, idx.size))]) for f, idx in strata]
    pb = {(p.fold, p.seed): p for p in b}

    def value(r):
        per_fold = []
        for f in fold_ids:
            if r is None:  # the point estimate: every epoch once
                i = np.arange(len(by[f, seeds[f][0]].y_true))
            else:
                i = np.concatenate([d[r] for g, d in draws if g == f] + fixed[f])
            ma = np.mean([metric(by[f, s].y_true[i], by[f, s].y_pred[i]) for s in seeds[f]])
            mb = np.mean([metric(pb[f, s].y_true[i], pb[f, s].y_pred[i]) for s in seeds[f]])
            per_fold.append(ma - mb)
        return float(np.mean(per_fold))

    dist = [value(r) for r in range(n_resamples)]
    low, high = np.percentile(dist, [50 * (1 - confidence), 100 - 50 * (1 - confidence)])
    return Interval(value(None), float(low), float(high), confidence, len(fold_ids), 2)


@pytest.mark.parametrize("metric", [balanced_accuracy_score, accuracy_score], ids=["balanced", "accuracy"])
def test_interval_is_the_percentile_of_the_stratified_paired_bootstrap(metric):
    ys = labels(n=60, folds=2, classes=3, seed=30)
    ys[0][ys[0] == 2] = 1
    ys[0][7] = 2  # a one-epoch class in fold 0: scipy refuses such a sample, it stays fixed
    a = method(ys, 0.8, seed=31, seeds=2, classes=3)
    b = method(ys, 0.6, seed=32, seeds=2, classes=3)
    kwargs = {} if metric is balanced_accuracy_score else {"metric": metric}
    got = paired_difference(a, b, n_resamples=80, seed=33, **kwargs)
    want = _reference(a, b, metric, n_resamples=80, seed=33)
    assert got.as_dict() == pytest.approx(want.as_dict(), abs=1e-12)
    assert got.low < got.high


def test_resampling_seeds_widens_the_interval_by_their_spread_only():
    """One fold, 5 "seeds" (a control's label permutations) scoring 0.40-0.60 on the same epochs:
    the two-level interval holds that spread; seeds that agree leave the interval as it was."""
    y = labels(n=400, folds=1)[0]
    rng = np.random.default_rng(3)
    ids = tuple(f"e{i}" for i in range(len(y)))
    spread = [
        FoldPredictions(0, s, ids, y, np.where(rng.random(len(y)) < p, y, 1 - y))
        for s, p in enumerate((0.40, 0.45, 0.50, 0.55, 0.60))
    ]
    flat = score_interval(spread)
    two_level = score_interval(spread, resample_seeds=True)
    assert two_level.estimate == flat.estimate  # the same mean over seeds
    assert (two_level.high - two_level.low) > 1.5 * (flat.high - flat.low)
    assert two_level.low < two_level.estimate < two_level.high
    same = [FoldPredictions(0, s, ids, y, spread[2].y_pred) for s in range(5)]
    assert score_interval(same, resample_seeds=True) == score_interval(same)
