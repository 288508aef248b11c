"""`EncoderModule`: the thin base every LightningModule here shares.

One signal encoder, ``init_from`` (pretrained weights and the normalisation they were trained
with), the optimiser (`OptimizerConfig`: AdamW over layer-aware parameter groups, warmup-cosine
schedule), and the training/evaluation loop around a subclass's ``compute_loss``. Subclasses
add their objective and template hooks (``evaluation_outputs``, ``update_evaluation``).

Hyperparameters are saved as plain data (``save_config``: the encoder and optimiser groups as
dicts), so a checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytorch_lightning as pl
from torch import Tensor

from neurotrain.models.checkpoint_io import load_encoder_weights
from neurotrain.models.optim import OptimizerConfig, adamw_with_schedule, optimizer_config, param_groups
from neurotrain.models.signal_encoder import SignalEncoder, SignalEncoderConfig

SIGNAL_KEYS = ("signal", "channel_mask", "positions", "position_mask", "channel_types", "sfreq")


class EncoderModule(pl.LightningModule):
    """The signal encoder, ``init_from``, normalisation bookkeeping and optimizer set-up.

    Subclasses build their objective and implement ``compute_loss(batch) -> {"loss": …}``.
    ``self.normalization`` holds the data statistics the encoder was trained with (from
    ``init_from``, or set by the training set-up) and is written into every checkpoint.
    Class attributes: ``monitor``/``monitor_mode`` name the metric that picks the best
    checkpoint, ``job_type`` how a run of this module is tracked (W&B job type, run record).
    ``flops_per_batch`` (6 × trainable parameters × tokens of the last training batch) is what
    Lightning's ``ThroughputMonitor`` reads for FLOPs/s and MFU.
    """

    monitor = "val/loss"
    monitor_mode = "min"
    job_type = "finetune"

    def __init__(
        self,
        encoder: SignalEncoderConfig | dict | None,
        optimizer: OptimizerConfig | dict | None,
        init_from: str | None,
    ) -> None:
        super().__init__()
        self.encoder = SignalEncoder.from_config(encoder_config(encoder))
        self.optimizer_config = optimizer_config(optimizer)
        self.normalization: dict[str, Any] | None = None
        self.flops_per_batch: int | None = None
        self._trainable: int | None = None
        if init_from is not None:
            self.normalization = load_encoder_weights(self.encoder, init_from)

    def save_config(self, defaults: dict[str, Any] | None = None) -> None:
        """``save_hyperparameters`` of the calling constructor, then stored as plain data.

        Lightning collects the constructor's arguments (under LightningCLI: the resolved config,
        with the class path it needs to rebuild the module from a checkpoint); ``defaults`` fill
        in what a ``**kwargs`` constructor did not pass. The encoder and optimiser groups become
        dicts (`plain_init_args`), so a checkpoint loads with ``weights_only=True``.
        """
        frame = inspect.currentframe()
        self.save_hyperparameters(frame=frame.f_back if frame is not None else None)
        self.save_hyperparameters(plain_init_args({**(defaults or {}), **self.hparams}))

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
        self.flops_per_batch = self._training_flops(batch)
        loss = self.compute_loss(batch)["loss"]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["signal"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        """The batch's outputs (``output``: a supervised module's logits), for callbacks to read."""
        return self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        return self._evaluate(batch, batch_idx, "test")

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """The losses of a validation/test batch; a subclass may make them deterministic."""
        return self.compute_loss(batch)

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        """Template hook: accumulate epoch metrics from one evaluated batch."""

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> dict[str, Tensor] | None:
        batch_size = batch["signal"].shape[0]
        if batch_size == 0:
            return None
        outputs = self.evaluation_outputs(batch, batch_idx)
        self.log(
            f"{stage}/loss", outputs["loss"], prog_bar=stage == "val", batch_size=batch_size, sync_dist=True
        )
        self.update_evaluation(batch, outputs, stage)
        return outputs

    def configure_optimizers(self) -> dict:
        return adamw_with_schedule(self, self.optimizer_groups(), self.optimizer_config)

    def optimizer_groups(self) -> list[dict]:
        """AdamW parameter groups with the weight-decay split (``models/optim.py``), all at ``lr``."""
        return param_groups(self, self.optimizer_config.lr, self.optimizer_config.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.normalization is not None:
            checkpoint["normalization"] = self.normalization

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.normalization = checkpoint.get("normalization", self.normalization)

    def _training_flops(self, batch: dict[str, Tensor]) -> int:
        """6 FLOPs per trainable parameter per token, forward and backward (Kaplan et al.)."""
        if self._trainable is None:
            self._trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        patches = int(batch["signal"].shape[-1]) // self.encoder.patch_size
        return 6 * self._trainable * int(batch["channel_mask"].sum()) * max(patches, 1)


def encoder_config(encoder: SignalEncoderConfig | dict | None) -> SignalEncoderConfig:
    """A resolved encoder config from a dataclass, a dict (from saved hparams) or None (tiny)."""
    if encoder is None:
        return SignalEncoderConfig().resolved()
    if isinstance(encoder, dict):
        return SignalEncoderConfig(**encoder).resolved()
    return encoder.resolved()


def plain_init_args(args: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments (``locals()`` at its top) as plain data for ``save_hyperparameters``.

    ``self`` and ``__class__`` are dropped; the encoder group is resolved and, like the optimiser
    group and any other dataclass, stored as a dict, so checkpoints stay weights-only loadable.
    """
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in ("self", "__class__"):
            continue
        if key in ("encoder", "pair_encoder") and value is not None:
            value = dataclasses.asdict(encoder_config(value))
        elif key == "optimizer":
            value = optimizer_config(value).to_dict()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        out[key] = value
    return out
