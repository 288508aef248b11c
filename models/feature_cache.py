"""The on-disk cache of image features: one ``.npy`` per (model, weights, layer, pool, image).

A sweep over layers, pools or encoding models asks for the same images many times; each image's
features are stored once under

    <root>/<key>/<image sha256[:2]>/<image sha256>.npy     float32, the image's features [F] (or
                                                           the unpooled [C, H, W] / [N, D])
    <root>/<key>/key.json                                   what ``key`` stands for, readable

where ``key`` is the sha256 of the canonical JSON of ``{model, weights sha256, layer, pool,
preprocessing, library versions}``: a changed weights file, layer, pool or input size is another
folder, so it misses. Files are written atomically (``datamodules.io.files.atomic_path``) and read
with ``np.load(allow_pickle=False)``: nothing is unpickled, and an interrupted write leaves nothing.

The sha256 of a weights file is computed once: it is remembered per (absolute path, size,
mtime_ns) in memory and in ``<root>/weights/<sha256 of the path>.json``, so a new process does not
re-read a large file, and a rewritten file (new mtime or size) is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.io.cache import cache_root
from neurotrain.datamodules.io.files import atomic_path, atomic_write_json, dumps_json, sha256_file

_WEIGHTS_SHA: dict[tuple[str, int, int], str] = {}


def default_cache_dir() -> Path:
    """``$NEUROTRAIN_CACHE/image_features`` (default ``~/.cache/neurotrain/image_features``)."""
    return cache_root() / "image_features"


def image_sha256(rgb: np.ndarray) -> str:
    """sha256 of a decoded image: its shape, dtype and pixel bytes (uint8 [H, W, 3]).

    Hashing the decoded pixels (not a file's bytes) gives a PNG and the same array one key.
    """
    rgb = np.ascontiguousarray(rgb)
    h = hashlib.sha256(f"{rgb.dtype.str}{rgb.shape}".encode())
    h.update(rgb.data)
    return h.hexdigest()


def weights_sha256(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """sha256 of a weights file, hashed once per (path, size, mtime_ns); ``root`` keeps the stamp."""
    path = Path(path).resolve()
    st = path.stat()
    ident = (str(path), st.st_size, st.st_mtime_ns)
    if ident in _WEIGHTS_SHA:
        return _WEIGHTS_SHA[ident]
    stamp = None
    if root is not None:
        stamp = Path(root) / "weights" / f"{hashlib.sha256(str(path).encode()).hexdigest()}.json"
        try:
            saved = json.loads(stamp.read_text())
            if (saved["path"], saved["size"], saved["mtime_ns"]) == ident:
                _WEIGHTS_SHA[ident] = saved["sha256"]
                return saved["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no stamp, or a stale or unreadable one: hash the file
    digest = sha256_file(path)
    _WEIGHTS_SHA[ident] = digest
    if stamp is not None:
        atomic_write_json(stamp, {"path": ident[0], "size": ident[1], "mtime_ns": ident[2], "sha256": digest})
    return digest


class FeatureCache:
    """Per-image features of one (model, weights, layer, pool) ``key``, as ``.npy`` files.

    ``fields`` is any JSON-able description; equal fields give the same folder.
    """

    def __init__(self, root: str | os.PathLike, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.key = hashlib.sha256(dumps_json(fields).encode()).hexdigest()
        self.folder = Path(root) / self.key
        self._described = (self.folder / "key.json").is_file()

    def path(self, image_sha: str) -> Path:
        return self.folder / image_sha[:2] / f"{image_sha}.npy"

    def get(self, image_sha: str) -> np.ndarray | None:
        """The stored features of one image, or None (absent or unreadable: computed again)."""
        try:
            return np.load(self.path(image_sha), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, image_sha: str, features: np.ndarray) -> None:
        if not self._described:
            atomic_write_json(self.folder / "key.json", self.fields)
            self._described = True
        with atomic_path(self.path(image_sha), fsync=False) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(features), allow_pickle=False)
