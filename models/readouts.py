"""Learned encoding readouts: an image model's feature map -> each channel's response over time.

Two readouts of the brain-encoding literature, both on the output of one layer of an image
network, read as ``features`` [B, K, P] (K feature channels at P positions: a CNN map
[B, K, h, w] flattened, or ViT tokens [B, P, K] transposed), predicting ``[B, C, bins]`` (C
recording channels or parcels, each the mean of ``bins`` equal spans of its epoch, `bin_time`):

- `FactorisedReadout` ("where" × "what", Klindt et al., "Neural system identification for large
  populations separating what and where", NeurIPS 2017): each channel has one spatial mask over
  the positions, and each (channel, time bin) one weight vector over the feature channels:
  ``y[b, c, t] = sum_k w[c, t, k] * sum_p m[c, p] * F[b, k, p] + bias[c, t]``. Masks start as
  mean pooling (``1 / P``) and an L1 penalty (``mask_l1``, `penalty`) makes them sparse: a
  receptive field. Parameters ``C * (P + bins * K)``, against ``C * bins * K * P`` for a full
  linear map.
- `AttentionReadout` (the cross-attention readout of transformer brain encoders, e.g. Adeli et al.,
  "Predicting brain activity using Transformers", 2023): the positions become tokens (a linear
  projection of the K features to ``dim``, a learned position embedding, LayerNorm); each channel
  has a learned query that attends over them (multi-head attention: where it reads, per image),
  and each (channel, time bin) a weight vector over the attended ``dim`` values.

Both keep "where" per channel and "what" per channel and time bin, so a channel's early and late
responses read the same place with different features.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

READOUTS = ("factorised", "attention")


def bin_edges(n_times: int, bins: int) -> np.ndarray:
    """Sample edges [bins + 1] of ``bins`` equal spans of ``n_times`` samples (rounded)."""
    if not 1 <= bins <= n_times:
        raise ValueError(f"time bins must lie in 1..{n_times} (the epoch's samples), got {bins}")
    return np.linspace(0, n_times, bins + 1).round().astype(int)


def bin_time(signal: Tensor, bins: int) -> Tensor:
    """[..., T] -> [..., bins]: the mean of each of ``bins`` equal spans (`bin_edges`)."""
    edges = bin_edges(signal.shape[-1], bins)
    return torch.stack([signal[..., a:b].mean(-1) for a, b in zip(edges[:-1], edges[1:], strict=True)], -1)


def as_positions(output: Tensor) -> Tensor:
    """One layer's output as ``[B, K, P]``: CNN maps [B, K, h, w] flattened, tokens [B, P, K]
    transposed, pooled vectors [B, K] as one position."""
    if output.ndim == 4:
        return output.flatten(2)
    if output.ndim == 3:
        return output.transpose(1, 2)
    if output.ndim == 2:
        return output[:, :, None]
    raise ValueError(f"a layer output must be [B, K], [B, P, K] or [B, K, h, w], got {tuple(output.shape)}")


class FactorisedReadout(nn.Module):
    """Spatial mask per channel × feature weights per (channel, time bin); see the module doc."""

    def __init__(self, channels: int, bins: int, features: int, positions: int, mask_l1: float = 0.0):
        super().__init__()
        self.mask = nn.Parameter(torch.full((channels, positions), 1.0 / positions))  # [C, P]
        self.weight = nn.Parameter(torch.randn(channels, bins, features) / math.sqrt(features))  # [C, t, K]
        self.bias = nn.Parameter(torch.zeros(channels, bins))
        self.mask_l1 = float(mask_l1)

    def forward(self, features: Tensor) -> Tensor:
        """features [B, K, P] -> responses [B, C, bins]."""
        pooled = torch.einsum("bkp,cp->bck", features, self.mask)  # each channel's place
        return torch.einsum("bck,ctk->bct", pooled, self.weight) + self.bias

    def penalty(self) -> Tensor:
        """``mask_l1`` × the mean over channels of the mask's L1 norm (1.0 at the start)."""
        return self.mask_l1 * self.mask.abs().sum(1).mean()


class AttentionReadout(nn.Module):
    """A learned query per channel attending over the positions; see the module doc."""

    def __init__(
        self, channels: int, bins: int, features: int, positions: int, dim: int = 64, heads: int = 4
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} must be a multiple of its {heads} heads")
        self.proj = nn.Linear(features, dim)
        self.position = nn.Parameter(torch.randn(positions, dim) * 0.02)  # [P, dim]
        self.norm = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(channels, dim) / math.sqrt(dim))  # [C, dim]
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.weight = nn.Parameter(torch.randn(channels, bins, dim) / math.sqrt(dim))  # [C, t, dim]
        self.bias = nn.Parameter(torch.zeros(channels, bins))

    def forward(self, features: Tensor) -> Tensor:
        """features [B, K, P] -> responses [B, C, bins]."""
        return self.attend(features)[0]

    def attend(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(responses [B, C, bins], attention weights [B, C, P] averaged over heads)."""
        tokens = self.norm(self.proj(features.transpose(1, 2)) + self.position)  # [B, P, dim]
        queries = self.queries.expand(features.shape[0], -1, -1)  # [B, C, dim]
        values, weights = self.attention(queries, tokens, tokens, need_weights=True)  # [B, C, dim]
        return torch.einsum("bcd,ctd->bct", values, self.weight) + self.bias, weights

    def penalty(self) -> Tensor:
        return self.bias.new_zeros(())


def build_readout(
    kind: str,
    channels: int,
    bins: int,
    features: int,
    positions: int,
    *,
    mask_l1: float = 0.0,
    dim: int = 64,
    heads: int = 4,
) -> FactorisedReadout | AttentionReadout:
    """A readout by name (``READOUTS``) for ``features`` [B, K, P] -> [B, channels, bins]."""
    if kind == "factorised":
        return FactorisedReadout(channels, bins, features, positions, mask_l1)
    if kind == "attention":
        return AttentionReadout(channels, bins, features, positions, dim, heads)
    raise ValueError(f"readout must be one of {READOUTS}, got {kind!r}")
