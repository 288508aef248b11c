"""LightningModules: one signal encoder plus one objective each, built from plain typed arguments.

The constructor signatures are the config schema (LightningCLI/jsonargparse): ``encoder`` is a
nested `SignalEncoderConfig`, so YAML reads ``model.init_args.encoder: {size: small, patch_size: 64}``
and a sweep passes ``--model.encoder.size=base`` or ``--model.lr=3e-4``. The saved
hyperparameters hold the encoder config as a plain dict so a checkpoint loads with
``weights_only=True``.

Batch keys (see `SignalEncoder` for the signal keys and shapes):
- `PretrainModule`: signal keys.
- `ClassifierModule`: signal keys + ``labels`` int64 [B] (-1 = no label).
- `RegressorModule`: signal keys + ``labels`` float [B] or [B, K] (NaN = missing).
- `AlignmentModule`: signal keys + ``image`` [B, 3, H, W] (``pair="image"``), or the second
  signal's keys with ``pair_prefix`` (``pair_signal``, ``pair_channel_mask``, …) for ``pair="signal"``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from neurotrain.models.checkpoint_io import load_encoder_weights
from neurotrain.models.image_encoder import ImageEncoder
from neurotrain.models.metrics import classification_metrics, log_metrics, regression_metrics
from neurotrain.models.objectives import (
    ClassificationHead,
    ContrastiveAlignment,
    MaskedReconstruction,
    ReconstructionOutput,
    RegressionHead,
    classification_loss,
    regression_loss,
    topk_retrieval_accuracy,
)
from neurotrain.models.optim import param_groups, warmup_cosine
from neurotrain.models.pooling import Pooling, make_pool
from neurotrain.models.signal_encoder import SignalEncoder, SignalEncoderConfig, masked_mean
from neurotrain.models.token_cache import TokenCache

SIGNAL_KEYS = ("signal", "channel_mask", "positions", "position_mask", "channel_types", "sfreq")


class EncoderModule(pl.LightningModule):
    """Thin base: the signal encoder, ``init_from``, normalisation bookkeeping, optimizer set-up.

    Subclasses build their objective and implement ``compute_loss(batch) -> {"loss": …}``.
    ``self.normalization`` holds the data statistics the encoder was trained with (from
    ``init_from``, or set by the training set-up) and is written into every checkpoint.
    ``monitor``/``monitor_mode`` name the metric that picks the best checkpoint.
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        encoder: SignalEncoderConfig | dict | None,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        min_lr_ratio: float,
        layer_decay: float,
        init_from: str | None,
    ) -> None:
        super().__init__()
        self.encoder = SignalEncoder.from_config(encoder_config(encoder))
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.layer_decay = layer_decay
        self.normalization: dict[str, Any] | None = None
        if init_from is not None:
            self.normalization = load_encoder_weights(self.encoder, init_from)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """The pooled embedding [B, D]; what ``predict`` returns unless a subclass says otherwise."""
        return self.encoder(batch).pooled

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if batch["signal"].shape[0] == 0:
            # Every window of the batch was dropped (e.g. corrupt): a zero loss on all trainable
            # parameters keeps the step, and every DDP rank's gradient all-reduce, in lockstep.
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        loss = self.compute_loss(batch)["loss"]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["signal"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """The losses of a validation/test batch; a subclass may make them deterministic."""
        return self.compute_loss(batch)

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        """Template hook: accumulate epoch metrics from one evaluated batch."""

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> None:
        batch_size = batch["signal"].shape[0]
        if batch_size == 0:
            return
        outputs = self.evaluation_outputs(batch, batch_idx)
        self.log(
            f"{stage}/loss", outputs["loss"], prog_bar=stage == "val", batch_size=batch_size, sync_dist=True
        )
        self.update_evaluation(batch, outputs, stage)

    def configure_optimizers(self) -> dict:
        groups = self.optimizer_groups()
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.95))
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else None
        total = int(total) if total is not None and total != float("inf") else None
        scheduler = warmup_cosine(optimizer, self.warmup_steps, total, self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_groups(self) -> list[dict]:
        """AdamW parameter groups: weight-decay split and layer-wise lr decay (``models/optim.py``)."""
        return param_groups(
            self, self.lr, self.weight_decay, self.layer_decay, self.encoder.num_layers, self._layer_id
        )

    def _layer_id(self, name: str) -> int:
        """Encoder parameters by encoder layer; everything else (heads, objectives) on top."""
        if name.startswith("encoder."):
            return self.encoder.layer_id(name.removeprefix("encoder."))
        return self.encoder.num_layers + 1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.normalization is not None:
            checkpoint["normalization"] = self.normalization

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.normalization = checkpoint.get("normalization", self.normalization)


class PretrainModule(EncoderModule):
    """Masked patch reconstruction pretraining; logs ``train/loss`` and ``val/loss``."""

    def __init__(
        self,
        encoder: SignalEncoderConfig | None = None,
        mask_ratio: float = 0.5,
        decoder_depth: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        init_from: str | None = None,
        mask_seed: int = 0,
    ) -> None:
        encoder = asdict(encoder_config(encoder))  # plain dict: weights_only-loadable hparams
        layer_decay = 1.0
        super().__init__(encoder, lr, weight_decay, warmup_steps, min_lr_ratio, layer_decay, init_from)
        self.save_hyperparameters()
        self.mask_seed = mask_seed
        cfg = self.encoder.config
        self.objective = MaskedReconstruction(cfg.dim, cfg.heads, cfg.patch_size, mask_ratio, decoder_depth)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        if generator is None and self.training:
            # Training masks depend only on (seed, step, rank), not on the global RNG, so a run
            # resumed from a checkpoint draws exactly the masks the uninterrupted run drew.
            seed = (self.mask_seed * 1_000_003 + self.global_step) * 7919 + self.global_rank
            generator = torch.Generator(device=batch["channel_mask"].device).manual_seed(seed)
        out = self.objective(self.encoder, batch, generator)
        return {"loss": out.loss, "per_channel_error": out.per_channel_error}

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # The same mask for the same batch every epoch, so val/loss moves only with the model.
        generator = torch.Generator(device=batch["channel_mask"].device).manual_seed(batch_idx)
        return self.compute_loss(batch, generator)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor], seed: int = 0) -> ReconstructionOutput:
        """Masked reconstruction for plots and topomaps (``reconstruction``, ``per_channel_error``)."""
        generator = torch.Generator(device=batch["channel_mask"].device).manual_seed(seed)
        return self.objective(self.encoder, batch, generator)


class SupervisedModule(EncoderModule):
    """Shared by the classifier and the regressor: head on the pooled embedding, metrics at epoch end.

    ``linear_probe`` freezes the encoder (no gradients, kept in eval mode, left out of the
    optimizer); otherwise the whole model fine-tunes with layer-wise lr decay ``layer_decay``.
    ``pooling`` is ``"mean"`` (the encoder's pooled vector), ``"attention"`` (learned queries
    over the tokens) or ``"virtual"`` (learned virtual channels × patches, the layout kept); the
    pool trains with the head, ``pooling_options`` go to its constructor (``models/pooling.py``).
    ``head_lr`` (default ``lr``) is the learning rate of the pool and head, which start from
    scratch while the encoder may be pretrained: a fresh head wants a larger step than the
    encoder's top layer can take. A linear probe keeps each window's tokens (``probe_cache_gb``,
    0 = off; ``models/token_cache.py``), so later epochs skip the frozen encoder.
    """

    def __init__(
        self,
        encoder: dict,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        min_lr_ratio: float,
        layer_decay: float,
        init_from: str | None,
        linear_probe: bool,
        pooling: Pooling = "mean",
        pooling_options: dict[str, Any] | None = None,
        head_lr: float | None = None,
        probe_cache_gb: float = 2.0,
    ) -> None:
        super().__init__(encoder, lr, weight_decay, warmup_steps, min_lr_ratio, layer_decay, init_from)
        self.linear_probe = linear_probe
        self.head_lr = head_lr
        self.token_cache = (
            TokenCache(int(probe_cache_gb * 2**30)) if linear_probe and probe_cache_gb > 0 else None
        )
        self.pool = make_pool(pooling, self.encoder.dim, self.encoder.config.heads, pooling_options)
        # What the head reads: the pool's output, or the encoder's mean-pooled vector (normed).
        self.pooled_dim = self.pool.out_dim if self.pool is not None else self.encoder.dim
        self.head_norm = self.pool.head_norm if self.pool is not None else True
        if linear_probe:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> SupervisedModule:
        super().train(mode)
        if self.linear_probe:
            self.encoder.eval()
        return self

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        tokens = self.tokens(batch)  # [B, C, P, D]
        # [B, pooled_dim]: the mean over real tokens, or the pool's reading of them
        pooled = masked_mean(tokens, batch["channel_mask"]) if self.pool is None else self.pool(tokens, batch)
        return self.head(pooled)  # [B, K]

    def tokens(self, batch: dict[str, Any]) -> Tensor:
        """The encoder's tokens ``[B, C, P, D]``; a linear probe takes them from its cache when it can."""
        if not self.linear_probe:
            return self.encoder(batch).tokens

        def encode() -> Tensor:
            with torch.no_grad():
                return self.encoder(batch).tokens

        if self.token_cache is None or "sample_id" not in batch:
            return encode()
        shape = (batch["signal"].shape[1], batch["signal"].shape[2] // self.encoder.patch_size)
        return self.token_cache.tokens(batch["sample_id"], shape, batch["signal"].device, encode)

    def optimizer_groups(self) -> list[dict]:
        """The encoder's groups (layer-wise decay from ``lr``), then pool and head at ``head_lr`` or ``lr``."""
        enc = self.encoder
        encoder = param_groups(
            enc, self.lr, self.weight_decay, self.layer_decay, enc.num_layers, enc.layer_id
        )
        for group in encoder:
            group["names"] = [f"encoder.{n}" for n in group["names"]]
        rest = nn.ModuleDict({name: child for name, child in self.named_children() if name != "encoder"})
        return encoder + param_groups(rest, self.head_lr or self.lr, self.weight_decay)

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        self.update_metrics(metrics, outputs["output"].detach(), batch["labels"])

    def update_metrics(self, metrics: MetricCollection, output: Tensor, labels: Tensor) -> None:
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        log_metrics(self, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        log_metrics(self, self.test_metrics)


class ClassifierModule(SupervisedModule):
    """Classification by cross-entropy; metrics: balanced accuracy, Cohen's kappa, weighted F1, AUROC."""

    monitor = "val/balanced_accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int = 2,
        encoder: SignalEncoderConfig | None = None,
        linear_probe: bool = False,
        layer_decay: float = 0.75,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        head_dropout: float = 0.0,
        pooling: Pooling = "mean",
        pooling_options: dict[str, Any] | None = None,
        head_lr: float | None = None,
        probe_cache_gb: float = 2.0,
        init_from: str | None = None,
    ) -> None:
        encoder = asdict(encoder_config(encoder))
        super().__init__(
            encoder,
            lr,
            weight_decay,
            warmup_steps,
            min_lr_ratio,
            layer_decay,
            init_from,
            linear_probe,
            pooling,
            pooling_options,
            head_lr,
            probe_cache_gb,
        )
        self.save_hyperparameters()
        self.head = ClassificationHead(self.pooled_dim, num_classes, head_dropout, self.head_norm)
        self.val_metrics = classification_metrics(num_classes, prefix="val/")
        self.test_metrics = classification_metrics(num_classes, prefix="test/")

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self(batch)  # [B, K]
        return {"loss": classification_loss(logits, batch["labels"]), "output": logits}

    def update_metrics(self, metrics: MetricCollection, logits: Tensor, labels: Tensor) -> None:
        labelled = labels >= 0
        if labelled.any():
            metrics.update(logits[labelled].softmax(dim=-1), labels[labelled])


class RegressorModule(SupervisedModule):
    """Regression by MSE; metrics: Pearson r and R² (averaged over outputs)."""

    def __init__(
        self,
        num_outputs: int = 1,
        encoder: SignalEncoderConfig | None = None,
        linear_probe: bool = False,
        layer_decay: float = 0.75,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        head_dropout: float = 0.0,
        pooling: Pooling = "mean",
        pooling_options: dict[str, Any] | None = None,
        head_lr: float | None = None,
        probe_cache_gb: float = 2.0,
        init_from: str | None = None,
    ) -> None:
        encoder = asdict(encoder_config(encoder))
        super().__init__(
            encoder,
            lr,
            weight_decay,
            warmup_steps,
            min_lr_ratio,
            layer_decay,
            init_from,
            linear_probe,
            pooling,
            pooling_options,
            head_lr,
            probe_cache_gb,
        )
        self.save_hyperparameters()
        self.head = RegressionHead(self.pooled_dim, num_outputs, head_dropout, self.head_norm)
        self.val_metrics = regression_metrics(num_outputs, prefix="val/")
        self.test_metrics = regression_metrics(num_outputs, prefix="test/")

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        prediction = self(batch)  # [B, K]
        target = batch["labels"].float().reshape(prediction.shape)  # [B, K]
        return {"loss": regression_loss(prediction, target), "output": prediction}

    def update_metrics(self, metrics: MetricCollection, prediction: Tensor, labels: Tensor) -> None:
        target = labels.float().reshape(prediction.shape)  # [B, K]
        complete = torch.isfinite(target).all(dim=1)  # [B]
        if complete.any():
            squeeze = prediction.shape[1] == 1  # torchmetrics wants [N] for one output
            pred, tgt = prediction[complete], target[complete]
            metrics.update(pred.squeeze(1) if squeeze else pred, tgt.squeeze(1) if squeeze else tgt)


class AlignmentModule(EncoderModule):
    """Contrastive alignment of the signal with a second view by symmetric InfoNCE.

    ``pair="image"``: a timm image encoder (``image_model``, local ``image_weights``) on
    ``batch["image"]``. ``pair="signal"``: a second signal encoder (``pair_encoder``, default the
    same config) on the batch keys prefixed ``pair_prefix``. ``freeze_pair`` keeps the second
    encoder fixed (e.g. pretrained image weights). Validation logs top-k retrieval accuracy over
    the whole validation set in both directions (signal->pair ``a2b``, pair->signal ``b2a``).
    """

    def __init__(
        self,
        encoder: SignalEncoderConfig | None = None,
        pair: str = "image",
        image_model: str = "resnet18",
        image_weights: str | None = None,
        image_size: int | None = None,
        pair_encoder: SignalEncoderConfig | None = None,
        pair_prefix: str = "pair_",
        freeze_pair: bool = False,
        embed_dim: int = 128,
        temperature: float = 0.07,
        retrieval_k: list[int] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        init_from: str | None = None,
    ) -> None:
        encoder = asdict(encoder_config(encoder))
        pair_encoder = asdict(encoder_config(pair_encoder)) if pair_encoder is not None else encoder
        super().__init__(encoder, lr, weight_decay, warmup_steps, min_lr_ratio, 1.0, init_from)
        self.save_hyperparameters()
        if pair == "image":
            self.pair_encoder = ImageEncoder(image_model, image_weights, image_size)
        elif pair == "signal":
            self.pair_encoder = SignalEncoder.from_config(encoder_config(pair_encoder))
        else:
            raise ValueError(f"pair must be 'image' or 'signal', got {pair!r}")
        if freeze_pair:
            self.pair_encoder.requires_grad_(False)
            self.pair_encoder.eval()  # BatchNorm statistics stay frozen too
        self.pair = pair
        self.pair_prefix = pair_prefix
        self.freeze_pair = freeze_pair
        self.retrieval_k = list(retrieval_k or [1, 5])
        self.alignment = ContrastiveAlignment(self.encoder.dim, self.pair_encoder.dim, embed_dim, temperature)
        self._embeddings: dict[str, list[tuple[Tensor, Tensor]]] = {}  # stage -> (z_a, z_b) per batch

    def train(self, mode: bool = True) -> AlignmentModule:
        super().train(mode)
        if self.freeze_pair:
            self.pair_encoder.eval()
        return self

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pooled_a = self.encoder(batch).pooled  # [B, Da]
        pooled_b = self.pair_encoder(self.pair_batch(batch)).pooled  # [B, Db]
        loss, z_a, z_b = self.alignment(pooled_a, pooled_b)
        return {"loss": loss, "z_a": z_a, "z_b": z_b}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """The signal's unit-norm embedding in the shared space [B, E] (for retrieval)."""
        return torch.nn.functional.normalize(self.alignment.proj_a(self.encoder(batch).pooled), dim=-1)

    def pair_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The second view's inputs, keyed as its encoder expects."""
        if self.pair == "image":
            return {"image": batch["image"]}
        return {key: batch[self.pair_prefix + key] for key in SIGNAL_KEYS}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train/temperature", 1.0 / self.alignment.logit_scale.exp().detach())
        return loss

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        self._embeddings.setdefault(stage, []).append((outputs["z_a"].detach(), outputs["z_b"].detach()))

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._log_retrieval("test")

    def _log_retrieval(self, stage: str) -> None:
        """Top-k retrieval over the whole epoch's pairs (per process: not gathered across ranks)."""
        pairs = self._embeddings.pop(stage, [])
        if not pairs:
            return
        z_a = torch.cat([a for a, _ in pairs])  # [N, E]
        z_b = torch.cat([b for _, b in pairs])  # [N, E]
        for k in self.retrieval_k:
            self.log(f"{stage}/top{k}_a2b", topk_retrieval_accuracy(z_a, z_b, k))
            self.log(f"{stage}/top{k}_b2a", topk_retrieval_accuracy(z_b, z_a, k))


def encoder_config(encoder: SignalEncoderConfig | dict | None) -> SignalEncoderConfig:
    """A resolved encoder config from a dataclass, a dict (from saved hparams) or None (tiny)."""
    if encoder is None:
        return SignalEncoderConfig().resolved()
    if isinstance(encoder, dict):
        return SignalEncoderConfig(**encoder).resolved()
    return encoder.resolved()
