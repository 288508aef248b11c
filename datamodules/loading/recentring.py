"""Per-subject re-centring (Euclidean alignment) of the model's input, the loader's side of it.

Euclidean alignment (He & Wu, IEEE TBME 2019) whitens every epoch of a subject by that subject's
reference covariance, so that every subject's mean epoch covariance is (close to) the identity::

    R_s = shrink(mean over subject s's windows of cov(x_i))      # [C, C], over its real channel slots
    x_i <- R_s^{-1/2} x_i                                         # [C, T], every window i of s

It removes between-subject differences of the second-order statistics (head size, impedances,
gain, montage placement) before a model pooled over subjects sees the data: the standard
unsupervised cross-subject adaptation. ``ShardDataModule(recenter="euclidean")`` applies it to
the batches of every stage, each stage's subjects aligned with *their own windows of that stage*
(a pass over the stage's windows at set-up, in the stored order, before any batch is delivered):
training subjects with their training windows, a held-out subject with its held-out windows —
their signals, never their labels (transductive, as the method is defined; say so with results).
The evaluation's aligned baselines (`neurotrain.train.evaluation.alignment`) use the same two
functions below on the same epochs, so a re-centred model and a re-centred baseline see identical
inputs.

The window covariance is pyriemann's sample covariance (``"scm"``), averaged arithmetically over
the subject's windows; the mean is shrunk toward a scaled identity by ``SHRINKAGE`` (scikit-learn's
``shrunk_covariance``) because average-referenced EEG is rank-deficient and ``R^{-1/2}`` would not
exist otherwise (`neurotrain.train.evaluation.alignment` explains the choice). The inverse square
root is pyriemann's ``invsqrtm`` (imported when first used: the loader does not pay for
pyriemann unless asked). Padding slots and channels a window lacks are left untouched:
the matrix acts on the slots every window of the subject fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

SHRINKAGE = 0.01  # share of the scaled identity mixed into each subject's reference covariance
RECENTER_CHOICES = ("none", "euclidean")


def covariance_sum(x: np.ndarray) -> np.ndarray:
    """Sum over windows ``x [N, C, T]`` of their sample covariances (pyriemann ``"scm"``): ``[C, C]``
    float64. Summed batch by batch and divided by the count, it is the arithmetic mean covariance."""
    try:  # pyriemann >= 0.12 (the ``pyriemann.utils`` modules are deprecated there)
        from pyriemann.geometry.covariance import covariances
    except ImportError:  # older pyriemann
        from pyriemann.utils.covariance import covariances

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected windows [N, C, T], got shape {x.shape}")
    if len(x) == 0:
        return np.zeros((x.shape[1], x.shape[1]))
    return covariances(x, estimator="scm").sum(axis=0)


def recentring_from_mean(mean_cov: np.ndarray, shrinkage: float = SHRINKAGE) -> np.ndarray:
    """``R^{-1/2} [C, C]`` (symmetric) from a group's mean covariance, after shrinkage."""
    from sklearn.covariance import shrunk_covariance

    try:
        from pyriemann.geometry.base import invsqrtm
    except ImportError:  # older pyriemann
        from pyriemann.utils.base import invsqrtm

    if not 0 < shrinkage < 1:
        raise ValueError(f"shrinkage must be in (0, 1), got {shrinkage}")
    return invsqrtm(shrunk_covariance(np.asarray(mean_cov, dtype=np.float64), shrinkage=shrinkage))


@dataclass
class RecentringFit:
    """Accumulates per-subject covariances over batches, then gives each subject's matrix.

    ``add(batch)`` takes a loader batch (``signal [B, C_max, T]``, ``channel_mask [B, C_max]``,
    ``subject``); ``table()`` returns ``{subject: Recentring}``.
    """

    c_max: int
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    slots: dict[str, np.ndarray] = field(default_factory=dict)  # bool [C_max]: filled in every window

    def add(self, batch: dict[str, Any]) -> None:
        x = batch["signal"].numpy()
        mask = batch["channel_mask"].numpy()
        subjects = np.asarray(batch["subject"])
        for s in dict.fromkeys(batch["subject"]):
            rows = subjects == s
            self.sums[s] = self.sums.get(s, 0.0) + covariance_sum(x[rows])
            self.counts[s] = self.counts.get(s, 0) + int(rows.sum())
            both = mask[rows].all(axis=0)
            self.slots[s] = both if s not in self.slots else self.slots[s] & both

    def table(self, shrinkage: float = SHRINKAGE) -> dict[str, Recentring]:
        out = {}
        for s, total in self.sums.items():
            idx = np.flatnonzero(self.slots[s])
            mean = (total / self.counts[s])[np.ix_(idx, idx)]
            out[s] = Recentring(idx, recentring_from_mean(mean, shrinkage).astype(np.float32), self.counts[s])
        return out


@dataclass(frozen=True)
class Recentring:
    """One subject's alignment: ``matrix [K, K]`` acting on batch slots ``slots [K]``."""

    slots: np.ndarray  # int, the channel slots every window of the subject fills
    matrix: np.ndarray  # float32 [K, K], R^{-1/2}
    windows: int  # how many windows the reference covariance was averaged over


def apply_recentring(batch: dict[str, Any], table: dict[str, Recentring], stage: str) -> None:
    """Align ``batch["signal"]`` in place, each window by its subject's matrix (``table``).

    A subject without a matrix is an error naming it and the stage (the table is fitted on the
    same windows, so this means the data changed between the pass and the batch).
    """
    signal: torch.Tensor = batch["signal"]
    subjects = batch["subject"]
    for s in dict.fromkeys(subjects):
        if s not in table:
            raise RuntimeError(f"recenter: no alignment for subject {s!r} in stage {stage!r}")
        r = table[s]
        rows = torch.as_tensor([i for i, t in enumerate(subjects) if t == s])
        slots = torch.from_numpy(r.slots)
        x = signal[rows][:, slots]  # [b, K, T]
        signal[rows.unsqueeze(1), slots.unsqueeze(0)] = torch.from_numpy(r.matrix) @ x
