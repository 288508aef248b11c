"""A 3-D patch ViT for structural MRI volumes.

Input ``batch["volume"]`` float [B, 1, D, H, W] or [B, D, H, W]; each side must be divisible by
``patch_size`` (the datamodule crops or pads). The patch grid gets fixed 3-D sinusoidal
positions computed from its shape, so one model takes volumes of different sizes.
Returns tokens [B, N, dim] and their mean [B, dim]. For masked pretraining, ``forward`` takes a
``token_mask`` bool [B, N] (True = masked) whose patch embeddings are replaced by a learned
``mask_embedding`` [dim] before the blocks (SimMIM-style; the grid and positions are kept).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neurotrain.models.signal_encoder import Block, EncoderOutput, _init_weights

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 64, "depth": 2, "heads": 4},
    "small": {"dim": 384, "depth": 12, "heads": 6},
    "base": {"dim": 768, "depth": 12, "heads": 12},
}


class VolumeEncoder(nn.Module):
    """Conv3d patch embedding + 3-D sincos positions + pre-norm transformer blocks."""

    def __init__(
        self,
        size: str = "tiny",
        patch_size: int = 16,
        in_channels: int = 1,
        dim: int = 0,
        depth: int = 0,
        heads: int = 0,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown volume encoder size {size!r}; choose one of {sorted(SIZES)}")
        preset = SIZES[size]
        self.dim = dim or preset["dim"]
        self.depth = depth or preset["depth"]
        heads = heads or preset["heads"]
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.patch_embed = nn.Conv3d(in_channels, self.dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(Block(self.dim, heads, mlp_ratio, dropout) for _ in range(self.depth))
        self.norm = nn.LayerNorm(self.dim)
        self.apply(_init_weights)

    @property
    def num_layers(self) -> int:
        return self.depth

    def layer_id(self, name: str) -> int:
        """0 for the patch embedding, i + 1 for block i, depth + 1 for the final norm."""
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1 if name.startswith("norm.") else 0

    def forward(
        self,
        batch: dict[str, Tensor],
        token_mask: Tensor | None = None,
        mask_embedding: Tensor | None = None,
    ) -> EncoderOutput:
        volume = as_5d(batch["volume"])  # [B, 1, D, H, W]
        if any(side % self.patch_size for side in volume.shape[2:]):
            raise ValueError(f"volume sides {tuple(volume.shape[2:])} must be divisible by {self.patch_size}")
        x = self.patch_embed(volume)  # [B, dim, d, h, w]
        grid = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)  # [B, N, dim]
        if token_mask is not None and mask_embedding is not None:
            x = torch.where(token_mask[..., None], mask_embedding.to(x.dtype), x)
        x = x + sincos_3d(grid, self.dim, x.device)  # [B, N, dim]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)  # [B, N, dim]
        return EncoderOutput(tokens=x, pooled=x.mean(dim=1))

    def patchify(self, volume: Tensor) -> Tensor:
        """[B, (1,) D, H, W] -> [B, N, C * p³]: each patch's voxels, in the patch embedding's order."""
        x = as_5d(volume)
        B, C, D, H, W = x.shape
        p = self.patch_size
        x = x.reshape(B, C, D // p, p, H // p, p, W // p, p)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, (D // p) * (H // p) * (W // p), C * p**3)

    def n_patches(self, volume: Tensor) -> int:
        """Patch tokens of a volume [B, (1,) D, H, W]."""
        d, h, w = as_5d(volume).shape[2:]
        return (d // self.patch_size) * (h // self.patch_size) * (w // self.patch_size)


def as_5d(volume: Tensor) -> Tensor:
    """float [B, D, H, W] or [B, C, D, H, W] -> [B, C, D, H, W]."""
    volume = volume.float()
    return volume[:, None] if volume.ndim == 4 else volume


def sincos_3d(grid: tuple[int, ...] | torch.Size, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed sinusoidal encoding of patch-grid indices, 2 * (dim // 6) features per axis: [N, dim].

    Features left over when ``dim`` is not a multiple of 6 are zero.
    """
    n_freqs = dim // 6
    omega = 1.0 / 10000 ** (torch.arange(n_freqs, device=device, dtype=torch.float32) / n_freqs)  # [F]
    axes = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float32) for n in grid), indexing="ij")
    features = []
    for axis in axes:
        angles = axis.reshape(-1, 1) * omega  # [N, F]
        features += [angles.sin(), angles.cos()]
    encoding = torch.cat(features, dim=1)  # [N, 6F]
    return torch.nn.functional.pad(encoding, (0, dim - encoding.shape[1]))  # [N, dim]
