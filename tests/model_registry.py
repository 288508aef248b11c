"""Test registry: every encoder and LightningModule by name, each with a tiny configuration and a batch.

The product names models by their config ``class_path``; this registry exists so tests are
parametrised over every model (``test_models_modules.py``): registering one is enough to get it
built tiny and run forward/backward.

Models by name: encoders and LightningModules, each with a tiny configuration and a synthetic batch.

``get_model("classifier", num_classes=3)`` builds one; ``list_models()`` names them all. Every entry
carries ``tiny`` (constructor overrides small enough for CI) and ``example_batch`` (a synthetic
batch in the data contract), so a test parametrised over the registry builds each entry tiny and
runs a forward/backward: registering a model is enough to get it tested.

Kinds: ``"encoder"`` (``model(batch) -> EncoderOutput``) and ``"module"`` (a LightningModule with
``compute_loss(batch) -> {"loss": …}``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from neurotrain.models.image_encoder import ImageEncoder
from neurotrain.models.modules import (
    AlignmentModule,
    ClassifierModule,
    PretrainModule,
    RegressorModule,
)
from neurotrain.models.signal_encoder import SignalEncoder
from neurotrain.models.synthetic import synthetic_signal_batch
from neurotrain.models.volume_encoder import VolumeEncoder


@dataclass
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    kind: str
    tiny: dict[str, Any] = field(default_factory=dict)
    example_batch: Callable[[int], dict[str, Tensor]] = lambda batch_size: synthetic_signal_batch(batch_size)


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str,
    factory: Callable[..., nn.Module],
    kind: str,
    tiny: dict[str, Any] | None = None,
    example_batch: Callable[[int], dict[str, Tensor]] | None = None,
) -> ModelEntry:
    """Add a model under ``name``; a second registration of the same name is an error."""
    if name in _REGISTRY:
        raise KeyError(f"model {name!r} is already registered")
    if kind not in ("encoder", "module"):
        raise ValueError(f"kind must be 'encoder' or 'module', got {kind!r}")
    entry = ModelEntry(name, factory, kind, dict(tiny or {}))
    if example_batch is not None:
        entry.example_batch = example_batch
    _REGISTRY[name] = entry
    return entry


def get_model(name: str, /, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with constructor arguments ``kwargs``."""
    return get_entry(name).factory(**kwargs)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {list_models()}")
    return _REGISTRY[name]


def list_models(kind: str | None = None) -> list[str]:
    return sorted(name for name, entry in _REGISTRY.items() if kind is None or entry.kind == kind)


def _image_batch(batch_size: int) -> dict[str, Tensor]:
    return {**synthetic_signal_batch(batch_size), "image": torch.randn(batch_size, 3, 32, 32)}


def _volume_batch(batch_size: int) -> dict[str, Tensor]:
    return {"volume": torch.randn(batch_size, 1, 16, 16, 16)}


def _signal_pair_batch(batch_size: int) -> dict[str, Tensor]:
    pair = synthetic_signal_batch(batch_size, channels=4, samples=64, sfreq=0.5, seed=1)  # fMRI-like
    return {**synthetic_signal_batch(batch_size), **{f"pair_{key}": value for key, value in pair.items()}}


TINY_ENCODER = {"size": "tiny", "patch_size": 16}

register("signal_encoder", SignalEncoder, "encoder", tiny=TINY_ENCODER)
register(
    "volume_encoder",
    VolumeEncoder,
    "encoder",
    tiny={"size": "tiny", "patch_size": 8},
    example_batch=_volume_batch,
)
register(
    "image_encoder",
    ImageEncoder,
    "encoder",
    tiny={"name": "test_vit", "img_size": 32},
    example_batch=_image_batch,
)
register("pretrain", PretrainModule, "module", tiny={"encoder": TINY_ENCODER})
register(
    "classifier",
    ClassifierModule,
    "module",
    tiny={"encoder": TINY_ENCODER, "num_classes": 2},
    example_batch=lambda n: synthetic_signal_batch(n, labels="class"),
)
register(
    "regressor",
    RegressorModule,
    "module",
    tiny={"encoder": TINY_ENCODER},
    example_batch=lambda n: synthetic_signal_batch(n, labels="value"),
)
register(
    "alignment_image",
    AlignmentModule,
    "module",
    tiny={
        "encoder": TINY_ENCODER,
        "pair": "image",
        "image_model": "test_vit",
        "image_size": 32,
        "embed_dim": 32,
    },
    example_batch=_image_batch,
)
register(
    "alignment_signal",
    AlignmentModule,
    "module",
    tiny={"encoder": TINY_ENCODER, "pair": "signal", "pair_encoder": {"size": "tiny", "patch_size": 8}},
    example_batch=_signal_pair_batch,
)
