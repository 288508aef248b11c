"""Stimulus images of event epochs, for brain–image alignment (``ShardDataModule(images=True)``).

Shards written with ``neurotrain shard --stimuli DIR`` hold each segment's stimulus images as
encoded members ``image.<n>.<ext>`` and each event of ``events.json`` names its member in an
``image`` field. The index (``tar_index``) records the members' byte ranges; a batch reads the
images of its epochs with one ``pread`` each and decodes them with PIL: RGB, resized to
``size × size`` (bilinear) and normalised with the ImageNet mean and std (timm's default for
ResNet-type models), giving ``image`` float32 [B, 3, size, size].

Memory stays flat: nothing is decoded ahead of a batch; a small LRU cache keeps the last decoded
images (stimulus sets repeat), and the event -> member tables are kept for a bounded number of
segments.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from neurotrain.datamodules.loading.tar_index import CorruptShardError, Segment, SegmentReader
from neurotrain.datamodules.loading.windows import WindowSpec

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes -> float32 [3, size, size]: RGB, resized, ImageNet-normalised."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = np.asarray(rgb, dtype=np.float32) * (1.0 / 255.0)  # [H, W, 3]
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class EventImages:
    """Finds and decodes the stimulus image of each epoch window (epochs mode only).

    A window is identified by its segment, start sample and class, as ``windows.event_windows``
    computes them: ``start = round((onset + tmin) * sfreq)``.
    """

    def __init__(
        self,
        segments: list[Segment],
        spec: WindowSpec,
        size: int = 224,
        cache_images: int = 64,
        cache_segments: int = 256,
    ) -> None:
        if spec.mode != "epochs":
            raise ValueError("stimulus images pair with event epochs: use mode='epochs'")
        self.segments = segments
        self.spec = spec
        self.size = int(size)
        self.cache_images = cache_images
        self.cache_segments = cache_segments
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._decoded: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._tables: OrderedDict[int, dict[tuple[int, int], str]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # Caches and the lock stay behind; each DataLoader worker process builds its own.
        state = dict(self.__dict__)
        for k in ("_lock", "_decoded", "_tables"):
            state.pop(k)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def check(self) -> None:
        """Raise when an event that gives an epoch has no image, or names a member the shard lacks."""
        label_map = self.spec.label_map or {}
        missing: dict[str, str] = {}
        for seg in self.segments:
            if seg.kind != "signal":
                continue
            for ev in seg.events:
                label = ev.get("label")
                if label not in label_map or ev.get("selected") is False:
                    continue
                member = ev.get("image")
                if member is None:
                    missing.setdefault(str(label), f"{seg.name} at {float(ev['onset']):.3f} s")
                elif member not in (seg.images or {}):
                    raise CorruptShardError(
                        f"sample {seg.name}: event '{label}' names image {member}, which the shard lacks"
                    )
        if missing:
            first = ", ".join(f"'{k}' (e.g. {v})" for k, v in list(missing.items())[:5])
            raise ValueError(
                f"events without a stimulus image: {first}; shard with --stimuli DIR, or leave "
                "these labels out of label_map"
            )

    def batch(self, reader: SegmentReader, rows: list[tuple[int, int, int]]) -> torch.Tensor:
        """``image`` float32 [B, 3, size, size] for windows ``(segment index, start, class)``."""
        S = self.size
        out = np.empty((len(rows), 3, S, S), dtype=np.float32)
        for j, (i, start, label) in enumerate(rows):
            seg = self.segments[i]
            member = self._table(i).get((start, label))
            if member is None or seg.images is None or member not in seg.images:
                raise CorruptShardError(
                    f"sample {seg.name}: no stimulus image for the epoch at sample {start}"
                )
            offset, nbytes = seg.images[member]
            out[j] = self._decode(reader, seg, offset, nbytes)
        return torch.from_numpy(out)

    def _table(self, i: int) -> dict[tuple[int, int], str]:
        """``{(start, class): member}`` of segment ``i`` (bounded LRU over segments)."""
        with self._lock:
            table = self._tables.get(i)
            if table is not None:
                self._tables.move_to_end(i)
                return table
        seg = self.segments[i]
        sfreq = float(seg.meta["sfreq"])
        label_map = self.spec.label_map or {}
        table = {}
        for ev in seg.events:
            label = ev.get("label")
            if label in label_map and ev.get("image") is not None:
                start = int(round((float(ev["onset"]) + self.spec.tmin) * sfreq))
                table.setdefault((start, label_map[label]), ev["image"])
        with self._lock:
            self._tables[i] = table
            while len(self._tables) > self.cache_segments:
                self._tables.popitem(last=False)
        return table

    def _decode(self, reader: SegmentReader, seg: Segment, offset: int, nbytes: int) -> np.ndarray:
        key = (seg.path, offset)
        with self._lock:
            hit = self._decoded.get(key)
            if hit is not None:
                self._decoded.move_to_end(key)
                return hit
        try:
            x = decode_image(reader.read_bytes(seg, offset, nbytes), self.size)
        except CorruptShardError:
            raise
        except Exception as exc:  # PIL raises OSError, ValueError, DecompressionBombError ...
            raise CorruptShardError(f"sample {seg.name}: stimulus image cannot be decoded ({exc})") from exc
        with self._lock:
            self._decoded[key] = x
            while len(self._decoded) > self.cache_images:
                self._decoded.popitem(last=False)
        return x
