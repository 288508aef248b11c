"""Loading encoder weights from a file safely: nothing is unpickled beyond tensors and plain types.

Accepted files:
- a Lightning checkpoint (``.ckpt``/``.pt``) read with ``torch.load(weights_only=True)``; the
  encoder's keys are ``encoder.*`` inside ``state_dict`` (a bare state dict also works);
  ``checkpoint["normalization"]`` (the data statistics the encoder was trained with) comes along;
- a ``.safetensors`` file with ``encoder.*`` keys (what ``neurotrain export`` writes); its
  normalisation, when present, is JSON in the metadata entry ``"normalization"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def load_encoder_weights(
    encoder: nn.Module, path: str | Path, prefix: str = "encoder."
) -> dict[str, Any] | None:
    """Copy the ``prefix``-ed weights of ``path`` into ``encoder`` (strict); return the normalisation.

    Raises a clear error when the file has no such keys or they do not fit the encoder (a size
    or patch-size mismatch), instead of starting from random weights.
    """
    state, normalization = read_checkpoint(path)
    weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if not weights:
        raise KeyError(f"{path} holds no '{prefix}*' weights; its keys start with {sorted(state)[:5]}")
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ValueError(f"encoder weights in {path} do not fit this encoder's config: {error}") from error
    return normalization


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(state dict, normalisation or None) from a Lightning/torch checkpoint or a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        normalization = json.loads(metadata["normalization"]) if "normalization" in metadata else None
        return load_file(str(path), device="cpu"), normalization
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} is not a checkpoint dict (got {type(checkpoint).__name__})")
    state = checkpoint.get("state_dict", checkpoint)
    return state, checkpoint.get("normalization")
