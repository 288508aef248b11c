"""`models.image_features`: timm and OpenCLIP features from local weights, offline, cached.

The "local weights" are seeded random initialisations saved to tmp files (no pretrained file can
ship with the tests); the stimuli are the real photographs of ``tests/stimulus_images.py``.
Models are small and run at 64 × 64 px.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from stimulus_images import SOURCES, _sources, stimulus_images

from neurotrain.models import feature_cache
from neurotrain.models.image_features import ImageFeatureExtractor, WeightsMismatchError

SIZE = 64


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [s.image for s in stimulus_images(SIZE)[::6]]  # 9 distinct stimuli


def _timm_file(folder: Path, name: str, seed: int, suffix: str = ".safetensors", **kw) -> Path:
    torch.manual_seed(seed)
    state = {
        k: v.contiguous() for k, v in timm.create_model(name, pretrained=False, **kw).state_dict().items()
    }
    path = folder / f"{name}-{seed}{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("weights")
    return {
        "resnet18": _timm_file(d, "resnet18", 1),
        "resnet18_pth": _timm_file(d, "resnet18", 2, ".pth"),
        "vit": _timm_file(d, "vit_tiny_patch16_224", 3, img_size=SIZE),
    }


def test_stimulus_images_are_distinct_real_images() -> None:
    stimuli = stimulus_images(32)
    assert len(stimuli) == 54 and list(_sources()) == SOURCES
    assert len({s.name for s in stimuli}) == 54
    assert len({s.image.tobytes() for s in stimuli}) == 54
    assert all(s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8 for s in stimuli)
    assert sum(s.category == "face" for s in stimuli) == 16
    assert all(s.image.std() > 5 for s in stimuli)  # real pictures, not blank crops


def test_timm_layers_pools_shapes_and_the_loaded_weights(weights, images, tmp_path) -> None:
    fx = ImageFeatureExtractor(
        "resnet18", weights["resnet18"], ["pre_logits", "layer3", 2, "fc"], img_size=SIZE, cache_dir=None
    )
    out = fx(images)
    assert {k: v.shape for k, v in out.items()} == {
        "pre_logits": (9, 512),
        "layer3": (9, 256),
        2: (9, 128),
        "fc": (9, 1000),
    }
    # The plain timm code a user would write, with the same file: identical features.
    model = timm.create_model("resnet18", pretrained=False).eval()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(weights["resnet18"])))
    cfg = timm.data.resolve_model_data_config(model)
    cfg["input_size"] = (3, SIZE, SIZE)
    tf = timm.data.create_transform(**cfg)
    from PIL import Image

    with torch.no_grad():
        x = torch.stack([tf(Image.fromarray(im)) for im in images])
        ref = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
        logits = model(x).numpy()
    np.testing.assert_allclose(out["pre_logits"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["fc"], logits, rtol=1e-4, atol=1e-4)
    # Another file (a .pth) is other weights: other features.
    other = ImageFeatureExtractor("resnet18", weights["resnet18_pth"], img_size=SIZE, cache_dir=None)
    assert np.abs(other.extract(images) - ref).max() > 1e-2
    for pool, shape in (("flatten", (9, 256 * 4 * 4)), ("none", (9, 256, 4, 4))):
        f = ImageFeatureExtractor(
            "resnet18", weights["resnet18"], "layer3", pool, img_size=SIZE, cache_dir=None
        )
        assert f.extract(images).shape == shape
    np.testing.assert_allclose(f.extract(images).mean(axis=(2, 3)), out["layer3"], rtol=1e-5, atol=1e-6)


def test_vit_is_deterministic_and_layers_differ(weights, images) -> None:
    kw = {"img_size": SIZE, "cache_dir": None}
    layers = ["blocks.2", "blocks.10", -1, "forward_features"]
    a = ImageFeatureExtractor("vit_tiny_patch16_224", weights["vit"], layers, **kw)(images)
    b = ImageFeatureExtractor("vit_tiny_patch16_224", weights["vit"], layers, **kw)(images)
    for layer in layers:
        np.testing.assert_array_equal(a[layer], b[layer])
        assert a[layer].shape == (9, 192)
    assert np.abs(a["blocks.2"] - a["blocks.10"]).max() > 1e-2
    # Features separate the images: not a constant vector.
    assert np.std(a["blocks.10"], axis=0).mean() > 1e-3
    tokens = ImageFeatureExtractor("vit_tiny_patch16_224", weights["vit"], "blocks.2", "none", **kw)
    assert tokens.extract(images).shape == (9, 1 + (SIZE // 16) ** 2, 192)


def test_weights_must_be_given_and_fit(weights, tmp_path) -> None:
    with pytest.raises(ValueError, match="weights='random'"):
        ImageFeatureExtractor("resnet18", None)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        ImageFeatureExtractor("resnet18", tmp_path / "nope.safetensors")
    with pytest.raises(WeightsMismatchError) as err:
        ImageFeatureExtractor("resnet34", weights["resnet18"], cache_dir=None)
    msg = str(err.value)
    assert str(weights["resnet18"]) in msg and "resnet34" in msg
    assert "missing (layer1.2.conv1.weight" in msg and len(msg) < 1200
    with pytest.raises(WeightsMismatchError) as err:
        ImageFeatureExtractor("vit_small_patch16_224", weights["vit"], img_size=SIZE, cache_dir=None)
    msg = str(err.value)
    assert "shape mismatches" in msg and "file [192] vs model [384]" in msg and len(msg) < 1200
    with pytest.raises(ValueError, match="no layer 'layer9'.*layer1"):
        ImageFeatureExtractor("resnet18", "random", "layer9", cache_dir=None)


def test_headless_file_removes_the_head(weights, images, tmp_path) -> None:
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(str(weights["resnet18"])).items() if not k.startswith("fc.")}
    save_file(state, str(tmp_path / "headless.safetensors"))
    fx = ImageFeatureExtractor("resnet18", tmp_path / "headless.safetensors", img_size=SIZE, cache_dir=None)
    full = ImageFeatureExtractor("resnet18", weights["resnet18"], img_size=SIZE, cache_dir=None)
    np.testing.assert_array_equal(fx.extract(images), full.extract(images))
    with pytest.raises(ValueError, match="no layer .fc.: it is the classifier.*headless"):
        ImageFeatureExtractor("resnet18", tmp_path / "headless.safetensors", "fc", cache_dir=None)


def _count_forwards(fx: ImageFeatureExtractor) -> list[int]:
    calls = [0]
    fx.model.conv1.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_cache_hits_and_misses(weights, images, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    w = tmp_path / "w.safetensors"
    w.write_bytes(weights["resnet18"].read_bytes())
    hashed = []
    real_sha = feature_cache.sha256_file
    monkeypatch.setattr(feature_cache, "sha256_file", lambda p: hashed.append(p) or real_sha(p))

    def make(layers, path=w):
        fx = ImageFeatureExtractor("resnet18", path, layers, img_size=SIZE, cache_dir=cache, batch_size=4)
        return fx, _count_forwards(fx)

    fx, calls = make(["layer2", "layer3"])
    first = fx(images)
    assert calls[0] == 3  # 9 images in batches of 4
    fx, calls = make(["layer3"])  # a sweep asking for one layer extracted before: a hit
    again = fx(images)
    assert calls[0] == 0
    np.testing.assert_array_equal(again["layer3"], first["layer3"])
    assert len(hashed) == 1  # the weights file is hashed once (path + size + mtime)
    fx, calls = make(["layer3", "layer4"])  # a new layer misses, computed for every image
    fx(images + [images[0]])
    assert calls[0] == 3
    fx, calls = make(["layer3"])  # a new image alone is computed
    fx([np.ascontiguousarray(images[0][::-1])])
    assert calls[0] == 1
    # Changed weights (same path, new contents and mtime): hashed again, and a miss.
    torch.manual_seed(7)
    save_file(timm.create_model("resnet18").state_dict(), str(w))
    fx, calls = make(["layer3"])
    changed = fx(images)["layer3"]
    assert calls[0] == 3 and len(hashed) == 2
    assert np.abs(changed - first["layer3"]).max() > 1e-3
    # A new process reads the stamp of the file's sha256 instead of hashing it again.
    feature_cache._WEIGHTS_SHA.clear()
    make(["layer3"])
    assert len(hashed) == 2
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} == {".npy", ".json"}
    assert not [p for p in files if p.name.endswith(".tmp")]
    np.load(next(p for p in files if p.suffix == ".npy"), allow_pickle=False)


def test_nothing_touches_the_network(weights, images, tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    with pytest.raises(AssertionError, match="network access"):  # the guard itself works
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    fx = ImageFeatureExtractor("resnet18", weights["resnet18_pth"], img_size=SIZE, cache_dir=tmp_path)
    assert fx.extract(images[:2]).shape == (2, 512)
    oc = ImageFeatureExtractor("open_clip:ViT-S-32", "random", img_size=SIZE, cache_dir=tmp_path)
    assert oc.extract(images[:2]).shape == (2, 384)


def test_open_clip_whole_clip_and_tower_files(images, tmp_path) -> None:
    import open_clip
    from PIL import Image

    torch.manual_seed(5)
    clip = open_clip.create_model("ViT-S-32", pretrained=None, force_image_size=SIZE).eval()
    torch.save(clip.state_dict(), tmp_path / "clip.bin")  # whole CLIP: visual.* and text keys
    save_file(
        {k: v.contiguous() for k, v in clip.visual.state_dict().items()}, str(tmp_path / "visual.safetensors")
    )
    kw = {"img_size": SIZE, "cache_dir": None}
    layers = ["embedding", 3, "transformer.resblocks.3"]
    whole = ImageFeatureExtractor("open_clip:ViT-S-32", tmp_path / "clip.bin", layers, **kw)(images)
    tower = ImageFeatureExtractor("open_clip:ViT-S-32", tmp_path / "visual.safetensors", layers, **kw)(images)
    preprocess = open_clip.image_transform(SIZE, is_train=False)
    with torch.no_grad():
        ref = clip.encode_image(torch.stack([preprocess(Image.fromarray(im)) for im in images])).numpy()
    for layer in layers:
        np.testing.assert_array_equal(whole[layer], tower[layer])
    np.testing.assert_allclose(whole["embedding"], ref, rtol=1e-4, atol=1e-5)
    assert whole[3].shape == (9, 384) and whole["transformer.resblocks.3"].shape == (9, 384)
    assert np.abs(whole[3] - whole["transformer.resblocks.3"]).max() > 1e-3  # tokens vs patch grid
    with pytest.raises(WeightsMismatchError, match="ViT-M-32.*shape mismatches"):
        ImageFeatureExtractor("open_clip:ViT-M-32", tmp_path / "visual.safetensors", **kw)
