"""NWB (DANDI-style) extracellular recordings through pynwb, as an MNE ``RawArray``.

What is read, from the file's first ``ElectricalSeries`` in ``acquisition`` (else the first in a
processing module, e.g. an ``LFP`` container; the others are named in ``preprocessing.nwb``):

- the samples ``data [T, C]`` in volts: ``data * conversion * channel_conversion + offset``;
  a unit other than volts is an error naming it;
- the rate: ``rate``, or regular ``timestamps`` (irregular ones are an error);
- the electrodes table rows of the series (``series.electrodes``): channel names (a ``label``
  or ``channel_name`` column, else ``<group><id>``), types (a ``type`` column, else keywords of
  the group name / location: ``ecog``/``grid``/``strip`` -> ecog, ``seeg``/``depth`` -> seeg,
  ``dbs``/``stn``/``gpi`` -> dbs; otherwise ecog, said once), ``location`` and ``group`` (kept in
  ``preprocessing.nwb``), and ``x, y, z`` as positions when they are plausible metres (all within
  ±0.3 m) — NWB does not fix their unit, so other magnitudes are not guessed: left out and said;
- the ``trials`` and ``epochs`` tables as events: ``start_time``/``stop_time`` relative to the
  series start, labelled by the first of ``trial_type``, ``condition``, ``stimulus``, ``label``,
  ``tags`` present (else ``"trial"`` / ``"epoch"``).

A file without an electrodes table (or without any ``ElectricalSeries``) is an error naming the
file. The HDF5 file is opened read-only; nothing in it is executed or unpickled.

    raw, info = read_nwb(Path("sub-01_ses-01_ecephys.nwb"))   # info -> preprocessing["nwb"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError

_TYPE_WORDS = (
    ("dbs", ("dbs", "stn", "gpi")),
    ("seeg", ("seeg", "depth")),
    ("ecog", ("ecog", "grid", "strip")),
)
_LABEL_COLUMNS = ("trial_type", "condition", "stimulus", "label", "tags")
_MAX_METRES = 0.3


def read_nwb(path: Path) -> tuple[Any, dict[str, Any], list[str]]:
    """(an MNE ``RawArray`` in volts with positions and annotations, what was read, warnings)."""
    import mne
    from pynwb import NWBHDF5IO
    from pynwb.ecephys import ElectricalSeries

    warnings: list[str] = []
    try:
        io = NWBHDF5IO(str(path), mode="r")
        nwb = io.read()
    except Exception as exc:
        raise ShardError(str(path), f"cannot be read as NWB: {type(exc).__name__}: {exc}") from exc
    try:
        if nwb.electrodes is None:
            raise ShardError(
                str(path), "NWB file has no electrodes table: its channels have no names or locations"
            )
        found = [o for o in nwb.acquisition.values() if isinstance(o, ElectricalSeries)]
        found += sorted(
            (o for o in nwb.objects.values() if isinstance(o, ElectricalSeries) and o not in found),
            key=lambda o: o.name,
        )
        if not found:
            raise ShardError(str(path), "NWB file holds no ElectricalSeries (no ECoG/LFP/sEEG data)")
        series = found[0]
        unit = str(series.unit or "").lower()
        if unit not in ("volts", "volt", "v"):
            raise ShardError(str(path), f"ElectricalSeries {series.name!r} is in {series.unit!r}, not volts")
        data = np.asarray(series.data[:], dtype=np.float64)  # [T, C]
        if data.ndim != 2:
            raise ShardError(
                str(path), f"ElectricalSeries {series.name!r} has shape {data.shape}, not [time, channels]"
            )
        data *= float(series.conversion)
        if series.channel_conversion is not None:
            data *= np.asarray(series.channel_conversion[:], dtype=np.float64)[None, :]
        data += float(getattr(series, "offset", 0.0) or 0.0)
        sfreq, start = _rate(path, series)
        rows = np.asarray(series.electrodes.data[:], dtype=np.int64)
        table = series.electrodes.table.to_dataframe().iloc[rows]
        if len(table) != data.shape[1]:
            raise ShardError(
                str(path), f"{series.name}: {data.shape[1]} channels but {len(table)} electrodes rows"
            )
        groups = (
            [getattr(g, "name", str(g)) for g in table["group"]] if "group" in table else [""] * len(table)
        )
        locations = [str(v) for v in table["location"]] if "location" in table else [""] * len(table)
        names = _names(table, groups)
        types, guessed = _types(table, groups, locations)
        if guessed:
            warnings.append(f"{guessed} channel(s) carry no type in the electrodes table: stored as ecog")
        info = mne.create_info(names, sfreq, types)
        raw = mne.io.RawArray(data.T, info, verbose="error")
        pos = _positions(table, names, warnings)
        if pos:
            raw.set_montage(
                mne.channels.make_dig_montage(ch_pos=pos, coord_frame="unknown"), on_missing="ignore"
            )
        raw.set_annotations(_annotations(nwb, start))
        read = {
            "series": series.name,
            "other_series": [o.name for o in found[1:]],
            "locations": dict(zip(names, locations, strict=True)),
            "groups": dict(zip(names, groups, strict=True)),
            "start_time_s": start,
        }
        return raw, read, warnings
    finally:
        io.close()


def _rate(path: Path, series) -> tuple[float, float]:
    if series.rate is not None:
        return float(series.rate), float(series.starting_time or 0.0)
    stamps = np.asarray(series.timestamps[:], dtype=np.float64)
    if stamps.size < 2:
        raise ShardError(str(path), f"{series.name}: fewer than 2 timestamps and no rate")
    step = np.diff(stamps)
    median = float(np.median(step))
    if median <= 0 or np.abs(step - median).max() > 0.01 * median:
        raise ShardError(
            str(path), f"{series.name}: irregular timestamps (steps {step.min():.3g}-{step.max():.3g} s)"
        )
    return 1.0 / median, float(stamps[0])


def _names(table, groups: list[str]) -> list[str]:
    for column in ("label", "channel_name"):
        if column in table:
            names = [str(v) for v in table[column]]
            if len(set(names)) == len(names):
                return names
    return [f"{g or 'e'}{i}" for g, i in zip(groups, table.index, strict=True)]


def _types(table, groups: list[str], locations: list[str]) -> tuple[list[str], int]:
    out, guessed = [], 0
    given = [str(v).lower() for v in table["type"]] if "type" in table else [""] * len(table)
    for g, loc, t in zip(groups, locations, given, strict=True):
        words = f"{t} {g} {loc}".lower()
        kind = next((k for k, keys in _TYPE_WORDS if any(w in words for w in keys)), None)
        if kind is None:
            guessed += 1
            kind = "ecog"
        out.append(kind)
    return out, guessed


def _positions(table, names: list[str], warnings: list[str]) -> dict[str, np.ndarray]:
    if not all(c in table for c in "xyz"):
        return {}
    xyz = np.asarray(table[["x", "y", "z"]], dtype=np.float64)
    known = np.isfinite(xyz).all(axis=1)
    if not known.any():
        return {}
    if np.abs(xyz[known]).max() > _MAX_METRES:
        warnings.append(
            f"electrode x/y/z up to {np.abs(xyz[known]).max():.3g}: not plausible metres (NWB does not "
            "fix their unit), so no positions are stored"
        )
        return {}
    return {n: p for n, p, k in zip(names, xyz, known, strict=True) if k}


def _annotations(nwb, start: float):
    import mne

    onsets, durations, labels = [], [], []
    for table, default in ((nwb.trials, "trial"), (nwb.epochs, "epoch")):
        if table is None or len(table) == 0:
            continue
        df = table.to_dataframe()
        column = next((c for c in _LABEL_COLUMNS if c in df), None)
        for _, row in df.iterrows():
            label = row[column] if column else default
            if isinstance(label, list | tuple | np.ndarray):
                label = "/".join(map(str, label)) or default
            onsets.append(float(row["start_time"]) - start)
            durations.append(max(0.0, float(row["stop_time"]) - float(row["start_time"])))
            labels.append(str(label))
    return mne.Annotations(onsets, durations, labels)
