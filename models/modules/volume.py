"""Structural MRI (T1) modules on the 3-D patch encoder: masked pretraining, then fine-tunes.

Batches are what `ShardDataModule` yields for ``anat`` shards: ``volume`` float32 [B, D, H, W]
(RAS, resampled, cropped/padded and normalised at shard time), ``labels`` (``label_source:
participants``: int64 classes [B], -1 = none, or float32 values [B], NaN = missing).

- `VolumePretrainModule`: masked 3-D patch reconstruction (SimMIM-style: masked patch embeddings
  replaced by a learned token, the voxels of each masked patch regressed from the encoder's
  tokens by a linear head), the objective of the MAE-type 3-D MRI foundation models (e.g. the
  BrainMass / BrainHarmonix morphology branch) reduced to one small encoder. The loss counts
  only masked patches that hold anatomy (not constant): most of a padded head volume is
  background, which would otherwise dominate the loss with patches a constant predicts.
- `VolumeClassifierModule` / `VolumeRegressorModule`: a head on the mean-pooled tokens of the
  (optionally pretrained, ``init_from``) encoder, for subject-level labels such as diagnosis
  or age from ``participants.tsv``.

Checkpoints hold plain hyperparameters (weights-only loadable), like every module here.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from neurotrain.models.checkpoint_io import load_encoder_weights
from neurotrain.models.metrics import (
    classification_metrics,
    log_metrics,
    regression_metrics,
    update_classification,
    update_regression,
)
from neurotrain.models.objectives import (
    ClassificationHead,
    RegressionHead,
    classification_loss,
    regression_loss,
)
from neurotrain.models.optim import OptimizerConfig, adamw_with_schedule, optimizer_config, param_groups
from neurotrain.models.volume_encoder import VolumeEncoder


class VolumeModule(pl.LightningModule):
    """The 3-D patch encoder (``encoder``: `VolumeEncoder` arguments), ``init_from`` and AdamW.

    Subclasses implement ``compute_loss(batch) -> {"loss": ..., "output": ...}``.
    """

    monitor = "val/loss"
    monitor_mode = "min"
    job_type = "finetune"

    def __init__(
        self,
        encoder: dict[str, Any] | None,
        optimizer: OptimizerConfig | dict | None,
        init_from: str | None,
    ) -> None:
        super().__init__()
        self.encoder = VolumeEncoder(**(encoder or {}))
        self.optimizer_config = optimizer_config(optimizer)
        self.normalization: dict[str, Any] | None = None
        self.flops_per_batch: int | None = None
        if init_from is not None:
            self.normalization = load_encoder_weights(self.encoder, init_from)

    def save_plain(self, args: dict[str, Any]) -> None:
        """Save the constructor's arguments as plain data (the optimiser group as a dict)."""
        plain = {k: v for k, v in args.items() if k not in ("self", "__class__", "kwargs")}
        plain["optimizer"] = optimizer_config(plain.get("optimizer")).to_dict()
        self.save_hyperparameters(plain)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """The mean-pooled embedding [B, dim]."""
        return self.encoder(batch).pooled

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        n = int(batch["volume"].shape[0])
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        self.flops_per_batch = 6 * trainable * n * self.encoder.n_patches(batch["volume"])
        loss = self.compute_loss(batch)["loss"]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, batch_idx, "test")

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.compute_loss(batch)

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        """Template hook: accumulate epoch metrics from one evaluated batch."""

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> dict[str, Tensor]:
        outputs = self.evaluation_outputs(batch, batch_idx)
        n = int(batch["volume"].shape[0])
        self.log(f"{stage}/loss", outputs["loss"], prog_bar=stage == "val", batch_size=n, sync_dist=True)
        self.update_evaluation(batch, outputs, stage)
        return outputs

    def configure_optimizers(self) -> dict:
        cfg = self.optimizer_config
        return adamw_with_schedule(self, param_groups(self, cfg.lr, cfg.weight_decay), cfg)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.normalization is not None:
            checkpoint["normalization"] = self.normalization

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.normalization = checkpoint.get("normalization", self.normalization)


class VolumePretrainModule(VolumeModule):
    """Masked 3-D patch reconstruction of T1 volumes; logs ``train/loss`` and ``val/loss``.

    Args:
        encoder: `VolumeEncoder` arguments (``size``, ``patch_size``, ...); default ``tiny``, 16³.
        mask_ratio: fraction of each volume's patches masked and reconstructed.
        optimizer: AdamW and schedule settings (`OptimizerConfig`).
        init_from: continue from the encoder weights of a checkpoint or ``.safetensors`` file.
        mask_seed: training masks depend only on (seed, step, rank), as in `PretrainModule`.
    """

    job_type = "pretrain"

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        mask_ratio: float = 0.5,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
        mask_seed: int = 0,
    ) -> None:
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        super().__init__(encoder, optimizer, init_from)
        self.save_plain(dict(locals()))
        self.mask_ratio = mask_ratio
        self.mask_seed = mask_seed
        dim, p = self.encoder.dim, self.encoder.patch_size
        self.mask_embedding = nn.Parameter(torch.randn(dim) * 0.02)
        self.decoder_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.encoder.in_channels * p**3)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        if generator is None and self.training:
            seed = (self.mask_seed * 1_000_003 + self.global_step) * 7919 + self.global_rank
            generator = torch.Generator(device=batch["volume"].device).manual_seed(seed)
        target = self.encoder.patchify(batch["volume"])  # [B, N, p³]
        mask = patch_mask(target.shape[0], target.shape[1], self.mask_ratio, target.device, generator)
        tokens = self.encoder(batch, mask, self.mask_embedding).tokens  # [B, N, dim]
        prediction = self.head(self.decoder_norm(tokens))  # [B, N, p³]
        anatomy = target.std(dim=-1) > 1e-6  # [B, N] patches that are not constant background
        weight = (mask & anatomy).to(target.dtype)  # [B, N]
        squared = (prediction - target).pow(2).mean(dim=-1)  # [B, N]
        loss = (squared * weight).sum() / weight.sum().clamp_min(1.0)
        return {"loss": loss, "prediction": prediction, "target": target, "token_mask": mask & anatomy}

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # The same mask for the same batch every epoch, so val/loss moves only with the model.
        generator = torch.Generator(device=batch["volume"].device).manual_seed(batch_idx)
        return self.compute_loss(batch, generator)


def patch_mask(
    batch: int, n_patches: int, ratio: float, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """bool [B, N]: ``round(ratio * N)`` random patches per volume (at least one, at most N - 1)."""
    noise = torch.rand((batch, n_patches), generator=generator, device=device)  # [B, N]
    k = min(max(1, round(ratio * n_patches)), max(1, n_patches - 1))
    rank = noise.argsort(dim=1).argsort(dim=1)  # [B, N]
    return rank < k


class VolumeSupervisedModule(VolumeModule):
    """A head on the mean-pooled encoder tokens; ``linear_probe`` freezes the encoder.

    Args:
        encoder: `VolumeEncoder` arguments (must match ``init_from``'s encoder).
        linear_probe: train only the head (the encoder frozen, in eval mode).
        head_dropout: dropout before the head's linear layer.
        optimizer: AdamW and schedule settings (`OptimizerConfig`).
        init_from: the pretrained encoder (a `VolumePretrainModule` checkpoint or export).
    """

    head: nn.Module

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        linear_probe: bool = False,
        head_dropout: float = 0.0,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__(encoder, optimizer, init_from)
        self.init_args = {
            "encoder": encoder,
            "linear_probe": linear_probe,
            "head_dropout": head_dropout,
            "optimizer": optimizer,
            "init_from": init_from,
        }
        self.linear_probe = linear_probe
        self.head_dropout = head_dropout
        if linear_probe:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> VolumeSupervisedModule:
        super().train(mode)
        if self.linear_probe:
            self.encoder.eval()
        return self

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.head(self.encoder(batch).pooled)  # [B, K]

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        self.update_metrics(metrics, outputs["output"].detach(), batch["labels"])

    def update_metrics(self, metrics: Any, output: Tensor, labels: Tensor) -> None:
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        log_metrics(self, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        log_metrics(self, self.test_metrics)


class VolumeClassifierModule(VolumeSupervisedModule):
    """Subject-level classes from T1 volumes (cross-entropy; balanced accuracy, kappa, F1, AUROC).

    Args:
        num_classes: classes of the labels (``0..num_classes-1``, -1 = none).
        **kwargs: the `VolumeSupervisedModule` arguments.
    """

    monitor = "val/balanced_accuracy"
    monitor_mode = "max"

    def __init__(self, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_plain({**self.init_args, "num_classes": num_classes})
        self.head = ClassificationHead(self.encoder.dim, num_classes, self.head_dropout)
        self.val_metrics = classification_metrics(num_classes, prefix="val/")
        self.test_metrics = classification_metrics(num_classes, prefix="test/")

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self(batch)  # [B, K]
        return {"loss": classification_loss(logits, batch["labels"]), "output": logits}

    def update_metrics(self, metrics: Any, logits: Tensor, labels: Tensor) -> None:
        update_classification(metrics, logits, labels)


class VolumeRegressorModule(VolumeSupervisedModule):
    """Subject-level values from T1 volumes (MSE; Pearson r and R²), e.g. age.

    The head predicts in standard units: ``prediction = target_mean + target_std * head(x)``
    and the loss is the MSE of ``(prediction - target) / target_std``, so a target in years
    (age 20-80) trains at the same learning rate as a z-scored one.

    Args:
        num_outputs: values per volume (``labels`` [B] or [B, K]; NaN = missing).
        target_mean, target_std: the targets' centre and spread (e.g. of the training subjects).
        **kwargs: the `VolumeSupervisedModule` arguments.
    """

    def __init__(
        self, num_outputs: int = 1, target_mean: float = 0.0, target_std: float = 1.0, **kwargs: Any
    ) -> None:
        if not target_std > 0:
            raise ValueError(f"target_std must be > 0, got {target_std}")
        super().__init__(**kwargs)
        self.save_plain(
            {
                **self.init_args,
                "num_outputs": num_outputs,
                "target_mean": target_mean,
                "target_std": target_std,
            }
        )
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.head = RegressionHead(self.encoder.dim, num_outputs, self.head_dropout)
        self.val_metrics = regression_metrics(num_outputs, prefix="val/")
        self.test_metrics = regression_metrics(num_outputs, prefix="test/")

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.target_mean + self.target_std * super().forward(batch)  # [B, K]

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        prediction = self(batch)  # [B, K]
        target = batch["labels"].float().reshape(prediction.shape)  # [B, K]
        loss = regression_loss(prediction / self.target_std, target / self.target_std)
        return {"loss": loss, "output": prediction}

    def update_metrics(self, metrics: Any, prediction: Tensor, labels: Tensor) -> None:
        update_regression(metrics, prediction, labels)
