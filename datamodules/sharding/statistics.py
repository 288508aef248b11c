"""Per-channel-type normalisation statistics, accumulated per recording and merged per split.

Each recording contributes exact float64 sums (for mean/std) and a deterministic strided
subsample (for the robust median/IQR), so recordings can be processed in parallel, in any
order, resumed, and merged later over the train split only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SUBSAMPLE_PER_TYPE = 20_000  # values kept per channel type and recording for median/IQR


def accumulate(data: np.ndarray, ch_types: list[str], exclude: np.ndarray) -> dict[str, dict[str, Any]]:
    """Sums and a subsample per channel type of ``data [C, T]``, skipping rows where ``exclude``."""
    out: dict[str, dict[str, Any]] = {}
    types = np.array(ch_types)
    for t in sorted(set(ch_types)):
        rows = np.nonzero((types == t) & ~exclude)[0]
        if rows.size == 0:
            continue
        x = data[rows] if rows.size < len(ch_types) else data  # [C_t, T], no copy when all rows
        n = x.size
        total = float(x.sum(dtype=np.float64))
        sumsq = float(np.einsum("ij,ij->", x, x, dtype=np.float64))  # float64 accumulation, no copy
        stride = max(1, n // SUBSAMPLE_PER_TYPE)  # every row contributes T / stride values
        sub = x[:, ::stride].ravel()[:SUBSAMPLE_PER_TYPE]
        out[t] = {
            "count": int(n),
            "sum": total,
            "sumsq": sumsq,
            "subsample": [float(f"{v:.6g}") for v in sub],
        }
    return out


def merge(parts: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Combine accumulators into ``{type: {mean, std, median, iqr, count}}``."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for t, acc in part.items():
            by_type.setdefault(t, []).append(acc)
    stats: dict[str, dict[str, float]] = {}
    for t, accs in sorted(by_type.items()):
        n = sum(a["count"] for a in accs)
        mean = sum(a["sum"] for a in accs) / n
        var = max(sum(a["sumsq"] for a in accs) / n - mean * mean, 0.0)
        sub = np.concatenate([np.asarray(a["subsample"], dtype=np.float64) for a in accs])
        q25, q50, q75 = np.percentile(sub, [25, 50, 75])
        stats[t] = {
            "count": int(n),
            "mean": float(mean),
            "std": float(np.sqrt(var)),
            "median": float(q50),
            "iqr": float(q75 - q25),
        }
    return stats
