"""Options of ``neurotrain shard``: one dataclass, the one schema of the CLI, the Python API and the manifest.

Each field carries its command-line help in ``metadata`` (see ``option``): ``help``, and where the
defaults do not fit, ``flag`` (default ``--field-name``), ``metavar`` and ``group`` (the help
section). ``neurotrain.train.data_commands`` builds the ``shard`` parser from these fields and
their type hints, so a new field here is a new command-line option there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Modality = Literal["eeg", "meg", "ieeg", "fmri", "anat"]
OnError = Literal["fail", "skip"]
NonFinite = Literal["fail", "drop", "zero"]
FlatPolicy = Literal["mark", "drop", "fail"]

SIGNALS = "signals (EEG/MEG/iEEG)"
VOLUMES = "fMRI and structural MRI"
# The six rigid-body motion parameters as fMRIPrep names them: the default nuisance regressors.
MOTION_CONFOUNDS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
DATASET = "dataset"
OPTION_GROUPS = (SIGNALS, VOLUMES, DATASET)  # the sections of ``neurotrain shard --help``, in order


def option(
    default: Any = MISSING,
    *,
    help: str,
    factory: Any = MISSING,
    flag: str | None = None,
    metavar: str | tuple[str, ...] | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field whose ``metadata`` holds its command-line help, flag, metavar and group."""
    meta = {"help": help, "flag": flag, "metavar": metavar, "group": group}
    return field(default=default, default_factory=factory, metadata=meta)


def _assumable_units() -> list[str]:
    from neurotrain.datamodules.sharding.readers.units import ASSUMABLE_UNITS

    return ASSUMABLE_UNITS


class ShardError(RuntimeError):
    """A recording could not be sharded. The message starts with the file's path."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class ShardOptions:
    """How recordings become shards. Fields that change shard bytes form the ``fingerprint``."""

    modality: Modality | None = option(None, help="force the modality (null: detect it)")
    sfreq: float | None = option(None, help="resample to this rate (Hz)", group=SIGNALS)
    l_freq: float | None = option(None, help="band-pass low edge (Hz)", group=SIGNALS)
    h_freq: float | None = option(None, help="band-pass high edge (Hz)", group=SIGNALS)
    notch: list[float] = option(factory=list, help="notch frequencies (Hz)", metavar="HZ", group=SIGNALS)
    reference: str | None = option(
        None,
        help="re-reference: 'average', comma-separated channel names, or for sEEG/ECoG/DBS "
        "'bipolar' / 'laplacian' along each electrode",
        group=SIGNALS,
    )
    segment_seconds: float = option(60.0, help="segment length (s)", group=SIGNALS)
    min_segment_seconds: float = option(10.0, help="a shorter tail segment is dropped (s)", group=SIGNALS)
    dtype: Literal["float16", "float32"] = option("float16", help="stored sample type", group=DATASET)
    assume_unit: str | None = option(
        None,
        help="unit of the values of channels whose amplitudes are implausible for their declared (or "
        "missing) unit, e.g. uV; default: store them as read with unit 'unknown'",
        metavar="UNIT",
        group=SIGNALS,
    )
    montage: str = option(
        "auto",
        help="'auto' (file/BIDS positions, else the standard 10-05 montage by name), 'none', "
        "or a standard montage name",
        group=SIGNALS,
    )
    channel_types: list[str] = option(
        factory=list,
        help="keep only these channel types (empty: all but stim)",
        metavar="TYPE",
        group=SIGNALS,
    )
    stimuli: str | None = option(
        None,
        help="store each event's stimulus image (events.tsv stim_file relative to DIR, "
        "else DIR/<label>.png|jpg|jpeg) for brain-image alignment",
        metavar="DIR",
        group=SIGNALS,
    )
    atlas: str | None = option(None, help="label image for fMRI parcel means (.nii/.nii.gz)", group=VOLUMES)
    atlas_labels: str | None = option(
        None, help="text file with one parcel name per line (increasing label order)", group=VOLUMES
    )
    atlas_background: float = option(0.0, help="atlas value that is not a parcel", group=VOLUMES)
    tr: float | None = option(None, help="override the fMRI repetition time (s)", group=VOLUMES)
    surface_atlas: list[str] = option(
        factory=list,
        help="surface fMRI (.func.gii, surface .mgz/.mgh): the parcellation, one file per hemisphere "
        "(FreeSurfer .annot, .label.gii or per-vertex .npy; lh./rh. or hemi-L/hemi-R in the names, "
        "else left then right), or one path with {hemi} (lh/rh or L/R); --atlas-background is not a parcel",
        metavar="FILE",
        group=VOLUMES,
    )
    surface_mesh: list[str] = option(
        factory=list,
        help="surface fMRI parcel positions: fsaverage5 (shipped by nilearn; the default for 10242 "
        "vertices), an fsaverage name found in $SUBJECTS_DIR/$FREESURFER_HOME, or the surface files "
        "(lh.pial rh.pial, *.surf.gii, or one path with {hemi})",
        metavar="MESH",
        group=VOLUMES,
    )
    confounds: str | None = option(
        None,
        help="fMRI nuisance regressors for every run: a TSV with a header (columns chosen by "
        "--confounds-columns) or a plain numeric text file, one row per volume; without it a BIDS "
        "*_desc-confounds_timeseries.tsv beside a run is used",
        metavar="FILE",
        group=VOLUMES,
    )
    confounds_columns: list[str] = option(
        factory=lambda: list(MOTION_CONFOUNDS),
        help="confound TSV columns regressed out of fMRI parcel series (those present; "
        "'<name>_derivative1' columns of these are added when present)",
        metavar="NAME",
        group=VOLUMES,
    )
    detrend: Literal["none", "linear"] = option(
        "none", help="fMRI: remove a linear trend from each parcel series (nilearn)", group=VOLUMES
    )
    high_pass: float | None = option(None, help="fMRI high-pass cutoff (Hz), e.g. 0.008", group=VOLUMES)
    low_pass: float | None = option(None, help="fMRI low-pass cutoff (Hz)", group=VOLUMES)
    fmri_normalize: Literal["zscore", "psc", "none"] = option(
        "zscore",
        help="each fMRI time series: z-score, percent signal change (psc), or as recorded",
        group=VOLUMES,
    )
    voxel_size: float = option(2.0, help="structural MRI grid spacing (mm)", group=VOLUMES)
    volume_shape: tuple[int, int, int] = option(
        (96, 112, 96), help="structural MRI grid shape (voxels)", metavar=("D", "H", "W"), group=VOLUMES
    )
    nonfinite: NonFinite = option(
        "fail", help="NaN/inf samples: fail, drop the segment, or set to zero", group=DATASET
    )
    flat: FlatPolicy = option("mark", help="flat channels: mark as bad, drop, or fail", group=SIGNALS)
    # A channel whose std is below flat_threshold × its type's median std is flat; above
    # noisy_threshold × it is noisy and marked bad (0: never).
    flat_threshold: float = option(1e-3, help="std below this × type median = flat", group=SIGNALS)
    noisy_threshold: float = option(
        5.0, help="std above this × type median: noisy, marked bad (0: off)", group=SIGNALS
    )
    stats: Literal["mean_std", "robust"] = option(
        "robust", help="normalisation statistics the loader applies (both are recorded)", group=DATASET
    )
    split_ratios: tuple[float, float, float] = option(
        (0.8, 0.1, 0.1),
        help="subject split ratios",
        flag="--split",
        metavar=("TRAIN", "VAL", "TEST"),
        group=DATASET,
    )
    split_seed: int = option(0, help="seed of the subject split", group=DATASET)
    split_by: Literal["subject", "stimulus"] = option(
        "subject",
        help="split by subject, or by stimulus image (with --stimuli: every repeat of an image in "
        "one split, every recording in every split; see sharding/stimulus_splits.py)",
        group=DATASET,
    )
    shard_size_mb: float = option(256.0, help="target shard size (MB)", group=DATASET)
    on_error: OnError = option(
        "fail",
        help="a bad file: stop (exit 1, no manifest) or record it under 'skipped' and go on",
        group=DATASET,
    )
    workers: int = option(1, help="recordings processed in parallel", group=DATASET)

    # Fields that do not change what a recording's shards contain.
    _NOT_IN_FINGERPRINT = ("stats", "split_ratios", "split_seed", "split_by", "on_error", "workers")

    def __post_init__(self) -> None:
        self.notch = [float(f) for f in self.notch]
        self.channel_types = list(self.channel_types)
        self.surface_atlas = [str(p) for p in self.surface_atlas]
        self.surface_mesh = [str(p) for p in self.surface_mesh]
        self.confounds_columns = [str(c) for c in self.confounds_columns]
        if self.confounds is not None:
            self.confounds = str(self.confounds)
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
            (
                self.assume_unit is None or self.assume_unit in _assumable_units(),
                f"assume_unit must be one of {', '.join(_assumable_units())}",
            ),
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
            (self.split_by in ("subject", "stimulus"), "split_by must be subject or stimulus"),
            (
                self.split_by != "stimulus" or self.stimuli is not None,
                "split_by stimulus needs --stimuli DIR (the images it splits)",
            ),
            (self.voxel_size > 0, "voxel_size must be > 0"),
            (self.high_pass is None or self.high_pass > 0, "high_pass must be > 0 Hz"),
            (self.low_pass is None or self.low_pass > 0, "low_pass must be > 0 Hz"),
            (
                self.high_pass is None or self.low_pass is None or self.high_pass < self.low_pass,
                "high_pass must be < low_pass",
            ),
            (len(self.surface_atlas) <= 2, "surface_atlas: one file per hemisphere, two at most"),
            (len(self.surface_mesh) <= 2, "surface_mesh: one name, or one file per hemisphere"),
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
        for later in ("stimuli", "assume_unit", "surface_atlas", "surface_mesh", "confounds"):
            if d[later] in (None, []):  # options added later: unset, they leave earlier
                del d[later]  # fingerprints as they were
        for later, default in (
            ("confounds_columns", list(MOTION_CONFOUNDS)),
            ("detrend", "none"),
            ("high_pass", None),
            ("low_pass", None),
        ):
            if d[later] == default:
                del d[later]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardOptions:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown shard options: {', '.join(sorted(unknown))}")
        return cls(**d)
