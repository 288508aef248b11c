"""Read EEG/MEG/iEEG recordings through MNE (and mne-bids) into one in-memory form.

``read_signal`` returns a ``SignalRecording``: data scaled to stored units (µV, fT, fT/cm),
channel names, types, positions (metres, head frame) or NaN where a channel has none, the
bad channels, and the events as (onset seconds, duration, label). Preprocessing (notch,
band-pass, re-reference, resample) is applied here, in MNE, and recorded.

A BIDS EEG/iEEG recording has its sidecars applied by ``readers.bids`` (what ``read_raw_bids``
does, without its copies of the annotations), and through ``mne_bids.read_raw_bids`` whenever
that does not reproduce it exactly. A plain EDF is decoded by ``readers.edf`` straight into
float32 (no float64 copy of the recording); anything else is loaded by MNE.

MNE only warns about some damaged files (an EDF whose header promises more records than the
file holds is read "inferring from the file size"). Those warnings become errors here: a
truncated recording must not be sharded as if it were whole.

Errors name their real cause: a ``.fif`` that does not start with a FIF file-id tag is "not a
FIF file" (MNE's own message for a short one is an ``AttributeError`` about ``NoneType``); a BIDS
recording's ``channels.tsv`` is checked before mne-bids parses it (empty, not UTF-8, no
``name``/``type`` column, rows of another width, a channel twice), and when mne-bids still fails on
a recording whose file MNE reads by itself, the error names the sidecar, not the EDF.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.format.channel_types import UNIT_SCALE
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.bids import coordinate_system, read_bids
from neurotrain.datamodules.sharding.readers.checks import channel_mismatch, channels_tsv_problem, check_fif
from neurotrain.datamodules.sharding.readers.edf import read_edf_scaled
from neurotrain.datamodules.sharding.readers.nwb import read_nwb
from neurotrain.datamodules.sharding.readers.rereference import SCHEMES, rereference
from neurotrain.datamodules.sharding.readers.units import check_units
from neurotrain.datamodules.sharding.sources import SourceItem

# MNE warnings that mean the file is damaged, not merely unusual.
_FATAL_WARNINGS = re.compile(
    r"(does not match the file size|truncat|not enough data|fewer samples|file is too short|unexpected end)",
    re.IGNORECASE,
)
_FRAMES = {0: "unknown", 1: "device", 4: "head", 5: "mri"}
_IEEG_TYPES = {"seeg", "ecog", "dbs"}


@dataclass
class SignalRecording:
    """A continuous recording ready to be segmented. ``data`` is ``[channels, time]`` float32."""

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    units: list[str]
    positions: np.ndarray  # [C, 3] metres; NaN rows where unknown
    position_frame: str
    position_source: str
    bad_channels: list[str]
    events: list[tuple[float, float, str]]  # (onset s from data start, duration s, label)
    modality: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    coordinate_system: dict[str, Any] | None = None  # BIDS space and coordsystem.json of the positions
    orientations: np.ndarray | None = None  # [C, 3] MEG coil normals (head frame); NaN rows elsewhere
    coil_types: list[int] = field(default_factory=list)  # FIFF coil type per channel (MEG: which sensor)
    warnings: list[str] = field(default_factory=list)  # said once when the recording is sharded


def read_signal(item: SourceItem, options: ShardOptions) -> SignalRecording:
    """Read, preprocess and scale one recording; raises ``ShardError`` naming the file."""
    import mne

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            nwb, nwb_warnings = None, []
            if item.fmt == "nwb":  # pynwb: the first ElectricalSeries with its electrodes table
                raw, nwb, nwb_warnings = read_nwb(item.path)
                bids = None
            else:
                raw, bids = _read_raw(item, options)  # header only: picking before loading avoids copies
            events = _events(raw, bids)  # in seconds, so they survive resampling
            picks = options.channel_types or "data"
            try:
                raw.pick(picks, exclude=[])
            except ValueError as exc:
                raise ShardError(str(item.path), f"no channels of type {picks}: {exc}") from exc
            data = None
            if item.fmt == "edf" and not _wants_preprocessing(options):
                data = read_edf_scaled(Path(raw.filenames[0]), raw, _scales(raw.get_channel_types()))
            if data is None:
                raw.load_data(verbose="warning")
        except ShardError:
            raise
        except Exception as exc:  # readers raise ValueError, OSError, RuntimeError, KeyError ...
            raise ShardError(str(item.path), f"cannot be read as {item.fmt.upper()}: {exc}") from exc
    for w in caught:
        if _FATAL_WARNINGS.search(str(w.message)):
            raise ShardError(str(item.path), f"damaged or truncated file: {w.message}")
    if raw.n_times == 0 or len(raw.ch_names) == 0:
        raise ShardError(str(item.path), "recording holds no samples or no channels")

    modality = options.modality or _modality(item, raw.get_channel_types())
    position_source = _apply_positions(raw, item, options.montage)
    raw, preprocessing = _preprocess(raw, options, mne)
    if nwb is not None:
        preprocessing["nwb"] = nwb
    ch_types = raw.get_channel_types()
    units = [UNIT_SCALE.get(t, ("SI", 1.0))[0] for t in ch_types]
    if data is None:
        data = np.empty((len(raw.ch_names), raw.n_times), dtype=np.float32)  # [C, T] in stored units
        np.multiply(raw._data, _scales(ch_types)[:, None], out=data, casting="unsafe")
    preprocessing["scaling"] = {t: UNIT_SCALE.get(t, ("SI", 1.0))[0] for t in sorted(set(ch_types))}
    try:
        data, units, preprocessing["units"], unit_warnings = check_units(
            data, ch_types, units, options.assume_unit
        )
    except ValueError as exc:
        raise ShardError(str(item.path), str(exc)) from exc
    positions, frame = _positions(raw)
    orientations, coil_types = _sensor_geometry(raw)
    coords = None
    if position_source == "bids:electrodes.tsv" and item.bids_root is not None:
        coords = coordinate_system(item.path, item.bids_root)
        named = " ".join(str((coords or {}).get(k) or "") for k in ("space", "system")).lower()
        if frame == "unknown" and "mni" in named:  # e.g. space-mni_electrodes.tsv, system "Other"
            frame = "mni"
    return SignalRecording(
        data=data,
        sfreq=float(raw.info["sfreq"]),
        ch_names=list(raw.ch_names),
        ch_types=ch_types,
        units=units,
        positions=positions,
        position_frame=frame,
        orientations=orientations,
        coil_types=coil_types,
        position_source=position_source if np.isfinite(positions).all(axis=1).any() else "none",
        coordinate_system=coords,
        bad_channels=[b for b in raw.info["bads"] if b in raw.ch_names],
        events=events,
        modality=modality,
        preprocessing=preprocessing,
        warnings=nwb_warnings + unit_warnings,
    )


def _scales(ch_types: list[str]) -> np.ndarray:
    """Factor from MNE's SI units to the stored units, per channel."""
    return np.array([UNIT_SCALE.get(t, ("SI", 1.0))[1] for t in ch_types], dtype=np.float64)


def _wants_preprocessing(options: ShardOptions) -> bool:
    return bool(
        options.notch
        or options.l_freq is not None
        or options.h_freq is not None
        or options.reference
        or options.sfreq is not None
    )


def _read_raw(item: SourceItem, options: ShardOptions) -> tuple[Any, tuple | None]:
    """The recording opened without loading its data, and its BIDS events (None: its annotations)."""
    import mne

    if item.fmt == "fif":
        check_fif(item.path)
    if item.bids_root is not None:
        return _read_raw_bids(item, _wants_preprocessing(options))
    return mne.io.read_raw(str(item.path), preload=False, verbose="warning"), None


def _read_raw_bids(item: SourceItem, set_annotations: bool) -> tuple[Any, tuple | None]:
    """A BIDS recording with its sidecars applied (``readers.bids``, else ``read_raw_bids``).

    A broken ``channels.tsv``, or another sidecar that mne-bids cannot apply, is named as the cause.
    """
    import mne
    import mne_bids

    bp = mne_bids.get_bids_path_from_fname(item.path)
    bp.update(root=item.bids_root)
    found = bp.find_matching_sidecar(suffix="channels", extension=".tsv", on_error="ignore")
    tsv = Path(found) if found else None
    if tsv is not None and (problem := channels_tsv_problem(tsv)):
        raise ShardError(str(item.path), f"broken BIDS sidecar {tsv}: {problem}")
    fast = read_bids(item.path, item.bids_root, set_annotations)
    if fast is not None:
        _check_listed(item, tsv, fast[0])
        return fast
    try:
        raw = mne_bids.read_raw_bids(bp, verbose="warning")
        _check_listed(item, tsv, raw)
        return raw, None
    except ShardError:
        raise
    except Exception as exc:
        try:  # is it the recording, or what mne-bids adds from the sidecars?
            raw = mne.io.read_raw(str(item.path), preload=False, verbose="error")
        except Exception:
            raise exc from None  # the recording itself: "cannot be read as EDF"
        if tsv is not None and (mismatch := channel_mismatch(tsv, list(raw.ch_names))):
            raise ShardError(str(item.path), f"broken BIDS sidecar {tsv}: {mismatch}") from exc
        raise ShardError(
            str(item.path),
            f"the recording reads, but mne-bids cannot apply its BIDS sidecar files: {type(exc).__name__}: {exc}",
        ) from exc


def _check_listed(item: SourceItem, tsv: Path | None, raw) -> None:
    """A ``channels.tsv`` naming channels the recording lacks is an error naming them (the readers
    would drop those rows silently)."""
    if tsv is not None and (mismatch := channel_mismatch(tsv, list(raw.ch_names), listed_only=True)):
        raise ShardError(str(item.path), f"broken BIDS sidecar {tsv}: {mismatch}")


def _events(raw, bids: tuple | None = None) -> list[tuple[float, float, str]]:
    """Annotations (or stim-channel events when there are none) in seconds from the data start.

    ``bids`` is ``(onset, duration, description, origin)`` of the BIDS events, as
    ``raw.annotations`` would hold them after ``read_raw_bids``; None reads ``raw.annotations``.
    """
    import mne

    if bids is None:
        ann = raw.annotations
        bids = (ann.onset, ann.duration, ann.description, ann.orig_time)
    onset, duration, description, origin = bids
    out: list[tuple[float, float, str]] = []
    if len(onset):
        idx = raw.time_as_index(onset, use_rounding=True, origin=origin)
        sf = raw.info["sfreq"]
        for i, dur, desc in zip(idx, duration, description, strict=True):
            if 0 <= i < raw.n_times:
                out.append((float(i) / sf, float(dur), str(desc)))
        return out
    if "stim" in raw.get_channel_types():
        ev = mne.find_events(raw, shortest_event=1, verbose="error")
        out = [((s - raw.first_samp) / raw.info["sfreq"], 0.0, f"stim/{code}") for s, _, code in ev]
    return out


def _modality(item: SourceItem, ch_types: list[str]) -> str:
    if item.bids_datatype in ("eeg", "meg", "ieeg"):
        return item.bids_datatype
    types = set(ch_types)
    if types & {"mag", "grad"}:
        return "meg"
    if types & _IEEG_TYPES:
        return "ieeg"
    return "eeg"


def _known(raw) -> np.ndarray:
    locs = np.array([ch["loc"][:3] for ch in raw.info["chs"]], dtype=float)
    return np.isfinite(locs).all(axis=1) & (np.abs(locs).sum(axis=1) > 0)


def _apply_positions(raw, item: SourceItem, montage: str) -> str:
    """Positions from the file or BIDS electrodes.tsv; else a standard 10-05 montage matched by name."""
    from_file = _known(raw).any()
    if montage == "none" or (montage == "auto" and from_file):
        if not from_file:
            return "none"
        if item.bids_root is not None and list(item.path.parent.glob("*_electrodes.tsv")):
            return "bids:electrodes.tsv"
        if item.fmt == "nwb":
            return "nwb:electrodes"
        return "file"
    import mne

    name = default_montage() if montage == "auto" else montage

    try:
        std = mne.channels.make_standard_montage(name)
    except ValueError as exc:
        raise ShardError(str(item.path), f"unknown montage {name!r}: {exc}") from exc
    eeg_like = [n for n, t in zip(raw.ch_names, raw.get_channel_types(), strict=True) if t in ("eeg", "eog")]
    lower = {n.lower() for n in std.ch_names}
    if not any(n.lower() in lower for n in eeg_like):
        return "none"
    raw.set_montage(std, match_case=False, on_missing="ignore", verbose="error")
    return f"montage:{name}"


def default_montage() -> str:
    """The standard 10-05 montage used to place channels by name (renamed in MNE 1.13)."""
    import mne

    builtin = mne.channels.get_builtin_montages()
    return "colin27_1005" if "colin27_1005" in builtin else "standard_1005"


def _sensor_geometry(raw) -> tuple[np.ndarray, list[int]]:
    """MEG coil orientations and every channel's FIFF coil type.

    A MEG channel's ``loc[9:12]`` is its coil's normal (``ez``: the direction a magnetometer
    measures; a planar gradiometer's ``ex``, ``loc[3:6]``, is its gradient direction) in the device
    frame; it is rotated into the head frame with ``dev_head_t`` like the positions. Returns
    ``orientations [C, 3]`` (unit normals, NaN for non-MEG channels) and ``coil_types [C]``.
    """
    import mne

    kinds = {mne.io.constants.FIFF.FIFFV_MEG_CH, mne.io.constants.FIFF.FIFFV_REF_MEG_CH}
    normals = np.full((len(raw.ch_names), 3), np.nan)
    rot = np.eye(3)
    if raw.info.get("dev_head_t") is not None:
        rot = np.asarray(raw.info["dev_head_t"]["trans"])[:3, :3]
    for i, ch in enumerate(raw.info["chs"]):
        ez = np.asarray(ch["loc"][9:12], dtype=np.float64)
        if ch["kind"] in kinds and np.isfinite(ez).all() and np.linalg.norm(ez) > 0:
            normals[i] = (
                rot @ (ez / np.linalg.norm(ez)) if ch["coord_frame"] == 1 else ez / np.linalg.norm(ez)
            )
    return normals.astype(np.float32), [int(ch["coil_type"]) for ch in raw.info["chs"]]


def _positions(raw) -> tuple[np.ndarray, str]:
    import mne

    locs = np.array([ch["loc"][:3] for ch in raw.info["chs"]], dtype=np.float64)
    frames = {ch["coord_frame"] for ch, ok in zip(raw.info["chs"], _known(raw), strict=True) if ok}
    if 1 in frames and raw.info.get("dev_head_t") is not None:  # MEG sensors: device -> head
        dev = np.array([ch["coord_frame"] == 1 for ch in raw.info["chs"]])
        locs[dev] = mne.transforms.apply_trans(raw.info["dev_head_t"], locs[dev])
        frames = (frames - {1}) | {4}
    locs[~_known(raw)] = np.nan
    frame = _FRAMES.get(int(next(iter(frames))), "unknown") if len(frames) == 1 else "mixed"
    return locs.astype(np.float32), frame


def _preprocess(raw, options: ShardOptions, mne) -> tuple[Any, dict[str, Any]]:
    """(the recording after notch, band-pass, re-reference and resampling, what was applied)."""
    done: dict[str, Any] = {}
    if options.notch:
        raw.notch_filter(options.notch, picks="all", verbose="error")
        done["notch"] = list(options.notch)
    if options.l_freq is not None or options.h_freq is not None:
        raw.filter(options.l_freq, options.h_freq, picks="all", verbose="error")
        done["filter"] = [options.l_freq, options.h_freq]
    if options.reference in SCHEMES:  # intracranial: along each electrode
        try:
            raw, done["reference"] = rereference(raw, options.reference)
        except ValueError as exc:
            raise ShardError(
                str(raw.filenames[0]), f"cannot re-reference to {options.reference}: {exc}"
            ) from exc
    elif options.reference:
        ref = "average" if options.reference == "average" else options.reference.split(",")
        try:
            raw.set_eeg_reference(ref, projection=False, verbose="error")
        except (ValueError, RuntimeError) as exc:
            raise ShardError(
                str(raw.filenames[0]), f"cannot re-reference to {options.reference}: {exc}"
            ) from exc
        done["reference"] = options.reference
    if options.sfreq is not None and abs(options.sfreq - raw.info["sfreq"]) > 1e-9:
        done["resample"] = {"from": float(raw.info["sfreq"]), "to": float(options.sfreq)}
        raw.resample(options.sfreq, verbose="error")
    return raw, done


def source_fingerprint(path: Path) -> dict[str, Any]:
    """Size and mtime of a file and its BrainVision/EEGLAB companions (changes force a redo)."""
    files = [path] + [path.with_suffix(s) for s in (".eeg", ".vmrk", ".fdt") if path.with_suffix(s).exists()]
    return {str(f.name): [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
