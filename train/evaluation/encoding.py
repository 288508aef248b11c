"""Brain-encoding models: stimulus features → measured responses by cross-validated ridge (himalaya).

Given the features of each stimulus (one feature space ``[n_stimuli, F]`` or several by name) and
the responses to it (``[n_stimuli, n_targets]``, or ``[n_stimuli, n_repeats, n_targets]`` with
repeated presentations; targets are channels, parcels or voxels), `encode` runs outer folds over
**stimuli**: a stimulus is one row (its repeats averaged), so its presentations never straddle
train and test. In each fold the features are standardised with the training stimuli's statistics,
himalaya's `RidgeCV` or, with fewer training stimuli than features, its `KernelRidgeCV` with a
linear kernel (one feature space; the same solution, solved in the dual) or `BandedRidgeCV`
(several; one regularisation per space and target, by random search) picks an alpha per target by inner cross-validation on the
training stimuli only and refits; the held-out stimuli are predicted and scored by per-target
Pearson r. The same folds with the rows of the features permuted across stimuli give the
shuffled-feature control, which should score near 0.

With repeats, the score is also divided by the noise ceiling on r, ``sqrt(NC)`` with NC the NCSNR
ceiling on r² for the mean of all repeats (`noise_ceiling`, estimated over all stimuli): 1.0 means
as good as the process that generated the responses can be predicted from the averaged data.
Every stimulus needs the same number of repeats (drop or subsample the extra ones first).

    result = encode({"gabor": X_gabor}, R, n_folds=5)  # R [n_stimuli, n_repeats, n_targets]
    result.r, result.control_r, result.normalised   # each [n_targets]

``backend="torch_cuda"`` runs the solver on a GPU (`himalaya.backend.set_backend`); ``"auto"`` (the
default) takes it when torch sees a GPU and himalaya's ``torch`` backend on the CPU otherwise
(faster than ``numpy`` there; the same solution).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from neurotrain.train.evaluation.noise_ceiling import ncsnr, ncsnr_ceiling

if TYPE_CHECKING:
    from himalaya.ridge import BandedRidgeCV, RidgeCV

ALPHAS = np.logspace(-2, 6, 17)
"""Default ridge penalties searched per target (features are standardised, so they are comparable)."""
TARGETS_BATCH = 2000
"""Targets solved at once by the kernel solver by default (2.7 s against 3.3 s for all 10k at once)."""


@dataclass(frozen=True)
class EncodingResult:
    """Held-out scores of an encoding model.

    ``r`` ``[n_targets]``: Pearson r on held-out stimuli, averaged over the outer folds
    (``fold_r`` ``[n_folds, n_targets]``); ``alphas`` ``[n_folds, n_targets]``: the penalty chosen
    per target in each fold (banded ridge: its effective total penalty); ``control_r``
    ``[n_targets]``: the same with feature rows permuted across stimuli (None when not run);
    ``ceiling`` ``[n_targets]``: the noise ceiling on r (sqrt of the NCSNR ceiling on r²; None
    without repeats); ``normalised``: ``r / ceiling`` (NaN where the ceiling is 0);
    ``space_weights``: banded ridge only, per feature space the relative weight
    ``exp(delta) / sum exp(delta)`` per fold and target ``[n_folds, n_targets]``.
    """

    r: np.ndarray
    fold_r: np.ndarray
    alphas: np.ndarray
    control_r: np.ndarray | None
    ceiling: np.ndarray | None
    normalised: np.ndarray | None
    space_weights: dict[str, np.ndarray] | None
    backend: str

    def summary(self) -> dict[str, float]:
        """Medians over targets, for a log line or a results table."""
        out = {"median_r": float(np.median(self.r))}
        if self.control_r is not None:
            out["median_control_r"] = float(np.median(self.control_r))
        if self.normalised is not None:
            out["median_normalised"] = float(np.nanmedian(self.normalised))
        return out


def encode(
    features: np.ndarray | Mapping[str, np.ndarray],
    responses: np.ndarray,
    *,
    alphas: np.ndarray = ALPHAS,
    n_folds: int = 5,
    inner_folds: int = 5,
    seed: int = 0,
    control: bool = True,
    backend: str = "auto",
    n_iter: int = 20,
    n_targets_batch: int | None = None,
) -> EncodingResult:
    """Fit and score a ridge encoding model with outer folds over stimuli; see the module docstring.

    ``features``: ``[n_stimuli, F]`` or a mapping space name → ``[n_stimuli, F_space]``;
    ``responses``: ``[n_stimuli, n_targets]`` or ``[n_stimuli, n_repeats, n_targets]``.
    ``n_iter``: random-search draws of the space weights (banded ridge only);
    ``n_targets_batch``: targets solved at once (memory), None for all.
    """
    from sklearn.model_selection import KFold

    spaces = check_features(features)
    y_repeats = np.asarray(responses, dtype=np.float32)
    n_stimuli = next(iter(spaces.values())).shape[0]
    if y_repeats.ndim not in (2, 3) or y_repeats.shape[0] != n_stimuli:
        raise ValueError(
            f"responses must be [n_stimuli, n_targets] or [n_stimuli, n_repeats, n_targets] with "
            f"n_stimuli = {n_stimuli} (the features' rows), got shape {y_repeats.shape}"
        )
    if not np.isfinite(y_repeats).all():
        raise ValueError("responses contain NaN or infinite values")
    if n_folds < 2 or n_stimuli < 2 * n_folds:
        raise ValueError(f"{n_folds} outer folds need at least {2 * n_folds} stimuli, got {n_stimuli}")
    y = y_repeats.mean(axis=1) if y_repeats.ndim == 3 else y_repeats  # [n_stimuli, n_targets]
    folds = list(KFold(n_folds, shuffle=True, random_state=seed).split(np.arange(n_stimuli)))

    with himalaya_backend(backend) as name:
        fold_r, fold_alphas, weights = _cross_validate(
            spaces, y, folds, alphas, inner_folds, seed, n_iter, n_targets_batch
        )
        control_r = None
        if control:
            perm = np.random.default_rng(seed + 1).permutation(n_stimuli)
            shuffled = {k: v[perm] for k, v in spaces.items()}
            control_r = _cross_validate(
                shuffled, y, folds, alphas, inner_folds, seed, n_iter, n_targets_batch
            )[0].mean(0)

    r = fold_r.mean(axis=0)
    ceiling, normalised = ceiling_and_normalised(y_repeats, r)
    return EncodingResult(r, fold_r, fold_alphas, control_r, ceiling, normalised, weights, name)


def ceiling_and_normalised(
    y_repeats: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The noise ceiling on r ``[n_targets]`` of a score against the mean of the repeats
    (``sqrt`` of the NCSNR ceiling on r²) and ``r / ceiling`` (NaN where the ceiling is 0); both
    None without repeats. ``y_repeats``: ``[n_stimuli, n_repeats, n_targets]`` (or 2-D: none)."""
    if y_repeats.ndim != 3 or y_repeats.shape[1] < 2:
        return None, None
    ceiling = np.sqrt(ncsnr_ceiling(ncsnr(y_repeats), n_average=y_repeats.shape[1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return ceiling, np.where(ceiling > 0, r / ceiling, np.nan)


def _cross_validate(
    spaces: dict[str, np.ndarray],
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    alphas: np.ndarray,
    inner_folds: int,
    seed: int,
    n_iter: int,
    n_targets_batch: int | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
    """Per-fold held-out r ``[n_folds, n_targets]``, alphas ``[n_folds, n_targets]`` and the
    banded space weights (None for one space)."""
    rs, chosen, space_w = [], [], []
    for train, test in folds:
        xs_train, xs_test = [], []
        for x in spaces.values():
            mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            xs_train.append((x[train] - mean) / sd)
            xs_test.append((x[test] - mean) / sd)
        model = fit_ridge(xs_train, y[train], alphas, inner_folds, seed, n_iter, n_targets_batch)
        pred = to_numpy(model.predict(xs_test if len(xs_test) > 1 else xs_test[0]))
        rs.append(pearson_r(y[test], pred))
        chosen.append(to_numpy(model.best_alphas_))
        if len(spaces) > 1:
            d = np.exp(to_numpy(model.deltas_))  # [n_spaces, n_targets]
            space_w.append(d / d.sum(axis=0))
    weights = None
    if space_w:
        stacked = np.stack(space_w)  # [n_folds, n_spaces, n_targets]
        weights = {name: stacked[:, i] for i, name in enumerate(spaces)}
    return np.stack(rs), np.stack(chosen), weights


def fit_ridge(
    xs: list[np.ndarray],
    y: np.ndarray,
    alphas: np.ndarray = ALPHAS,
    inner_folds: int = 5,
    seed: int = 0,
    n_iter: int = 20,
    n_targets_batch: int | None = None,
) -> RidgeCV | BandedRidgeCV:
    """A fitted himalaya model with a per-target alpha: for one feature space `KernelRidgeCV` with a
    linear kernel when there are fewer stimuli than features (the dual problem: an eigendecomposition
    of the ``n × n`` kernel instead of an SVD of ``n × F``; the same solution, 2.3x faster at 800
    stimuli × 2000 features, see ``benchmarks/encoding.py``) and `RidgeCV` otherwise;
    `BandedRidgeCV` (random search over the spaces' weights) for several. Inner ``KFold`` over the
    rows given (training stimuli only), intercept fitted. ``xs``: feature spaces ``[n, F_i]``;
    ``n_targets_batch`` None: all targets at once (`RidgeCV`) or ``TARGETS_BATCH`` (the kernel
    solver, where batches of that size were faster than one)."""
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import BandedRidgeCV, RidgeCV
    from sklearn.model_selection import KFold

    cv = KFold(inner_folds, shuffle=True, random_state=seed)
    batch = {"n_targets_batch": n_targets_batch, "n_targets_batch_refit": n_targets_batch}
    if len(xs) == 1 and xs[0].shape[0] < xs[0].shape[1]:
        n_batch = n_targets_batch or TARGETS_BATCH
        params = {"n_targets_batch": n_batch, "n_targets_batch_refit": n_batch}
        model = KernelRidgeCV(alphas=alphas, kernel="linear", cv=cv, fit_intercept=True, solver_params=params)
        x = xs[0]
    elif len(xs) == 1:
        model = RidgeCV(alphas=alphas, cv=cv, fit_intercept=True, solver_params={**batch, "warn": False})
        x = xs[0]
    else:
        params = {"alphas": alphas, "n_iter": n_iter, "progress_bar": False, "warn": False, **batch}
        model = BandedRidgeCV(
            groups="input", cv=cv, fit_intercept=True, random_state=seed, solver_params=params
        )
        x = xs
    with warnings.catch_warnings():
        # himalaya warns when an alpha at the edge of the grid wins; the chosen alphas are returned
        warnings.filterwarnings("ignore", message=".*alpha.*", category=UserWarning)
        model.fit(x, y)
    return model


def pearson_r(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-target Pearson r of ``[n, n_targets]`` arrays (himalaya's `correlation_score`) as numpy."""
    from himalaya.backend import get_backend
    from himalaya.scoring import correlation_score

    b = get_backend()
    r = to_numpy(correlation_score(b.asarray(y_true, dtype="float32"), b.asarray(y_pred, dtype="float32")))
    return np.nan_to_num(r.astype(float))  # a constant prediction scores 0, not NaN


def to_numpy(a) -> np.ndarray:
    """A himalaya backend array (numpy, torch, torch_cuda) as numpy."""
    from himalaya.backend import get_backend

    return np.asarray(get_backend().to_numpy(a))


@contextmanager
def himalaya_backend(name: str) -> Iterator[str]:
    """Run the body on himalaya backend ``name`` (``"auto"``: ``torch_cuda`` when torch sees a GPU,
    else ``torch`` on the CPU, 1.5x numpy's time at the benchmark's size: ``benchmarks/encoding.py``),
    restoring the previous backend after; yields the backend's name."""
    from himalaya.backend import get_backend, set_backend

    if name == "auto":
        import torch

        name = "torch_cuda" if torch.cuda.is_available() else "torch"
    before = get_backend().name
    set_backend(name, on_error="raise")
    try:
        yield name
    finally:
        set_backend(before, on_error="raise")


def check_features(features: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feature spaces by name, each ``[n_stimuli, F]`` float32 with the same rows, or a ValueError
    naming the space and the problem."""
    spaces = dict(features) if isinstance(features, Mapping) else {"features": features}
    if not spaces:
        raise ValueError("no feature space given")
    out: dict[str, np.ndarray] = {}
    n = None
    for name, x in spaces.items():
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"feature space {name!r} must be [n_stimuli, F], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"feature space {name!r} contains NaN or infinite values")
        if n is not None and x.shape[0] != n:
            raise ValueError(f"feature space {name!r} has {x.shape[0]} stimuli, the others {n}")
        n = x.shape[0]
        out[name] = x
    return out
