"""Real natural stimulus images from the files that ship inside scikit-image (no download).

``stimulus_images(size)`` returns 54 distinct stimuli, uint8 [size, size, 3], in a fixed order:

- 19 photographs of ``skimage.data`` × 2 crops each = 38: ``<name>.full`` (the centred square of
  side min(H, W)) and ``<name>.zoom`` (the centred square of half that side, enlarged). Names
  and categories (``SOURCES``):
  person: ``astronaut``, ``camera`` (a cameraman); animal: ``chelsea`` (a cat); object:
  ``coffee``, ``rocket``, ``coins``, ``clock``, ``motorcycle_left``, ``motorcycle_right``;
  scene/astronomy: ``hubble_deep_field``, ``moon``; text: ``page``, ``text``; texture:
  ``brick``, ``grass``, ``gravel``; microscopy: ``immunohistochemistry``, ``cell``, ``retina``.
- 16 faces of ``skimage.data.lfw_subset()`` (its first 100 of 200 are faces, 25 × 25 grey):
  ``lfw_face_00`` … ``lfw_face_15``, category ``face``.

Grey images are repeated to 3 channels; every crop is resized with anti-aliasing
(``skimage.transform.resize``). ``save_stimuli(folder, size)`` writes them as PNG files
(``<name>.png``), a folder ``neurotrain shard --stimuli`` or an image-feature run can read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_FACES = 16


def _sources() -> dict[str, tuple[Callable[[], np.ndarray], str]]:
    import skimage.data as d

    return {
        "astronaut": (d.astronaut, "person"),
        "chelsea": (d.chelsea, "animal"),
        "camera": (d.camera, "person"),
        "coffee": (d.coffee, "object"),
        "rocket": (d.rocket, "object"),
        "coins": (d.coins, "object"),
        "clock": (d.clock, "object"),
        "motorcycle_left": (lambda: d.stereo_motorcycle()[0], "object"),
        "motorcycle_right": (lambda: d.stereo_motorcycle()[1], "object"),
        "hubble_deep_field": (d.hubble_deep_field, "scene"),
        "moon": (d.moon, "scene"),
        "page": (d.page, "text"),
        "text": (d.text, "text"),
        "brick": (d.brick, "texture"),
        "grass": (d.grass, "texture"),
        "gravel": (d.gravel, "texture"),
        "immunohistochemistry": (d.immunohistochemistry, "microscopy"),
        "cell": (d.cell, "microscopy"),
        "retina": (d.retina, "microscopy"),
    }


SOURCES = [
    "astronaut",
    "chelsea",
    "camera",
    "coffee",
    "rocket",
    "coins",
    "clock",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "moon",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "immunohistochemistry",
    "cell",
    "retina",
]


@dataclass(frozen=True)
class Stimulus:
    name: str  # "<source>.full", "<source>.zoom" or "lfw_face_NN"
    category: str
    image: np.ndarray  # uint8 [size, size, 3]


def stimulus_images(size: int = 64) -> list[Stimulus]:
    """The 54 stimuli (see module doc), each uint8 [size, size, 3], always in the same order."""
    import skimage.data

    out = []
    for name, (load, category) in _sources().items():
        rgb = _rgb(load())
        h, w = rgb.shape[:2]
        side = min(h, w)
        for crop, s in (("full", side), ("zoom", side // 2)):
            top, left = (h - s) // 2, (w - s) // 2
            out.append(
                Stimulus(f"{name}.{crop}", category, _resize(rgb[top : top + s, left : left + s], size))
            )
    faces = skimage.data.lfw_subset()[:N_FACES]  # float64 [16, 25, 25] in [0, 1]
    for i, face in enumerate(faces):
        out.append(Stimulus(f"lfw_face_{i:02d}", "face", _resize(_rgb(face), size)))
    return out


def save_stimuli(folder: str | Path, size: int = 64) -> list[Path]:
    """Write every stimulus as ``folder/<name>.png``; the paths, in `stimulus_images` order."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in stimulus_images(size):
        path = folder / f"{s.name}.png"
        Image.fromarray(s.image).save(path)
        paths.append(path)
    return paths


def _rgb(image: np.ndarray) -> np.ndarray:
    """bool / float [0, 1] / uint8, grey or RGB(A) -> uint8 [H, W, 3]."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    out = resize(rgb, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
