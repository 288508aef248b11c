"""How well any model could predict a target, from repeated presentations of the same stimuli.

A measured response is signal plus trial noise; averaging ``n`` repeats shrinks the noise variance
to sigma²/n but never removes it, so even the true generating model cannot reach r = 1 against
the averaged response. Both estimators here return the **ceiling on r²** of a model scored against
the mean of ``n`` repeats (a fraction in [0, 1]: the share of the averaged response's variance
across stimuli that is signal). The ceiling on Pearson r is its square root; `encoding` divides
a held-out r by that square root (``r / sqrt(ceiling)``), so 1.0 means "as good as the truth".

- `split_half_reliability`: correlate the mean of one random half of the repeats with the mean of
  the other half across stimuli, average r over seeded random splits, and step it up to ``n``
  repeats with the Spearman–Brown formula ``k·r / (1 + (k − 1)·r)`` (``k = n / (n/2)``).
- `ncsnr` and `ncsnr_ceiling`: the noise-ceiling SNR of Allen et al. (2022, the Natural Scenes
  Dataset): sigma_noise² is the mean over stimuli of the variance across repeats, the signal
  variance is the total variance minus it (floored at 0), ``ncsnr = sqrt(var_signal) / sigma_noise``,
  and the ceiling is ``ncsnr² / (ncsnr² + 1/n)`` (the paper writes it ×100 as a percentage).

    R = responses  # [n_stimuli, n_repeats, n_targets]
    nc = ncsnr_ceiling(ncsnr(R), n_average=R.shape[1])   # [n_targets], ceiling on r²
    rel = split_half_reliability(R, n_splits=50, seed=0)  # [n_targets], same quantity
"""

from __future__ import annotations

import numpy as np


def split_half_reliability(responses: np.ndarray, n_splits: int = 50, seed: int = 0) -> np.ndarray:
    """Spearman–Brown corrected split-half reliability of each target, shape ``[n_targets]``.

    ``responses`` is ``[n_stimuli, n_repeats, n_targets]`` with at least 2 repeats. Each of the
    ``n_splits`` seeded random splits divides the repeats into two halves (the odd one out of an
    odd count is left out of that split), correlates the two half-means across stimuli per target;
    the mean r over splits is stepped up to the reliability of the mean of all ``n_repeats``
    repeats. That is the ceiling on r² of a model scored against the full average (it can be
    negative for a target with no signal).
    """
    r = check_repeats(responses)
    n_stimuli, n_repeats, n_targets = r.shape
    rng = np.random.default_rng(seed)
    half = n_repeats // 2
    corrs = np.empty((n_splits, n_targets))
    for s in range(n_splits):
        order = rng.permutation(n_repeats)
        a = r[:, order[:half]].mean(axis=1)  # [n_stimuli, n_targets]
        b = r[:, order[half : 2 * half]].mean(axis=1)
        corrs[s] = pearson_columns(a, b)
    mean_r = corrs.mean(axis=0)
    k = n_repeats / half  # the full average is k times as many repeats as a half
    return k * mean_r / (1.0 + (k - 1.0) * mean_r)


def ncsnr(responses: np.ndarray) -> np.ndarray:
    """Noise-ceiling signal-to-noise ratio of each target (Allen et al. 2022), shape ``[n_targets]``.

    ``responses`` is ``[n_stimuli, n_repeats, n_targets]``. sigma_noise² = mean over stimuli of
    the variance across repeats (ddof 1); var_signal = the variance of all responses pooled
    (ddof 1) minus sigma_noise², floored at 0; ``ncsnr = sqrt(var_signal) / sigma_noise``.
    """
    r = check_repeats(responses)
    noise_var = r.var(axis=1, ddof=1).mean(axis=0)  # [n_targets]
    total_var = r.reshape(-1, r.shape[2]).var(axis=0, ddof=1)
    signal_var = np.maximum(total_var - noise_var, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise_var > 0, np.sqrt(signal_var) / np.sqrt(noise_var), np.inf)


def ncsnr_ceiling(snr: np.ndarray, n_average: int) -> np.ndarray:
    """The ceiling on r² (a fraction) of a model scored against the mean of ``n_average`` repeats,
    from the NCSNR: ``ncsnr² / (ncsnr² + 1/n_average)``; same shape as ``snr``."""
    if n_average < 1:
        raise ValueError(f"n_average must be at least 1, got {n_average}")
    s2 = np.asarray(snr, dtype=float) ** 2
    return np.where(np.isinf(s2), 1.0, s2 / (s2 + 1.0 / n_average))


def analytic_ceiling(snr: np.ndarray | float, n_average: int) -> np.ndarray:
    """The true ceiling on r² when signal variance / noise variance is ``snr`` (per trial) and
    ``n_average`` repeats are averaged: ``snr·n / (snr·n + 1)``. What a simulation with a known
    SNR implies, for checking the estimators above."""
    s = np.asarray(snr, dtype=float) * n_average
    return s / (s + 1.0)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of two ``[n_samples, n_columns]`` arrays,
    shape ``[n_columns]`` (0 where a column is constant)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=0) / denom, 0.0)


def check_repeats(responses: np.ndarray) -> np.ndarray:
    """``responses`` as a float array ``[n_stimuli, n_repeats, n_targets]``, or a ValueError that
    says which of the shape, the repeat count or the values is wrong."""
    r = np.asarray(responses, dtype=float)
    if r.ndim != 3:
        raise ValueError(f"responses must be [n_stimuli, n_repeats, n_targets], got shape {r.shape}")
    if r.shape[1] < 2:
        raise ValueError(f"a noise ceiling needs at least 2 repeats per stimulus, got {r.shape[1]}")
    if r.shape[0] < 3:
        raise ValueError(f"a noise ceiling needs at least 3 stimuli, got {r.shape[0]}")
    if not np.isfinite(r).all():
        raise ValueError("responses contain NaN or infinite values")
    return r
