"""`BraindecodeClassifierModule`: the field's deep decoding baselines (EEGNet, ShallowFBCSPNet, Deep4Net)
trained by this platform's loop on the same batches as the channel-agnostic encoder.

The networks are braindecode's own classes (``braindecode.models``), built with the input they
need, a fixed montage of ``n_chans`` channels and ``n_times`` samples per epoch. Left ``None`` in the
config, both come from the datamodule when the fit starts (Lightning's ``configure_model`` hook):
``n_chans`` its channel slots (``c_max``; a channel masked as bad is a zero row, as in the batch),
``n_times`` the epoch length ``(tmax - tmin) * sfreq``. They are then saved with the
hyperparameters, so a checkpoint rebuilds the same network. Everything else is the encoder
modules' machinery: the ``OptimizerConfig`` group (AdamW, warmup-cosine), cross-entropy, and the
classification metrics a ``ClassifierModule`` logs (``val/balanced_accuracy`` is monitored), so
``evaluate`` and ``compare`` read the runs alike.

    model:
      class_path: neurotrain.models.modules.BraindecodeClassifierModule
      init_args: {network: EEGNet, num_classes: 2}

Batch: ``signal`` float32 [B, C, T] (C = n_chans, T = n_times), ``labels`` int64 [B] (-1 = none).
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
from torch import Tensor, nn

from neurotrain.models.metrics import classification_metrics, log_metrics
from neurotrain.models.modules.base import plain_init_args
from neurotrain.models.objectives import classification_loss
from neurotrain.models.optim import OptimizerConfig, adamw_with_schedule, optimizer_config, param_groups

Network = Literal["EEGNet", "ShallowFBCSPNet", "Deep4Net"]
NETWORKS: tuple[str, ...] = ("EEGNet", "ShallowFBCSPNet", "Deep4Net")
# braindecode < 1.0 named EEGNet "EEGNetv4"
_ALIASES = {"EEGNet": ("EEGNet", "EEGNetv4")}


def braindecode_network(
    network: str, n_chans: int, n_times: int, n_outputs: int, sfreq: float | None, options: dict[str, Any]
) -> nn.Module:
    """braindecode's ``network`` for [B, n_chans, n_times] epochs and ``n_outputs`` classes."""
    import braindecode.models as models

    if network not in NETWORKS:
        raise ValueError(f"unknown braindecode network {network!r}; known: {', '.join(NETWORKS)}")
    cls = next((getattr(models, n) for n in _ALIASES.get(network, (network,)) if hasattr(models, n)), None)
    if cls is None:
        raise ValueError(f"braindecode {getattr(models, '__version__', '')} has no {network}")
    return cls(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq, **options)


class BraindecodeClassifierModule(pl.LightningModule):
    """A braindecode network trained by cross-entropy; metrics as `ClassifierModule`'s.

    Args:
        network: ``EEGNet`` (Lawhern et al. 2018), ``ShallowFBCSPNet`` or ``Deep4Net``
            (Schirrmeister et al. 2017).
        num_classes: classes of the labels (``0..num_classes-1``, -1 = none).
        n_chans: channel slots of the input; ``None``: the datamodule's ``c_max``.
        n_times: samples per epoch; ``None``: ``(tmax - tmin) * sfreq`` of the datamodule.
        sfreq: sampling rate the network is told (``None``: the datamodule's).
        network_options: further arguments of the braindecode class (e.g. ``drop_prob``).
        optimizer: AdamW and schedule settings (`OptimizerConfig`).
    """

    monitor = "val/balanced_accuracy"
    monitor_mode = "max"
    job_type = "finetune"

    def __init__(
        self,
        network: Network = "EEGNet",
        num_classes: int = 2,
        n_chans: int | None = None,
        n_times: int | None = None,
        sfreq: float | None = None,
        network_options: dict[str, Any] | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(plain_init_args(locals()))
        self.optimizer_config = optimizer_config(optimizer)
        self.normalization: dict[str, Any] | None = None
        self.flops_per_batch: int | None = None  # not counted: ThroughputMonitor reports no FLOPs
        self.net: nn.Module | None = None
        self.val_metrics = classification_metrics(num_classes, prefix="val/")
        self.test_metrics = classification_metrics(num_classes, prefix="test/")
        if n_chans is not None and n_times is not None:
            self._build(n_chans, n_times, sfreq)

    def configure_model(self) -> None:
        """Build the network from the datamodule's input size when the config left it open."""
        if self.net is not None:
            return
        hp = self.hparams
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if (hp.n_chans is None or hp.n_times is None or hp.sfreq is None) and dm is None:
            raise ValueError(
                f"{hp.network}: set model.init_args.n_chans and n_times, or fit with a ShardDataModule"
            )
        if dm is not None and getattr(dm, "c_max", None) is None:
            dm.setup("fit")
        sfreq = hp.sfreq if hp.sfreq is not None else float(dm.sfreq)
        n_chans = hp.n_chans if hp.n_chans is not None else int(dm.c_max)
        if hp.n_times is not None:
            n_times = hp.n_times
        else:
            n_times = int(round((dm.hparams.tmax - dm.hparams.tmin) * float(dm.sfreq)))
        self._build(n_chans, n_times, sfreq)

    def _build(self, n_chans: int, n_times: int, sfreq: float | None) -> None:
        hp = self.hparams
        self.net = braindecode_network(
            hp.network, n_chans, n_times, hp.num_classes, sfreq, dict(hp.network_options or {})
        )
        # saved with the checkpoint: it rebuilds this network without a datamodule
        hp.n_chans, hp.n_times, hp.sfreq = n_chans, n_times, sfreq

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits [B, num_classes] of ``signal`` [B, n_chans, n_times]."""
        if self.net is None:
            raise RuntimeError("the network is built when the fit starts (configure_model)")
        x = batch["signal"]
        expected = (self.hparams.n_chans, self.hparams.n_times)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{self.hparams.network} was built for epochs of {expected[0]} channels x {expected[1]} "
                f"samples; this batch has {x.shape[1]} x {x.shape[2]} (set model.init_args.n_chans / "
                "n_times, or the data's tmin/tmax and channels)"
            )
        return self.net(x)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = classification_loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["signal"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        """``{"output": logits [B, K]}``, for callbacks to read (the held-out predictions)."""
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        return self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor] | None:
        n = batch["signal"].shape[0]
        if n == 0:
            return None
        logits = self(batch)
        labels = batch["labels"]
        self.log(f"{stage}/loss", classification_loss(logits, labels), prog_bar=stage == "val", batch_size=n)
        labelled = labels >= 0
        if labelled.any():
            metrics = self.val_metrics if stage == "val" else self.test_metrics
            metrics.update(logits[labelled].softmax(dim=-1).detach(), labels[labelled])
        return {"output": logits.detach()}

    def on_validation_epoch_end(self) -> None:
        log_metrics(self, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        log_metrics(self, self.test_metrics)

    def configure_optimizers(self) -> dict:
        cfg = self.optimizer_config
        return adamw_with_schedule(self, param_groups(self, cfg.lr, cfg.weight_decay), cfg)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.normalization is not None:
            checkpoint["normalization"] = self.normalization

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.normalization = checkpoint.get("normalization", self.normalization)
