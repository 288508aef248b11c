"""Training objectives, kept apart from the encoders so one encoder serves every objective.

- `MaskedReconstruction`: pretraining. A ratio of the *real* tokens is masked; their patch content
  is replaced by a learned mask embedding before the transformer (SimMIM/BEiT style), and a light
  decoder predicts the masked patches' samples. Loss = MSE over masked real tokens only.
  Why a mask token rather than MAE's visible-only encoder: batches carry a different number of
  real channels per sample, so dropping tokens would make ragged sequences that need gathering
  and re-padding; with a mask token every tensor keeps its [B, C, P] shape and the one key padding
  mask handles both padding and masking. The price is encoder compute on masked tokens.
- `ClassificationHead` / `RegressionHead`: supervised heads on the pooled embedding.
- `ContrastiveAlignment`: symmetric InfoNCE between two views with a learnable temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurotrain.models.signal_encoder import Block, SignalEncoder


@dataclass
class ReconstructionOutput:
    """Everything a pretraining step and its plots need."""

    loss: Tensor  # [] MSE over masked real tokens
    prediction: Tensor  # [B, C, P, S] predicted samples of every patch
    target: Tensor  # [B, C, P, S] the true patches
    token_mask: Tensor  # [B, C, P] True = masked (never on padding channels)
    per_channel_error: Tensor  # [B, C] MSE over each channel's masked patches; 0 where none

    @property
    def reconstruction(self) -> Tensor:
        """Signal with masked patches replaced by their prediction, [B, C, P * S], for plotting."""
        mixed = torch.where(self.token_mask[..., None], self.prediction, self.target)  # [B, C, P, S]
        return mixed.flatten(2)


class MaskedReconstruction(nn.Module):
    """Masked patch reconstruction; the encoder is passed to ``forward``, not owned.

    Not owning the encoder keeps a module's state dict free of duplicate ``encoder.*`` keys and
    lets the same objective wrap any encoder with ``dim``/``heads``/``patch_size``.
    ``decoder_depth`` transformer blocks (0 = a linear head only) map encoder tokens to
    ``patch_size`` samples; they stay small because the representation, not the decoder, is what
    pretraining is for.
    """

    def __init__(
        self, dim: int, heads: int, patch_size: int, mask_ratio: float = 0.5, decoder_depth: int = 1
    ) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.mask_embedding = nn.Parameter(torch.randn(dim) * 0.02)
        self.decoder = nn.ModuleList(Block(dim, heads) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_size)

    def forward(
        self, encoder: SignalEncoder, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> ReconstructionOutput:
        channel_mask = batch["channel_mask"]  # [B, C]
        target = encoder.patchify(torch.where(channel_mask[..., None], batch["signal"], 0.0).float())
        B, C, P, S = target.shape  # target [B, C, P, S]
        token_mask = random_token_mask(channel_mask, P, self.mask_ratio, generator)  # [B, C, P]
        tokens = encoder(batch, token_mask, self.mask_embedding).tokens  # [B, C, P, D]

        x = tokens.reshape(B, C * P, tokens.shape[-1])  # [B, N, D]
        attn_mask = channel_mask[:, :, None].expand(B, C, P).reshape(B, 1, 1, C * P)  # [B, 1, 1, N]
        for block in self.decoder:
            x = block(x, attn_mask)
        prediction = self.head(self.decoder_norm(x)).reshape(B, C, P, S)  # [B, C, P, S]

        squared = (prediction - target).pow(2).mean(dim=-1)  # [B, C, P]
        weight = token_mask.to(squared.dtype)  # [B, C, P]
        loss = (squared * weight).sum() / weight.sum().clamp_min(1.0)
        per_channel = (squared * weight).sum(-1) / weight.sum(-1).clamp_min(1.0)  # [B, C]
        return ReconstructionOutput(loss, prediction, target, token_mask, per_channel.detach())


def random_token_mask(
    channel_mask: Tensor, n_patches: int, ratio: float, generator: torch.Generator | None = None
) -> Tensor:
    """Mask ``round(ratio * n_real)`` random real tokens per sample; padding is never masked.

    At least one real token is masked and at least one stays visible (when a sample has two or
    more). Returns bool [B, C, P], True = masked.
    """
    B, C = channel_mask.shape
    real = channel_mask[:, :, None].expand(B, C, n_patches).reshape(B, C * n_patches)  # [B, N]
    noise = torch.rand(real.shape, generator=generator, device=channel_mask.device)  # [B, N]
    # Padding sorts last, so the lowest-ranked tokens of a sample are always real ones.
    noise = noise.masked_fill(~real, 2.0)
    rank = noise.argsort(dim=1).argsort(dim=1)  # [B, N] rank of each token's noise
    n_real = real.sum(dim=1)  # [B]
    n_masked = (n_real.float() * ratio).round().long().clamp(min=1)  # [B]
    n_masked = torch.minimum(n_masked, (n_real - 1).clamp(min=1))
    return (rank < n_masked[:, None]).reshape(B, C, n_patches)


class ClassificationHead(nn.Module):
    """LayerNorm + linear on the pooled embedding: [B, D] -> logits [B, num_classes].

    ``norm=False`` leaves the LayerNorm out (an identity in its place), for pooled vectors whose
    entries are not alike: the flattened virtual-channel grid holds empty patch slots, and a
    per-feature gain on each of its thousands of entries only adds noise to a small fine-tune.
    """

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0, norm: bool = True) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim) if norm else nn.Identity(), nn.Dropout(dropout), nn.Linear(dim, num_classes)
        )

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)


class RegressionHead(ClassificationHead):
    """LayerNorm + linear on the pooled embedding: [B, D] -> [B, num_outputs]."""

    def __init__(self, dim: int, num_outputs: int = 1, dropout: float = 0.0, norm: bool = True) -> None:
        super().__init__(dim, num_outputs, dropout, norm)


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over labelled samples; label -1 means "no label" and is skipped."""
    if not (labels >= 0).any():
        return logits.sum() * 0.0  # keeps the graph (and DDP) intact on an unlabelled batch
    return F.cross_entropy(logits, labels, ignore_index=-1)


def regression_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """MSE over finite targets; NaN marks a missing value. prediction/target [B, K]."""
    finite = torch.isfinite(target)
    if not finite.any():
        return prediction.sum() * 0.0
    return F.mse_loss(prediction[finite], target[finite])


class ContrastiveAlignment(nn.Module):
    """Projects two views' pooled embeddings to a shared space; symmetric InfoNCE between them.

    The temperature is learned as a log logit scale (CLIP), initialised to 1 / ``temperature``
    and clamped at 100 so the logits cannot blow up.
    """

    def __init__(self, dim_a: int, dim_b: int, embed_dim: int = 128, temperature: float = 0.07) -> None:
        super().__init__()
        self.proj_a = nn.Linear(dim_a, embed_dim)
        self.proj_b = nn.Linear(dim_b, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def embed(self, pooled_a: Tensor, pooled_b: Tensor) -> tuple[Tensor, Tensor]:
        """Unit-norm embeddings of both views, each [B, E]."""
        return F.normalize(self.proj_a(pooled_a), dim=-1), F.normalize(self.proj_b(pooled_b), dim=-1)

    def forward(self, pooled_a: Tensor, pooled_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (loss, z_a [B, E], z_b [B, E])."""
        z_a, z_b = self.embed(pooled_a, pooled_b)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return info_nce(z_a, z_b, scale), z_a, z_b


def info_nce(z_a: Tensor, z_b: Tensor, logit_scale: Tensor | float = 1.0) -> Tensor:
    """Symmetric InfoNCE: row i of ``z_a`` should match row i of ``z_b`` among all rows.

    z_a, z_b: [B, E] (normalised for cosine similarity). Mean of the a->b and b->a cross-entropies.
    """
    logits = logit_scale * z_a @ z_b.T  # [B, B]
    target = torch.arange(z_a.shape[0], device=z_a.device)  # [B]
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def topk_retrieval_accuracy(z_a: Tensor, z_b: Tensor, k: int = 1) -> Tensor:
    """Fraction of rows of ``z_a`` whose partner row of ``z_b`` is among its k most similar. []

    z_a, z_b: [N, E]; the similarity is the dot product (cosine when both are normalised).
    """
    similarity = z_a @ z_b.T  # [N, N]
    k = min(k, similarity.shape[1])
    topk = similarity.topk(k, dim=1).indices  # [N, k]
    partner = torch.arange(z_a.shape[0], device=z_a.device)[:, None]  # [N, 1]
    return (topk == partner).any(dim=1).float().mean()
