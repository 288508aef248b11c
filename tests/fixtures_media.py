"""A synthetic masked reconstruction for the validation-media tests and benchmarks/media_render.py."""

from __future__ import annotations

import numpy as np
import torch

from neurotrain.datamodules.format.channel_types import TYPE_INDEX


def fake_reconstruction(n: int = 4, c: int = 32, p: int = 8, s: int = 64, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # a 10-20-like ring of EEG positions on a 9 cm sphere, metres, head frame
    theta = np.linspace(0, 2 * np.pi, c, endpoint=False)
    elev = np.where(np.arange(c) % 2, 0.4, 1.0)
    pos = 0.09 * np.stack([np.cos(theta) * np.cos(elev), np.sin(theta) * np.cos(elev), np.sin(elev)], -1)
    batch = {
        "channel_mask": torch.ones(n, c, dtype=torch.bool),
        "position_mask": torch.ones(n, c, dtype=torch.bool),
        "channel_types": torch.full((n, c), TYPE_INDEX["eeg"]),
        "positions": torch.tensor(pos, dtype=torch.float32).expand(n, c, 3).clone(),
    }
    masked = rng.random((n, c, p)) < 0.5
    target = rng.standard_normal((n, c, p * s)).astype(np.float32)
    recon = np.where(np.repeat(masked, s, -1), target + 0.3 * rng.standard_normal(target.shape), target)
    error = rng.random((n, c)).astype(np.float32) * masked.any(-1)
    return {"batch": batch, "masked": masked, "target": target, "recon": recon, "error": error, "patch": s}
