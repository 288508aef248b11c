"""Pooling the encoder's tokens into one vector per sample for a supervised head.

``mean`` is the encoder's own ``pooled`` output: the average over real channels and patches.
It discards *where* and *when* a feature occurred, which is most of the signal in event-related
decoding (an N170 over occipito-temporal sensors ~170 ms after a face). ``attention`` lets a few
learned queries attend over all real tokens (padding channels masked) and concatenates their
outputs, so the head can weight sensors and latencies; it adds ``queries × dim`` parameters plus
one attention layer, and is trained from scratch in a fine-tune (the encoder may be pretrained).
``virtual`` keeps the layout instead of averaging it away: learned anchor points on the head
become virtual channels (each a Gaussian-weighted average of the real channels near it), every
patch keeps its own slot, and the head reads the flattened virtual channel × patch grid. It is
the montage-agnostic counterpart of a linear classifier on the channel × time samples, the
reference ERP decoder: on the example face/house data a frozen encoder read through it scores
about 0.90 balanced accuracy within-subject, where its mean-pooled tokens reach 0.75
(benchmarks/RESULTS.md).

Every pool maps ``(tokens [B, C, P, D], batch)`` to ``[B, out_dim]`` and says, by ``head_norm``,
whether the head should LayerNorm what it reads.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pooling = Literal["mean", "attention", "virtual"]


class AttentionPool(nn.Module):
    """Learned-query attention over tokens ``[B, C, P, D]`` with ``channel_mask [B, C]`` -> ``[B, D]``.

    ``queries`` queries (each ``heads``-headed) read the tokens; their outputs are concatenated
    and projected back to ``D``, so the head after it is unchanged.
    """

    head_norm = True  # a mixture of token features, alike in scale

    def __init__(self, dim: int, heads: int = 4, queries: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(queries, dim) * dim**-0.5)  # [Q, D]
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(queries * dim, dim)
        self.out_dim = dim

    def forward(self, tokens: Tensor, batch: dict[str, Tensor]) -> Tensor:
        channel_mask = batch["channel_mask"]  # [B, C]
        B, C, P, D = tokens.shape
        Q, H = self.query.shape[0], self.heads
        x = self.norm(tokens.reshape(B, C * P, D))  # [B, N, D]
        k, v = self.kv(x).chunk(2, dim=-1)  # [B, N, D] each
        k = k.reshape(B, C * P, H, D // H).transpose(1, 2)  # [B, H, N, D/H]
        v = v.reshape(B, C * P, H, D // H).transpose(1, 2)  # [B, H, N, D/H]
        q = self.query.reshape(1, Q, H, D // H).transpose(1, 2).expand(B, H, Q, D // H)  # [B, H, Q, D/H]
        valid = channel_mask[:, :, None].expand(B, C, P).reshape(B, 1, 1, C * P)  # [B, 1, 1, N]
        pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=valid)  # [B, H, Q, D/H]
        return self.out(pooled.transpose(1, 2).reshape(B, Q * D))  # [B, D]


class VirtualChannelPool(nn.Module):
    """Tokens ``[B, C, P, D]`` -> virtual channels ``[B, K, P_max, d]``, flattened to ``[B, K * P_max * d]``.

    Virtual channel ``k`` sits at a learned point ``a_k`` (metres, head frame); its token in patch
    ``p`` is the average of the real channels' tokens weighted by ``softmax_c(-|x_c - a_k|² / 2σ²)``,
    so it follows whichever sensors lie near it in any montage. Padding channels and channels with
    no known position get no weight (a sample with no known position at all falls back to a
    plain average over its real channels). Each token is first projected to ``features`` (d)
    dimensions; patch ``p`` fills slot ``p`` of ``max_patches`` (later slots stay 0), so the head
    weighs each latency on its own and windows up to ``max_patches`` patches long fit one head.

    The anchors start on a Fibonacci lattice over the upper hemisphere of radius ``radius`` (an
    adult scalp, ~0.1 m) and learn as an offset from there, so weight decay pulls them back to
    the lattice rather than to the head centre.
    """

    head_norm = False  # the grid holds empty patch slots; see ClassificationHead

    def __init__(
        self,
        dim: int,
        channels: int = 32,
        features: int = 16,
        max_patches: int = 16,
        sigma: float = 0.03,
        radius: float = 0.1,
    ) -> None:
        super().__init__()
        self.sigma = sigma
        self.max_patches = max_patches
        self.register_buffer("anchors_init", hemisphere(channels, radius))  # [K, 3]
        self.anchor_offset = nn.Parameter(torch.zeros(channels, 3))  # [K, 3]
        self.proj = nn.Linear(dim, features)
        self.out_dim = channels * max_patches * features

    def weights(self, batch: dict[str, Tensor]) -> Tensor:
        """Each virtual channel's weights over the real channels: ``[B, C, K]``, summing to 1 over C."""
        anchors = self.anchors_init + self.anchor_offset  # [K, 3]
        xyz = batch["positions"].float()  # [B, C, 3]
        d2 = ((xyz[:, :, None, :] - anchors[None, None]) ** 2).sum(-1)  # [B, C, K]
        real = batch["channel_mask"]  # [B, C]
        located = real & batch["position_mask"]  # [B, C]
        # A sample with no located channel averages its real channels instead.
        any_located = located.any(dim=1, keepdim=True)  # [B, 1]
        score = torch.where(any_located[..., None], -d2 / (2 * self.sigma**2), 0.0)  # [B, C, K]
        usable = torch.where(any_located, located, real)  # [B, C]
        logits = score.masked_fill(~usable[..., None], -math.inf)  # [B, C, K]
        return torch.softmax(logits, dim=1).nan_to_num(0.0)  # an all-padding sample: 0 everywhere

    def forward(self, tokens: Tensor, batch: dict[str, Tensor]) -> Tensor:
        n, _, patches, _ = tokens.shape
        if patches > self.max_patches:
            raise ValueError(
                f"windows of {patches} patches do not fit the virtual-channel head's {self.max_patches} "
                "patch slots; raise pooling_options.max_patches or shorten the window"
            )
        virtual = torch.einsum("bck,bcpf->bkpf", self.weights(batch), self.proj(tokens))  # [B, K, P, d]
        virtual = F.pad(virtual, (0, 0, 0, self.max_patches - patches))  # [B, K, P_max, d]
        return virtual.reshape(n, self.out_dim)


def hemisphere(n: int, radius: float) -> Tensor:
    """``n`` near-uniform points on the upper half (z > 0) of a sphere (Fibonacci lattice): ``[n, 3]``."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    rho = (1.0 - z**2).sqrt()
    return (torch.stack([rho * phi.cos(), rho * phi.sin(), z], dim=-1) * radius).float()


def make_pool(
    kind: Pooling, dim: int, heads: int, options: dict | None = None
) -> AttentionPool | VirtualChannelPool | None:
    """``None`` for mean pooling (use the encoder's ``pooled``), else the pool; ``options`` go to its constructor."""
    options = options or {}
    if kind == "mean":
        if options:
            raise ValueError(f"mean pooling takes no pooling_options, got {sorted(options)}")
        return None
    if kind == "attention":
        return AttentionPool(dim, **{"heads": heads, **options})
    if kind == "virtual":
        return VirtualChannelPool(dim, **options)
    raise ValueError(f"pooling must be 'mean', 'attention' or 'virtual', got {kind!r}")
