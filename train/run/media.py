"""Figures made at validation, where people would rather look than read.

`ValidationMedia` (a Callback every ``neurotrain fit`` run gets) draws, at most every N validations:

- `PretrainModule`: ``reconstruction_step<N>.png``, a few masked-reconstruction examples (true signal in
  black, prediction in red on the masked patches, which are shaded), and ``topomap_step<N>.png``, the
  per-channel reconstruction error on the scalp (MNE ``plot_topomap`` from the batch's EEG positions;
  skipped with fewer than `MIN_TOPO_CHANNELS` positioned channels).
- `ClassifierModule`: ``confusion_step<N>.png``, the confusion matrix of the whole validation (summed over
  DDP ranks by torchmetrics), from logits captured by a forward hook on the head, so no extra forward.

PNGs go to ``<run_dir>/media/`` (``RunRecord.media_dir``), where ``neurotrain compare`` shows them, and to
W&B as images when a W&B logger is attached. Only global rank zero draws (no reconstruction under
DeepSpeed ZeRO-3, whose sharded weights need every rank for a forward). Figures use matplotlib's
object API with the Agg canvas (no pyplot state, no display needed), small and at low dpi so a
validation's media cost well under a second on CPU. A failure to draw warns once and never stops training.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from neurotrain.datamodules.format.channel_types import TYPE_INDEX
from neurotrain.models.modules import ClassifierModule, PretrainModule
from neurotrain.train.tracking.run_folder import MEDIA_DIR
from neurotrain.train.tracking.run_record import find_run_record
from neurotrain.train.tracking.wandb_run import find_wandb_logger

MIN_TOPO_CHANNELS = 4
TOPO_EXAMPLES = 8  # examples averaged into the error topomap (the first ones of the first batch)


class ValidationMedia(Callback):
    """Reconstruction examples and error topomap (pretraining), confusion matrix (classification).

    Args:
        every_n_validations: draw at the 1st, (N+1)th, … validation (sanity checks excluded); 0 = never.
        examples: reconstruction examples drawn; channels: channels drawn per example.
        dpi: resolution of the saved PNGs.
    """

    def __init__(
        self, every_n_validations: int = 1, examples: int = 2, channels: int = 3, dpi: int = 72
    ) -> None:
        self.every_n_validations = every_n_validations
        self.examples = examples
        self.channels = channels
        self.dpi = dpi
        self._validations = 0
        self._due = False
        self._broken = False
        self._confusion: Any = None
        self._logits: Tensor | None = None
        self._hook: Any = None

    # Lightning hooks ---------------------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._due = False
        if trainer.sanity_checking or self.every_n_validations <= 0 or self._broken:
            return
        # Every rank counts alike, so all ranks agree on when the (collective) confusion matrix is due.
        self._due = self._validations % self.every_n_validations == 0
        self._validations += 1
        if self._due and isinstance(pl_module, ClassifierModule):
            from torchmetrics.classification import MulticlassConfusionMatrix

            num_classes = int(pl_module.hparams["num_classes"])
            self._confusion = MulticlassConfusionMatrix(num_classes, ignore_index=-1).to(pl_module.device)
            self._hook = pl_module.head.register_forward_hook(self._capture_logits)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._due or not isinstance(batch, dict):
            return
        if self._confusion is not None and self._logits is not None and "labels" in batch:
            self._confusion.update(self._logits.argmax(-1), batch["labels"].to(self._logits.device))
            self._logits = None
        if (
            isinstance(pl_module, PretrainModule)
            and batch_idx == 0
            and dataloader_idx == 0
            and trainer.is_global_zero
            and batch["signal"].shape[0] > 0
            and not _sharded_parameters(trainer)
        ):
            self._guarded(trainer, self._draw_reconstruction, trainer, pl_module, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._confusion is None:
            return
        confusion, self._confusion = self._confusion, None
        if not confusion.update_called and trainer.world_size == 1:
            return
        with warnings.catch_warnings():  # a rank without labelled batches still joins the sync
            warnings.simplefilter("ignore")
            matrix = confusion.compute().cpu().numpy()  # [K, K] true x predicted; collective under DDP
        if trainer.is_global_zero and matrix.sum() > 0:
            self._guarded(trainer, self._draw_confusion, trainer, matrix)

    # drawing -----------------------------------------------------------------------------------------

    def _capture_logits(self, module: torch.nn.Module, args: Any, output: Tensor) -> None:
        if not module.training:
            self._logits = output.detach()  # [B, K]

    def _draw_reconstruction(
        self, trainer: pl.Trainer, pl_module: PretrainModule, batch: dict[str, Any]
    ) -> None:
        n = min(int(batch["signal"].shape[0]), max(self.examples, TOPO_EXAMPLES))
        sub = {k: v[:n] if isinstance(v, Tensor) else v for k, v in batch.items()}
        with trainer.precision_plugin.forward_context():
            out = pl_module.reconstruct(sub, seed=0)
        target = out.target.float().flatten(2).cpu().numpy()  # [n, C, P*S]
        recon = out.reconstruction.float().cpu().numpy()  # [n, C, P*S]
        masked = out.token_mask.cpu().numpy()  # [n, C, P]
        error = out.per_channel_error.float().cpu().numpy()  # [n, C]
        sfreq = float(sub["sfreq"][0]) if "sfreq" in sub else 1.0
        real = sub["channel_mask"].cpu().numpy()  # [n, C]
        patch = target.shape[-1] // masked.shape[-1]
        fig = reconstruction_figure(target, recon, masked, real, sfreq, patch, self.examples, self.channels)
        self._emit(trainer, fig, "reconstruction")
        topo = topomap_values(sub, masked, error)
        if topo is not None:
            self._emit(trainer, topomap_figure(*topo), "topomap")

    def _draw_confusion(self, trainer: pl.Trainer, matrix: np.ndarray) -> None:
        self._emit(
            trainer, confusion_figure(matrix, class_names(trainer.datamodule, len(matrix))), "confusion"
        )

    def _emit(self, trainer: pl.Trainer, fig: Figure, key: str) -> None:
        record = find_run_record(trainer)
        folder = record.media_dir if record else Path(trainer.default_root_dir) / MEDIA_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key}_step{trainer.global_step:06d}.png"
        fig.savefig(path, dpi=self.dpi)
        logger = find_wandb_logger(trainer)
        if logger is not None:
            logger.log_image(key=f"media/{key}", images=[str(path)], step=trainer.global_step)

    def _guarded(self, trainer: pl.Trainer, draw: Any, *args: Any) -> None:
        try:
            draw(*args)
        except Exception as exc:  # a figure is a convenience; the training run matters more
            self._broken = True
            rank_zero_warn(f"validation media disabled after an error: {type(exc).__name__}: {exc}")


def _sharded_parameters(trainer: pl.Trainer) -> bool:
    """ZeRO-3 shards the weights: a forward on rank zero alone would wait forever for the others."""
    return bool(getattr(trainer.strategy, "zero_stage_3", False))


def reconstruction_figure(
    target: np.ndarray,
    recon: np.ndarray,
    masked: np.ndarray,
    real: np.ndarray,
    sfreq: float,
    patch: int,
    examples: int,
    channels: int,
) -> Figure:
    """Rows of (example, channel): the true signal, the prediction on masked patches, masked patches shaded.

    Per example, the channels with the most masked patches are drawn (ties: lowest slot first).
    """
    rows = []
    for i in range(min(examples, target.shape[0])):
        counts = np.where(real[i], masked[i].sum(-1), -1)  # [C]; padding never chosen
        order = np.lexsort((np.arange(len(counts)), -counts))
        rows += [(i, int(c)) for c in order[:channels] if counts[c] >= 0]
    fig = Figure(figsize=(7, 1.1 * max(len(rows), 1) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    t = np.arange(target.shape[-1]) / sfreq  # [P*S] seconds
    axes = fig.subplots(max(len(rows), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (i, c) in zip(axes, rows, strict=False):
        mask_samples = np.repeat(masked[i, c], patch)  # [P*S]
        for p in np.flatnonzero(masked[i, c]):
            ax.axvspan(t[p * patch], t[min((p + 1) * patch, len(t) - 1)], color="0.9", lw=0)
        ax.plot(t, target[i, c], color="k", lw=0.7, label="true")
        ax.plot(t, np.where(mask_samples, recon[i, c], np.nan), color="tab:red", lw=0.8, label="predicted")
        ax.set_ylabel(f"ex {i}\nch {c}", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(loc="upper right", fontsize=6, ncols=2)
    axes[-1].set_xlabel("time (s)", fontsize=7)
    fig.suptitle("masked reconstruction (shaded: masked patches)", fontsize=8)
    return fig


def topomap_values(
    batch: dict[str, Any], masked: np.ndarray, error: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(positions [N, 3], mean error [N]) of the EEG channels of example 0, or None when too few.

    The error of a slot is averaged over the examples that share example 0's positions there and had
    that channel masked (a channel never masked has no error to show).
    """
    mask = batch["channel_mask"] & batch["position_mask"] & (batch["channel_types"] == TYPE_INDEX["eeg"])
    mask = mask.cpu().numpy()  # [n, C]
    pos = batch["positions"].float().cpu().numpy()  # [n, C, 3] metres
    slots = np.flatnonzero(mask[0])
    if len(slots) < MIN_TOPO_CHANNELS:
        return None
    same = np.all(np.isclose(pos[:, slots], pos[:1, slots], atol=1e-6), axis=(1, 2)) & mask[:, slots].all(1)
    was_masked = masked[same][:, slots].any(-1)  # [m, N]
    total = (error[same][:, slots] * was_masked).sum(0)
    count = was_masked.sum(0)
    keep = count > 0
    if keep.sum() < MIN_TOPO_CHANNELS:
        return None
    return pos[0, slots[keep]], total[keep] / count[keep]


def topomap_figure(positions: np.ndarray, values: np.ndarray) -> Figure:
    """MNE ``plot_topomap`` of ``values`` [N] at EEG ``positions`` [N, 3] (metres, head frame)."""
    import mne

    fig = Figure(figsize=(3.2, 2.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    with mne.utils.use_log_level("error"):
        info = _eeg_info(tuple(map(tuple, np.round(positions, 6).tolist())))
        im, _ = mne.viz.plot_topomap(values, info, axes=ax, show=False, cmap="Reds", contours=0, sensors=True)
    fig.colorbar(im, ax=ax, shrink=0.8, label="masked MSE")
    ax.set_title("reconstruction error per channel", fontsize=8)
    return fig


@lru_cache(maxsize=8)
def _eeg_info(positions: tuple[tuple[float, ...], ...]) -> Any:
    """An ``mne.Info`` with a head-frame montage at ``positions``; cached, montages rarely change."""
    import mne

    names = [f"ch{i}" for i in range(len(positions))]
    montage = mne.channels.make_dig_montage(
        ch_pos=dict(zip(names, np.array(positions), strict=True)), coord_frame="head"
    )
    info = mne.create_info(names, sfreq=1.0, ch_types="eeg")
    info.set_montage(montage)
    return info


def confusion_figure(matrix: np.ndarray, names: list[str]) -> Figure:
    """Counts of true (rows) x predicted (columns) classes; colour = fraction of the true class."""
    k = len(matrix)
    fig = Figure(figsize=(1.2 + 0.6 * k, 1.0 + 0.6 * k), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for r in range(k):
        for c in range(k):
            ax.text(c, r, f"{int(matrix[r, c])}", ha="center", va="center", fontsize=8,
                    color="white" if rates[r, c] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(k), names, fontsize=7, rotation=45, ha="right")
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title("validation confusion matrix", fontsize=8)
    return fig


def class_names(datamodule: Any, k: int) -> list[str]:
    """Names of classes 0..k-1 from the datamodule's ``label_map`` (name -> index), else the indices."""
    label_map = getattr(datamodule, "label_map", None) or {}
    names = [[n for n, i in label_map.items() if i == c] for c in range(k)]
    return [("/".join(ns)[:24] if ns else str(c)) for c, ns in enumerate(names)]
