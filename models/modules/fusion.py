"""Structure + function fusion (BrainHarmonix-like): T1 and fMRI tokens compressed into shared latents.

Batches hold both modalities of one subject (`PairedModalityDataModule`): ``volume`` float32
[B, D, H, W] (the T1) and the signal keys of the fMRI window (``signal`` [B, C, T], ``channel_mask``
[B, C], ``positions``, ``position_mask``, ``channel_types``, ``sfreq`` [B]), plus ``labels`` [B].

`FusionEncoder`: a `VolumeEncoder` turns the T1 into patch tokens [B, Nv, Dv] and a `SignalEncoder`
the fMRI window into (parcel, time patch) tokens [B, C, P, Ds]; each set is projected to the shared
width ``dim`` (plus a learned modality embedding), and ``n_latents`` learned query tokens
cross-attend over both sets (padding parcels masked out; each set attended to on its own and the
two results averaged, so the modalities weigh the same whatever their token counts), followed by
``fusion_depth`` self-attention blocks over the latents: latents [B, L, dim], the shared 1-D brain
tokens of BrainHarmonix ("hub tokens"). ``use="t1"`` / ``"fmri"`` feeds the latents one token set
only, through the same code, so one modality's contribution can be measured.

- `FusionPretrainModule`: masked reconstruction of both modalities through the latents. A
  fraction of the T1 patches and of the fMRI tokens is replaced by learned mask embeddings before
  the modality encoders (SimMIM-style, as the single-modality modules do); the decoder's queries
  are the positions of the target tokens (3-D sincos of the T1 patch grid; the fMRI encoder's
  parcel and time encodings) and attend to the latents only, so everything reconstructed passes
  through the shared tokens. Loss = T1 masked-patch MSE (patches holding anatomy) + ``fmri_weight``
  x fMRI masked-token MSE; logged as ``{train,val}/loss``, ``/loss_t1``, ``/loss_fmri``.
- `FusionRegressorModule` / `FusionClassifierModule`: a head (after a BatchNorm without affine
  parameters) on the mean of the latents for a subject-level target (a ``participants.tsv``
  column), optionally from a pretrained ``init_from``; ``modality_dropout`` hides one modality of
  some training windows so a fused model uses both.

On the synthetic task of ``tests/test_fusion.py`` (a target that needs both modalities) the fused
fine-tune beats either modality alone from scratch; fine-tuned from a short `FusionPretrainModule`
run it did worse (held-out r 0.52 fused, 0.55 T1, 0.62 fMRI, against 0.90 / 0.60 / 0.67 from
scratch): the pretrained latents carry the T1 effect linearly (a ridge probe: r 0.83) but the
fMRI sine amplitude hardly (r 0.14), and barely vary between samples (std ~1e-3 of their norm).

Hyperparameters are saved as plain data, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurotrain.models.checkpoint_io import load_encoder_weights
from neurotrain.models.metrics import (
    classification_metrics,
    log_metrics,
    regression_metrics,
    update_classification,
    update_regression,
)
from neurotrain.models.modules.base import encoder_config
from neurotrain.models.modules.volume import patch_mask
from neurotrain.models.objectives import (
    ClassificationHead,
    RegressionHead,
    classification_loss,
    random_token_mask,
    regression_loss,
)
from neurotrain.models.optim import OptimizerConfig, adamw_with_schedule, optimizer_config, param_groups
from neurotrain.models.signal_encoder import Block, SignalEncoder, SignalEncoderConfig, _init_weights
from neurotrain.models.volume_encoder import VolumeEncoder, sincos_3d

Use = Literal["both", "t1", "fmri"]
USES = ("both", "t1", "fmri")


class CrossAttention(nn.Module):
    """Multi-head attention of queries [B, M, D] over one or more contexts, balanced between them.

    Each context (a modality's tokens [B, N_g, D] with ``valid`` bool [B, N_g], or None: all
    valid) is attended to on its own (``scaled_dot_product_attention``) and the results are
    averaged over the contexts in which a sample has a valid token. Every modality so gets the same
    share of the latents' attention whatever its token count (a T1 has hundreds of patches, an fMRI
    window a few dozen parcel tokens); one softmax over both would hand the larger set most of it.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, contexts: Sequence[tuple[Tensor, Tensor | None]]) -> Tensor:
        B, M, D = x.shape
        H = self.heads
        q = self.q(x).reshape(B, M, H, D // H).transpose(1, 2)  # [B, H, M, Dh]
        total = torch.zeros_like(q)  # [B, H, M, Dh]
        count = torch.zeros(B, 1, 1, 1, dtype=q.dtype, device=q.device)
        for context, valid in contexts:
            N = context.shape[1]
            k, v = self.kv(context).reshape(B, N, 2, H, D // H).permute(2, 0, 3, 1, 4)  # [B, H, N, Dh]
            if valid is None:
                present = torch.ones(B, dtype=torch.bool, device=x.device)
                mask = None
            else:
                present = valid.any(dim=1)  # [B]; a sample without any token: all valid, weight 0
                mask = (valid | ~present[:, None])[:, None, None, :]  # [B, 1, 1, N]
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )  # [B, H, M, Dh]
            weight = present.to(q.dtype)[:, None, None, None]  # [B, 1, 1, 1]
            total = total + y * weight
            count = count + weight
        y = total / count.clamp_min(1.0)  # [B, H, M, Dh]
        return self.proj(y.transpose(1, 2).reshape(B, M, D))  # [B, M, D]


class CrossBlock(nn.Module):
    """Pre-norm cross-attention block: x + attn(norm(x), norm(contexts)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, contexts: Sequence[tuple[Tensor, Tensor | None]]) -> Tensor:
        """``x`` [B, M, D]; ``contexts``: (tokens [B, N_g, D], valid [B, N_g] or None) each."""
        normed = [(self.norm_context(c), valid) for c, valid in contexts]
        x = x + self.attn(self.norm_q(x), normed)  # [B, M, D]
        return x + self.mlp(self.norm2(x))  # [B, M, D]


@dataclasses.dataclass
class Masks:
    """Input masks of one pretraining step (True = masked) and the mask embeddings put in."""

    volume: Tensor  # bool [B, Nv]
    signal: Tensor  # bool [B, C, P]
    volume_embedding: Tensor  # [Dv]
    signal_embedding: Tensor  # [Ds]


class FusionEncoder(nn.Module):
    """T1 patch tokens and fMRI (parcel, patch) tokens -> ``n_latents`` shared latents [B, L, dim].

    Args:
        volume_encoder: `VolumeEncoder` arguments (``size``, ``patch_size``, ...).
        signal_encoder: the `SignalEncoder` config (``size``, ``patch_size``, ...).
        dim: width of the shared tokens and latents.
        n_latents: learned latent (hub) tokens.
        heads: attention heads of the fusion blocks.
        fusion_depth: self-attention blocks over the latents after the cross-attention.
    """

    def __init__(
        self,
        volume_encoder: dict[str, Any] | None = None,
        signal_encoder: SignalEncoderConfig | dict | None = None,
        dim: int = 64,
        n_latents: int = 16,
        heads: int = 4,
        fusion_depth: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.volume = VolumeEncoder(**(volume_encoder or {}))
        self.signal = SignalEncoder.from_config(encoder_config(signal_encoder))
        self.dim = dim
        self.patch_size = self.signal.patch_size  # time patch (samples), for throughput counts
        self.volume_proj = nn.Linear(self.volume.dim, dim)
        self.signal_proj = nn.Linear(self.signal.dim, dim)
        self.modality = nn.Parameter(torch.zeros(2, dim))  # [T1, fMRI]
        self.latents = nn.Parameter(torch.zeros(n_latents, dim))
        self.cross = CrossBlock(dim, heads, mlp_ratio, dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(fusion_depth))
        self.norm = nn.LayerNorm(dim)
        for module in (self.volume_proj, self.signal_proj, self.cross, self.blocks, self.norm):
            module.apply(_init_weights)
        nn.init.normal_(self.modality, std=0.02)
        nn.init.normal_(self.latents, std=0.02)
        fan_in_init(self.signal.patch_embed.weight)
        fan_in_init(self.volume.patch_embed.weight)

    def tokens(
        self,
        batch: dict[str, Tensor],
        use: Use = "both",
        masks: Masks | None = None,
        keep: Tensor | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """The token sets the latents read, one per modality used (T1 first): each (tokens
        [B, N_g, dim], valid bool [B, N_g]); T1: N_g = patches, fMRI: N_g = C * P (padding parcels
        not valid).

        ``masks`` replace masked input patches by the mask embeddings (pretraining); ``keep``
        bool [B, 2] (T1, fMRI): False hides that modality of that sample (modality dropout).
        """
        if use not in USES:
            raise ValueError(f"use is one of {', '.join(USES)}, got {use!r}")
        sets: list[tuple[Tensor, Tensor]] = []
        if use in ("both", "t1"):
            vmask, vemb = (masks.volume, masks.volume_embedding) if masks is not None else (None, None)
            v = self.volume(batch, vmask, vemb).tokens  # [B, Nv, Dv]
            seen = torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)  # [B, Nv]
            sets.append(
                (self.volume_proj(v) + self.modality[0], seen if keep is None else seen & keep[:, :1])
            )
        if use in ("both", "fmri"):
            smask, semb = (masks.signal, masks.signal_embedding) if masks is not None else (None, None)
            s = self.signal(batch, smask, semb).tokens  # [B, C, P, Ds]
            B, C, P, Ds = s.shape
            tokens = self.signal_proj(s.reshape(B, C * P, Ds)) + self.modality[1]  # [B, C*P, dim]
            seen = batch["channel_mask"][:, :, None].expand(B, C, P).reshape(B, C * P)  # [B, C*P]
            sets.append((tokens, seen if keep is None else seen & keep[:, 1:]))
        return sets

    def forward(
        self,
        batch: dict[str, Tensor],
        use: Use = "both",
        masks: Masks | None = None,
        keep: Tensor | None = None,
    ) -> Tensor:
        """Latents [B, L, dim] (arguments as for ``tokens``)."""
        sets = self.tokens(batch, use, masks, keep)
        first = sets[0][0]  # [B, N_0, dim]
        x = self.latents.to(first.dtype).expand(first.shape[0], -1, -1)  # [B, L, dim]
        x = self.cross(x, sets)  # [B, L, dim]: each modality attended to on its own, averaged
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # [B, L, dim]


def fan_in_init(weight: Tensor) -> None:
    """Normal init at std ``1 / sqrt(fan_in)``, which keeps a unit-variance input at unit variance.

    For the patch embeddings: the encoders' ViT default (std 0.02) suits a fan-in of ~2500; for a
    4-sample fMRI patch it makes the content ~25 times smaller than the parcel and time encodings
    it is added to. On the synthetic data of ``tests/test_fusion.py`` a `RegressorModule` on such an
    encoder still predicted a constant after 30 epochs (the sine amplitude of one parcel, training
    r ~0); with this init of its patch embedding it reached r = 0.96 on held-out subjects.
    """
    fan_in = weight[0].numel()  # Linear [out, in]; Conv3d [out, in, p, p, p]
    nn.init.normal_(weight, std=fan_in**-0.5)


def batch_size(batch: dict[str, Any]) -> int:
    """Samples in a batch (from ``volume`` or ``signal``)."""
    return int((batch["volume"] if "volume" in batch else batch["signal"]).shape[0])


class FusionModule(pl.LightningModule):
    """The `FusionEncoder` (``encoder``), ``init_from``, AdamW and the train/eval loop.

    Subclasses implement ``compute_loss(batch) -> {"loss": ..., ...}``; ``log_parts`` names the
    extra scalar outputs logged next to ``<stage>/loss``.
    """

    monitor = "val/loss"
    monitor_mode = "min"
    job_type = "finetune"
    log_parts: tuple[str, ...] = ()

    def __init__(
        self,
        volume_encoder: dict[str, Any] | None,
        signal_encoder: SignalEncoderConfig | dict | None,
        dim: int,
        n_latents: int,
        heads: int,
        fusion_depth: int,
        optimizer: OptimizerConfig | dict | None,
        init_from: str | None,
    ) -> None:
        super().__init__()
        self.encoder = FusionEncoder(volume_encoder, signal_encoder, dim, n_latents, heads, fusion_depth)
        self.optimizer_config = optimizer_config(optimizer)
        self.normalization: dict[str, Any] | None = None
        self.flops_per_batch: int | None = None
        self.use: Use = "both"
        if init_from is not None:
            self.normalization = load_encoder_weights(self.encoder, init_from)

    def save_plain(self, args: dict[str, Any]) -> None:
        """Save the constructor's arguments as plain data (encoder and optimiser groups as dicts)."""
        plain = {k: v for k, v in args.items() if k not in ("self", "__class__", "kwargs")}
        plain["signal_encoder"] = dataclasses.asdict(encoder_config(plain.get("signal_encoder")))
        plain["volume_encoder"] = dict(plain.get("volume_encoder") or {})
        plain["optimizer"] = optimizer_config(plain.get("optimizer")).to_dict()
        self.save_hyperparameters(plain)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """The pooled latent [B, dim]: the mean of the latents."""
        return self.encoder(batch, self.use).mean(dim=1)

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        n = batch_size(batch)
        if n == 0:  # every window of the batch was left out: a zero loss keeps the step (and DDP)
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        self.flops_per_batch = self._training_flops(batch)
        outputs = self.compute_loss(batch)
        self.log("train/loss", outputs["loss"], prog_bar=True, batch_size=n)
        for part in self.log_parts:
            self.log(f"train/{part}", outputs[part], batch_size=n)
        return outputs["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        return self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        return self._evaluate(batch, batch_idx, "test")

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.compute_loss(batch)

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        """Template hook: accumulate epoch metrics from one evaluated batch."""

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> dict[str, Tensor] | None:
        n = batch_size(batch)
        if n == 0:
            return None
        outputs = self.evaluation_outputs(batch, batch_idx)
        self.log(f"{stage}/loss", outputs["loss"], prog_bar=stage == "val", batch_size=n, sync_dist=True)
        for part in self.log_parts:
            self.log(f"{stage}/{part}", outputs[part], batch_size=n, sync_dist=True)
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

    def _training_flops(self, batch: dict[str, Tensor]) -> int:
        """6 FLOPs per trainable parameter per input token (T1 patches + real fMRI tokens)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        tokens = 0
        if self.use in ("both", "t1"):
            tokens += batch_size(batch) * self.encoder.volume.n_patches(batch["volume"])
        if self.use in ("both", "fmri"):
            tokens += int(batch["channel_mask"].sum()) * (
                int(batch["signal"].shape[-1]) // self.encoder.patch_size
            )
        return 6 * trainable * tokens


class FusionPretrainModule(FusionModule):
    """Masked reconstruction of T1 patches and fMRI tokens from the shared latents (module docstring).

    Args:
        volume_encoder: `VolumeEncoder` arguments; default ``tiny``, 16³ patches.
        signal_encoder: the fMRI `SignalEncoder` config; default ``tiny``, 32-sample patches.
        dim, n_latents, heads, fusion_depth: the fusion (see `FusionEncoder`).
        decoder_depth: cross-attention blocks of the decoder (target queries over the latents).
        t1_mask_ratio: fraction of each volume's patches masked and reconstructed.
        fmri_mask_ratio: fraction of each window's real (parcel, patch) tokens masked.
        fmri_weight: weight of the fMRI loss in ``loss`` (the T1 loss has weight 1).
        optimizer: AdamW and schedule settings (`OptimizerConfig`).
        init_from: continue from the fusion encoder weights of a checkpoint.
        mask_seed: training masks depend only on (seed, step, rank), as in `PretrainModule`.
    """

    job_type = "pretrain"
    log_parts = ("loss_t1", "loss_fmri")

    def __init__(
        self,
        volume_encoder: dict[str, Any] | None = None,
        signal_encoder: SignalEncoderConfig | None = None,
        dim: int = 64,
        n_latents: int = 16,
        heads: int = 4,
        fusion_depth: int = 2,
        decoder_depth: int = 2,
        t1_mask_ratio: float = 0.5,
        fmri_mask_ratio: float = 0.5,
        fmri_weight: float = 1.0,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
        mask_seed: int = 0,
    ) -> None:
        for name, ratio in (("t1_mask_ratio", t1_mask_ratio), ("fmri_mask_ratio", fmri_mask_ratio)):
            if not 0.0 < ratio < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {ratio}")
        super().__init__(
            volume_encoder, signal_encoder, dim, n_latents, heads, fusion_depth, optimizer, init_from
        )
        self.save_plain(dict(locals()))
        self.t1_mask_ratio, self.fmri_mask_ratio = t1_mask_ratio, fmri_mask_ratio
        self.fmri_weight, self.mask_seed = fmri_weight, mask_seed
        volume, signal = self.encoder.volume, self.encoder.signal
        self.volume_mask_embedding = nn.Parameter(torch.randn(volume.dim) * 0.02)
        self.signal_mask_embedding = nn.Parameter(torch.randn(signal.dim) * 0.02)
        self.t1_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.fmri_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.fmri_query_proj = nn.Linear(signal.dim, dim)
        self.decoder = nn.ModuleList(CrossBlock(dim, heads) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim)
        self.t1_head = nn.Linear(dim, volume.in_channels * volume.patch_size**3)
        self.fmri_head = nn.Linear(dim, signal.patch_size)
        for module in (self.fmri_query_proj, self.decoder, self.decoder_norm, self.t1_head, self.fmri_head):
            module.apply(_init_weights)

    def compute_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Losses and, for inspection, ``t1_prediction``/``t1_target`` [B, Nv, p³] with ``t1_mask``
        [B, Nv] (the masked patches holding anatomy: what the loss counts) and ``t1_input_mask``
        (every masked patch), and ``fmri_prediction``/``fmri_target`` [B, C, P, S] with
        ``fmri_mask`` [B, C, P] (the masked real tokens)."""
        device = batch["volume"].device
        if generator is None and self.training:
            seed = (self.mask_seed * 1_000_003 + self.global_step) * 7919 + self.global_rank
            generator = torch.Generator(device=device).manual_seed(seed)
        volume, signal = self.encoder.volume, self.encoder.signal
        t1_target = volume.patchify(batch["volume"])  # [B, Nv, p³]
        channel_mask = batch["channel_mask"]  # [B, C]
        fmri_target = signal.patchify(torch.where(channel_mask[..., None], batch["signal"], 0.0).float())
        B, Nv, _ = t1_target.shape
        C, P = fmri_target.shape[1], fmri_target.shape[2]  # fmri_target [B, C, P, S]
        masks = Masks(
            volume=patch_mask(B, Nv, self.t1_mask_ratio, device, generator),
            signal=random_token_mask(channel_mask, P, self.fmri_mask_ratio, generator),
            volume_embedding=self.volume_mask_embedding,
            signal_embedding=self.signal_mask_embedding,
        )
        latents = self.encoder(batch, "both", masks)  # [B, L, dim]
        queries = torch.cat(
            [self._t1_queries(batch), self._fmri_queries(batch, P)], dim=1
        )  # [B, Nv+C*P, dim]
        for block in self.decoder:
            queries = block(queries, [(latents, None)])
        decoded = self.decoder_norm(queries)  # [B, Nv + C*P, dim]
        t1_prediction = self.t1_head(decoded[:, :Nv])  # [B, Nv, p³]
        fmri_prediction = self.fmri_head(decoded[:, Nv:]).reshape(B, C, P, -1)  # [B, C, P, S]

        anatomy = t1_target.std(dim=-1) > 1e-6  # [B, Nv] patches that are not constant background
        t1_mask = masks.volume & anatomy  # [B, Nv]
        loss_t1 = masked_mse(t1_prediction, t1_target, t1_mask)
        loss_fmri = masked_mse(fmri_prediction, fmri_target, masks.signal)
        return {
            "loss": loss_t1 + self.fmri_weight * loss_fmri,
            "loss_t1": loss_t1,
            "loss_fmri": loss_fmri,
            "t1_prediction": t1_prediction,
            "t1_target": t1_target,
            "t1_mask": t1_mask,
            "t1_input_mask": masks.volume,
            "fmri_prediction": fmri_prediction,
            "fmri_target": fmri_target,
            "fmri_mask": masks.signal,
        }

    def evaluation_outputs(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # The same masks for the same batch every epoch, so val/loss moves only with the model.
        generator = torch.Generator(device=batch["volume"].device).manual_seed(batch_idx)
        return self.compute_loss(batch, generator)

    def _t1_queries(self, batch: dict[str, Tensor]) -> Tensor:
        """Decoder queries of the T1 patches: their 3-D sincos position + a learned token. [B, Nv, dim]"""
        volume = self.encoder.volume
        p = volume.patch_size
        grid = tuple(side // p for side in batch["volume"].shape[-3:])
        position = sincos_3d(grid, self.encoder.dim, batch["volume"].device)  # [Nv, dim]
        return (position + self.t1_query).expand(batch["volume"].shape[0], -1, -1)

    def _fmri_queries(self, batch: dict[str, Tensor], n_patches: int) -> Tensor:
        """Decoder queries of the fMRI tokens: the encoder's parcel (position, type) and time
        encodings, projected, + a learned token. [B, C*P, dim]"""
        signal = self.encoder.signal
        sensor = signal.sensor_encoding(batch)  # [B, C, Ds]
        time = signal.time_encoding(batch["sfreq"], n_patches)  # [B, P, Ds]
        where = sensor[:, :, None, :] + time[:, None, :, :]  # [B, C, P, Ds]
        B, C, P, Ds = where.shape
        return self.fmri_query_proj(where.reshape(B, C * P, Ds)) + self.fmri_query  # [B, C*P, dim]


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MSE over the tokens where ``mask`` (bool, the token dims of ``prediction``/``target``) is True."""
    squared = (prediction - target).pow(2).mean(dim=-1)  # token dims
    weight = mask.to(squared.dtype)
    return (squared * weight).sum() / weight.sum().clamp_min(1.0)


class PooledBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` without affine parameters over [B, D]; a training batch of one sample (no
    spread to standardise by) is normalised with the running statistics instead of failing."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)


class FusionSupervisedModule(FusionModule):
    """A head on the mean of the latents; ``use`` drops a modality, ``linear_probe`` freezes the encoder.

    Args:
        volume_encoder, signal_encoder, dim, n_latents, heads, fusion_depth: the `FusionEncoder`
            (must match ``init_from``'s).
        use: ``"both"``, or ``"t1"`` / ``"fmri"``: the latents read that modality's tokens only
            (the other encoder is frozen and never run; its batch keys are not needed).
        modality_dropout: ``use="both"`` training: the share of samples whose T1 or fMRI tokens
            (one of the two, at random) the latents do not see (`modality_keep`).
        linear_probe: train only the head (the encoder frozen, in eval mode).
        head_dropout: dropout before the head's linear layer.
        optimizer: AdamW and schedule settings (`OptimizerConfig`).
        init_from: the pretrained fusion encoder (a `FusionPretrainModule` checkpoint).
    """

    head: nn.Module

    def __init__(
        self,
        volume_encoder: dict[str, Any] | None = None,
        signal_encoder: SignalEncoderConfig | None = None,
        dim: int = 64,
        n_latents: int = 16,
        heads: int = 4,
        fusion_depth: int = 2,
        use: Use = "both",
        modality_dropout: float = 0.0,
        linear_probe: bool = False,
        head_dropout: float = 0.0,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
    ) -> None:
        if use not in USES:
            raise ValueError(f"use is one of {', '.join(USES)}, got {use!r}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must lie in [0, 1), got {modality_dropout}")
        super().__init__(
            volume_encoder, signal_encoder, dim, n_latents, heads, fusion_depth, optimizer, init_from
        )
        self.init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.use = use
        self.modality_dropout = modality_dropout
        self.linear_probe = linear_probe
        self.head_dropout = head_dropout
        if use == "t1":
            self.encoder.signal.requires_grad_(False)
        elif use == "fmri":
            self.encoder.volume.requires_grad_(False)
        if linear_probe:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def batch_norm(self) -> nn.Module:
        """A BatchNorm without affine parameters on the pooled latents, before the head (as MAE's
        linear probe): pretrained latents are a large common vector plus small sample-specific
        parts (std ~1e-3 of their norm after `FusionPretrainModule`), which a LayerNorm keeps small;
        standardised across samples they reach the head at unit scale."""
        return PooledBatchNorm(self.encoder.dim)

    def train(self, mode: bool = True) -> FusionSupervisedModule:
        super().train(mode)
        if self.linear_probe:
            self.encoder.eval()
        return self

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        keep = self.modality_keep(batch) if self.training else None
        return self.head(self.encoder(batch, self.use, keep=keep).mean(dim=1))  # [B, K]

    def modality_keep(self, batch: dict[str, Tensor]) -> Tensor | None:
        """Modality dropout (``use="both"`` only): bool [B, 2] (T1, fMRI), each sample losing one
        modality, either with equal odds, with probability ``modality_dropout``; None when off.

        A fused model otherwise learns the label from whichever modality fits it first: on few
        subjects the T1 alone identifies each training subject, and the fMRI evidence goes unused.
        """
        if self.use != "both" or self.modality_dropout <= 0:
            return None
        n, device = batch_size(batch), batch["volume"].device
        dropped = torch.rand(n, device=device) < self.modality_dropout  # [B]
        which = torch.rand(n, device=device) < 0.5  # [B] True: drop the T1, else the fMRI
        keep = torch.ones(n, 2, dtype=torch.bool, device=device)
        keep[:, 0] = ~(dropped & which)
        keep[:, 1] = ~(dropped & ~which)
        return keep

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        self.update_metrics(metrics, outputs["output"].detach(), batch["labels"])

    def update_metrics(self, metrics: Any, output: Tensor, labels: Tensor) -> None:
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        log_metrics(self, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        log_metrics(self, self.test_metrics)


class FusionRegressorModule(FusionSupervisedModule):
    """Subject-level values from T1 + fMRI (MSE; Pearson r and R²), e.g. a cognitive score.

    The head predicts in standard units: ``prediction = target_mean + target_std * head(x)``, the
    loss is the MSE of ``(prediction - target) / target_std`` (as `VolumeRegressorModule`).

    Args:
        num_outputs: values per sample (``labels`` [B] or [B, K]; NaN = missing).
        target_mean, target_std: the targets' centre and spread (e.g. of the training subjects).
        **kwargs: the `FusionSupervisedModule` arguments.
    """

    def __init__(
        self, num_outputs: int = 1, target_mean: float = 0.0, target_std: float = 1.0, **kwargs: Any
    ) -> None:
        if not target_std > 0:
            raise ValueError(f"target_std must be > 0, got {target_std}")
        super().__init__(**kwargs)
        extra = {"num_outputs": num_outputs, "target_mean": target_mean, "target_std": target_std}
        self.save_plain({**self.init_args, **extra})
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.head = nn.Sequential(
            self.batch_norm(), RegressionHead(self.encoder.dim, num_outputs, self.head_dropout)
        )
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


class FusionClassifierModule(FusionSupervisedModule):
    """Subject-level classes from T1 + fMRI (cross-entropy; balanced accuracy, kappa, F1, AUROC).

    Args:
        num_classes: classes of the labels (``0..num_classes-1``, -1 = none).
        **kwargs: the `FusionSupervisedModule` arguments.
    """

    monitor = "val/balanced_accuracy"
    monitor_mode = "max"

    def __init__(self, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_plain({**self.init_args, "num_classes": num_classes})
        self.head = nn.Sequential(
            self.batch_norm(), ClassificationHead(self.encoder.dim, num_classes, self.head_dropout)
        )
        self.val_metrics = classification_metrics(num_classes, prefix="val/")
        self.test_metrics = classification_metrics(num_classes, prefix="test/")

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self(batch)  # [B, K]
        return {"loss": classification_loss(logits, batch["labels"]), "output": logits}

    def update_metrics(self, metrics: Any, logits: Tensor, labels: Tensor) -> None:
        update_classification(metrics, logits, labels)
