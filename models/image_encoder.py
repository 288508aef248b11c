"""An image encoder from timm, for brain–image alignment (stimulus images paired with recordings).

Weights never come from a hub at run time: the model is built with ``pretrained=False`` and, when
``weights_path`` is given, loaded from that local file (``.safetensors``, or a torch file read with
``weights_only=True`` so nothing is unpickled). Input ``batch["image"]`` float [B, 3, H, W],
already normalised the way the weights expect.
"""

from __future__ import annotations

from pathlib import Path

import timm
from torch import Tensor, nn

from neurotrain.models.signal_encoder import EncoderOutput


class ImageEncoder(nn.Module):
    """``timm.create_model(name, pretrained=False, num_classes=0)`` returning tokens and pooled.

    ``img_size`` is passed to timm only when given (ViTs need it for small inputs; CNNs take any).
    """

    def __init__(
        self, name: str = "resnet18", weights_path: str | None = None, img_size: int | None = None
    ) -> None:
        super().__init__()
        kwargs = {"img_size": img_size} if img_size is not None else {}
        self.model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        self.dim: int = self.model.num_features
        if weights_path is not None:
            load_timm_weights(self.model, weights_path)

    def forward(self, batch: dict[str, Tensor]) -> EncoderOutput:
        features = self.model.forward_features(batch["image"])  # CNN [B, D, h, w]; ViT [B, N, D]
        pooled = self.model.forward_head(features, pre_logits=True)  # [B, D]
        tokens = features.flatten(2).transpose(1, 2) if features.ndim == 4 else features  # [B, N, D]
        return EncoderOutput(tokens=tokens, pooled=pooled)


def load_timm_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict into a headless timm model.

    Keys of the dropped classifier (timm's ``pretrained_cfg["classifier"]``) are ignored; any
    other mismatch is an error, so a wrong file fails loudly instead of leaving random weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image encoder weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        from neurotrain.models.checkpoint_io import safe_load

        state = safe_load(path)  # weights-only, allow-listed: a crafted file is refused by name
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "\0"
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{c}." for c in classifiers))}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path} does not match the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
