"""`EncodingReadoutModule`: a brain-encoding model trained end to end, image -> recorded response.

The stimulus image of each epoch (``batch["image"]`` [B, 3, H, W], the data module's
``images: true``) goes through an image network (timm or OpenCLIP, weights from a local file
only: `ImageFeatureExtractor`), one of its layers (``layer``) is read as ``[B, K, P]``
(``models/readouts.py``), standardised per feature channel (a BatchNorm without affine terms,
its statistics from the training images), and a learned readout (``readout``: ``factorised`` or
``attention``) predicts the epoch's response: each channel's mean over ``time_bins`` equal
spans of the epoch, ``bin_time(batch["signal"])`` [B, C, bins]. The loss is the mean squared
error over the real channels (``channel_mask``) plus the readout's penalty (``mask_l1``).

Each subject has its own readout (its channels are its own; the subjects and the channel slots
are taken from the data module when the fit starts and saved in the checkpoint), and all share
the image network: frozen by default (a "task-optimised" encoder: the network as trained for
images), or trained too with ``freeze_backbone: false`` (a "response-optimised" one).

``shuffle_pairing: true`` is the control: in training and validation each batch's images are
permuted before they reach the network, so the readout learns from images that did not cause the
responses; the same model scored on the true pairs of held-out images should then predict
nothing (``neurotrain evaluate --protocol encoding`` fits it beside the real one).

Validation logs ``val/loss`` and ``val/median_r``: the median over channels × bins of the Pearson r
between prediction and response over the validation epochs.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import measure_flops
from torch import Tensor, nn
from torchmetrics.functional import pearson_corrcoef

from neurotrain.models.image_features import ImageFeatureExtractor
from neurotrain.models.optim import OptimizerConfig, adamw_with_schedule, optimizer_config, param_groups
from neurotrain.models.readouts import READOUTS, as_positions, bin_time, build_readout
from neurotrain.models.subject_layers import datamodule_subjects, layer_key


class EncodingReadoutModule(pl.LightningModule):
    """Image network -> layer ``[B, K, P]`` -> per-subject readout -> ``[B, C, time_bins]``.

    ``image_model``/``image_weights``: a timm name or ``open_clip:ARCH`` and its local weights
    file (``"random"``: a seeded random network, on purpose only); ``layer``: a module name or an
    int index of ``forward_intermediates`` (`ImageFeatureExtractor`'s layers). ``subjects``,
    ``channel_slots`` (channels per subject) and ``input_size`` (the side of the data's images,
    ``data.image_size``, which sizes the readout's positions) are filled in from the data module when left None.
    """

    monitor = "val/loss"
    monitor_mode = "min"
    job_type = "encode"

    def __init__(
        self,
        image_model: str = "resnet18",
        image_weights: str | None = None,
        layer: str | int = "layer3",
        input_size: int | None = None,
        readout: str = "factorised",
        time_bins: int = 4,
        mask_l1: float = 1.0e-2,
        attention_dim: int = 64,
        attention_heads: int = 4,
        freeze_backbone: bool = True,
        shuffle_pairing: bool = False,
        subjects: list[str] | None = None,
        channel_slots: int | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> None:
        args = {k: v for k, v in dict(locals()).items() if k not in ("self", "__class__")}
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if time_bins < 1:
            raise ValueError(f"time_bins must be >= 1, got {time_bins}")
        args["optimizer"] = optimizer_config(optimizer).to_dict()
        self.save_hyperparameters(args)
        self.optimizer_config = optimizer_config(optimizer)
        self.extractor = ImageFeatureExtractor(image_model, image_weights, [layer], cache_dir=None)
        self.backbone = (
            self.extractor.model
        )  # registered: moved, saved and (unfrozen) trained with the module
        self.layer = layer
        self.n_features = self.n_positions = 0
        self.feature_norm: nn.Module | None = None
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.readouts = nn.ModuleDict()
        self.flops_per_batch: int | None = None  # what Lightning's ThroughputMonitor reads
        self._held: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}  # stage -> (pred, target, mask)
        self._image_flops = 0
        if subjects is not None and channel_slots is not None and input_size is not None:
            self.build_readouts(subjects, channel_slots, input_size)

    # -- construction -----------------------------------------------------------------------

    def build_readouts(self, subjects: list[str], channels: int, image_size: int) -> None:
        """One readout per subject over ``channels`` slots for ``image_size`` images (the layer's
        positions are measured by one forward pass); saved in the hyperparameters."""
        if channels < 1 or not subjects:
            raise ValueError(f"readouts need subjects and channels >= 1, got {subjects!r}, {channels}")
        hp = self.hparams
        with torch.no_grad():
            zeros = torch.zeros(1, 3, int(image_size), int(image_size))
            probe = self._layer_output(zeros)  # [1, K, P]
            self._image_flops = measure_flops(self.backbone, lambda: self._layer_output(zeros))
        self.n_features, self.n_positions = int(probe.shape[1]), int(probe.shape[2])
        self.feature_norm = nn.BatchNorm1d(self.n_features, affine=False)
        for subject in subjects:
            self.readouts[layer_key(str(subject))] = build_readout(
                hp.readout,
                int(channels),
                hp.time_bins,
                self.n_features,
                self.n_positions,
                mask_l1=hp.mask_l1,
                dim=hp.attention_dim,
                heads=hp.attention_heads,
            )
        self.hparams["subjects"] = [str(s) for s in subjects]
        self.hparams["channel_slots"] = int(channels)
        self.hparams["input_size"] = int(image_size)

    def setup(self, stage: str) -> None:
        """Build the readouts from the data module's subjects and channel slots (``c_max``)."""
        if len(self.readouts):
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        hp = self.hparams
        subjects = hp.subjects or datamodule_subjects(dm)
        channels = hp.channel_slots or int(getattr(dm, "c_max", 0) or 0)
        image_size = hp.input_size or getattr(getattr(dm, "hparams", None), "image_size", None)
        if not subjects or not channels or not image_size:
            raise ValueError(
                "EncodingReadoutModule: subjects, channel slots or input size unknown: set "
                "model.subjects, model.channel_slots and model.input_size, or fit with a ShardDataModule (images: true)"
            )
        self.build_readouts(list(subjects), channels, int(image_size))

    def train(self, mode: bool = True) -> EncodingReadoutModule:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # BatchNorm statistics of the image network stay as loaded
        return self

    # -- forward ----------------------------------------------------------------------------

    def _layer_output(self, image: Tensor) -> Tensor:
        return as_positions(self.extractor.layer_outputs(image)[self.layer]).float()

    def features(self, image: Tensor) -> Tensor:
        """Images [B, 3, H, W] -> standardised layer features [B, K, P]."""
        if self.freeze_backbone:
            with torch.no_grad():
                out = self._layer_output(image)
        else:
            out = self._layer_output(image)
        if self.feature_norm is None:
            raise ValueError("the readouts are not built yet (build_readouts, or fit with a data module)")
        if out.shape[2] != self.n_positions:
            raise ValueError(
                f"{self.hparams.image_model} layer {self.layer!r} gives {out.shape[2]} positions for "
                f"{tuple(image.shape[-2:])} images, the readout was built for {self.n_positions} "
                f"(input_size {self.hparams.input_size})"
            )
        return self.feature_norm(out)

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """Predicted responses [B, C, time_bins] of each sample's subject to its image."""
        return self.readout(self.features(batch["image"]), list(batch["subject"]))

    def readout(self, features: Tensor, subjects: list[str]) -> Tensor:
        """features [B, K, P] + one subject id per sample -> [B, C, bins] (each by its subject's readout)."""
        out: Tensor | None = None
        for subject in dict.fromkeys(subjects):
            key = layer_key(str(subject))
            if key not in self.readouts:
                raise KeyError(f"subject {subject!r} has no readout (fitted for {self.hparams.subjects})")
            rows = torch.tensor([i for i, s in enumerate(subjects) if s == subject], device=features.device)
            pred = self.readouts[key](features[rows])  # [b, C, bins]
            if out is None:
                out = pred.new_zeros((features.shape[0], *pred.shape[1:]))
            out[rows] = pred
        if out is None:
            raise ValueError("an empty batch has no prediction")
        return out

    # -- objective --------------------------------------------------------------------------

    def compute_loss(self, batch: dict[str, Any], shuffle: bool) -> dict[str, Tensor]:
        """Masked MSE of the predicted bins (+ the readouts' penalties); shuffled images with
        ``shuffle`` (the control)."""
        image = batch["image"]
        if shuffle:
            image = image[torch.randperm(image.shape[0], device=image.device)]
        pred = self.readout(self.features(image), list(batch["subject"]))  # [B, C', bins]
        target, mask = self.targets(batch, pred.shape[1])
        weight = mask[..., None].to(pred.dtype)  # [B, C', 1]
        mse = ((pred - target) ** 2 * weight).sum() / (weight.sum() * pred.shape[2]).clamp_min(1.0)
        used = {layer_key(str(s)) for s in batch["subject"]}
        penalty = sum((self.readouts[k].penalty() for k in used), pred.new_zeros(()))
        return {"loss": mse + penalty, "mse": mse.detach(), "pred": pred.detach(), "target": target}

    def targets(self, batch: dict[str, Any], channels: int) -> tuple[Tensor, Tensor]:
        """The binned responses [B, channels, bins] and the real-channel mask [B, channels]."""
        signal, mask = batch["signal"], batch["channel_mask"]
        if signal.shape[1] > channels:
            raise ValueError(f"the batch has {signal.shape[1]} channel slots, the readouts {channels}")
        target = bin_time(signal.float(), self.hparams.time_bins)  # [B, C, bins]
        pad = channels - signal.shape[1]
        if pad:
            target = nn.functional.pad(target, (0, 0, 0, pad))
            mask = nn.functional.pad(mask, (0, pad))
        return target, mask.bool()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if batch["signal"].shape[0] == 0:  # every epoch of the batch was dropped: keep DDP in step
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        out = self.compute_loss(batch, self.hparams.shuffle_pairing)
        self.flops_per_batch = self._training_flops(batch["signal"].shape[0])
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=batch["signal"].shape[0])
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        n = batch["signal"].shape[0]
        if n == 0:
            return
        out = self.compute_loss(batch, self.hparams.shuffle_pairing and stage == "val")
        self.log(f"{stage}/loss", out["loss"], prog_bar=stage == "val", batch_size=n, sync_dist=True)
        mask = self.targets(batch, out["pred"].shape[1])[1]
        self._held.setdefault(stage, []).append((out["pred"], out["target"], mask))

    def on_validation_epoch_end(self) -> None:
        self._log_median_r("val")

    def on_test_epoch_end(self) -> None:
        self._log_median_r("test")

    def _log_median_r(self, stage: str) -> None:
        held = self._held.pop(stage, [])
        if not held:
            return
        pred = torch.cat([p for p, _, _ in held]).flatten(1)  # [N, C * bins]
        target = torch.cat([t for _, t, _ in held]).flatten(1)
        real = torch.cat([m for _, _, m in held]).all(0).repeat_interleave(self.hparams.time_bins)
        if pred.shape[0] < 3 or not real.any():
            return
        r = pearson_corrcoef(pred[:, real], target[:, real]).nan_to_num()  # [targets]; constant -> 0
        self.log(f"{stage}/median_r", r.median())

    def _training_flops(self, batch_size: int) -> int:
        """The image network's forward (measured once per image: ``measure_flops``), ×3 when it
        trains (forward and backward), plus 6 FLOPs per readout parameter, per image."""
        readout = 6 * sum(p.numel() for p in self.readouts.parameters()) // max(len(self.readouts), 1)
        return batch_size * (self._image_flops * (1 if self.freeze_backbone else 3) + readout)

    # -- optimisation -----------------------------------------------------------------------

    def configure_optimizers(self) -> dict:
        groups = param_groups(self, self.optimizer_config.lr, self.optimizer_config.weight_decay)
        return adamw_with_schedule(self, groups, self.optimizer_config)
