"""Encoder tokens kept per window, so a linear probe encodes each window once, not once per epoch.

A frozen encoder in eval mode maps a window to the same tokens every time, and a window is named
by its ``sample_id`` (recording, segment, onset sample and event), so a probe that trains its
head for 40 epochs needs the encoder's forward pass only in the first. On the example EEG
this turns a 40-epoch probe from ~7 minutes into well under one on 2 CPU cores
(``benchmarks/RESULTS.md``).

The cache is bounded (``max_bytes``): once full it stops adding and the remaining windows are
encoded every time, so memory never grows past the bound. A window is served from the cache only
when its stored tokens have the batch's channel and patch counts, otherwise it is encoded again.
Tokens are stored on the CPU, as float32, so a cached batch is bit-identical to an encoded one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class TokenCache:
    """``tokens(sample_ids, shape, device, encode)``: ``[B, C, P, D]``, from the cache when all are in it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.store: dict[str, Tensor] = {}
        self.hits = 0
        self.misses = 0

    def tokens(
        self,
        sample_ids: Sequence[str],
        shape: tuple[int, int],
        device: torch.device,
        encode: Callable[[], Tensor],
    ) -> Tensor:
        """The batch's tokens: cached when every window is cached with ``shape`` (C, P), else ``encode()``.

        ``encode`` runs the frozen encoder on the batch and returns ``[B, C, P, D]``; its result is
        stored per window while the bound allows.
        """
        cached = [self.store.get(i) for i in sample_ids]
        if cached and all(t is not None and tuple(t.shape[:2]) == shape for t in cached):
            self.hits += len(cached)
            return torch.stack(cached).to(device)  # [B, C, P, D]
        tokens = encode()  # [B, C, P, D]
        self.misses += len(sample_ids)
        per_window = tokens[0].numel() * tokens.element_size() if len(tokens) else 0
        if self.bytes + per_window > self.max_bytes:
            return tokens  # full: no copy to the host for nothing
        for sample_id, window in zip(sample_ids, tokens.detach().cpu(), strict=True):
            if sample_id in self.store or self.bytes + per_window > self.max_bytes:
                continue
            self.store[sample_id] = window.clone()  # [C, P, D], not a view keeping the batch alive
            self.bytes += per_window
        return tokens
