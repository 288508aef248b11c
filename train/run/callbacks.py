"""Callbacks every ``neurotrain fit`` run gets: self-describing checkpoints and throughput.

``CheckpointMetadata`` writes into each checkpoint what is needed to use it without the run
that made it: the normalisation statistics, channel information and manifest sha256 of the
data (the data position is Lightning's datamodule/loader state), and the model config (the
module's hyperparameters). `throughput_monitor` is Lightning's ``ThroughputMonitor`` told how to
count our windows and tokens.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ThroughputMonitor


class CheckpointMetadata(Callback):
    """Adds ``normalization`` and ``data`` (datasets, manifest sha256s, channel sets) to checkpoints."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        dm = trainer.datamodule
        normalization = getattr(dm, "normalization", None) or getattr(pl_module, "normalization", None)
        if normalization:
            checkpoint["normalization"] = normalization
        manifests = getattr(dm, "manifests", None) or []
        checkpoint["data"] = {
            "datasets": list(getattr(dm, "datasets", []) or []),
            "manifest_sha256": [m.get("_sha256") for m in manifests],
            "channel_sets": [cs for m in manifests for cs in m.get("channel_sets", [])],
            "labels": [m.get("labels", {}).get("names", []) for m in manifests],
        }


def throughput_monitor(patch_size: int | None, window: int = 20) -> ThroughputMonitor:
    """Lightning's ``ThroughputMonitor`` over our batches: windows, tokens and (on a GPU) MFU.

    Logged every ``trainer.log_every_n_steps`` once ``window`` steps have been seen, averaged over
    the last ``window``: ``train/device/samples_per_sec`` (windows), ``train/device/items_per_sec``
    (tokens: real channels × time patches, ``patch_size`` samples each), ``train/device/flops_per_sec``
    and, on a GPU, ``train/device/mfu`` from the module's ``flops_per_batch``; the global
    ``train/samples_per_sec`` … under DDP. The same for validation under ``validate/``.
    """
    return ThroughputMonitor(
        batch_size_fn=batch_windows,
        length_fn=partial(batch_tokens, patch_size=patch_size or 1),
        window_size=max(2, window),
    )


def batch_windows(batch: Any) -> int:
    """Windows in a batch (at least 1: Lightning's throughput counters must grow with the batches)."""
    return max(1, int(batch["signal"].shape[0])) if isinstance(batch, dict) and "signal" in batch else 1


def batch_tokens(batch: Any, patch_size: int = 1) -> int:
    """Tokens of a batch: real (channel, time patch) pairs, at least one per window."""
    if not isinstance(batch, dict) or "channel_mask" not in batch:
        return batch_windows(batch)
    tokens = int(batch["channel_mask"].sum()) * (int(batch["signal"].shape[-1]) // patch_size)
    return max(tokens, batch_windows(batch))
