"""Callbacks every ``neurotrain fit`` run gets: self-describing checkpoints and throughput.

``CheckpointMetadata`` writes into each checkpoint what is needed to use it without the run
that made it: the normalisation statistics, channel information and manifest sha256 of the
data (the data position is Lightning's datamodule/loader state), and the model config (the
module's hyperparameters). ``Throughput`` logs samples/s and tokens/s every N steps, and the
model FLOPs utilisation when running on a CUDA GPU.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


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


class Throughput(Callback):
    """Logs ``throughput/samples_per_s``, ``throughput/tokens_per_s`` (and ``throughput/mfu`` on GPU).

    A token is one (channel, time patch) pair of a real channel: ``channel_mask.sum() * T // patch``.
    """

    def __init__(self, every_n_steps: int = 20) -> None:
        self.every_n_steps = every_n_steps
        self._t0 = 0.0
        self._samples = 0
        self._tokens = 0
        self._peak_flops: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        if trainer.strategy.root_device.type == "cuda":
            from lightning_fabric.utilities.throughput import get_available_flops

            dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else torch.float32
            self._peak_flops = get_available_flops(trainer.strategy.root_device, dtype)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, dict) or "signal" not in batch:
            return
        self._samples += int(batch["signal"].shape[0])
        patch = getattr(getattr(pl_module, "encoder", None), "patch_size", None) or 1
        if "channel_mask" in batch:
            self._tokens += int(batch["channel_mask"].sum()) * (int(batch["signal"].shape[-1]) // patch)
        if (trainer.global_step + 1) % self.every_n_steps:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        dt = max(time.perf_counter() - self._t0, 1e-9)
        world = trainer.world_size
        metrics = {
            "throughput/samples_per_s": self._samples * world / dt,
            "throughput/tokens_per_s": self._tokens * world / dt,
        }
        if self._peak_flops:
            n_params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
            # 6 FLOPs per parameter per token for a forward + backward pass (Kaplan et al.)
            metrics["throughput/mfu"] = 6 * n_params * self._tokens / dt / self._peak_flops
        pl_module.log_dict(metrics, rank_zero_only=True)
        self._reset()

    def _reset(self) -> None:
        self._t0 = time.perf_counter()
        self._samples = 0
        self._tokens = 0
