"""Pooling the encoder's tokens into one vector per sample for a supervised head.

``mean`` is the encoder's own ``pooled`` output: the average over real channels and patches.
It discards *where* and *when* a feature occurred, which is most of the signal in event-related
decoding (an N170 over occipito-temporal sensors ~170 ms after a face). ``attention`` lets a few
learned queries attend over all real tokens (padding channels masked) and concatenates their
outputs, so the head can weight sensors and latencies; it adds ``queries × dim`` parameters plus
one attention layer, and is trained from scratch in a fine-tune (the encoder may be pretrained).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pooling = Literal["mean", "attention"]


class AttentionPool(nn.Module):
    """Learned-query attention over tokens ``[B, C, P, D]`` with ``channel_mask [B, C]`` -> ``[B, D]``.

    ``queries`` queries (each ``heads``-headed) read the tokens; their outputs are concatenated
    and projected back to ``D``, so the head after it is unchanged.
    """

    def __init__(self, dim: int, heads: int = 4, queries: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(queries, dim) * dim**-0.5)  # [Q, D]
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(queries * dim, dim)

    def forward(self, tokens: Tensor, channel_mask: Tensor) -> Tensor:
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


def make_pool(kind: Pooling, dim: int, heads: int) -> AttentionPool | None:
    """``None`` for mean pooling (use the encoder's ``pooled``), else the attention pool."""
    if kind == "mean":
        return None
    if kind == "attention":
        return AttentionPool(dim, heads)
    raise ValueError(f"pooling must be 'mean' or 'attention', got {kind!r}")
