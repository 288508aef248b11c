"""Callbacks every ``neurotrain fit`` run gets: self-describing checkpoints, resume points, a final
validation and throughput.

``CheckpointMetadata`` writes into each checkpoint what is needed to use it without the run
that made it: the normalisation statistics, channel information and manifest sha256 of the
data (the data position is Lightning's datamodule/loader state), and the model config (the
module's hyperparameters). `ResumeCheckpoint` keeps ``last.ckpt``, the resume point, at a moment
a resume continues exactly (never between a training step and the validation due after it).
`FinalValidation` validates a fit that stops at ``max_steps`` inside an epoch. `BestCheckpoint`
keeps the best-k checkpoints by the monitored metric, and none in a fit without validation.
`throughput_monitor` is Lightning's ``ThroughputMonitor`` told how to count our windows and tokens.
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ThroughputMonitor
from pytorch_lightning.strategies import DeepSpeedStrategy
from pytorch_lightning.trainer.states import TrainerFn


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


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` for the best-k checkpoints, off in a fit that never validates.

    Without validation (``trainer.limit_val_batches=0``, no ``validation_step``, an empty val
    split) there is no monitored value: Lightning would try to rank every epoch's checkpoint by a
    metric that never comes and warn ``could not find the monitored key`` without saving any.
    Here ``save_top_k`` becomes 0 for such a fit when training starts (the validation loaders are
    set up by then); ``last.ckpt`` (`ResumeCheckpoint`) is kept as always.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if not fit_validates(trainer):
            self.save_top_k = 0


def fit_validates(trainer: pl.Trainer) -> bool:
    """Whether the fit will validate: validation enabled and, once its loaders exist, not empty."""
    if not trainer.enable_validation:
        return False
    if trainer.val_dataloaders is None:  # not set up yet (validation due in a later epoch)
        return True
    return sum(trainer.num_val_batches) > 0


class ResumeCheckpoint(ModelCheckpoint):
    """``last.ckpt``, the resume point: every ``every_n_train_steps`` steps, each epoch end, the fit end.

    Lightning restores a checkpoint saved at the end of a training batch as "that batch done" and
    skips the validation that was due right after it: restored at an epoch's last batch, the
    epoch counts as finished, so a fit killed between that batch and its validation would resume
    without the epoch's ``val/loss``, best checkpoint and record. A save that falls on a batch a
    validation follows (`validation_follows`: the epoch's last batch, a ``val_check_interval``
    boundary, a stop, the last step) is therefore deferred until that validation has run: to the
    epoch's end, after the best-k checkpoints Lightning saves there, or for a validation inside
    the epoch to the validation's end. A fit killed before then resumes from the previous resume
    point and redoes the steps and the validation.

    ``last.ckpt`` is also saved at the end of every training epoch and of the fit. Each save goes to
    a temporary file renamed over it, so a kill mid-write leaves the previous one (a DeepSpeed
    checkpoint, a folder every rank writes into, is written in place). Only public Lightning API
    is used: ``trainer.save_checkpoint`` and the trainer's loop progress.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            every_n_train_steps=every_n_train_steps or None,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        )
        self.every = int(every_n_train_steps or 0)
        self.pending = False  # a save deferred past the validation that follows its step
        self._saved_step = -1

    @property
    def last_path(self) -> Path:
        return Path(self.dirpath or ".") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._skip(trainer):
            return
        due = self.every > 0 and trainer.global_step % self.every == 0
        if not (due or self.pending) or trainer.global_step == self._saved_step:
            return
        if validation_follows(trainer):
            self.pending = True
        else:  # also a deferred save whose validation did not come (an empty val loader)
            self._save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A validation inside the epoch; at the epoch's (or fit's) end on_train_epoch_end saves.
        if self.pending and not self._skip(trainer) and not _epoch_ends(trainer):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._skip(trainer) and trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._skip(trainer) and trainer.global_step != self._saved_step:
            self._save(trainer)

    def _skip(self, trainer: pl.Trainer) -> bool:
        return bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def _save(self, trainer: pl.Trainer) -> None:
        path = self.last_path
        self.last_model_path = str(path)  # before saving: it is part of the saved state
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            trainer.save_checkpoint(path, self.save_weights_only)
        else:
            tmp = path.with_name(f".{path.name}.tmp")
            trainer.save_checkpoint(tmp, self.save_weights_only)  # global rank zero writes the file
            if trainer.is_global_zero:
                os.replace(tmp, path)
        self._saved_step = trainer.global_step
        self.pending = False


class FinalValidation(Callback):
    """A fit whose last training step leaves the last validation behind validates once more.

    A fit stopped by ``trainer.max_steps`` inside an epoch (or ending in an epoch that
    ``check_val_every_n_epoch`` skips) would end without validating its final weights, and a
    sweep objective or the run record would miss them. At the last training step this asks
    Lightning to stop (``trainer.should_stop``), which validates before the fit ends, through the
    fit's own validation loop: the loggers, the run record and the best checkpoints see it like
    any other validation. A fit without a val split is left alone; with ``min_epochs`` or
    ``min_steps`` not yet met Lightning does not stop early, and nothing extra happens.
    """

    def __init__(self) -> None:
        self._every_n_epoch: int | None = None
        self._changed = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.enable_validation or not _last_step(trainer):
            return
        every = trainer.check_val_every_n_epoch
        if every is not None and (trainer.current_epoch + 1) % every != 0:
            self._every_n_epoch, self._changed = every, True
            trainer.check_val_every_n_epoch = None  # this epoch validates after all
        trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._changed:
            trainer.check_val_every_n_epoch = self._every_n_epoch
            self._changed = False


def validation_follows(trainer: pl.Trainer) -> bool:
    """Whether the fit validates right after the current training batch (may say so needlessly).

    The same rules as Lightning's epoch loop, from public trainer state: validation enabled and
    due this epoch, and the epoch's last batch, a stop (``trainer.should_stop``), the fit's last
    step (`FinalValidation`) or a ``val_check_interval`` boundary.
    """
    if not trainer.enable_validation:
        return False
    every = trainer.check_val_every_n_epoch
    if every is not None and (trainer.current_epoch + 1) % every != 0:
        return False
    loop = trainer.fit_loop.epoch_loop
    if loop.batch_progress.is_last_batch or trainer.should_stop or _last_step(trainer):
        return True
    batch = trainer.val_check_batch
    if isinstance(batch, int | float) and math.isfinite(batch) and batch >= 1:
        index = loop.total_batch_idx if every is None else loop.batch_idx
        return (index + 1) % int(batch) == 0
    return False


def _last_step(trainer: pl.Trainer) -> bool:
    """The current batch is the fit's last: ``max_steps`` reached, or the last epoch's last batch."""
    if 0 < trainer.max_steps <= trainer.global_step:
        return True
    max_epochs = trainer.max_epochs
    return bool(
        trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        and max_epochs is not None
        and max_epochs >= 0
        and trainer.current_epoch + 1 >= max_epochs
    )


def _epoch_ends(trainer: pl.Trainer) -> bool:
    """The training epoch ends after this batch (its last batch, a stop, the fit's last step)."""
    return bool(
        trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or trainer.should_stop or _last_step(trainer)
    )


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
    """Windows (or volumes) in a batch (at least 1: Lightning's throughput counters must grow with the batches)."""
    if not isinstance(batch, dict):
        return 1
    key = "signal" if "signal" in batch else "volume" if "volume" in batch else None
    return max(1, int(batch[key].shape[0])) if key is not None else 1


def batch_tokens(batch: Any, patch_size: int = 1) -> int:
    """Tokens of a batch: real (channel, time patch) pairs, at least one per window."""
    if not isinstance(batch, dict) or "channel_mask" not in batch:
        return batch_windows(batch)
    tokens = int(batch["channel_mask"].sum()) * (int(batch["signal"].shape[-1]) // patch_size)
    return max(tokens, batch_windows(batch))
