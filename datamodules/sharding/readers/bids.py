"""A BIDS EEG/iEEG recording read as ``mne_bids.read_raw_bids`` reads it, for what the shards keep.

``read_raw_bids`` turns ``events.tsv`` into ``mne.Annotations`` and sets them on the recording:
that deep-copies the annotations (twice, with the file's own) and crops them one at a time in
Python with ``datetime`` arithmetic, which for the example EEG's 1,600 events costs more than
reading the EDF header. Here the sidecars are read through mne-bids' public helpers
(``get_bids_path_from_fname``, ``BIDSPath.find_matching_sidecar``,
``events_file_to_annotation_kwargs``) and the documented sidecar formats, and applied with MNE's
public API, with the semantics of ``read_raw_bids`` (as of mne-bids 0.20; ``tests/test_shard_bids.py``
compares the two on edited sidecars with the installed version) for each:

* ``events.tsv``: ``events_file_to_annotation_kwargs`` (the function ``read_raw_bids`` builds its
  annotations from), then what ``raw.set_annotations`` does to annotations without an origin —
  sort by onset, duration, row; crop to the recording (onsets, and durations that are cut, to
  whole microseconds, as ``datetime.timedelta`` holds them); add the time of the first sample —
  done on arrays (``bids_events``; ``tests/test_shard_bids.py`` checks it against MNE's crop).
  The recording's own annotations are then not used, as ``read_raw_bids`` replaces them.
* ``channels.tsv``: channel types (the BIDS to MNE table of mne-bids: MEG types left alone,
  unknown types become ``misc``) through ``raw.set_channel_types(on_unit_change="ignore")``;
  ``status`` ``bad`` as ``info["bads"]`` (a ``status`` column replaces the file's bads). A list
  of another length than the recording's is applied to the channels the recording has (mne-bids
  warns and does the same); one of the same length in another order goes to mne-bids. Its
  ``units`` column only relabels ``info["chs"][i]["unit"]`` in mne-bids, never the data, and no
  shard field depends on it, so it is not read.
* ``electrodes.tsv`` + ``coordsystem.json``: positions (``n/a`` as NaN, cm/mm scaled to metres)
  as a ``make_dig_montage`` in the frame mne-bids maps the coordinate system to, set with
  ``raw.set_montage(on_missing="warn")``; a frame BIDS does not allow, or units other than
  m/cm/mm, remove the positions as in mne-bids; an unmapped allowed frame becomes ``unknown``.
* ``*_eeg.json``: read (a broken one fails the recording, as in mne-bids); its line frequency and
  head-localisation fields change nothing that is sharded.
* ``scans.tsv`` (the measurement date) and ``participants.tsv`` (subject info): checked to be
  readable with the column mne-bids needs; the date moves the origin of the annotations, which
  changes no onset when the first sample is at time 0 (always so for EDF, BDF, BrainVision and
  EEGLAB, the formats BIDS allows for EEG and iEEG).

Anything this does not reproduce exactly returns None, and the caller uses ``read_raw_bids``:
MEG, a split or epoched recording, another file format (a FIF in an EEG folder), channel names
that differ from the recording's, a ``ctf_head`` coordinate system (mne-bids adds fiducials), an
``n/a`` coordinate unit (mne-bids guesses it), HED tags, ``BAD_ACQ_SKIP`` annotations in the file,
NaN, infinite or negative durations, non-UTF-8 or oddly spaced TSV text. So does any error: the
caller's ``read_raw_bids`` then reports it as it always has.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# mne_bids.utils._get_ch_type_mapping(fro="bids", to="mne") (mne-bids 0.20)
BIDS_TO_MNE_TYPES = {
    "EEG": "eeg",
    "MISC": "misc",
    "TRIG": "stim",
    "EMG": "emg",
    "ECOG": "ecog",
    "SEEG": "seeg",
    "EOG": "eog",
    "ECG": "ecg",
    "RESP": "resp",
    "GSR": "gsr",
    "TEMP": "temperature",
    "NIRSCWAMPLITUDE": "fnirs_cw_amplitude",
    "NIRS": "fnirs_cw_amplitude",
    "VEOG": "eog",
    "HEOG": "eog",
    "DBS": "dbs",
    "EYEGAZE": "eyegaze",
    "PUPIL": "pupil",
}
# channel types mne-bids leaves as the file has them
_MEG_TYPES = {
    "MEGGRADAXIAL",
    "MEGMAG",
    "MEGGRAD",
    "MEGREFGRADAXIAL",
    "MEGGRADPLANAR",
    "MEGREFMAG",
    "MEGOTHER",
    "HLU",
}
# mne_bids.config.BIDS_TO_MNE_FRAMES
_FRAMES = {
    "CTF": "ctf_head",
    "4DBti": "ctf_head",
    "KitYokogawa": "ctf_head",
    "ElektaNeuromag": "head",
    "ChietiItab": "head",
    "CapTrak": "head",
    "EEGLAB": "ctf_head",
    "EEGLAB-HJ": "ctf_head",
    "ACPC": "ras",
    "ScanRAS": "ras",
    "fsaverage": "mni_tal",
    "MNI305": "mni_tal",
    "MNI152Lin": "mni_tal",
    "MNI152NLin6Sym": "mni_tal",
    "MNI152NLin6ASym": "mni_tal",
    "MNI152NLin2009aSym": "mni_tal",
    "MNI152NLin2009bSym": "mni_tal",
    "MNI152NLin2009cSym": "mni_tal",
    "MNI152NLin2009aAsym": "mni_tal",
    "MNI152NLin2009bAsym": "mni_tal",
    "MNI152NLin2009cAsym": "mni_tal",
    "MNIColin27": "mni_tal",
    "Talairach": "mni_tal",
}
# mne_bids.config.ALLOWED_SPACES for eeg and ieeg
_TEMPLATES = [
    "ICBM452AirSpace",
    "ICBM452Warp5Space",
    "IXI549Space",
    "fsaverage",
    "fsaverageSym",
    "fsLR",
    "MNIColin27",
    "MNI152Lin",
    "MNI152NLin2009aSym",
    "MNI152NLin2009bSym",
    "MNI152NLin2009cSym",
    "MNI152NLin2009aAsym",
    "MNI152NLin2009bAsym",
    "MNI152NLin2009cAsym",
    "MNI152NLin6Sym",
    "MNI152NLin6ASym",
    "MNI305",
    "NIHPD",
    "OASIS30AntsOASISAnts",
    "OASIS30Atropos",
    "Talairach",
    "UNCInfant",
    "fsaverage3",
    "fsaverage4",
    "fsaverage5",
    "fsaverage6",
    "fsaveragesym",
    "UNCInfant0V21",
    "UNCInfant1V21",
    "UNCInfant2V21",
    "UNCInfant0V22",
    "UNCInfant1V22",
    "UNCInfant2V22",
    "UNCInfant0V23",
    "UNCInfant1V23",
    "UNCInfant2V23",
    "Other",
]
_ALLOWED_SPACES = {
    "eeg": set(_TEMPLATES)
    | {"CTF", "ElektaNeuromag", "4DBti", "KitYokogawa", "ChietiItab"}
    | {"CapTrak", "EEGLAB", "EEGLAB-HJ"},
    "ieeg": set(_TEMPLATES) | {"ACPC", "Pixels", "ScanRAS"},
}
_COORD_KEYS = {"eeg": "EEG", "ieeg": "iEEG"}
_TO_METRES = {"m": None, "cm": 100.0, "mm": 1000.0}
# the readers read_raw_bids calls for each extension, all with their default options
_READERS = {
    ".edf": "read_raw_edf",
    ".bdf": "read_raw_bdf",
    ".vhdr": "read_raw_brainvision",
    ".set": "read_raw_eeglab",
}


class _Fallback(Exception):
    """This recording is not one the fast path reproduces exactly: use ``read_raw_bids``."""


def read_bids(path: Path, bids_root: Path, set_annotations: bool) -> tuple[Any, tuple | None] | None:
    """``(raw, events)`` as ``read_raw_bids`` would give them, or None to use ``read_raw_bids``.

    ``raw`` is opened without loading its data, with channel types, bads and positions from the
    sidecars. ``events`` is ``(onset, duration, description, origin)`` as ``raw.annotations``
    would hold them after ``read_raw_bids`` (None: there is no ``events.tsv``, the file's own
    annotations stand). With ``set_annotations`` (filters skip "edge" and "bad_acq_skip" spans)
    the annotations are also set on ``raw`` the way ``read_raw_bids`` sets them.
    """
    try:
        return _read(path, bids_root, set_annotations)
    except Exception:  # noqa: BLE001 - read_raw_bids will read it, or name what is wrong
        return None


def _read(path: Path, bids_root: Path, set_annotations: bool) -> tuple[Any, tuple | None] | None:
    import mne
    import mne_bids

    bp = mne_bids.get_bids_path_from_fname(path)
    bp.update(root=bids_root)
    datatype = bp.datatype
    reader = _READERS.get(path.suffix)
    if datatype not in _COORD_KEYS or reader is None or bp.split is not None or not bp.subject:
        return None
    sidecar = bp.find_matching_sidecar(suffix=datatype, extension=".json", on_error="ignore")
    if sidecar is not None:
        with open(sidecar, encoding="utf-8") as f:
            if json.load(f).get("RecordingType") == "epoched":
                return None
    _check_subject_tables(bp, bids_root)
    # The sidecars first: what sends the recording to read_raw_bids is known before it is opened.
    found = bp.find_matching_sidecar(suffix="events", extension=".tsv", on_error="ignore")
    events_plan = _read_events(bp, Path(found), set_annotations) if found is not None else None
    found = bp.find_matching_sidecar(suffix="channels", extension=".tsv", on_error="ignore")
    channels = read_tsv(Path(found)) if found is not None else None
    electrodes = bp.find_matching_sidecar(suffix="electrodes", extension=".tsv", on_error="ignore")
    coordsystem = bp.find_matching_sidecar(suffix="coordsystem", extension=".json", on_error="ignore")
    positions = None
    if electrodes is not None and coordsystem is not None:
        positions = _read_positions(Path(electrodes), Path(coordsystem), datatype)
    raw = getattr(mne.io, reader)(path, preload=False, verbose="warning")
    if raw.first_samp != 0:
        return None  # then scans.tsv's date could move the annotations' origin
    if "BAD_ACQ_SKIP" in set(map(str, raw.annotations.description)):
        return None  # kept from the file by read_raw_bids, merged with the events
    # Applied in read_raw_bids' order: events, channels, positions.
    events = None
    if events_plan is not None:
        events = _apply_events(raw, events_plan, set_annotations)
    if channels is not None:
        _apply_channels(raw, channels)
    if positions is not None:
        _apply_positions(raw, *positions)
    return raw, events


def _read_events(bp, tsv: Path, set_annotations: bool) -> tuple:
    """``(onset, duration, description, extras)`` of the events.tsv, as mne-bids reads them."""
    import mne_bids

    events_json = bp.find_matching_sidecar(suffix="events", extension=".json", on_error="ignore")
    if events_json is not None:
        with open(events_json, encoding="utf-8") as f:
            described = json.load(f)
        if isinstance(described, dict) and any(
            isinstance(v, dict) and "HED" in v for v in described.values()
        ):
            raise _Fallback("HED tags")
    plain = None if set_annotations else events_tsv_annotations(tsv)
    if plain is not None:
        return (*plain, None)
    kw = mne_bids.events_file_to_annotation_kwargs(tsv, verbose="error")  # with its "extras"
    if kw.get("hed_strings") is not None:
        raise _Fallback("HED tags")
    return kw["onset"], kw["duration"], kw["description"], kw.get("extras")


def _apply_events(raw, plan: tuple, set_annotations: bool) -> tuple | None:
    import mne

    onset, duration, description, extras = plan
    if set_annotations:
        raw.set_annotations(mne.Annotations(onset, duration, description, extras=extras), verbose="warning")
        return None  # raw.annotations now hold them
    onset, duration, description = bids_events(onset, duration, description, raw)
    return onset, duration, description, raw.info["meas_date"]


_NOT_AN_ONSET = ("n/a", "nan", "NaN", "")


def events_tsv_annotations(tsv: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Onsets, durations and descriptions of ``events_file_to_annotation_kwargs(tsv)``, or None.

    The same steps as mne-bids (``_make_annotation_kwargs``), on the columns of ``read_tsv``:
    rows without an onset dropped; descriptions from ``trial_type`` (from ``value`` when every
    trial type is ``n/a`` and some value is not, or when there is no ``trial_type``); rows
    without one dropped; a trial type that comes with more than one value named
    ``<trial type>/<value>``; ``n/a`` durations as 0. mne-bids does this on deep copies of the
    whole table, once per dropped column. None for what it does otherwise (a ``stim_type`` or
    ``HED`` column, neither ``trial_type`` nor ``value``): the caller asks mne-bids.
    """
    table = read_tsv(tsv)
    if "stim_type" in table or "HED" in table or "onset" not in table or "duration" not in table:
        return None
    keep = [v not in _NOT_AN_ONSET for v in table["onset"]]
    table = {k: [v for v, ok in zip(col, keep, strict=True) if ok] for k, col in table.items()}
    if "trial_type" in table:
        column = "trial_type"
        if (
            "value" in table
            and all(v == "n/a" for v in table["trial_type"])
            and any(v != "n/a" for v in table["value"])
        ):
            column = "value"
    elif "value" in table:
        column = "value"
    else:
        return None
    keep = [v != "n/a" for v in table[column]]
    table = {k: [v for v, ok in zip(col, keep, strict=True) if ok] for k, col in table.items()}
    trial_types = table[column]
    if "value" in table:  # as mne-bids renames them, in the order of np.unique
        values = np.asarray(table["value"], dtype=str)
        for trial_type in np.unique(trial_types):
            idx = np.where(trial_type == np.atleast_1d(trial_types))[0]
            if len(np.unique(values[idx])) > 1:
                for i in idx:
                    value = values[i] if values[i] != "n/a" else "na"
                    trial_types[i] = f"{trial_type}/{value}"
    onset = np.asarray(table["onset"], dtype=float)
    duration = np.array([0 if d == "n/a" else d for d in table["duration"]], dtype=float)
    return onset, duration, np.asarray(trial_types, dtype=str)


def bids_events(onset, duration, description, raw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onsets, durations and descriptions as ``raw.set_annotations(mne.Annotations(...))`` leaves them.

    ``Annotations`` sorts by (onset, duration, row); ``set_annotations`` crops annotations without
    an origin to ``[0, n_times / sfreq]`` in ``datetime`` arithmetic (whole microseconds, rounded
    half to even as ``timedelta`` does): those outside are dropped, onsets become microseconds,
    durations that are cut become the microseconds left; then the first sample's time is added.
    """
    onset = np.asarray(onset, dtype=np.float64)
    duration = np.asarray(duration, dtype=np.float64)
    description = np.asarray(description)
    if len(onset) == 0:
        return onset, duration, description
    if not (np.isfinite(onset).all() and np.isfinite(duration).all() and (duration >= 0).all()):
        raise _Fallback("NaN, infinite or negative durations")
    order = np.lexsort((np.arange(len(onset)), duration, onset))
    onset, duration, description = onset[order], duration[order], description[order]
    sfreq = raw.info["sfreq"]
    end = (raw.n_times - 1) / sfreq + 1.0 / sfreq  # as set_annotations computes it
    tmax = _microseconds(np.float64(end))
    start = _microseconds(onset)
    stop = start + _microseconds(duration)
    keep = ~((start > tmax) | (stop < 0))
    cut_left, cut_right = start < 0, stop > tmax
    start_c = np.where(cut_left, 0.0, start)
    stop_c = np.where(cut_right, tmax, stop)
    duration = np.where(cut_left | cut_right, (stop_c - start_c) / 1e6, duration)
    onset = start_c / 1e6 + raw.first_time
    return onset[keep], duration[keep], description[keep]


def _microseconds(seconds: np.ndarray) -> np.ndarray:
    """Whole microseconds of ``timedelta(seconds=s)``, as float64 (exact below 2**53 µs)."""
    frac, whole = np.modf(seconds)
    return whole * 1e6 + np.rint(frac * 1e6)


def _apply_channels(raw, table: dict[str, list[str]]) -> None:
    names = table.get("name")
    if not names or ("STI 014" in raw.ch_names and "STI 014" not in names):
        raise _Fallback("no channel names, or a stim channel mne-bids drops")
    if len(names) == len(raw.ch_names) and names != list(raw.ch_names):
        raise _Fallback("channels.tsv names differ from the recording's")  # mne-bids raises
    # Lists of other lengths: mne-bids warns and applies the rows of the channels the recording has.
    present = set(raw.ch_names)
    mapping: dict[str, str] = {}
    for name, bids_type in zip(names, table["type"], strict=True):
        if bids_type.upper() in _MEG_TYPES or name not in present:
            continue
        mapping[name] = BIDS_TO_MNE_TYPES.get(bids_type) or BIDS_TO_MNE_TYPES.get(bids_type.upper()) or "misc"
    raw.set_channel_types(mapping, on_unit_change="ignore", verbose="error")
    if "status" in table:
        bads = [n for n, s in zip(names, table["status"], strict=True) if s.lower() == "bad"]
        raw.info["bads"] = [n for n in bads if n in present]


def coordinate_system(path: Path, bids_root: Path) -> dict[str, Any] | None:
    """What a recording's BIDS positions are in: ``{"space", "system", "units", "description",
    "file"}`` — the ``space-`` entity of its ``electrodes.tsv`` (``"mni"``, ``"CapTrak"``, or None),
    and ``<EEG|iEEG>CoordinateSystem`` / ``...Units`` / ``...SystemDescription`` of its
    ``coordsystem.json``. None without a coordsystem sidecar (or outside a BIDS datatype with one)."""
    import mne_bids

    try:
        bp = mne_bids.get_bids_path_from_fname(path)
        bp.update(root=bids_root)
        key = _COORD_KEYS.get(bp.datatype)
        if key is None:
            return None
        electrodes = bp.find_matching_sidecar(suffix="electrodes", extension=".tsv", on_error="ignore")
        found = bp.find_matching_sidecar(suffix="coordsystem", extension=".json", on_error="ignore")
        if found is None:
            return None
        with open(found, encoding="utf-8") as f:
            system = json.load(f)
        space = mne_bids.get_entities_from_fname(electrodes).get("space") if electrodes else None
    except (OSError, ValueError, RuntimeError):  # an unreadable sidecar: the positions say the rest
        return None
    if not isinstance(system, dict):
        return None
    return {
        "space": space,
        "system": system.get(f"{key}CoordinateSystem"),
        "units": system.get(f"{key}CoordinateUnits"),
        "description": system.get(f"{key}CoordinateSystemDescription"),
        "file": Path(found).name,
    }


def _read_positions(electrodes: Path, coordsystem: Path, datatype: str) -> tuple[Any, str | None]:
    """``(montage, frame)`` as mne-bids builds them (None, None: the recording loses its positions)."""
    import mne

    with open(coordsystem, encoding="utf-8") as f:
        system = json.load(f)
    key = _COORD_KEYS[datatype]
    space, unit = system[f"{key}CoordinateSystem"], system[f"{key}CoordinateUnits"]
    frame = None
    if space in _ALLOWED_SPACES[datatype]:
        frame = _FRAMES.get(space, "unknown")
    if frame == "ctf_head":
        raise _Fallback("ctf_head frame: mne-bids adds fiducials")
    if unit not in _TO_METRES:
        if frame is not None and unit == "n/a":
            raise _Fallback("mne-bids infers the coordinate unit")
        frame = None
    if frame is None:
        return None, None
    table = read_tsv(electrodes)
    xyz = np.c_[tuple([np.nan if v == "n/a" else float(v) for v in table[c]] for c in "xyz")]
    if _TO_METRES[unit] is not None:
        xyz = np.divide(xyz, _TO_METRES[unit])
    pos = dict(zip(table["name"], xyz, strict=True))
    return mne.channels.make_dig_montage(ch_pos=pos, coord_frame=frame), frame


def _apply_positions(raw, montage, frame: str | None) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*nasion not found", module="mne")
        raw.set_montage(montage, on_missing="warn", verbose="error")
    if frame == "unknown":
        for entry in [*raw.info["chs"], *(raw.info["dig"] or [])]:
            entry["coord_frame"] = 0  # FIFFV_COORD_UNKNOWN


def _check_subject_tables(bp, bids_root: Path) -> None:
    """``scans.tsv`` and ``participants.tsv`` fail ``read_raw_bids`` when unreadable: so here."""
    sub = f"sub-{bp.subject}"
    scans = (
        bids_root
        / sub
        / (f"ses-{bp.session}" if bp.session else "")
        / f"{sub}{f'_ses-{bp.session}' if bp.session else ''}_scans.tsv"
    )
    if scans.exists() and "filename" not in read_tsv(scans, allow_empty=True):
        raise _Fallback("scans.tsv without a filename column")
    participants = bids_root / "participants.tsv"
    if participants.exists() and "participant_id" not in read_tsv(participants, allow_empty=True):
        raise _Fallback("participants.tsv without a participant_id column")


def read_tsv(path: Path, allow_empty: bool = False) -> dict[str, list[str]]:
    """A BIDS TSV as mne-bids reads it (``np.loadtxt(dtype=str, delimiter="\\t")``): columns of text.

    Empty lines are skipped. mne-bids 0.20 strips each cell and writes decimal commas as points
    (``_normalize_tsv_cell``); a cell those would change, or text that might be read otherwise
    (not UTF-8, a NUL, a line of spaces, rows of another width) falls back to mne-bids.
    """
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8")  # mne-bids falls back to latin-1: leave that to it
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line != ""]
    if not lines:
        if allow_empty:
            return {}
        raise _Fallback("empty TSV")
    rows = [line.split("\t") for line in lines]
    if any(len(r) != len(rows[0]) for r in rows) or "\x00" in text:
        raise _Fallback("irregular TSV")
    for row in rows[1:]:
        for cell in row:
            if cell != cell.strip() or ("," in cell and _DECIMAL_COMMA.search(cell)):
                raise _Fallback("a cell mne-bids would rewrite")
    return {h: [r[i] for r in rows[1:]] for i, h in enumerate(rows[0])}


_DECIMAL_COMMA = re.compile(r"(?<!\w)(\d+),(\d+)(?!\w)")  # mne_bids.tsv_handler._DECIMAL_COMMA_RE
