"""Classical decoding baselines on exactly the epochs and splits the models see.

The epochs come out of the same ``ShardDataModule`` loaders as the model's batches (same
events, window, normalisation and subject splits), so a baseline and a fine-tuned encoder are
compared on identical data. Two pipelines, the usual references for ERP decoding:

- ``logreg``: standardised logistic regression on the epoch samples (channels × time, flattened);
- ``xdawn_ts``: XDAWN spatial filters → covariance matrices → Riemannian tangent space →
  logistic regression (pyriemann), the strong ERP pipeline.

    X, y, subjects = collect_epochs(datamodule.val_dataloader())     # X [N, C, T]
    scores = fit_and_score("xdawn_ts", X_train, y_train, X_val, y_val)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

BASELINES = ("logreg", "xdawn_ts")
TITLES = {"logreg": "logistic regression", "xdawn_ts": "XDAWN + tangent space"}


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


def make_pipeline(name: str, n_filters: int = 4, seed: int = 0):
    """A scikit-learn pipeline taking ``X [N, C, T]``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline as sk_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if name == "logreg":
        flatten = FunctionTransformer(lambda x: x.reshape(len(x), -1))
        return sk_pipeline(
            flatten, StandardScaler(), LogisticRegression(C=1e-3, max_iter=2000, random_state=seed)
        )
    if name == "xdawn_ts":
        from pyriemann.estimation import XdawnCovariances
        from pyriemann.tangentspace import TangentSpace

        return sk_pipeline(
            XdawnCovariances(nfilter=n_filters, estimator="oas"),
            TangentSpace(metric="riemann"),
            LogisticRegression(max_iter=2000, random_state=seed),
        )
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def fit_and_score(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Fit baseline ``name`` on train epochs, score on test epochs (the metrics the models log)."""
    return classification_scores(y_test, fit_and_predict(name, x_train, y_train, x_test, seed))


def fit_and_predict(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Fit baseline ``name`` on train epochs; its class probabilities ``[N_test, K]`` on test epochs."""
    pipe = make_pipeline(name, seed=seed)
    pipe.fit(x_train.astype(np.float64), y_train)
    return pipe.predict_proba(x_test.astype(np.float64))


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


def score_on_loaders(
    names: Iterable[str],
    train_loader: Iterable[dict[str, Any]],
    test_loader: Iterable[dict[str, Any]],
    sfreq: float,
    max_sfreq: float = 128.0,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Fit each baseline on a train loader's epochs and score it on a test loader's, by title.

    Epochs are decimated by an integer factor to at most ``max_sfreq`` (the reference figures
    use 128 Hz; the shipped recordings are already low-passed at 30 Hz, so no filter is needed).
    """
    predicted = predict_on_loaders(names, train_loader, test_loader, sfreq, max_sfreq, seed)
    return {title: p["scores"] for title, p in predicted.items()}


def predict_on_loaders(
    names: Iterable[str],
    train_loader: Iterable[dict[str, Any]],
    test_loader: Iterable[dict[str, Any]],
    sfreq: float,
    max_sfreq: float = 128.0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """`score_on_loaders` with each baseline's per-epoch predictions, by title.

    Each entry: ``scores`` (the metrics), ``sample_ids``, ``y_true`` and ``y_pred`` (lists in the
    test loader's order), so the baselines can be compared epoch by epoch with a model scored on
    the same windows.
    """
    train, test = collect_labelled_epochs(train_loader), collect_labelled_epochs(test_loader)
    step = max(1, int(sfreq // max_sfreq))
    x_tr, x_te = train.x[:, :, ::step], test.x[:, :, ::step]
    out = {}
    for n in names:
        proba = fit_and_predict(n, x_tr, train.y, x_te, seed)
        out[TITLES[n]] = {
            "scores": classification_scores(test.y, proba),
            "sample_ids": list(test.sample_ids),
            "y_true": test.y.tolist(),
            "y_pred": proba.argmax(axis=1).tolist(),
        }
    return out
