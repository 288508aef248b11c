"""Figures made at validation, where people would rather look than read.

`ValidationMedia` (a Callback every ``neurotrain fit`` run gets) draws, at most every N validations:

- `PretrainModule`: ``reconstruction_step<N>.png``, a few masked-reconstruction examples (true signal in
  black, prediction in red on the masked patches; each masked patch shaded on its own, patch borders
  drawn, channels labelled with their names from the datamodule's manifest), and ``topomap_step<N>.png``, the
  per-channel reconstruction error on the scalp (MNE ``plot_topomap`` from the batch's EEG positions;
  skipped with fewer than `MIN_TOPO_CHANNELS` positioned channels).
- `ClassifierModule`: ``confusion_step<N>.png``, the confusion matrix of the whole validation (summed over
  DDP ranks by torchmetrics), from logits captured by a forward hook on the head, so no extra forward.

PNGs go to ``<run_dir>/media/`` (``RunRecord.media_dir``), where ``neurotrain compare`` shows them, and to
W&B as images when a W&B logger is attached. Only global rank zero draws (no reconstruction under
DeepSpeed ZeRO-3, whose sharded weights need every rank for a forward). Figures use matplotlib's
object API with the Agg canvas (no pyplot state, no display needed) with constrained layout (no
clipped titles or tick labels), sized to be read in the dashboard at 100 dpi, so a validation's
media cost well under a second on CPU. A failure to draw warns once and never stops training.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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
from neurotrain.datamodules.loading.collate import kept_channels
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
        self, every_n_validations: int = 1, examples: int = 2, channels: int = 3, dpi: int = 100
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
        names = batch_channel_names(trainer.datamodule, sub, min(n, self.examples))
        fig = reconstruction_figure(
            target, recon, masked, real, sfreq, patch, self.examples, self.channels, names=names
        )
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
    names: Sequence[Sequence[str]] | None = None,
) -> Figure:
    """Rows of (example, channel): the true signal, the prediction on masked patches, masked patches shaded.

    ``target``/``recon`` [n, C, P*S], ``masked`` [n, C, P] (True = the patch was hidden from the
    encoder), ``real`` [n, C] (False = padding, never drawn), ``names`` [n][C] the slot names
    (`batch_channel_names`; None: slot numbers). Each masked patch is shaded on its own between its
    borders (thin lines at every patch border), so the shading shows which patches were hidden.
    Per example, the channels drawn are those with both hidden and visible patches (where the
    prediction can be judged next to its context), the ones nearest half hidden first, then the
    fully hidden ones; never a channel without a hidden patch (ties: more hidden, then lowest slot).
    The title gives the share of hidden patches over all real channels, so a mostly shaded figure
    is read as the objective's mask ratio, not as a choice of channels.
    """
    rows = []
    n_patches = masked.shape[-1]
    for i in range(min(examples, target.shape[0])):
        hidden = masked[i].sum(-1)  # [C]
        partial = (hidden > 0) & (hidden < n_patches)
        # lower is better: partly hidden by distance from half, then fully hidden; -1 never drawn
        distance = np.where(partial, np.abs(2 * hidden - n_patches), 2 * n_patches)
        drawable = real[i] & (hidden > 0)
        order = np.lexsort((np.arange(len(hidden)), -hidden, distance))
        rows += [(i, int(c)) for c in order if drawable[c]][:channels]
    fig = Figure(figsize=(8, 1.25 * max(len(rows), 1) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    t = np.arange(target.shape[-1]) / sfreq  # [P*S] seconds
    edges = np.arange(n_patches + 1) * patch / sfreq  # [P+1] patch borders, seconds
    axes = fig.subplots(max(len(rows), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (i, c) in zip(axes, rows, strict=False):
        mask_samples = np.repeat(masked[i, c], patch)  # [P*S]
        # one rectangle per masked patch, full height (axes y coordinates), and every patch border
        hidden = [(edges[p], edges[p + 1] - edges[p]) for p in np.flatnonzero(masked[i, c])]
        ax.broken_barh(hidden, (0, 1), transform=ax.get_xaxis_transform(), color="#f6d7b0", lw=0, zorder=0)
        ax.vlines(edges, 0, 1, transform=ax.get_xaxis_transform(), color="0.82", lw=0.5, zorder=0)
        ax.plot(t, target[i, c], color="k", lw=0.7, label="true")
        ax.plot(t, np.where(mask_samples, recon[i, c], np.nan), color="tab:red", lw=0.9, label="predicted")
        ax.set_ylabel(channel_label(names, i, c), fontsize=8)
        ax.set_title(
            f"example {i}: {int(masked[i, c].sum())} of {n_patches} patches masked", fontsize=7, loc="left"
        )
        ax.tick_params(labelsize=7)
    axes[0].legend(loc="upper right", fontsize=7, ncols=2)
    axes[-1].set_xlabel("time (s)", fontsize=8)
    share = masked[real].mean() if real.any() else 0.0
    fig.suptitle(
        f"masked reconstruction: shaded patches were masked ({share:.0%} of all patches); lines: patch borders",
        fontsize=9,
    )
    return fig


def channel_label(names: Sequence[Sequence[str]] | None, example: int, slot: int) -> str:
    """The y label of a reconstruction row: the channel's name, else ``slot <c>``."""
    if names is not None and example < len(names) and slot < len(names[example]) and names[example][slot]:
        return str(names[example][slot])
    return f"slot {slot}"


def batch_channel_names(datamodule: Any, batch: dict[str, Any], n: int) -> list[list[str]] | None:
    """Per example (the first ``n``), the channel name of each batch slot ('' for padding); None if unknown.

    With ``data.channels`` slot ``i`` is ``channels[i]``. Otherwise the slots hold the example's kept
    channels in stored order (what `make_layout` does, through the same `kept_channels`), read from
    its recording's channel set and bad channels in the datamodule's manifests (``batch["recording"]``,
    ``batch["dataset"]``). An example whose names do not match its channel mask gets '' everywhere.
    """
    hp = getattr(datamodule, "hparams", None)
    if hp is None or "channel_mask" not in batch:
        return None
    real = batch["channel_mask"][:n].cpu().numpy()  # [n, C]
    c_max = real.shape[1]
    fixed = hp.get("channels")
    if fixed:
        row = [str(name) for name in list(fixed)[:c_max]]
        return [row + [""] * (c_max - len(row))] * len(real)
    manifests = getattr(datamodule, "manifests", None) or []
    recordings = batch.get("recording")
    if not manifests or recordings is None:
        return None
    datasets = batch.get("dataset")
    target = hp.get("target_channel")
    out = []
    for i in range(len(real)):
        d = int(datasets[i]) if datasets is not None else 0
        meta = _recording_channels(manifests[d], str(recordings[i])) if d < len(manifests) else None
        row: list[str] = []
        if meta is not None:
            keep = kept_channels(
                meta,
                hp.get("channel_types"),
                bool(hp.get("drop_bad_channels", True)),
                () if target is None else (target,),
            )
            row = [meta["ch_names"][k] for k in keep][:c_max]
        if len(row) != int(real[i].sum()):
            row = []
        out.append(row + [""] * (c_max - len(row)))
    return out if any(any(row) for row in out) else None


def _recording_channels(manifest: dict[str, Any], recording: str) -> dict[str, Any] | None:
    """``{"ch_names", "ch_types", "bad_channels"}`` of one recording of a manifest, None if absent."""
    sets = {cs["id"]: cs for cs in manifest.get("channel_sets") or []}
    for rec in manifest.get("recordings") or []:
        if rec.get("id") == recording and rec.get("channel_set") in sets:
            cs = sets[rec["channel_set"]]
            return {
                "ch_names": cs["ch_names"],
                "ch_types": cs["ch_types"],
                "bad_channels": rec.get("bad_channels") or [],
            }
    return None


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
    """Counts of true (rows) x predicted (columns) classes; colour = fraction of the true class.

    ``matrix`` [K, K]. Pooled class names (``a/b``) are broken at the slash; the canvas grows with
    K and with the longest label line, and the title spans the figure, so at the 100 dpi media are
    saved at nothing is clipped or overlapping and the matrix is at least ~250 px on a side.
    """
    k = len(matrix)
    labels = [name.replace("/", "/\n") for name in names]
    longest = max((len(line) for name in labels for line in name.split("\n")), default=1)
    size = 10 if k <= 6 else 8 if k <= 12 else 7
    label_in = 0.075 * longest * (size - 1) / 9  # inches a tick label takes
    cell = max(2.5 / k, 0.45)  # inches per matrix cell
    rotate = k > 2 or longest > 10
    fig = Figure(
        figsize=(cell * k + label_in + 1.9, cell * k + (0.75 * label_in if rotate else 0.3) + 1.0),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for r in range(k):
        for c in range(k):
            ax.text(c, r, f"{int(matrix[r, c])}", ha="center", va="center", fontsize=size,
                    color="white" if rates[r, c] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(
        range(k),
        labels,
        fontsize=size - 1,
        rotation=40 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(range(k), labels, fontsize=size - 1)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    fig.suptitle(f"validation confusion matrix ({int(matrix.sum())} epochs)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8).set_label("share of the true class", fontsize=8)
    return fig


def class_names(datamodule: Any, k: int) -> list[str]:
    """Names of classes 0..k-1 from the datamodule's ``label_map`` (name -> index), else the indices."""
    label_map = getattr(datamodule, "label_map", None) or {}
    names = [[n for n, i in label_map.items() if i == c] for c in range(k)]
    # Pooled names are joined by "/" (the figure breaks them there), each cut to 20 characters.
    return [
        "/".join(n[:20] for n in ns[:3]) + ("/…" if len(ns) > 3 else "") if ns else str(c)
        for c, ns in enumerate(names)
    ]
