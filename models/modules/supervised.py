"""Supervised heads on the encoder: `ClassifierModule` and `RegressorModule`, one shared base.

`SupervisedModule` holds everything the two share (its constructor is the schema of both: the
subclasses add only their output count, and jsonargparse follows their ``**kwargs`` to it):
the pool that reads the encoder's tokens, linear probing with a token cache, layer-wise lr decay
for fine-tuning, ``head_lr`` for the fresh head, and metrics accumulated over an epoch.

Batch keys: the signal keys (see `SignalEncoder`) + ``labels``: int64 [B] for classes (-1 = no
label) or float [B] / [B, K] for values (NaN = missing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from neurotrain.models.metrics import (
    classification_metrics,
    log_metrics,
    regression_metrics,
    update_classification,
    update_regression,
)
from neurotrain.models.modules.base import EncoderModule, plain_init_args
from neurotrain.models.modules.subject_adaptation import SubjectAdaptation
from neurotrain.models.objectives import (
    ClassificationHead,
    RegressionHead,
    classification_loss,
    regression_loss,
)
from neurotrain.models.optim import OptimizerConfig, param_groups
from neurotrain.models.pooling import Pooling, make_pool
from neurotrain.models.signal_encoder import SignalEncoderConfig, masked_mean
from neurotrain.models.subject_layers import SubjectLayersConfig
from neurotrain.models.token_cache import TokenCache


class SupervisedModule(SubjectAdaptation, EncoderModule):
    """A head on the pooled encoder tokens, trained by a subclass's loss.

    Args:
        encoder: the signal encoder's config (must match ``init_from``'s encoder).
        linear_probe: freeze the encoder (no gradients, kept in eval mode, left out of the
            optimizer); otherwise the whole model fine-tunes.
        layer_decay: layer-wise lr decay of a fine-tune: encoder layer ``i`` of ``L`` trains at
            ``lr * layer_decay ** (L + 1 - i)``.
        head_lr: learning rate of the pool and head, which start from scratch while the encoder
            may be pretrained (default: ``optimizer.lr``).
        head_dropout: dropout before the head's linear layer.
        pooling: ``"mean"`` (the encoder's pooled vector), ``"attention"`` (learned queries over
            the tokens) or ``"virtual"`` (learned virtual channels × patches, the layout kept);
            ``pooling_options`` go to the pool's constructor (``models/pooling.py``).
        probe_cache_gb: a linear probe keeps each window's tokens up to this size (0: off;
            ``models/token_cache.py``), so later epochs skip the frozen encoder.
        subject_layers: per-subject input layers in front of the encoder
            (`SubjectLayersConfig`: ``{channels: K}``; ``models/subject_layers.py``): each
            subject's channels mapped to K shared virtual channels, for subjects whose inputs
            differ (other parcels, montages, widths). ``None``: the encoder reads channels as stored.
        adapt_from: a checkpoint of this module (with subject layers) to adapt to new subjects:
            every weight is loaded from it, a fresh layer is added for each of
            ``adapt_subjects``, and only those layers train (encoder, pool and head frozen).
        adapt_head: adapting, also train the head (a few hundred parameters). A frozen head of a
            confident model can hold a new subject's fresh layer on one class, where its gradient
            vanishes; a trainable head lets the layer out (tests/test_subject_layers.py).
        optimizer: AdamW and schedule settings (`OptimizerConfig`).
        init_from: start from the encoder weights (and normalisation) of a checkpoint.
    """

    head: nn.Module

    def __init__(
        self,
        encoder: SignalEncoderConfig | None = None,
        linear_probe: bool = False,
        layer_decay: float = 0.75,
        head_lr: float | None = None,
        head_dropout: float = 0.0,
        pooling: Pooling = "mean",
        pooling_options: dict[str, Any] | None = None,
        probe_cache_gb: float = 2.0,
        subject_layers: SubjectLayersConfig | None = None,
        adapt_from: str | None = None,
        adapt_subjects: list[str] | None = None,
        adapt_head: bool = False,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
    ) -> None:
        args = plain_init_args(locals())
        if adapt_from is not None and linear_probe:
            raise ValueError("adapt_from adapts subject layers: not with linear_probe")
        super().__init__(encoder, optimizer, init_from)
        self.init_args = args  # saved by the subclass with its own arguments
        self.linear_probe = linear_probe
        self.layer_decay = layer_decay
        self.head_lr = head_lr
        self.head_dropout = head_dropout
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
        self.init_subject_layers(subject_layers, adapt_from, adapt_subjects, adapt_head)
        if self.subject_layers_config is not None:
            self.token_cache = None  # the tokens of a window change as its subject layer trains

    def attach_head(
        self, head: Callable[..., nn.Module], metrics: Callable[..., MetricCollection], outputs: int
    ) -> None:
        """The subclass's head over the pooled tokens (``outputs`` wide) and its val/test metrics."""
        self.head = head(self.pooled_dim, outputs, self.head_dropout, self.head_norm)
        self.val_metrics = metrics(outputs, prefix="val/")
        self.test_metrics = metrics(outputs, prefix="test/")

    def train(self, mode: bool = True) -> SupervisedModule:
        super().train(mode)
        if self.linear_probe:
            self.encoder.eval()
        self.freeze_for_adaptation()
        return self

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        batch = self.adapt_input(batch)  # subject layers: [B, K, T] shared virtual channels
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
        enc, cfg = self.encoder, self.optimizer_config
        encoder = param_groups(enc, cfg.lr, cfg.weight_decay, self.layer_decay, enc.num_layers, enc.layer_id)
        for group in encoder:
            group["names"] = [f"encoder.{n}" for n in group["names"]]
        rest = nn.ModuleDict({name: child for name, child in self.named_children() if name != "encoder"})
        return encoder + param_groups(rest, self.head_lr or cfg.lr, cfg.weight_decay)

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
    """Classification by cross-entropy; metrics: balanced accuracy, Cohen's kappa, weighted F1, AUROC.

    Args:
        num_classes: classes of the labels (``labels`` in ``0..num_classes-1``, -1 = none).
        **kwargs: the `SupervisedModule` arguments.
    """

    monitor = "val/balanced_accuracy"
    monitor_mode = "max"

    def __init__(self, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_config(self.init_args)
        self.attach_head(ClassificationHead, classification_metrics, num_classes)

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self(batch)  # [B, K]
        return {"loss": classification_loss(logits, batch["labels"]), "output": logits}

    def update_metrics(self, metrics: MetricCollection, logits: Tensor, labels: Tensor) -> None:
        update_classification(metrics, logits, labels)


class RegressorModule(SupervisedModule):
    """Regression by MSE; metrics: Pearson r and R² (averaged over outputs).

    Args:
        num_outputs: values predicted per window (``labels`` [B] for one, [B, K] for several).
        **kwargs: the `SupervisedModule` arguments.
    """

    def __init__(self, num_outputs: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_config(self.init_args)
        self.attach_head(RegressionHead, regression_metrics, num_outputs)

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        prediction = self(batch)  # [B, K]
        target = batch["labels"].float().reshape(prediction.shape)  # [B, K]
        return {"loss": regression_loss(prediction, target), "output": prediction}

    def update_metrics(self, metrics: MetricCollection, prediction: Tensor, labels: Tensor) -> None:
        update_regression(metrics, prediction, labels)
