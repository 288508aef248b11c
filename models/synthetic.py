"""A synthetic batch in the data contract, to try a model (tests, benchmarks, notebooks) without data.

The keys and shapes are those ``ShardDataModule`` delivers (see ``datamodules/loading/datamodule.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from neurotrain.datamodules.format.channel_types import TYPE_INDEX


def synthetic_signal_batch(
    batch_size: int = 2,
    channels: int = 6,
    samples: int = 128,
    sfreq: float = 128.0,
    labels: str | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """A batch in the data contract: the last sample has two padding channels and one channel
    without a position. ``labels``: None, ``"class"`` (int64 [B], 2 classes) or ``"value"`` (float [B]).
    """
    g = torch.Generator().manual_seed(seed)
    channel_mask = torch.ones(batch_size, channels, dtype=torch.bool)  # [B, C]
    channel_mask[-1, -2:] = False
    position_mask = channel_mask.clone()
    position_mask[-1, 0] = False
    positions = torch.randn(batch_size, channels, 3, generator=g) * 0.08 * position_mask[..., None]
    batch = {
        "signal": torch.randn(batch_size, channels, samples, generator=g) * channel_mask[..., None],
        "channel_mask": channel_mask,
        "positions": positions,
        "position_mask": position_mask,
        "channel_types": torch.where(channel_mask, TYPE_INDEX["eeg"], 0),
        "sfreq": torch.full((batch_size,), sfreq),
    }
    if labels == "class":
        batch["labels"] = torch.arange(batch_size) % 2
    elif labels == "value":
        batch["labels"] = torch.randn(batch_size, generator=g)
    return batch
