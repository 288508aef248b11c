"""A channel-agnostic transformer encoder for multichannel signals (EEG, MEG, iEEG, fMRI parcels).

One model accepts any montage, any channel count and any sampling rate: every channel is cut into
non-overlapping time patches, each patch becomes one token, and a token learns *where* it is from
the sensor (3-D position in metres plus channel type) and *when* it is from the patch centre time
in seconds from the start of the window. Nothing depends on channel order or count, so a batch with permuted channels gives
permuted outputs and padding channels (``channel_mask`` False) never influence real ones.

Input contract (the batch the datamodules produce)::

    signal         float32 [B, C, T]   C = most channels in the batch, padded
    channel_mask   bool    [B, C]      True = real channel
    positions      float32 [B, C, 3]   metres, head frame (fMRI: MNI parcel centroids, also in
                                       metres, not mm); 0 where unknown
    position_mask  bool    [B, C]      True = position known
    channel_types  int64   [B, C]      index into CHANNEL_TYPES; 0 = padding
    sfreq          float32 [B]         samples per second (fMRI: 1 / TR)

Optional (a batch without them is read as "no orientation known")::

    orientations      float32 [B, C, 3]   unit MEG coil normals (head frame); 0 where unknown
    orientation_mask  bool    [B, C]      True = the channel has a coil normal

Orientation (``use_orientation``, default on): an MEG sensor measures the field component along
its coil normal, so two coils at one place facing different ways see different signals. Where
``orientation_mask`` is True the channel's sensor encoding gains ``OrientationEncoding(normal)``;
elsewhere (EEG, iEEG, padding) nothing is added. The map's output layer starts at zero, and a
checkpoint written before the option existed loads strictly with that zero layer filled in
(a load pre-hook, ``_orientation_for_old_weights``): the old model's outputs are unchanged.

Example::

    encoder = SignalEncoder.from_config(SignalEncoderConfig(size="small", patch_size=64))
    out = encoder(batch)
    out.tokens  # [B, C, P, D] with P = T // patch_size
    out.pooled  # [B, D] mean over real tokens
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurotrain.datamodules.format.channel_types import CHANNEL_TYPES

log = logging.getLogger(__name__)

# Batch keys the encoder reads when present: MEG coil orientations (see the module docstring).
ORIENTATION_KEYS = ("orientations", "orientation_mask")

# Width, depth and heads of the named sizes; `small`, `base` and `large` land near 10M, 100M and
# 300M parameters (checked by a test), `tiny` is for CI.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 64, "depth": 2, "heads": 4},
    "small": {"dim": 256, "depth": 12, "heads": 4},
    "base": {"dim": 768, "depth": 14, "heads": 12},
    "large": {"dim": 1024, "depth": 24, "heads": 16},
}


@dataclass
class SignalEncoderConfig:
    """The encoder's schema; its fields are the `SignalEncoder` constructor arguments.

    ``dim``/``depth``/``heads`` of 0 take their value from ``size``, so a YAML file can name a
    size and still override one field.
    """

    size: str = "tiny"
    patch_size: int = 32
    dim: int = 0
    depth: int = 0
    heads: int = 0
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # Fourier features of xyz: frequencies log-spaced between these (cycles per metre), so
    # a head (~0.2 m) spans a few cycles at the low end and ~1 cm is resolved at the high end.
    position_min_freq: float = 1.0
    position_max_freq: float = 100.0
    # Sinusoidal features of time: periods log-spaced between these (seconds), from one EEG
    # patch up to a long fMRI run.
    time_min_period: float = 0.01
    time_max_period: float = 1000.0
    # Add an embedding of the unit coil normal to channels that have one (MEG), see the docstring.
    use_orientation: bool = True

    def resolved(self) -> SignalEncoderConfig:
        """A copy with ``dim``/``depth``/``heads`` filled from ``size`` where they are 0."""
        if self.size not in SIZES:
            raise ValueError(f"unknown encoder size {self.size!r}; choose one of {sorted(SIZES)}")
        values = asdict(self)
        for key, value in SIZES[self.size].items():
            values[key] = values[key] or value
        if values["dim"] % values["heads"]:
            raise ValueError(f"dim={values['dim']} is not divisible by heads={values['heads']}")
        return SignalEncoderConfig(**values)


@dataclass
class EncoderOutput:
    """What every encoder returns: token features and one pooled vector per sample."""

    tokens: Tensor  # signal: [B, C, P, D]; volume/image: [B, N, D]
    pooled: Tensor  # [B, D]


class SignalEncoder(nn.Module):
    """Patch tokens per channel + sensor and time encodings + pre-norm transformer.

    ``forward(batch, token_mask, mask_embedding)``: where ``token_mask`` [B, C, P] is True the
    patch content is replaced by ``mask_embedding`` [D] (masked pretraining) while the sensor and
    time encodings stay, so the model knows which patch it must reconstruct. The mask embedding is
    owned by the objective, not the encoder, so a fine-tuned encoder carries no unused parameter.
    """

    def __init__(
        self,
        size: str = "tiny",
        patch_size: int = 32,
        dim: int = 0,
        depth: int = 0,
        heads: int = 0,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        position_min_freq: float = 1.0,
        position_max_freq: float = 100.0,
        time_min_period: float = 0.01,
        time_max_period: float = 1000.0,
        use_orientation: bool = True,
    ) -> None:
        super().__init__()
        self.config = SignalEncoderConfig(
            size=size,
            patch_size=patch_size,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            position_min_freq=position_min_freq,
            position_max_freq=position_max_freq,
            time_min_period=time_min_period,
            time_max_period=time_max_period,
            use_orientation=use_orientation,
        ).resolved()
        cfg = self.config
        self.patch_size = cfg.patch_size
        self.dim = cfg.dim
        self.depth = cfg.depth
        self.patch_embed = nn.Linear(cfg.patch_size, cfg.dim)
        self.position = PositionEncoding(cfg.dim, cfg.position_min_freq, cfg.position_max_freq)
        self.unknown_position = nn.Parameter(torch.zeros(cfg.dim))
        self.channel_type = nn.Embedding(len(CHANNEL_TYPES), cfg.dim, padding_idx=0)
        self.time = TimeEncoding(cfg.dim, cfg.time_min_period, cfg.time_max_period)
        self.orientation = OrientationEncoding(cfg.dim) if cfg.use_orientation else None
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.apply(_init_weights)
        nn.init.normal_(self.unknown_position, std=0.02)
        if self.orientation is not None:
            self.orientation.reset_parameters()  # zero output: no effect until trained
            self.register_load_state_dict_pre_hook(_orientation_for_old_weights)

    @classmethod
    def from_config(cls, config: SignalEncoderConfig) -> SignalEncoder:
        return cls(**asdict(config))

    @property
    def num_layers(self) -> int:
        """Transformer depth, for layer-wise lr decay."""
        return self.depth

    def layer_id(self, name: str) -> int:
        """Layer of a parameter name: 0 for the embeddings, i + 1 for block i, depth + 1 after."""
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith("norm."):
            return self.depth + 1
        return 0

    def patchify(self, signal: Tensor) -> Tensor:
        """[B, C, T] -> [B, C, P, patch_size]; a remainder shorter than one patch is dropped."""
        B, C, T = signal.shape
        P = T // self.patch_size
        if P == 0:
            raise ValueError(f"signal has {T} samples, fewer than one patch of {self.patch_size}")
        return signal[..., : P * self.patch_size].reshape(B, C, P, self.patch_size)

    def forward(
        self,
        batch: dict[str, Tensor],
        token_mask: Tensor | None = None,
        mask_embedding: Tensor | None = None,
    ) -> EncoderOutput:
        channel_mask = batch["channel_mask"]  # [B, C]
        # Zero padding channels so non-finite filler can never reach real tokens through 0 * NaN.
        signal = torch.where(channel_mask[..., None], batch["signal"], 0.0)  # [B, C, T]
        patches = self.patchify(signal.float())  # [B, C, P, S]
        B, C, P, _ = patches.shape
        x = self.patch_embed(patches)  # [B, C, P, D]
        if token_mask is not None:
            if mask_embedding is None:
                raise ValueError("token_mask needs a mask_embedding to put in place of the masked patches")
            x = torch.where(token_mask[..., None], mask_embedding.to(x.dtype), x)  # [B, C, P, D]
        x = x + self.sensor_encoding(batch)[:, :, None, :]  # [B, C, P, D]
        x = x + self.time_encoding(batch["sfreq"], P)[:, None, :, :]  # [B, C, P, D]

        x = x.reshape(B, C * P, self.dim)  # [B, N, D]
        token_valid = channel_mask[:, :, None].expand(B, C, P).reshape(B, C * P)  # [B, N]
        attn_mask = token_valid[:, None, None, :]  # [B, 1, 1, N] True = may attend
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.norm(x).reshape(B, C, P, self.dim)  # [B, C, P, D]
        return EncoderOutput(tokens=x, pooled=masked_mean(x, channel_mask))

    def sensor_encoding(self, batch: dict[str, Tensor]) -> Tensor:
        """Where each channel is: xyz Fourier features (or the unknown embedding) + type, plus the
        coil-normal embedding where ``orientation_mask`` is True (``use_orientation``). [B, C, D]"""
        known = self.position(batch["positions"].float())  # [B, C, D]
        where = torch.where(batch["position_mask"][..., None], known, self.unknown_position)  # [B, C, D]
        out = where + self.channel_type(batch["channel_types"])  # [B, C, D]
        if self.orientation is not None:
            mask = batch.get("orientation_mask")  # a batch without the keys: no normal known
            normals = batch["orientations"] if mask is not None else torch.zeros_like(batch["positions"])
            if mask is None:
                mask = torch.zeros_like(batch["channel_mask"])
            # Always on the graph (a zero gradient without MEG), so DDP sees every parameter used.
            facing = self.orientation(normals.float())  # [B, C, D]
            out = out + torch.where(mask[..., None], facing, 0.0)  # [B, C, D]
        return out

    def time_encoding(self, sfreq: Tensor, n_patches: int) -> Tensor:
        """Patch centre times in seconds, (i + 0.5) * patch_size / sfreq, encoded. [B, P, D]"""
        index = torch.arange(n_patches, device=sfreq.device, dtype=torch.float32) + 0.5  # [P]
        seconds = index[None, :] * self.patch_size / sfreq.float()[:, None]  # [B, P]
        return self.time(seconds)


def _orientation_for_old_weights(
    module: SignalEncoder, state_dict: dict[str, Tensor], prefix: str, *_: object
) -> None:
    """Load-state-dict pre-hook: weights from before ``use_orientation`` (an encoder state dict,
    ``patch_embed.weight`` present, without any ``orientation.*`` key) get the orientation map at
    zero, so strict loading passes and the model computes exactly what the old one did.

    Only these keys are filled in; any other missing key stays an error of strict loading.
    """
    if f"{prefix}patch_embed.weight" not in state_dict:
        return
    if any(k.startswith(f"{prefix}orientation.") for k in state_dict):
        return
    log.info("encoder weights from before use_orientation: the orientation map starts at zero")
    for name, param in module.orientation.named_parameters():
        state_dict[f"{prefix}orientation.{name}"] = torch.zeros_like(param)


def masked_mean(tokens: Tensor, channel_mask: Tensor) -> Tensor:
    """Mean of [B, C, P, D] tokens over real channels and all patches -> [B, D]."""
    weight = channel_mask.to(tokens.dtype)[:, :, None, None]  # [B, C, 1, 1]
    total = (tokens * weight).sum(dim=(1, 2))  # [B, D]
    count = (weight.sum(dim=(1, 2)) * tokens.shape[2]).clamp_min(1.0)  # [B, 1]
    return total / count


class PositionEncoding(nn.Module):
    """Fourier features of xyz in metres followed by a small MLP: [..., 3] -> [..., D]."""

    def __init__(self, dim: int, min_freq: float, max_freq: float, n_freqs: int = 16) -> None:
        super().__init__()
        freqs = torch.logspace(math.log10(min_freq), math.log10(max_freq), n_freqs)  # [F]
        self.register_buffer("freqs", 2 * math.pi * freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(3 * 2 * n_freqs + 3, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, xyz: Tensor) -> Tensor:
        angles = xyz[..., :, None] * self.freqs  # [..., 3, F]
        features = torch.cat([angles.sin().flatten(-2), angles.cos().flatten(-2), xyz], dim=-1)  # [..., 6F+3]
        return self.mlp(features)  # [..., D]


class OrientationEncoding(nn.Module):
    """A unit coil normal as low-frequency Fourier features, then a linear map: [..., 3] -> [..., D].

    Features: the normal itself and sin/cos of ``k * pi * n`` for ``k = 1..n_freqs`` (a unit
    vector needs no more than a few cycles over [-1, 1]). The linear map starts at zero
    (``reset_parameters``), so a model gains orientation without its initial outputs moving, and
    its gradient is nonzero from the first step (the features are not zero).
    """

    def __init__(self, dim: int, n_freqs: int = 4) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, n_freqs + 1).float(), persistent=False)
        self.proj = nn.Linear(3 * 2 * n_freqs + 3, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, normal: Tensor) -> Tensor:
        angles = normal[..., :, None] * self.freqs  # [..., 3, F]
        features = torch.cat([angles.sin().flatten(-2), angles.cos().flatten(-2), normal], dim=-1)
        return self.proj(features)  # [..., D]


class TimeEncoding(nn.Module):
    """Sinusoidal features of time in seconds, then a linear map: [B, P] -> [B, P, D]."""

    def __init__(self, dim: int, min_period: float, max_period: float, n_freqs: int = 32) -> None:
        super().__init__()
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), n_freqs)  # [F]
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)
        self.proj = nn.Linear(2 * n_freqs, dim)

    def forward(self, seconds: Tensor) -> Tensor:
        angles = seconds[..., None] * self.omega  # [B, P, F]
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))  # [B, P, D]


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)  # [B, N, D]
        return x + self.mlp(self.norm2(x))  # [B, N, D]


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (flash/mem-efficient)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads)  # [B, N, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, N, Dh]
        # attn_mask [B, 1, 1, N] bool: padding keys get no weight from any query.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, N, Dh]
        return self.proj(y.transpose(1, 2).reshape(B, N, D))  # [B, N, D]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
