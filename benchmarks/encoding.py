"""Ridge encoding fit + score time: himalaya (`train.evaluation.encoding`) against scikit-learn.

One outer fold of an encoding model at 10k targets × 2k features × 1k stimuli (``--scale`` shrinks
targets, features and stimuli together): fit on 80% of the stimuli with a per-target alpha chosen
by 5-fold inner cross-validation over the same alphas, refit, predict the held-out 20% and score
per-target Pearson r. Synthetic data (seeded): ``Y = X @ W + noise`` with a per-target SNR, float32.

- ``ours``: `encoding.fit_ridge` on himalaya's backend ``--backend`` (``auto``: ``torch_cuda``
  with a GPU, else ``torch`` on the CPU; ``numpy`` measured too as ``ours_numpy``): himalaya's
  `KernelRidgeCV` with a linear kernel here, as there are fewer training stimuli than features.
- ``himalaya_primal``: himalaya's `RidgeCV` (the primal, an SVD of X) on the same folds and alphas:
  what ``fit_ridge`` ran before, to show what the dual solve gains.
- ``sklearn_kfold``: scikit-learn doing the same with the **same inner folds and alphas**. Its
  `RidgeCV` cannot: ``alpha_per_target=True`` is refused with ``cv`` other than None
  ("cv!=None and alpha_per_target=True are incompatible"), so this is `sklearn.linear_model.Ridge`
  fitted per fold and alpha, the alpha with the least mean squared error taken per target, and a
  final `Ridge(alpha=<one per target>)` refit.
- ``sklearn_ridgecv``: `sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True)` as shipped:
  its efficient leave-one-out (GCV) shortcut, i.e. **different folds** (leave-one-out), same alphas.

    python benchmarks/encoding.py [--scale 1.0] [--backend auto] [--skip-kfold]

Figures: seconds of each (fit + predict + score; the median of ``--repeats`` runs, 3 by default,
except the slow scikit-learn k-fold loop, run once), ``sklearn_kfold / ours`` and
``sklearn_ridgecv / ours``, the share of targets where ours and sklearn_kfold chose the same alpha
(same folds, same criterion: should be ~1), and the median held-out r of each. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def make_data(n_stimuli: int, n_features: int, n_targets: int, seed: int = 0):
    """Standardised features ``[n_stimuli, n_features]`` and targets ``[n_stimuli, n_targets]``,
    float32, from a random linear map with per-target SNR between 0.05 and 2."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_stimuli, n_features), dtype=np.float32)
    w = rng.standard_normal((n_features, n_targets), dtype=np.float32) / np.sqrt(n_features)
    snr = np.exp(rng.uniform(np.log(0.05), np.log(2.0), n_targets)).astype(np.float32)
    y = x @ w + rng.standard_normal((n_stimuli, n_targets), dtype=np.float32) / np.sqrt(snr)
    return x, y


def run_ours(x_tr, y_tr, x_te, y_te, alphas, cv, backend: str):
    from neurotrain.train.evaluation.encoding import fit_ridge, himalaya_backend, pearson_r, to_numpy

    with himalaya_backend(backend):
        t0 = time.perf_counter()
        model = fit_ridge([x_tr], y_tr, alphas, inner_folds=cv.n_splits, seed=cv.random_state)
        r = pearson_r(y_te, to_numpy(model.predict(x_te)))
        seconds = time.perf_counter() - t0
        best = to_numpy(model.best_alphas_)
    return seconds, best, r


def run_primal(x_tr, y_tr, x_te, y_te, alphas, cv, backend: str):
    """himalaya's primal `RidgeCV` (SVD of X) on the same folds: what ``fit_ridge`` ran before it
    took the kernel (dual) solver for fewer stimuli than features."""
    from himalaya.ridge import RidgeCV

    from neurotrain.train.evaluation.encoding import himalaya_backend, pearson_r, to_numpy

    with himalaya_backend(backend):
        t0 = time.perf_counter()
        model = RidgeCV(alphas=alphas, cv=cv, fit_intercept=True, solver_params={"warn": False})
        model.fit(x_tr, y_tr)
        r = pearson_r(y_te, to_numpy(model.predict(x_te)))
        seconds = time.perf_counter() - t0
    return seconds, to_numpy(model.best_alphas_), r


def run_sklearn_kfold(x_tr, y_tr, x_te, y_te, alphas, cv):
    from sklearn.linear_model import Ridge

    from neurotrain.train.evaluation.noise_ceiling import pearson_columns

    t0 = time.perf_counter()
    mse = np.zeros((len(alphas), y_tr.shape[1]))
    for train, val in cv.split(x_tr):
        for i, alpha in enumerate(alphas):
            pred = Ridge(alpha=alpha).fit(x_tr[train], y_tr[train]).predict(x_tr[val])
            mse[i] += ((pred - y_tr[val]) ** 2).mean(axis=0)
    best = np.asarray(alphas)[mse.argmin(axis=0)]
    model = Ridge(alpha=best).fit(x_tr, y_tr)
    r = pearson_columns(y_te, model.predict(x_te))
    return time.perf_counter() - t0, best, r


def run_sklearn_ridgecv(x_tr, y_tr, x_te, y_te, alphas):
    from sklearn.linear_model import RidgeCV

    from neurotrain.train.evaluation.noise_ceiling import pearson_columns

    t0 = time.perf_counter()
    model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(x_tr, y_tr)
    r = pearson_columns(y_te, model.predict(x_te))
    return time.perf_counter() - t0, np.asarray(model.alpha_), r


def median_run(repeats: int, fn, *args):
    """``fn(*args)`` ``repeats`` times: (the median seconds, and the last run's alphas and r)."""
    runs = [fn(*args) for _ in range(max(1, repeats))]
    return float(np.median([r[0] for r in runs])), runs[-1][1], runs[-1][2]


def main() -> None:
    from sklearn.model_selection import KFold

    from neurotrain.train.evaluation.encoding import ALPHAS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="shrink targets, features and stimuli together")
    p.add_argument(
        "--backend", default="auto", help="himalaya backend: auto (torch_cuda, else torch), numpy, torch"
    )
    p.add_argument("--repeats", type=int, default=3, help="runs of each fast method; the median time is kept")
    p.add_argument("--skip-kfold", action="store_true", help="leave out the slow sklearn k-fold loop")
    args = p.parse_args()

    n_stimuli, n_features, n_targets = (max(20, round(n * args.scale)) for n in (1000, 2000, 10000))
    x, y = make_data(n_stimuli, n_features, n_targets)
    n_train = int(0.8 * n_stimuli)
    x_tr, y_tr, x_te, y_te = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    alphas = ALPHAS
    cv = KFold(5, shuffle=True, random_state=0)
    print(f"{n_stimuli} stimuli ({n_train} train) × {n_features} features → {n_targets} targets; "
          f"{len(alphas)} alphas, 5 inner folds; {os.cpu_count()} CPUs")  # fmt: skip

    run_ours(x_tr[:50], y_tr[:50, :10], x_te[:10], y_te[:10, :10], alphas, cv, args.backend)  # warm-up
    data = (x_tr, y_tr, x_te, y_te, alphas)
    t_ours, a_ours, r_ours = median_run(args.repeats, run_ours, *data, cv, args.backend)
    print(f"ours ({args.backend}): {t_ours:.1f} s, median r {np.median(r_ours):.3f}")
    t_np, _, _ = median_run(args.repeats, run_ours, *data, cv, "numpy")
    print(f"ours (numpy backend): {t_np:.1f} s")
    t_primal, a_primal, r_primal = median_run(args.repeats, run_primal, *data, cv, args.backend)
    print(f"himalaya primal RidgeCV (same folds): {t_primal:.1f} s, median r {np.median(r_primal):.3f}")
    t_cv, a_cv, r_cv = median_run(args.repeats, run_sklearn_ridgecv, *data)
    print(f"sklearn RidgeCV(alpha_per_target, leave-one-out): {t_cv:.1f} s, median r {np.median(r_cv):.3f}")
    result = {
        "n_stimuli": n_stimuli,
        "n_features": n_features,
        "n_targets": n_targets,
        "scale": args.scale,
        "backend": args.backend,
        "n_alphas": len(alphas),
        "inner_folds": 5,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "seconds": {
            "ours": round(t_ours, 2),
            "ours_numpy": round(t_np, 2),
            "himalaya_primal": round(t_primal, 2),
            "sklearn_ridgecv": round(t_cv, 2),
        },
        "sklearn_ridgecv_over_ours": round(t_cv / t_ours, 2),
        "himalaya_primal_over_ours": round(t_primal / t_ours, 2),
        "same_alpha_as_primal": round(float(np.isclose(a_primal, a_ours, rtol=1e-3).mean()), 4),
        "median_r": {
            "ours": round(float(np.median(r_ours)), 4),
            "sklearn_ridgecv": round(float(np.median(r_cv)), 4),
            "himalaya_primal": round(float(np.median(r_primal)), 4),
        },
    }
    if not args.skip_kfold:
        t_kf, a_kf, r_kf = run_sklearn_kfold(x_tr, y_tr, x_te, y_te, alphas, cv)
        same = float(np.isclose(a_kf, a_ours, rtol=1e-3).mean())
        print(f"sklearn Ridge per fold and alpha (same folds): {t_kf:.1f} s, median r {np.median(r_kf):.3f}")
        print(f"sklearn_kfold / ours = {t_kf / t_ours:.1f}x; same alpha on {same:.1%} of targets")
        result["seconds"]["sklearn_kfold"] = round(t_kf, 2)
        result["sklearn_kfold_over_ours"] = round(t_kf / t_ours, 2)
        result["same_alpha_as_sklearn_kfold"] = round(same, 4)
        result["median_r"]["sklearn_kfold"] = round(float(np.median(r_kf)), 4)
    print(f"sklearn_ridgecv / ours = {t_cv / t_ours:.1f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
