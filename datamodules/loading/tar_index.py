"""Index the samples of local shard tars so segments can be read by byte offset.

A WebDataset tar is a sequence of 512-byte headers, each followed by its member's bytes. Walking
the headers with ``tarfile`` seeks over the data, so indexing a shard costs a few small reads per
sample (the headers, ``meta.json`` and ``events.json``), not a pass over the signal. The index
records where each ``signal.npy`` array starts; a worker then reads one whole segment with one
``os.pread`` into its own buffer: no decoder, no per-sample tar parsing, and no memory mapping
(mapped pages would count as the loader's resident memory and grow with the data).

Integrity: a shard that is missing, shorter than its manifest entry, whose last member runs past
the end of the file, whose sample count differs from the manifest, or (with ``verify``) whose
sha256 differs, raises ``CorruptShardError`` naming the shard.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.io.files import sha256_file


class CorruptShardError(RuntimeError):
    """A shard or one of its samples cannot be used; the message names the shard (and sample)."""


@dataclass
class Segment:
    """One stored sample: where its signal lies on disk and what its ``meta.json`` says.

    ``shape`` is the stored ``[channels, time]`` of ``signal.npy``; ``offset`` the byte offset of
    the array data (after the npy header) inside the tar file.
    """

    dataset: int
    shard: str
    path: str
    key: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    meta: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "signal"  # "signal" ([C, T], windowed) or "volume" ([D, H, W], one item)
    # stimulus images stored with the sample: member ("image.<n>.<ext>") -> (offset, size) in the tar
    images: dict[str, tuple[int, int]] | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def name(self) -> str:
        """``<shard>:<key>``, how errors and logs name a sample."""
        return f"{self.shard}:{self.key}"


def index_shard(path: str | Path, dataset: int, entry: dict[str, Any], verify: bool) -> list[Segment]:
    """Index one shard; raise ``CorruptShardError`` naming it when it is unusable.

    ``entry`` is the shard's manifest entry (``name``, ``samples``, ``bytes``, ``sha256``).
    Samples are returned in tar order; their shapes are checked against their ``meta.json``.
    """
    path = Path(path)
    name = entry["name"]
    if not path.is_file():
        raise CorruptShardError(f"shard {name}: missing ({path})")
    size = path.stat().st_size
    if entry.get("bytes") is not None and size != entry["bytes"]:
        raise CorruptShardError(
            f"shard {name}: {size} bytes on disk, manifest says {entry['bytes']} (truncated?)"
        )
    if verify and entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise CorruptShardError(f"shard {name}: sha256 mismatch with the manifest")
    try:
        groups = _scan(path, size)
    except (tarfile.TarError, OSError, ValueError, EOFError) as err:
        raise CorruptShardError(f"shard {name}: unreadable tar ({err})") from err
    segments = []
    previous: dict[str, Any] = {}
    for key, parts in groups.items():
        if "meta.json" not in parts:
            raise CorruptShardError(f"shard {name}: sample {key} has no meta.json")
        _share_fields(parts["meta.json"], previous)
        previous = parts["meta.json"]
        kind = "signal" if "signal.npy" in parts else "volume" if "volume.npy" in parts else None
        if kind is None:
            continue  # neither a signal nor a volume: nothing to load
        offset, dtype, shape = parts[f"{kind}.npy"]
        seg = Segment(dataset, name, str(path), key, offset, dtype, shape, parts["meta.json"], kind=kind)
        seg.events = parts.get("events.json") or []
        if "images" in parts:
            seg.images = parts["images"]
        check_segment_meta(seg)
        segments.append(seg)
    expected = entry.get("samples")
    if expected is not None and len(groups) != expected:
        raise CorruptShardError(f"shard {name}: {len(groups)} samples, manifest says {expected}")
    return segments


# Per-channel lists repeat in every segment of a recording; sharing one copy keeps the index at a
# few kB per segment instead of ~100 kB (positions alone are C lists of 3 floats).
_SHARED_FIELDS = ("ch_names", "ch_types", "units", "positions", "bad_channels", "preprocessing")


def _share_fields(meta: dict[str, Any], previous: dict[str, Any]) -> None:
    for field_name in _SHARED_FIELDS:
        if field_name in meta and field_name in previous and meta[field_name] == previous[field_name]:
            meta[field_name] = previous[field_name]


def check_segment_meta(seg: Segment) -> None:
    """Raise ``CorruptShardError`` when the stored array disagrees with ``meta.json``."""
    meta = seg.meta
    if seg.kind == "volume":
        if len(seg.shape) != 3 or list(seg.shape) != list(meta.get("shape", seg.shape)):
            raise CorruptShardError(
                f"sample {seg.name}: volume shape {list(seg.shape)}, meta says {meta.get('shape')}"
            )
        return
    n_ch = len(meta.get("ch_names") or [])
    if len(seg.shape) != 2 or seg.shape[0] != n_ch or seg.shape[1] != int(meta.get("n_times", seg.shape[1])):
        raise CorruptShardError(
            f"sample {seg.name}: signal shape {list(seg.shape)} does not match meta "
            f"({n_ch} channels, {meta.get('n_times')} samples)"
        )
    if np.dtype(seg.dtype).kind != "f":
        raise CorruptShardError(f"sample {seg.name}: signal dtype {seg.dtype} is not floating point")
    if not float(meta.get("sfreq") or 0) > 0:
        raise CorruptShardError(f"sample {seg.name}: meta has no positive sfreq")


class SegmentReader:
    """Reads whole segments by offset; keeps one open file descriptor per shard.

    Holds no array memory between calls: each read fills a fresh buffer of one segment, or the
    ``out`` buffer a caller passes (``streaming.PooledSegmentReader`` recycles them).
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def read(self, seg: Segment, out: np.ndarray | None = None) -> np.ndarray:
        """The segment's signal ``[C, n_times]`` in its stored dtype; raises on short reads.

        ``out``: a writable uint8 buffer of at least ``seg.nbytes`` to read into (the result is a
        view of it).
        """
        fd = self._fd(seg)
        buf = bytearray(seg.nbytes) if out is None else out[: seg.nbytes]
        got = os.preadv(fd, [buf], seg.offset)
        if got != seg.nbytes:
            raise CorruptShardError(f"sample {seg.name}: read {got} of {seg.nbytes} bytes (truncated shard)")
        return np.frombuffer(buf, dtype=seg.dtype).reshape(seg.shape)

    def read_bytes(self, seg: Segment, offset: int, size: int) -> bytes:
        """``size`` bytes of ``seg``'s shard from ``offset`` (a stored member, e.g. an image)."""
        fd = self._fd(seg)
        buf = bytearray(size)
        got = os.preadv(fd, [buf], offset)
        if got != size:
            raise CorruptShardError(f"sample {seg.name}: read {got} of {size} bytes (truncated shard)")
        return bytes(buf)

    def _fd(self, seg: Segment) -> int:
        fd = self._fds.get(seg.path)
        if fd is None:
            try:
                fd = os.open(seg.path, os.O_RDONLY)
            except OSError as err:
                raise CorruptShardError(f"shard {seg.shard}: cannot open ({err})") from err
            kept = self._fds.setdefault(seg.path, fd)  # another thread may have opened it meanwhile
            if kept != fd:
                os.close(fd)
            fd = kept
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # File descriptors do not survive pickling into DataLoader workers; each opens its own.
        return {"_fds": {}}


def _scan(path: Path, size: int) -> dict[str, dict[str, Any]]:
    """Walk the tar headers: ``{key: {"meta.json": dict, "events.json": list, "signal.npy": (...)}}``."""
    groups: dict[str, dict[str, Any]] = {}
    with tarfile.open(path, "r:") as tf:
        for member in tf:
            if not member.isfile():
                continue
            if member.offset_data + member.size > size:
                raise ValueError(f"member {member.name} runs past the end of the file")
            folder, base = os.path.split(member.name)
            stem, _, ext = base.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            parts = groups.setdefault(key, {})
            if ext in ("meta.json", "events.json"):
                f = tf.extractfile(member)
                assert f is not None
                parts[ext] = json.loads(f.read())
            elif ext in ("signal.npy", "volume.npy"):
                f = tf.extractfile(member)
                assert f is not None
                head = io.BytesIO(f.read(min(member.size, 1 << 16)))
                version = np.lib.format.read_magic(head)
                shape, fortran, dtype = _read_header(head, version)
                if fortran:
                    raise ValueError(f"{member.name}: Fortran-ordered arrays are not supported")
                data_offset = member.offset_data + head.tell()
                if data_offset + int(np.prod(shape)) * dtype.itemsize > member.offset_data + member.size:
                    raise ValueError(f"{member.name}: array data shorter than its header says")
                parts[ext] = (data_offset, dtype.str, tuple(int(s) for s in shape))
            elif ext.startswith("image."):
                # encoded bytes (PNG/JPEG) read later with one pread and decoded per batch
                parts.setdefault("images", {})[ext] = (member.offset_data, member.size)
            else:
                parts[ext] = True
    return groups


def _read_header(f: io.BytesIO, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)
