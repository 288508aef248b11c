"""Image features from any timm backbone or OpenCLIP image tower, weights from a local file only.

    fx = ImageFeatureExtractor("resnet18", weights="resnet18.safetensors", layers=["layer3", 2])
    feats = fx(images)                      # {"layer3": [N, 256], 2: [N, 128]} float32 numpy
    fx = ImageFeatureExtractor("open_clip:ViT-B-32", weights="open_clip_vit_b32.bin")
    emb = fx.extract(images)                # the image embedding [N, 512] (layer "embedding")

Nothing downloads: timm models are built with ``pretrained=False`` and OpenCLIP ones with
``pretrained=None`` (and no text-tower weights), then the weights are read from ``weights``: a
``.safetensors`` file, or a ``.pth``/``.bin``/``.pt`` state dict read with ``torch.load``
``weights_only=True`` (``models.checkpoint_io.safe_load``). ``weights="random"`` is a seeded
random initialisation, only when asked for: there is no default. A file that does not fit the
architecture raises `WeightsMismatchError`, naming the file, the model and a few missing,
unexpected and wrongly shaped keys. An OpenCLIP file may be a whole CLIP state dict (``visual.*``
keys; the text tower's are ignored) or the image tower's alone. A timm file may lack the
classifier (a headless export): the head is then removed.

Layers (``layers``: one or many, all captured in one forward pass):

- timm: ``"pre_logits"`` (the default: ``forward_head(forward_features(x), pre_logits=True)``,
  [B, F]), ``"forward_features"`` (CNN [B, C, h, w], ViT [B, N, D] tokens), an ``int`` index of
  ``forward_intermediates`` (CNN: a stage of ``feature_info``, ViT: a block; always
  [B, C, h, w], ViT prefix tokens dropped), or a module name (``"layer3"``, ``"blocks.4"``,
  ``"fc"``: the module's output, through a forward hook).
- OpenCLIP: ``"embedding"`` (the default: the projected image embedding, what
  ``encode_image`` returns, [B, E]), an ``int`` block index of the tower's
  ``forward_intermediates`` ([B, C, h, w]), or a module name inside ``model.visual``
  (``"transformer.resblocks.3"`` gives [B, N, D]).

``pool`` turns one image's layer output into its features: ``"mean"`` averages over positions
([C, h, w] -> [C]; tokens [N, D] -> [D], every token, class token included), ``"flatten"`` keeps
everything ([C·h·w] or [N·D]), ``"none"`` keeps the layer's own shape ([C, h, w] / [N, D]). A
[B, F] output is [F] under any pool. 4-D module outputs are read as [B, C, h, w]: for
channels-last models (Swin) use an ``int`` index, which timm always returns as NCHW.

Preprocessing is the model's own: timm's ``resolve_model_data_config`` + ``create_transform``,
OpenCLIP's ``image_transform_v2`` of the model's preprocess config (``img_size`` overrides the
input size of both). Images are PIL images, uint8 arrays [H, W, 3] or [H, W], or file paths.

Features are cached on disk (`models.feature_cache`), keyed by model, weights sha256, layer,
pool, preprocessing and image sha256: a second call, or a sweep over layers that were extracted
together, runs no forward pass. ``cache_dir=None`` turns the cache off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from neurotrain.models.feature_cache import FeatureCache, default_cache_dir, image_sha256, weights_sha256

Layer = str | int
Pool = Literal["mean", "flatten", "none"]
OPEN_CLIP = "open_clip:"
RANDOM = "random"
_DEFAULT_CACHE: Any = object()  # "use default_cache_dir()", distinct from None (no cache)


class WeightsMismatchError(ValueError):
    """A weights file does not fit the architecture; the message names the file, model and keys."""


class ImageFeatureExtractor:
    """Features of images at one or more layers of a timm or OpenCLIP model (see module doc).

    ``model``: a timm name (``"resnet18"``) or ``"open_clip:<arch>"`` (``"open_clip:ViT-B-32"``).
    ``weights``: a local file, or ``"random"`` (seeded by ``seed``). ``layers``: one layer or a
    list (default: the final embedding). ``img_size``: input side length, for small inputs.
    ``batch_size`` 8: the fastest measured for a ResNet-18 on a 2-core CPU (32 was 0.8x); raise it
    on a GPU.
    """

    def __init__(
        self,
        model: str,
        weights: str | os.PathLike | None,
        layers: Layer | Sequence[Layer] | None = None,
        pool: Pool = "mean",
        *,
        img_size: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        cache_dir: str | os.PathLike | None = _DEFAULT_CACHE,
        seed: int = 0,
    ) -> None:
        if pool not in ("mean", "flatten", "none"):
            raise ValueError(f"pool must be 'mean', 'flatten' or 'none', not {pool!r}")
        if weights is None:
            raise ValueError(
                f"{model}: weights=None; give a local weights file (.safetensors, .pth, .bin), or "
                "weights='random' for a random initialisation (nothing is downloaded)"
            )
        self.name = model
        self.weights = str(weights)
        self.pool = pool
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.is_open_clip = model.startswith(OPEN_CLIP)
        self.model: nn.Module
        default = "embedding" if self.is_open_clip else "pre_logits"
        if layers is None:
            layers = [default]
        elif isinstance(layers, (str, int)):
            layers = [layers]
        self.layers: list[Layer] = list(layers)
        self.cache_dir = default_cache_dir() if cache_dir is _DEFAULT_CACHE else cache_dir
        self.forward_batches = 0  # forward passes run (a cache hit runs none)
        self._removed_head: tuple[str, ...] = ()

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # "random" weights are the same on every call
            if self.is_open_clip:
                clip, self.transform, versions = _build_open_clip(model[len(OPEN_CLIP) :], img_size)
                self.model = clip.visual  # the text tower is dropped with ``clip``
            else:
                self.model, self.transform, versions = _build_timm(model, img_size)
        if str(weights) == RANDOM:
            self.weights_id = f"random-seed{seed}"
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"{model}: weights file not found: {path}")
            state = read_state_dict(path)
            if self.is_open_clip:
                load_open_clip_visual(self.model, clip, state, path, model)
            else:
                self._removed_head = load_timm_state(self.model, state, path, model)
            self.weights_id = weights_sha256(path, self.cache_dir)
        # channels-last convolutions: 1.3-1.7x the images/s of a CNN on CPU (oneDNN), and what
        # tensor cores want on a GPU; a ViT has one conv (its patch embedding), unaffected
        self.model.eval().to(self.device, memory_format=torch.channels_last)
        self._check_layers()
        self._key_fields = {
            "model": model,
            "weights_sha256": self.weights_id,
            "pool": pool,
            "preprocess": repr(self.transform),
            "versions": versions,
        }

    # -- public -----------------------------------------------------------------------------

    def __call__(self, images: Iterable[Any]) -> dict[Layer, np.ndarray]:
        """Features of every image at every layer: ``{layer: float32 [N, F]}`` (``pool="none"``:
        [N, C, h, w] or [N, N_tok, D]), computed for the images no cache holds, in batches."""
        rgbs = [_to_rgb(im) for im in images]
        shas = [image_sha256(x) for x in rgbs]
        caches = {layer: self._cache(layer) for layer in self.layers}
        out: dict[Layer, list[np.ndarray | None]] = {layer: [None] * len(rgbs) for layer in self.layers}
        todo = []
        for i, sha in enumerate(shas):
            for layer in self.layers:
                c = caches[layer]
                out[layer][i] = c.get(sha) if c is not None else None
            if any(out[layer][i] is None for layer in self.layers):
                todo.append(i)
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start : start + self.batch_size]
            x = torch.stack([self._preprocess(rgbs[i]) for i in rows])  # [B, 3, H, W]
            x = x.to(self.device, memory_format=torch.channels_last)
            feats = self.forward(x)
            for layer, f in feats.items():
                f = f.float().cpu().numpy()
                for j, i in enumerate(rows):
                    out[layer][i] = f[j]
                    if caches[layer] is not None:
                        caches[layer].put(shas[i], f[j])
        if not rgbs:
            return {layer: np.zeros((0,), np.float32) for layer in self.layers}
        return {layer: np.stack(v) for layer, v in out.items()}

    def extract(self, images: Iterable[Any]) -> np.ndarray:
        """Features of the first (or only) layer: float32 [N, F]."""
        return self(images)[self.layers[0]]

    @torch.inference_mode()
    def forward(self, x: Tensor) -> dict[Layer, Tensor]:
        """A preprocessed batch [B, 3, H, W] -> ``{layer: pooled features [B, ...]}`` (no cache)."""
        self.forward_batches += 1
        return {layer: _pool(t, self.pool) for layer, t in self.layer_outputs(x).items()}

    def layer_outputs(self, x: Tensor) -> dict[Layer, Tensor]:
        """A preprocessed batch [B, 3, H, W] -> ``{layer: output}``, unpooled ([B, C, h, w],
        [B, N, D] or [B, F]) and under the caller's autograd mode: what a readout trained on top
        of the network reads (``models/readouts.py``), frozen or fine-tuned. ``x`` must be on the
        model's device."""
        captured: dict[Layer, Tensor] = {}
        named = [layer for layer in self.layers if isinstance(layer, str) and layer not in _FINAL]
        hooks = [self._hook(layer, captured) for layer in named]
        try:
            captured.update(self._run(x))
            if not self.is_open_clip and any(layer not in captured for layer in named):
                self.model.forward_head(captured["forward_features"])  # a head module ("fc", "head")
        finally:
            for h in hooks:
                h.remove()
        for layer in named:
            if layer not in captured:
                raise ValueError(f"{self.name}: module {layer!r} does not run in the forward pass")
        return {layer: captured[layer] for layer in self.layers}

    # -- internals --------------------------------------------------------------------------

    def _run(self, x: Tensor) -> dict[Layer, Tensor]:
        """Final outputs and ``forward_intermediates`` indices the layers ask for."""
        indices = [layer for layer in self.layers if isinstance(layer, int)]
        out: dict[Layer, Tensor] = {}
        m = self.model
        if self.is_open_clip:
            if indices:
                res = m.forward_intermediates(x, indices=indices)
                out.update(zip(indices, res["image_intermediates"], strict=True))
                out["embedding"] = res["image_features"]
            else:
                out["embedding"] = m(x)  # [B, E]
            return out
        if indices:
            final, inter = m.forward_intermediates(x, indices=indices)
            out.update(zip(indices, inter, strict=True))
        else:
            final = m.forward_features(x)  # CNN [B, C, h, w]; ViT [B, N, D]
        out["forward_features"] = final
        if "pre_logits" in self.layers:
            out["pre_logits"] = m.forward_head(final, pre_logits=True)  # [B, F]
        return out

    def _hook(self, layer: str, captured: dict[Layer, Tensor]) -> Any:
        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            t = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(t, Tensor):
                raise TypeError(f"{self.name}: layer {layer!r} outputs {type(output).__name__}, not a tensor")
            captured[layer] = t

        return self.model.get_submodule(layer).register_forward_hook(keep)

    def _check_layers(self) -> None:
        names = {n for n, _ in self.model.named_modules() if n}
        for layer in self.layers:
            if isinstance(layer, bool) or not isinstance(layer, (str, int)):
                raise TypeError(f"{self.name}: a layer is a module name or an int index, not {layer!r}")
            if isinstance(layer, int):
                if not hasattr(self.model, "forward_intermediates"):
                    raise ValueError(f"{self.name} has no forward_intermediates: name a module instead")
                continue
            final = ("embedding",) if self.is_open_clip else ("pre_logits", "forward_features")
            if layer in _FINAL and layer in final:
                continue
            if layer in self._removed_head:
                raise ValueError(
                    f"{self.name} has no layer {layer!r}: it is the classifier, which the weights "
                    f"file {self.weights} (headless) does not hold"
                )
            if layer not in names:
                close = [n for n in sorted(names) if layer in n or n in layer][:8]
                raise ValueError(
                    f"{self.name} has no layer {layer!r}; use {final!r}, an int index of "
                    f"forward_intermediates, or a module name (e.g. {close or sorted(names)[:8]})"
                )

    def _cache(self, layer: Layer) -> FeatureCache | None:
        if self.cache_dir is None:
            return None
        return FeatureCache(self.cache_dir, {**self._key_fields, "layer": layer})

    def _preprocess(self, rgb: np.ndarray) -> Tensor:
        from PIL import Image

        return self.transform(Image.fromarray(rgb))  # [3, H, W]


_FINAL = ("pre_logits", "forward_features", "embedding")


def _pool(t: Tensor, pool: Pool) -> Tensor:
    """[B, C, h, w] / [B, N, D] / [B, F] -> [B, F] (mean, flatten) or unchanged (none)."""
    if t.ndim <= 2 or pool == "none":
        return t
    if pool == "flatten":
        return t.flatten(1)
    if t.ndim == 3:
        return t.mean(dim=1)  # tokens [B, N, D] -> [B, D]
    return t.flatten(2).mean(dim=2)  # [B, C, h, w] -> [B, C]


def _to_rgb(image: Any) -> np.ndarray:
    """A PIL image, array or path -> uint8 [H, W, 3]."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 [H, W, 3] or [H, W], not {a.dtype} {a.shape}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"image arrays must be uint8 [H, W, 3] or [H, W], not shape {a.shape}")
    return np.ascontiguousarray(a[:, :, :3])


# -- building models, offline ---------------------------------------------------------------


def _build_timm(name: str, img_size: int | None) -> tuple[nn.Module, Any, dict[str, str]]:
    import timm
    from timm.data import create_transform, resolve_model_data_config

    try:  # ViTs need img_size for another input size; CNNs take any size and refuse the argument
        kwargs = {"img_size": img_size} if img_size is not None else {}
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
        model = timm.create_model(name, pretrained=False)
    cfg = resolve_model_data_config(model)
    if img_size is not None:
        cfg["input_size"] = (3, img_size, img_size)
    transform = create_transform(**cfg, is_training=False)
    return model, transform, {"timm": timm.__version__, "torch": torch.__version__}


def _build_open_clip(arch: str, img_size: int | None) -> tuple[nn.Module, Any, dict[str, str]]:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    if arch not in open_clip.list_models():
        raise ValueError(f"open_clip has no architecture {arch!r} (open_clip.list_models() lists them)")
    clip = open_clip.create_model(
        arch, pretrained=None, pretrained_image=False, pretrained_text=False, force_image_size=img_size
    )
    transform = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(clip)), is_train=False)
    return clip, transform, {"open_clip": open_clip.__version__, "torch": torch.__version__}


# -- loading weights --------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file, or of a torch file read weights-only.

    A torch file may wrap its state dict in ``"state_dict"`` or ``"model"`` and prefix keys with
    ``"module."`` (DataParallel); both are undone.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    else:
        from neurotrain.models.checkpoint_io import safe_load

        state = safe_load(path)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsMismatchError(f"{path}: not a state dict of tensors ({type(state).__name__})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_timm_state(model: nn.Module, state: dict[str, Tensor], path: Path, name: str) -> tuple[str, ...]:
    """Load strictly; a file without the classifier (headless export) removes the model's head.

    Returns the names of the removed classifier modules (none when the file holds them).
    """
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    prefixes = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    own = model.state_dict()
    head_keys = [k for k in own if prefixes and k.startswith(prefixes)]
    removed: tuple[str, ...] = ()
    if head_keys and not any(k in state for k in head_keys):
        model.reset_classifier(0)
        removed = tuple(p[:-1] for p in prefixes)
    _load_strict(model, state, path, name)
    return removed


def load_open_clip_visual(
    visual: nn.Module, clip: nn.Module, state: dict[str, Tensor], path: Path, name: str
) -> None:
    """A whole CLIP state dict (``visual.*``, text keys ignored) or the tower's own, strictly.

    open_clip's own ``convert_state_dict`` (third-party layouts) and ``resize_pos_embed`` (another
    input size) run first, on the whole-CLIP key space.
    """
    from open_clip.factory import convert_state_dict
    from open_clip.model import resize_pos_embed

    if not any(k.startswith("visual.") for k in state):
        state = {f"visual.{k}": v for k, v in state.items()}
    state = convert_state_dict(clip, state)
    resize_pos_embed(state, clip)
    visual_state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    if not visual_state:
        raise WeightsMismatchError(f"{path} holds no image-tower weights for {name}")
    _load_strict(visual, visual_state, path, name)


def _load_strict(model: nn.Module, state: dict[str, Tensor], path: Path, name: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)):
            if keys:
                more = f", … {len(keys) - 5} more" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label} ({'; '.join(keys[:5])}{more})")
        raise WeightsMismatchError(
            f"weights file {path} does not match model {name}: {', '.join(parts)}. "
            "Is it the file of another architecture or size?"
        )
    model.load_state_dict(state, strict=True)
