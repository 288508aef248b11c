"""Normalisation constants from the manifest's statistics, never from the batch.

The manifest stores per-channel-type statistics over the train split. The loader applies
``x -> (x - center) / scale`` per channel with (mean, std) for ``method == "mean_std"`` and
(median, iqr) for ``method == "robust"``. The resulting table is what a checkpoint records
(``ShardDataModule.normalization``), so inference applies exactly the training constants.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def normalization_from_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``{"method", "per_type": {ch_type: {"center", "scale"}}}`` from ``manifest["statistics"]``."""
    stats = manifest.get("statistics") or {}
    method = stats.get("method", "mean_std")
    keys = ("median", "iqr") if method == "robust" else ("mean", "std")
    per_type = {}
    for ch_type, s in sorted((stats.get("per_type") or {}).items()):
        center, scale = float(s[keys[0]]), float(s[keys[1]])
        if not scale > 0:
            log.warning("statistics for %r have scale %r; that type is only centred", ch_type, scale)
            scale = 1.0
        per_type[ch_type] = {"center": center, "scale": scale}
    return {"method": method, "split": stats.get("split"), "per_type": per_type}


def type_table(norm: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{ch_type: (center, scale)}`` from one dataset's normalisation entry."""
    return {t: (v["center"], v["scale"]) for t, v in norm["per_type"].items()}
