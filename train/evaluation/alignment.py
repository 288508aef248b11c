"""Euclidean alignment (re-centring) of EEG epochs per subject, the standard unsupervised adaptation
for cross-subject decoding (He & Wu, "Transfer learning for brain-computer interfaces: a Euclidean
space data alignment approach", IEEE TBME 2019).

Each subject's epochs are whitened by the subject's own reference covariance::

    R_g = shrink(mean over the group's epochs of cov(x_i))      # [C, C]
    x_i <- R_g^{-1/2} x_i                                        # [C, T] for every epoch i of group g

so that after alignment every subject's mean epoch covariance is (close to) the identity: the
between-subject differences of the second-order statistics (head size, impedances, montage
placement, overall gain) are removed before a classifier pooled over subjects sees the data.
It is a pure function of the epochs and their group (subject) labels: class labels are never an
input, so it can be applied to unlabelled data.

How it is fitted in the evaluation (`neurotrain.train.evaluation.baselines`, the ``*_ea``
baselines): per subject, on that subject's epochs *of the part at hand*. A training subject is
aligned with its training epochs; a held-out subject is aligned with its own held-out epochs —
unlabelled, but transductive: the scored epochs' signals (never their labels) shape their own
reference. This is the protocol of the method (the test subject's unlabelled data is available at
calibration time) and it is stated with the results.

Shrinkage, and why: EEG is usually average-referenced (and bad channels interpolated), so the
channel covariance is rank-deficient — the all-ones vector, at least, is in its null space — and
``R^{-1/2}`` does not exist; the exact inverse would multiply float round-off in those directions
by ~1e7 and the data would "blow up". The mean covariance is therefore shrunk toward a scaled
identity, ``(1 - a) R + a tr(R)/C I`` (scikit-learn's ``shrunk_covariance``), before the inverse
square root: the null directions get a finite eigenvalue ``a tr(R)/C`` (their content stays ~0),
directions with much more variance than ``a`` of the average are whitened to ~``1/(1 - a)``, and
those with less are whitened only partially (which also keeps very-low-variance noise directions
from being amplified). The shrinkage is applied once to the mean (estimated from all of a group's
``N x T`` samples), not to each short epoch, so its amount is fixed and known rather than varying
with the epoch length.

    x_aligned = euclidean_align(x, subjects)          # x [N, C, T], subjects [N] -> [N, C, T] float64
"""

from __future__ import annotations

import numpy as np

from neurotrain.datamodules.loading.recentring import SHRINKAGE, covariance_sum, recentring_from_mean

__all__ = ["SHRINKAGE", "euclidean_align", "recentring_matrix", "reference_covariance"]


def reference_covariance(x: np.ndarray, shrinkage: float = SHRINKAGE) -> np.ndarray:
    """One group's reference ``R [C, C]``: the arithmetic mean of its epoch covariances (pyriemann's
    sample covariance ``"scm"``), shrunk toward a scaled identity by ``shrinkage`` (see the module)."""
    from sklearn.covariance import shrunk_covariance

    if not 0 < shrinkage < 1:
        raise ValueError(f"shrinkage must be in (0, 1), got {shrinkage}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"expected epochs [N, C, T] with N >= 1, got shape {x.shape}")
    return shrunk_covariance(covariance_sum(x) / len(x), shrinkage=shrinkage)


def recentring_matrix(x: np.ndarray, shrinkage: float = SHRINKAGE) -> np.ndarray:
    """One group's alignment matrix ``R^{-1/2} [C, C]`` (symmetric), from its epochs ``x [N, C, T]``.

    The same function the loader's ``recenter="euclidean"`` uses (`datamodules/loading/recentring`),
    so a re-centred model and a re-centred baseline see identical inputs."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"expected epochs [N, C, T] with N >= 1, got shape {x.shape}")
    return recentring_from_mean(covariance_sum(x) / len(x), shrinkage)


def euclidean_align(x: np.ndarray, groups: np.ndarray, shrinkage: float = SHRINKAGE) -> np.ndarray:
    """Epochs ``x [N, C, T]`` aligned per group: ``x_i <- R_g^{-1/2} x_i`` for every epoch ``i`` of
    group ``g`` (``groups [N]``, e.g. subjects), ``R_g`` from that group's epochs in ``x`` only.

    Returns float64 ``[N, C, T]`` in the input order. Unsupervised: no labels are taken. Aligning
    a held-out subject with its own (unlabelled) held-out epochs is transductive (module docstring).
    """
    x = np.asarray(x, dtype=np.float64)
    groups = np.asarray(groups)
    if x.ndim != 3 or groups.shape != (len(x),):
        raise ValueError(f"expected x [N, C, T] and groups [N]; got {x.shape} and {groups.shape}")
    out = np.empty_like(x)
    for g in np.unique(groups):
        idx = groups == g
        out[idx] = recentring_matrix(x[idx], shrinkage) @ x[idx]
    return out
