"""Classical decoding baselines on exactly the epochs and splits the models see.

The epochs come out of the same ``ShardDataModule`` loaders as the model's batches (same
events, window, normalisation and subject splits), so a baseline and a fine-tuned encoder are
compared on identical data. The pipelines, the usual references for ERP decoding:

- ``logreg``: standardised logistic regression on the epoch samples (channels × time, flattened);
- ``xdawn_ts``: XDAWN spatial filters → covariance matrices → Riemannian tangent space →
  logistic regression (pyriemann), the strong ERP pipeline;
- ``logreg_ea``, ``xdawn_ts_ea``: the same after Euclidean alignment of each subject's epochs
  (`neurotrain.train.evaluation.alignment`), the standard unsupervised cross-subject adaptation.
  Each part's subjects are aligned with their own epochs of that part (a held-out subject with its
  held-out epochs, unlabelled: transductive); labels never enter the alignment.

Hyper-parameters. Each baseline has a small grid (`GRIDS`: the logistic ``C``; XDAWN's
``nfilter`` with the logistic ``C``) searched on an *inner* split of the outer training part
(`neurotrain.train.evaluation.folds.inner_fold`): `tune` fits every combination on inner-train,
scores it by balanced accuracy on inner-validation and keeps the best, ties going to the earlier
(more strongly regularised) grid entry — the outer fold's scored epochs are never read. Untuned
calls use `DEFAULTS` (the former fixed values; the logistic ``C=1e-3`` was once read off test
folds, so an evaluation should tune rather than rely on it).

Resampling. Epochs are brought to at most ``max_sfreq`` by an integer factor with an anti-alias
filter (`downsample`: scipy's polyphase ``resample_poly``, zero-phase FIR), not by slicing, which
would fold everything above the new Nyquist frequency back into the band.

Shapes: epochs ``x [N, C, T]`` (float), labels ``y [N]`` int, subjects ``[N]`` str.

    X, y, subjects = collect_epochs(datamodule.val_dataloader())     # X [N, C, T]
    scores = fit_and_score("xdawn_ts", X_train, y_train, X_val, y_val)
    tuned = tune("logreg", inner_train, inner_val, seed=0)          # Epochs -> Tuned(params, table)
    out = predict_on_loaders(BASELINES, train_dl, test_dl, sfreq, inner=(inner_train_dl, inner_val_dl))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

BASELINES = ("logreg", "xdawn_ts", "logreg_ea", "xdawn_ts_ea")
TITLES = {
    "logreg": "logistic regression",
    "xdawn_ts": "XDAWN + tangent space",
    "logreg_ea": "logistic regression, aligned",
    "xdawn_ts_ea": "XDAWN + tangent space, aligned",
}
_ALIGNED = "_ea"  # suffix of the aligned variant of a pipeline

# The untuned values (what `make_pipeline` uses for a parameter it is not given).
DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 1e-3},
    "xdawn_ts": {"nfilter": 4, "C": 1.0},
}
# The default search grids, small (they run once per fold). Combinations are taken in scikit-learn's
# ``ParameterGrid`` order (keys sorted, the last key varying fastest; values in the order listed),
# each list running from the strongest regularisation, so the tie-break toward the earlier entry
# prefers smaller C, then fewer XDAWN filters.
GRIDS: dict[str, dict[str, list[Any]]] = {
    "logreg": {"C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0]},
    "xdawn_ts": {"C": [0.1, 1.0, 10.0], "nfilter": [2, 4, 8]},
}
for _name in ("logreg", "xdawn_ts"):
    DEFAULTS[_name + _ALIGNED] = DEFAULTS[_name]
    GRIDS[_name + _ALIGNED] = GRIDS[_name]
# A parameter's pipeline step (scikit-learn's ``<step>__<param>`` naming).
_ROUTE = {"C": "clf__C", "nfilter": "xdawn__nfilter"}


class Epochs(NamedTuple):
    """A loader's labelled windows, stacked."""

    x: np.ndarray  # [N, C, T] float32
    y: np.ndarray  # [N] int64
    subjects: np.ndarray  # [N] str
    sample_ids: list[str]  # [N], the batches' ``sample_id`` (what the model's predictions are keyed by)


def collect_epochs(loader: Iterable[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack a loader's labelled windows: ``X [N, C, T]`` float32, ``y [N]`` int, ``subjects [N]``."""
    epochs = collect_labelled_epochs(loader)
    return epochs.x, epochs.y, epochs.subjects


def collect_labelled_epochs(loader: Iterable[dict[str, Any]]) -> Epochs:
    """A loader's labelled windows with their sample ids (`Epochs`).

    Padded channels are dropped; every window must then have the same channels (one montage).
    """
    xs, ys, subs, ids = [], [], [], []
    for batch in loader:
        keep = batch["labels"] >= 0
        if not bool(keep.any()):
            continue
        mask = batch["channel_mask"][keep]  # [b, C]
        n_real = mask.sum(dim=1)
        if int(n_real.min()) != int(n_real.max()):
            raise ValueError("baselines need one montage: windows have different channel counts")
        sig = batch["signal"][keep][mask].reshape(int(keep.sum()), int(n_real[0]), -1)  # [b, C_real, T]
        xs.append(sig.float().numpy())
        ys.append(batch["labels"][keep].numpy())
        subs += [s for s, k in zip(batch["subject"], keep.tolist(), strict=True) if k]
        ids += [i for i, k in zip(batch["sample_id"], keep.tolist(), strict=True) if k]
    if not xs:
        raise ValueError("the loader yielded no labelled windows")
    return Epochs(np.concatenate(xs), np.concatenate(ys).astype(np.int64), np.asarray(subs), ids)


class Tuned(NamedTuple):
    """What `tune` chose and why; JSON-able (``tuned._asdict()``).

    ``params``: the chosen combination; ``table``: every combination in grid order, as
    ``{"params": {...}, "balanced_accuracy": float}`` on inner-validation.
    """

    params: dict[str, Any]
    table: list[dict[str, Any]]


def _check(name: str) -> None:
    if name not in TITLES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def _flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def make_pipeline(name: str, seed: int = 0, **params: Any):
    """A scikit-learn pipeline taking ``X [N, C, T]``; ``params`` override `DEFAULTS` (``C``, and
    ``nfilter`` for the XDAWN pipelines). An ``*_ea`` name gives its plain pipeline: the alignment
    needs the subjects and is applied to the inputs beforehand (`baseline_inputs`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    _check(name)
    unknown = set(params) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(f"baseline {name!r} takes {sorted(DEFAULTS[name])}, not {sorted(unknown)}")
    p = {**DEFAULTS[name], **params}
    clf = LogisticRegression(C=p["C"], max_iter=2000, random_state=seed)
    if name.removesuffix(_ALIGNED) == "logreg":
        return Pipeline(
            [("flatten", FunctionTransformer(_flatten)), ("scale", StandardScaler()), ("clf", clf)]
        )
    from pyriemann.estimation import XdawnCovariances
    from pyriemann.tangentspace import TangentSpace

    return Pipeline(
        [
            ("xdawn", XdawnCovariances(nfilter=p["nfilter"], estimator="oas")),
            ("tangent", TangentSpace(metric="riemann")),
            ("clf", clf),
        ]
    )


def baseline_inputs(name: str, x: np.ndarray, subjects: np.ndarray | None = None) -> np.ndarray:
    """What baseline ``name``'s pipeline is fed for epochs ``x [N, C, T]``: float64, and for an
    ``*_ea`` baseline aligned per subject (``subjects [N]`` required) on these epochs alone."""
    _check(name)
    if not name.endswith(_ALIGNED):
        return np.asarray(x, dtype=np.float64)
    if subjects is None:
        raise ValueError(f"baseline {name!r} aligns per subject: pass the epochs' subjects")
    from neurotrain.train.evaluation.alignment import euclidean_align

    return euclidean_align(x, subjects)


def tune(
    name: str,
    inner_train: Epochs,
    inner_val: Epochs,
    seed: int = 0,
    grid: Mapping[str, list[Any]] | None = None,
) -> Tuned:
    """Choose ``name``'s parameters on the inner split alone: each combination of ``grid``
    (default `GRIDS[name]`) is fitted on ``inner_train`` and scored by balanced accuracy on
    ``inner_val`` (scikit-learn's ``GridSearchCV`` over that one predefined split); the best wins,
    a tie going to the earliest combination in grid order. For ``*_ea`` each part is aligned per
    subject on its own epochs, as the outer parts are."""
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    _check(name)
    grid = dict(GRIDS[name] if grid is None else grid)
    unknown = set(grid) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(f"baseline {name!r} takes {sorted(DEFAULTS[name])}, not {sorted(unknown)}")
    x_tr = baseline_inputs(name, inner_train.x, inner_train.subjects)
    x_va = baseline_inputs(name, inner_val.x, inner_val.subjects)
    split = PredefinedSplit(np.r_[np.full(len(x_tr), -1), np.zeros(len(x_va), dtype=int)])
    search = GridSearchCV(
        make_pipeline(name, seed=seed),
        {_ROUTE[k]: list(v) for k, v in grid.items()},
        scoring="balanced_accuracy",
        cv=split,
        refit=False,
        error_score="raise",
    )
    search.fit(np.concatenate([x_tr, x_va]), np.concatenate([inner_train.y, inner_val.y]))
    results = search.cv_results_
    table = [
        {"params": {k.split("__")[-1]: _plain(v) for k, v in p.items()}, "balanced_accuracy": float(s)}
        for p, s in zip(results["params"], results["mean_test_score"], strict=True)
    ]
    scores = np.array([row["balanced_accuracy"] for row in table])
    best = int(np.flatnonzero(scores == scores.max())[0])  # the earliest of the best
    return Tuned(params=dict(table[best]["params"]), table=table)


def _plain(v: Any) -> Any:
    """A grid value as a plain Python number (JSON-able)."""
    return v.item() if isinstance(v, np.generic) else v


def fit_and_score(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Fit baseline ``name`` on train epochs, score on test epochs (the metrics the models log)."""
    return classification_scores(y_test, fit_and_predict(name, x_train, y_train, x_test, seed))


def fit_and_predict(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    seed: int = 0,
    *,
    params: Mapping[str, Any] | None = None,
    subjects_train: np.ndarray | None = None,
    subjects_test: np.ndarray | None = None,
) -> np.ndarray:
    """Fit baseline ``name`` (with ``params``, else `DEFAULTS`) on train epochs; its class
    probabilities ``[N_test, K]`` on test epochs. ``*_ea`` baselines need both parts' subjects."""
    pipe = make_pipeline(name, seed=seed, **dict(params or {}))
    pipe.fit(baseline_inputs(name, x_train, subjects_train), y_train)
    return pipe.predict_proba(baseline_inputs(name, x_test, subjects_test))


def classification_scores(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, Cohen's kappa, weighted F1 and (macro, one-vs-rest) AUROC from probabilities."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

    pred = proba.argmax(axis=1)
    if proba.shape[1] == 2:
        auroc = roc_auc_score(y_true, proba[:, 1])
    else:
        auroc = roc_auc_score(y_true, proba, multi_class="ovr", average="macro")
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "kappa": float(cohen_kappa_score(y_true, pred)),
        "f1_weighted": float(f1_score(y_true, pred, average="weighted")),
        "auroc": float(auroc),
    }


def cross_validate(
    name: str, x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0
) -> list[dict[str, float]]:
    """Stratified k-fold scores of one subject's epochs (within-subject protocol)."""
    from sklearn.model_selection import StratifiedKFold

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [fit_and_score(name, x[tr], y[tr], x[te], y[te], seed) for tr, te in cv.split(x, y)]


def downsample(x: np.ndarray, sfreq: float, max_sfreq: float = 128.0) -> np.ndarray:
    """Epochs ``x [..., T]`` brought to at most ``max_sfreq`` by the integer factor
    ``step = max(1, sfreq // max_sfreq)`` (the factor the baselines always used), now with an
    anti-alias filter: scipy's ``resample_poly`` (a linear-phase, delay-compensated — zero-phase —
    Kaiser-window FIR low-pass at the new Nyquist frequency; the epoch is extended by its end-to-end
    linear trend, ``padtype="line"``, so the edges are not pulled toward zero). Output length
    ``ceil(T / step)``, as slicing ``x[..., ::step]`` gives; ``step == 1`` returns ``x`` as is.
    """
    from scipy.signal import resample_poly

    step = max(1, int(sfreq // max_sfreq))
    if step == 1:
        return x
    return resample_poly(np.asarray(x, dtype=np.float64), 1, step, axis=-1, padtype="line")


def score_on_loaders(
    names: Iterable[str],
    train_loader: Iterable[dict[str, Any]] | Epochs,
    test_loader: Iterable[dict[str, Any]] | Epochs,
    sfreq: float,
    max_sfreq: float = 128.0,
    seed: int = 0,
    **options: Any,
) -> dict[str, dict[str, float]]:
    """Fit each baseline on a train loader's epochs and score it on a test loader's, by title.

    Epochs are resampled to at most ``max_sfreq`` (`downsample`; the reference figures use 128 Hz).
    ``options``: ``params`` / ``inner`` / ``grids`` as `predict_on_loaders` takes them.
    """
    predicted = predict_on_loaders(names, train_loader, test_loader, sfreq, max_sfreq, seed, **options)
    return {title: p["scores"] for title, p in predicted.items()}


def _epochs(source: Iterable[dict[str, Any]] | Epochs, sfreq: float, max_sfreq: float) -> Epochs:
    """A loader's (or given) labelled epochs, resampled (`downsample`)."""
    epochs = source if isinstance(source, Epochs) else collect_labelled_epochs(source)
    return epochs._replace(x=downsample(epochs.x, sfreq, max_sfreq))


def predict_on_loaders(
    names: Iterable[str],
    train_loader: Iterable[dict[str, Any]] | Epochs,
    test_loader: Iterable[dict[str, Any]] | Epochs,
    sfreq: float,
    max_sfreq: float = 128.0,
    seed: int = 0,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    inner: tuple[Iterable[dict[str, Any]] | Epochs, Iterable[dict[str, Any]] | Epochs] | None = None,
    grids: Mapping[str, Mapping[str, list[Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """`score_on_loaders` with each baseline's per-epoch predictions and settings, by title.

    Settings of baseline ``n``: ``params[n]`` when given (chosen earlier; missing keys from
    `DEFAULTS`); else, with ``inner = (inner_train, inner_val)``, tuned there by `tune` (over
    ``grids[n]``, default `GRIDS[n]`) — the test loader is not read until the settings are fixed;
    else `DEFAULTS`. Loaders may be given as `Epochs` already collected; every part (inner ones
    too) is resampled alike.

    Each entry: ``scores`` (the metrics), ``sample_ids``, ``y_true`` and ``y_pred`` (lists in the
    test loader's order), so the baselines can be compared epoch by epoch with a model scored on
    the same windows; ``params`` (the settings used, complete); and, when tuned, ``tuning`` (`Tuned`
    ``table``: every combination's inner-validation balanced accuracy, in grid order).
    """
    names = list(names)
    for n in names:
        _check(n)
    params = dict(params or {})
    stray = set(params) - set(names)
    if stray:
        raise ValueError(f"params given for baselines not run: {sorted(stray)}")
    settings: dict[str, tuple[dict[str, Any], list[dict[str, Any]] | None]] = {}
    to_tune = [n for n in names if n not in params]
    if inner is not None and to_tune:
        inner_train, inner_val = (_epochs(part, sfreq, max_sfreq) for part in inner)
        for n in to_tune:
            tuned = tune(n, inner_train, inner_val, seed, (grids or {}).get(n))
            settings[n] = ({**DEFAULTS[n], **tuned.params}, tuned.table)
    for n in names:
        if n in params:
            settings[n] = ({**DEFAULTS[n], **{k: _plain(v) for k, v in params[n].items()}}, None)
        settings.setdefault(n, (dict(DEFAULTS[n]), None))
    train, test = _epochs(train_loader, sfreq, max_sfreq), _epochs(test_loader, sfreq, max_sfreq)
    out = {}
    for n in names:
        chosen, table = settings[n]
        proba = fit_and_predict(
            n,
            train.x,
            train.y,
            test.x,
            seed,
            params=chosen,
            subjects_train=train.subjects,
            subjects_test=test.subjects,
        )
        out[TITLES[n]] = {
            "scores": classification_scores(test.y, proba),
            "sample_ids": list(test.sample_ids),
            "y_true": test.y.tolist(),
            "y_pred": proba.argmax(axis=1).tolist(),
            "params": dict(chosen),
            **({"tuning": table} if table is not None else {}),
        }
    return out
