"""Bootstrap intervals for a decoding results table, so "beats" and "matches" claims can be trusted.

Protocol (what is resampled and why):

- The unit of data is the scored epoch. Each outer test fold is resampled on its own, and within
  the fold each class separately (stratified): a resample keeps every fold's size and class counts,
  so a fold never loses a class (balanced accuracy stays defined) and the interval reflects which
  epochs were scored, not an artificial reshuffle of classes or of epochs across folds.
- Seeds re-run the same fold on the same epochs: they are not independent data. The metric is
  averaged over a fold's seeds, the estimate is the mean over folds, and one resample of a fold's
  epochs is applied to all its seeds (three copies of one seed give the interval of one seed).
- A comparison is paired: method a minus method b on the identical resampled epochs, so the
  epoch-to-epoch difficulty both share cancels and the interval is that of the difference.
- "matches" is an equivalence claim: the whole interval of the difference lies inside ±margin. A
  difference that is merely not significant (the interval straddles 0) is "inconclusive", never
  "matches": few epochs give wide intervals, and absence of evidence is not evidence of equality.

The resampling is ``scipy.stats.bootstrap`` (percentile method) over one index array per
(fold, class) stratum, ``paired=False`` so each stratum is resampled independently. Any metric
``(y_true, y_pred) -> float`` is called once per resample, method and seed; balanced accuracy (the
default) is read off the strata instead, a class's recall being its stratum's mean correctness (the
same number as sklearn's, checked in the tests), as ~1 ms per sklearn call would take minutes.

    iv = score_interval(preds)                  # preds: FoldPredictions, one per (fold, seed)
    diff = paired_difference(preds_a, preds_b)
    verdict(diff, margin=0.02)                  # "beats" | "below" | "matches" | "inconclusive"
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import balanced_accuracy_score

Metric = Callable[[np.ndarray, np.ndarray], float]
_BATCH = 100  # resamples drawn at once: bounds memory to ~_BATCH x epochs indices
# scipy >= 1.15 calls the generator `rng` (`random_state` still accepted there); 1.11-1.14 `random_state`
_RNG_KEY = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes in ``y_true`` (sklearn's, ``adjusted=False``); [N] -> float."""
    return float(balanced_accuracy_score(y_true, y_pred, adjusted=False))


@dataclass(frozen=True)
class FoldPredictions:
    """One outer test fold of one seed: the epochs' ids, true labels and a method's predicted labels."""

    fold: int  # outer fold index
    seed: int
    sample_ids: tuple[str, ...]  # [N] epoch ids, identical across methods for the same fold
    y_true: np.ndarray  # [N] int
    y_pred: np.ndarray  # [N] int

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_ids", tuple(str(s) for s in self.sample_ids))
        object.__setattr__(self, "y_true", np.asarray(self.y_true, dtype=int))
        object.__setattr__(self, "y_pred", np.asarray(self.y_pred, dtype=int))
        n = len(self.sample_ids)
        if n == 0 or self.y_true.shape != (n,) or self.y_pred.shape != (n,):
            raise ValueError(
                f"fold {self.fold} seed {self.seed}: sample_ids, y_true and y_pred must be 1-D of one "
                f"non-zero length (got {n}, {self.y_true.shape}, {self.y_pred.shape})"
            )


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""

    estimate: float  # the point estimate (mean over folds of the per-fold metric, or of differences)
    low: float  # 95% (or `confidence`) bootstrap interval
    high: float
    confidence: float
    n_folds: int  # distinct folds
    n_seeds: int

    def excludes_zero(self) -> bool:
        """Whether 0 lies outside the interval (a difference significant at ``1 - confidence``)."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score_interval(
    preds: Sequence[FoldPredictions],
    metric: Metric = balanced_accuracy,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = False,
) -> Interval:
    """The metric of one method (mean over folds of its seed-averaged per-fold score) and its interval.

    ``resample_seeds``: each resample also draws the fold's seeds with replacement (a two-level
    bootstrap), so the interval holds the seed-to-seed variation too. For the shuffled-label
    control, whose "seeds" are label permutations: one permutation's score of the quickstart's
    logistic regression varied with a standard deviation of 0.038 over 20 permutations, as much as
    the epoch resampling alone, and an interval without it called the mean of 5 "above chance"
    for one set of permutations and "below chance" for another."""
    return _interval(
        [_by_fold(preds, "preds")], (1.0,), metric, n_resamples, confidence, seed, resample_seeds
    )


def paired_difference(
    a: Sequence[FoldPredictions],
    b: Sequence[FoldPredictions],
    metric: Metric = balanced_accuracy,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Method ``a`` minus method ``b`` on identical resampled epochs: estimate and interval.

    Both must hold the same (fold, seed) pairs scored on the same ``sample_ids`` and ``y_true``;
    otherwise ``ValueError`` names the first fold and seed that differ.
    """
    fa, fb = _by_fold(a, "a"), _by_fold(b, "b")
    keys_a = {(f, s) for f, seeds in fa.items() for s in seeds}
    keys_b = {(f, s) for f, seeds in fb.items() for s in seeds}
    for f, s in sorted(keys_a | keys_b):
        if (f, s) not in keys_a or (f, s) not in keys_b:
            where, other = ("a", "b") if (f, s) in keys_a else ("b", "a")
            raise ValueError(f"fold {f} seed {s} is in {where} but missing in {other}")
        pa, pb = fa[f][s], fb[f][s]
        if pa.sample_ids != pb.sample_ids or not np.array_equal(pa.y_true, pb.y_true):
            raise ValueError(
                f"fold {f} seed {s}: sample_ids or y_true differ between a and b; "
                "methods must be scored on identical epochs"
            )
    return _interval([fa, fb], (1.0, -1.0), metric, n_resamples, confidence, seed)


def verdict(diff: Interval, margin: float = 0.02) -> str:
    """Read a paired difference (a - b): "beats", "below", "matches" or "inconclusive".

    "beats" if the interval is above 0, "below" if under 0, "matches" only if ``margin > 0`` and the
    whole interval lies within ``[-margin, margin]`` (equivalence), else "inconclusive". "matches"
    never follows from a non-significant difference alone: an interval straddling 0 but reaching
    past the margin says the data cannot tell, not that the methods are equal.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if diff.low > 0:
        return "beats"
    if diff.high < 0:
        return "below"
    if margin > 0 and -margin <= diff.low and diff.high <= margin:
        return "matches"
    return "inconclusive"


def chance_level(y_true: np.ndarray, metric_name: str = "balanced_accuracy") -> float:
    """The score of a constant/uninformed classifier on ``y_true`` [N].

    Balanced accuracy: 1 / number of classes present; accuracy: the share of the majority class.
    """
    _, counts = np.unique(np.asarray(y_true), return_counts=True)
    if metric_name == "balanced_accuracy":
        return 1.0 / len(counts)
    if metric_name == "accuracy":
        return float(counts.max() / counts.sum())
    raise ValueError(f"no chance level for metric {metric_name!r}; known: balanced_accuracy, accuracy")


def _by_fold(preds: Sequence[FoldPredictions], name: str) -> dict[int, dict[int, FoldPredictions]]:
    """fold -> seed -> predictions, checking that a fold's seeds share its epochs."""
    out: dict[int, dict[int, FoldPredictions]] = {}
    for p in preds:
        if p.seed in out.setdefault(p.fold, {}):
            raise ValueError(f"{name}: fold {p.fold} seed {p.seed} is given twice")
        out[p.fold][p.seed] = p
    if not out:
        raise ValueError(f"{name}: no predictions")
    for f, seeds in out.items():
        first = seeds[min(seeds)]
        for s, p in seeds.items():
            if p.sample_ids != first.sample_ids or not np.array_equal(p.y_true, first.y_true):
                raise ValueError(
                    f"{name}: fold {f} seed {s} is scored on other epochs than seed {min(seeds)}; "
                    "the seeds of a fold must re-run it on identical epochs"
                )
    return out


def _interval(methods, weights, metric, n_resamples, confidence, seed, resample_seeds=False) -> Interval:
    """sum_m weights[m] * (mean over folds of the seed-averaged metric of method m), with its interval
    (``resample_seeds``: each resample draws each fold's seeds with replacement too)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    w = np.asarray(weights)
    strata: list[np.ndarray] = []  # the resampled data: positions within a fold, one array per stratum
    folds = []  # (y_true [N], y_pred [M, S, N], correct [M, S, N], stratum slots, fixed singletons)
    for f in sorted(methods[0]):
        seeds = sorted(methods[0][f])
        y = methods[0][f][seeds[0]].y_true
        pred = np.stack([[m[f][s].y_pred for s in seeds] for m in methods])
        slots, fixed = [], []
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            if idx.size > 1:
                slots.append(len(strata))
                strata.append(idx)
            else:  # scipy refuses one-observation samples; resampling one epoch returns it anyway
                fixed.append(idx)
        folds.append((y, pred, (pred == y).astype(float), slots, fixed))

    fast = metric is balanced_accuracy or metric is balanced_accuracy_score

    seed_rng = np.random.default_rng([seed, 1])  # the seed draws of a two-level resample

    def fold_value(y, pred, correct, pieces, exact=False) -> float:
        """The fold's weighted, seed-averaged metric on the epochs at ``pieces`` (one array per class)."""
        if fast and not exact:
            per_seed = np.mean([correct[..., i].mean(axis=-1) for i in pieces], axis=0)  # [M, S]
        else:  # any metric: called once per method, seed and resample
            i = np.concatenate(pieces)
            per_seed = np.array([[metric(y[i], p[i]) for p in by_seed] for by_seed in pred])
        if resample_seeds and not exact:
            per_seed = per_seed[:, seed_rng.integers(0, per_seed.shape[1], per_seed.shape[1])]
        return float(w @ per_seed.mean(axis=1))

    def statistic(*resampled: np.ndarray) -> float:
        return float(np.mean([fold_value(*fd[:3], [resampled[k] for k in fd[3]] + fd[4]) for fd in folds]))

    estimate = float(np.mean([fold_value(*fd[:3], [strata[k] for k in fd[3]] + fd[4], True) for fd in folds]))
    low = high = estimate  # no stratum with two epochs: nothing to resample
    if strata:
        res = bootstrap(
            tuple(strata),
            statistic,
            paired=False,
            vectorized=False,
            n_resamples=n_resamples,
            batch=_BATCH,
            confidence_level=confidence,
            method="percentile",
            **{_RNG_KEY: np.random.default_rng(seed)},
        )
        dist = np.asarray(res.bootstrap_distribution)
        if not np.all(np.isfinite(dist)):
            raise ValueError("the metric is not finite on some resamples")
        # degenerate (identical methods): the value itself, whatever scipy makes of a constant sample
        low, high = (dist[0], dist[0]) if dist.min() == dist.max() else res.confidence_interval
    n_seeds = len({s for f in methods[0].values() for s in f})
    return Interval(estimate, float(low), float(high), float(confidence), len(folds), n_seeds)
