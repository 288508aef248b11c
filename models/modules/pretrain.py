"""`PretrainModule`: masked patch reconstruction, the self-supervised pretraining objective."""

from __future__ import annotations

import torch
from torch import Tensor

from neurotrain.models.modules.base import EncoderModule, plain_init_args
from neurotrain.models.objectives import MaskedReconstruction, ReconstructionOutput
from neurotrain.models.optim import OptimizerConfig
from neurotrain.models.signal_encoder import SignalEncoderConfig


class PretrainModule(EncoderModule):
    """Masked patch reconstruction pretraining; logs ``train/loss`` and ``val/loss``.

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
        cfg = self.encoder.config
        self.objective = MaskedReconstruction(cfg.dim, cfg.heads, cfg.patch_size, mask_ratio, decoder_depth)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        if generator is None and self.training:
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
