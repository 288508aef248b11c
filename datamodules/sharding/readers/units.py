"""Are a recording's amplitudes plausible for their unit? If not, store them as read, ``unit: unknown``.

MNE returns every signal in SI units, trusting the file: a GDF or EDF whose channels declare no
physical unit is read as volts, and a file whose writer scaled twice declares µV for values of
hundreds of volts. Scaled to the stored unit (µV for EEG/iEEG, fT for magnetometers, fT/cm for
gradiometers; `neurotrain.datamodules.format.channel_types.UNIT_SCALE`) such values are 10⁶ too
large, overflow float16 and would be normalised together with real µV recordings.

The check, per channel type with a stored unit: the median over its non-flat channels of the
channel standard deviation (on a strided subsample, in the stored unit) must lie in
``PLAUSIBLE_STD[unit]`` — EEG/iEEG/EOG/ECG/EMG 0.01 µV … 50 mV, MEG 0.1 fT(/cm) … 10 µT(/cm). A
type outside its range is, by default, stored as the reader returned it (not scaled) with unit
``"unknown"`` for its channels: the numbers keep the file's own scale, nothing is guessed, and the
shard statistics keep them apart (`stats_key`), so they are normalised by their own mean and
spread. ``--assume-unit`` (e.g. ``uV``) says instead what unit the reader's values are in: they
are converted to the stored unit and labelled with it. Either way the recording's
``preprocessing.units`` records the check (median std, range, decision) and one warning says it.

    data, units, record, warnings = check_units(data, ch_types, units, assume_unit=None)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurotrain.datamodules.format.channel_types import UNIT_SCALE, UNKNOWN_UNIT

# Plausible median channel standard deviation, per stored unit.
PLAUSIBLE_STD: dict[str, tuple[float, float]] = {
    "µV": (0.01, 5e4),
    "fT": (0.1, 1e10),
    "fT/cm": (0.1, 1e10),
}
# --assume-unit: the factor from that unit to each stored unit.
ASSUMED_TO_STORED: dict[str, dict[str, float]] = {
    "µV": {"V": 1e6, "mV": 1e3, "µV": 1.0, "uV": 1.0, "nV": 1e-3},
    "fT": {"T": 1e15, "nT": 1e6, "pT": 1e3, "fT": 1.0},
    "fT/cm": {"T/m": 1e13, "fT/cm": 1.0, "fT/mm": 10.0, "pT/m": 10.0},
}
ASSUMABLE_UNITS = sorted({u for table in ASSUMED_TO_STORED.values() for u in table})
_SUBSAMPLE = 200_000  # values per channel type looked at (strided)


def check_units(
    data: np.ndarray, ch_types: list[str], units: list[str], assume_unit: str | None = None
) -> tuple[np.ndarray, list[str], dict[str, Any], list[str]]:
    """Check ``data [C, T]`` (float32, already scaled to ``units``) per channel type; fix it in place.

    Returns (data, units per channel, the record for ``preprocessing.units``, warnings). Types
    without a stored unit (misc, stim, ...) are not checked.
    """
    if assume_unit is not None and assume_unit not in ASSUMABLE_UNITS:
        raise ValueError(f"--assume-unit {assume_unit!r}: one of {', '.join(ASSUMABLE_UNITS)}")
    units = list(units)
    record: dict[str, Any] = {}
    warnings: list[str] = []
    types = np.asarray(ch_types)
    for t in sorted(set(ch_types)):
        if t not in UNIT_SCALE:
            continue
        unit, scale = UNIT_SCALE[t]
        rows = np.nonzero(types == t)[0]
        level = _median_std(data[rows])
        lo, hi = PLAUSIBLE_STD[unit]
        entry: dict[str, Any] = {"unit": unit, "median_std": level, "plausible": [lo, hi]}
        if level == 0 or lo <= level <= hi:  # all flat: nothing to judge (the flat check says it)
            record[t] = {**entry, "decision": "plausible", "stored_median_std": level}
            continue
        factor = ASSUMED_TO_STORED[unit].get(assume_unit) if assume_unit else None
        seen = f"{len(rows)} {t} channel(s) have a median std of {level:.3g} {unit}, outside {lo:g}-{hi:g} {unit}"
        if factor is not None:
            data[rows] *= np.float32(factor / scale)
            record[t] = {
                **entry,
                "decision": f"assumed {assume_unit}",
                "stored_median_std": level * factor / scale,
            }
            warnings.append(f"{seen}: taken as {assume_unit} (--assume-unit) and stored in {unit}")
            continue
        data[rows] *= np.float32(1.0 / scale)  # back to the values as the reader returned them
        for i in rows:
            units[i] = UNKNOWN_UNIT
        record[t] = {**entry, "decision": "unknown", "stored_median_std": level / scale}
        warnings.append(
            f"{seen} (no unit in the file, or a wrong one): stored as read with unit 'unknown' and "
            f"normalised apart; --assume-unit names their unit"
        )
    return data, units, record, warnings


def _median_std(x: np.ndarray) -> float:
    """Median over rows of ``x [C, T]`` of the row std (float64, strided subsample), flat rows left out."""
    stride = max(1, x.size // _SUBSAMPLE)
    sub = np.asarray(x[:, ::stride], dtype=np.float64)
    std = sub.std(axis=1)
    std = std[np.isfinite(std) & (std > 0)]
    return float(np.median(std)) if std.size else 0.0
