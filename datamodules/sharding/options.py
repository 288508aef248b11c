"""Options of ``neurotrain shard``: one dataclass, used by the CLI, the Python API and the manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

OnError = Literal["fail", "skip"]
NonFinite = Literal["fail", "drop", "zero"]
FlatPolicy = Literal["mark", "drop", "fail"]


class ShardError(RuntimeError):
    """A recording could not be sharded. The message starts with the file's path."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class ShardOptions:
    """How recordings become shards. Fields that change shard bytes form the ``fingerprint``."""

    modality: str | None = None  # force "eeg"|"meg"|"ieeg"|"fmri"|"anat"; None = detect
    sfreq: float | None = None  # resample signals to this rate (Hz)
    l_freq: float | None = None  # band-pass low edge (Hz)
    h_freq: float | None = None  # band-pass high edge (Hz)
    notch: list[float] = field(default_factory=list)  # line-noise frequencies (Hz)
    reference: str | None = None  # "average" or comma-separated channel names
    segment_seconds: float = 60.0
    min_segment_seconds: float = 10.0  # a shorter tail segment is dropped
    dtype: Literal["float16", "float32"] = "float16"
    montage: str = "auto"  # "auto": file/BIDS positions, else the standard 10-05 montage by name; "none"; or a montage name
    channel_types: list[str] = field(default_factory=list)  # keep only these types (empty: all but stim)
    # stimulus images: events.tsv ``stim_file`` (relative to this folder), else ``<label>.png|jpg|jpeg``
    stimuli: str | None = None
    atlas: str | None = None  # fMRI label image (.nii/.nii.gz)
    atlas_labels: str | None = None  # text file, one parcel name per line, in increasing label order
    atlas_background: float = 0.0  # label value that is not a parcel
    tr: float | None = None  # override the fMRI repetition time (s)
    fmri_normalize: Literal["zscore", "psc", "none"] = "zscore"
    voxel_size: float = 2.0  # structural MRI grid (mm)
    volume_shape: tuple[int, int, int] = (96, 112, 96)
    nonfinite: NonFinite = "fail"
    flat: FlatPolicy = "mark"
    # a channel whose std is below flat_threshold × its type's median std is flat; above
    # noisy_threshold × it is noisy and marked bad (0: never)
    flat_threshold: float = 1e-3
    noisy_threshold: float = 5.0
    stats: Literal["mean_std", "robust"] = "robust"
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    shard_size_mb: float = 256.0
    on_error: OnError = "fail"
    workers: int = 1

    # Fields that do not change what a recording's shards contain.
    _NOT_IN_FINGERPRINT = ("stats", "split_ratios", "split_seed", "on_error", "workers")

    def __post_init__(self) -> None:
        self.notch = [float(f) for f in self.notch]
        self.channel_types = list(self.channel_types)
        if self.stimuli is not None:
            self.stimuli = str(self.stimuli)
        self.volume_shape = tuple(int(v) for v in self.volume_shape)  # type: ignore[assignment]
        self.split_ratios = tuple(float(r) for r in self.split_ratios)  # type: ignore[assignment]
        checks = [
            (self.segment_seconds > 0, "segment_seconds must be > 0"),
            (
                self.min_segment_seconds <= self.segment_seconds,
                "min_segment_seconds must be <= segment_seconds",
            ),
            (self.dtype in ("float16", "float32"), "dtype must be float16 or float32"),
            (self.nonfinite in ("fail", "drop", "zero"), "nonfinite must be fail, drop or zero"),
            (self.flat in ("mark", "drop", "fail"), "flat must be mark, drop or fail"),
            (self.on_error in ("fail", "skip"), "on_error must be fail or skip"),
            (self.stats in ("mean_std", "robust"), "stats must be mean_std or robust"),
            (
                len(self.split_ratios) == 3 and min(self.split_ratios) >= 0,
                "split_ratios: three non-negative numbers",
            ),
            (
                sum(self.split_ratios) > 0 and self.split_ratios[0] > 0,
                "split_ratios: the train ratio must be > 0",
            ),
            (self.workers >= 1, "workers must be >= 1"),
            (self.voxel_size > 0, "voxel_size must be > 0"),
            (
                self.stimuli is None or Path(self.stimuli).expanduser().is_dir(),
                f"stimuli: {self.stimuli} is not a folder",
            ),
            (
                self.l_freq is None or self.h_freq is None or self.l_freq < self.h_freq,
                "l_freq must be < h_freq",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all options."""
        d = asdict(self)
        d["volume_shape"] = list(self.volume_shape)
        d["split_ratios"] = list(self.split_ratios)
        return d

    def fingerprint(self) -> str:
        """sha256 of the options that change shard contents (used to decide what to redo on resume)."""
        d = {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_FINGERPRINT}
        if d["stimuli"] is None:  # an option added later: unset, it leaves earlier fingerprints as they were
            del d["stimuli"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardOptions:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown shard options: {', '.join(sorted(unknown))}")
        return cls(**d)
