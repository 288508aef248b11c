"""`PretrainModule`: masked patch reconstruction, the self-supervised pretraining objective.

Mixed corpora: when the datamodule reads several datasets (``ShardDataModule.dataset_names``
has more than one name) and batches say where each window came from (``dataset`` int64 [B]),
the loss is also logged per dataset, ``train/loss/<name>`` each step and ``val/loss/<name>`` /
``test/loss/<name>`` per epoch: the same masked-token MSE as ``train/loss``, over that dataset's
windows of the batch (token-weighted, so the per-dataset values average back to the total).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from neurotrain.models.modules.base import EncoderModule, plain_init_args
from neurotrain.models.objectives import MaskedReconstruction, ReconstructionOutput
from neurotrain.models.optim import OptimizerConfig
from neurotrain.models.signal_encoder import SignalEncoderConfig


class PretrainModule(EncoderModule):
    """Masked patch reconstruction pretraining; logs ``train/loss`` and ``val/loss`` (and, over a
    mix of datasets, ``train/loss/<dataset>`` and ``val/loss/<dataset>``: module docstring).

    Args:
        encoder: the signal encoder's config (default: the ``tiny`` preset).
        mask_ratio: fraction of (channel, patch) tokens masked and reconstructed.
        decoder_depth: transformer layers of the reconstruction decoder.
        optimizer: AdamW and schedule settings (`OptimizerConfig`).
        init_from: continue from the encoder weights of a checkpoint or ``.safetensors`` file.
        mask_seed: training masks depend only on (seed, step, rank), so a resumed run draws the
            masks the uninterrupted run drew.
    """

    job_type = "pretrain"

    def __init__(
        self,
        encoder: SignalEncoderConfig | None = None,
        mask_ratio: float = 0.5,
        decoder_depth: int = 1,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
        mask_seed: int = 0,
    ) -> None:
        args = plain_init_args(locals())
        super().__init__(args["encoder"], args["optimizer"], init_from)
        self.save_config()
        self.mask_seed = mask_seed
        self._last_outputs: dict[str, Any] | None = None
        cfg = self.encoder.config
        self.objective = MaskedReconstruction(cfg.dim, cfg.heads, cfg.patch_size, mask_ratio, decoder_depth)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        if generator is None and self.training:
            seed = (self.mask_seed * 1_000_003 + self.global_step) * 7919 + self.global_rank
            generator = torch.Generator(device=batch["channel_mask"].device).manual_seed(seed)
        out = self.objective(self.encoder, batch, generator)
        outputs = {"loss": out.loss, "per_channel_error": out.per_channel_error}
        if "dataset" in batch:
            outputs["dataset_loss"] = dataset_losses(out, batch["dataset"])
        self._last_outputs = outputs  # read by training_step for the per-dataset losses
        return outputs

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self._last_outputs = None
        loss = super().training_step(batch, batch_idx)
        if self._last_outputs is not None:
            self._log_dataset_losses(self._last_outputs, "train")
        return loss

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        self._log_dataset_losses(outputs, stage)

    def _log_dataset_losses(self, outputs: dict[str, Any], stage: str) -> None:
        """``<stage>/loss/<name>`` for each dataset with windows in the batch (a mix only)."""
        names = self._dataset_names()
        if "dataset_loss" not in outputs or len(names) < 2:
            return
        losses, windows = outputs["dataset_loss"]
        for d, n in enumerate(windows.tolist()):
            if n > 0 and d < len(names):
                self.log(
                    f"{stage}/loss/{names[d]}",
                    losses[d],
                    batch_size=int(n),
                    sync_dist=stage != "train",
                )

    def _dataset_names(self) -> list[str]:
        """The datamodule's dataset names (``ShardDataModule.dataset_names``); [] without one."""
        try:
            datamodule = self.trainer.datamodule
        except RuntimeError:  # not attached to a trainer
            return []
        return list(getattr(datamodule, "dataset_names", None) or [])

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # The same mask for the same batch every epoch, so val/loss moves only with the model.
        generator = torch.Generator(device=batch["channel_mask"].device).manual_seed(batch_idx)
        return self.compute_loss(batch, generator)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor], seed: int = 0) -> ReconstructionOutput:
        """Masked reconstruction for plots and topomaps (``reconstruction``, ``per_channel_error``)."""
        generator = torch.Generator(device=batch["channel_mask"].device).manual_seed(seed)
        return self.objective(self.encoder, batch, generator)


def dataset_losses(out: ReconstructionOutput, dataset: Tensor) -> tuple[Tensor, Tensor]:
    """Masked-token MSE per dataset: ``(losses [K], windows [K])`` for ``dataset`` ids [B] in 0..K-1.

    ``losses[d]`` is the squared error summed over the masked tokens of dataset ``d``'s windows
    divided by their number (as ``MaskedReconstruction`` computes the total; 0 where the batch has
    none of ``d``), ``windows[d]`` how many of the batch's windows are from ``d``. Differentiable,
    though only logged.
    """
    squared = (out.prediction - out.target).pow(2).mean(dim=-1)  # [B, C, P]
    weight = out.token_mask.to(squared.dtype)  # [B, C, P]
    ids = dataset.to(squared.device).long()  # [B]
    k = int(ids.max()) + 1 if ids.numel() else 0
    total = torch.zeros(k, dtype=squared.dtype, device=squared.device)
    total = total.index_add(0, ids, (squared * weight).sum(dim=(1, 2)))  # [K]
    tokens = torch.zeros_like(total).index_add(0, ids, weight.sum(dim=(1, 2)))  # [K]
    windows = torch.bincount(ids, minlength=k)  # [K]
    return total / tokens.clamp_min(1.0), windows
