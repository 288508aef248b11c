"""Image features: `ImageFeatureExtractor` (batched, then cached) vs the plain timm loop.

Same model, same local weights file (a seeded random initialisation saved to a temporary
``.safetensors``: no pretrained file ships), same images (the 54 real photographs and faces of
``tests/stimulus_images.py``, ``--size`` px, repeated ``--copies`` times as distinct crops), in
the same run:

- ``plain``: what a user writes: ``timm.create_model`` + ``load_state_dict``, the model's own
  transform, then one image at a time through ``model.forward_features`` and a spatial mean
  (the ``pre_logits`` of a ResNet; a ViT's mean token) under ``torch.no_grad``.
- ``ours_cold``: ``ImageFeatureExtractor(model, weights, "forward_features", "mean")`` on an empty
  cache (batches of ``--batch_size``; every feature written to the cache).
- ``ours_cached``: the same call again from a new extractor (a second sweep step): all hits.

The features of ``plain`` and ``ours`` are checked equal. Figures: images/s of each and the
ratios to ``plain``. The last line is one JSON object.

    python benchmarks/image_features.py [--model resnet18] [--size 224] [--copies 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _images(size: int, copies: int) -> list[np.ndarray]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from stimulus_images import stimulus_images

    base = [s.image for s in stimulus_images(size + 8 * copies)]
    # copy k: a crop shifted by k px, so every image is distinct (no accidental cache hit)
    return [np.ascontiguousarray(im[k : k + size, k : k + size]) for k in range(copies) for im in base]


def plain_loop(
    model_name: str, weights: Path, images: list[np.ndarray], device: str
) -> tuple[float, np.ndarray]:
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    t0 = time.perf_counter()
    model = timm.create_model(model_name, pretrained=False)
    model.load_state_dict(load_file(str(weights)))
    model.eval().to(device)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    out = []
    with torch.no_grad():
        for im in images:
            x = transform(Image.fromarray(im)).unsqueeze(0).to(device)  # [1, 3, H, W]
            f = model.forward_features(x)  # CNN [1, C, h, w]; ViT [1, N, D]
            f = f.flatten(2).mean(2) if f.ndim == 4 else f.mean(1)  # [1, F]
            out.append(f[0].cpu().numpy())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, np.stack(out)


def ours(model_name: str, weights: Path, images: list[np.ndarray], cache: Path, device: str, batch: int):
    from neurotrain.models.image_features import ImageFeatureExtractor

    t0 = time.perf_counter()
    fx = ImageFeatureExtractor(
        model_name, weights, "forward_features", "mean", cache_dir=cache, device=device, batch_size=batch
    )
    feats = fx.extract(images)
    return time.perf_counter() - t0, feats, fx.forward_batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--copies", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import timm
    import torch
    from safetensors.torch import save_file

    images = _images(args.size, args.copies)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / f"{args.model}.safetensors"
        torch.manual_seed(0)
        state = timm.create_model(args.model, pretrained=False).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
        n = len(images)
        t_plain, f_plain = plain_loop(args.model, weights, images, args.device)
        t_cold, f_cold, batches = ours(
            args.model, weights, images, Path(tmp) / "cache", args.device, args.batch_size
        )
        t_hot, f_hot, hot_batches = ours(
            args.model, weights, images, Path(tmp) / "cache", args.device, args.batch_size
        )
    np.testing.assert_allclose(f_cold, f_plain, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(f_hot, f_cold)
    assert hot_batches == 0, "the second pass ran the model"
    ips = {"plain": n / t_plain, "ours_cold": n / t_cold, "ours_cached": n / t_hot}
    result = {
        "model": args.model,
        "size": args.size,
        "images": n,
        "batch_size": args.batch_size,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "seconds": {
            "plain": round(t_plain, 2),
            "ours_cold": round(t_cold, 2),
            "ours_cached": round(t_hot, 2),
        },
        "images_per_s": {k: round(v, 1) for k, v in ips.items()},
        "cold_over_plain": round(ips["ours_cold"] / ips["plain"], 2),
        "cached_over_plain": round(ips["ours_cached"] / ips["plain"], 2),
        "max_abs_diff_vs_plain": float(np.abs(f_cold - f_plain).max()),
    }
    for k, v in ips.items():
        print(f"{k:12s} {v:8.1f} images/s ({result['seconds'][k]} s for {n} images)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
