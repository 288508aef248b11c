"""The channel-type vocabulary shared by the shards, the batches and the encoders.

Shards store channel types as MNE's type strings (``"eeg"``, ``"mag"``, …) plus ``"bold"`` for
fMRI parcels. Batches carry them as integer indices into ``CHANNEL_TYPES`` so an encoder can
embed the sensor type; index 0 is padding. The list only grows at the end, so indices stay
valid for old checkpoints.
"""

from __future__ import annotations

CHANNEL_TYPES: tuple[str, ...] = (
    "pad",
    "eeg",
    "mag",
    "grad",
    "seeg",
    "ecog",
    "dbs",
    "eog",
    "ecg",
    "emg",
    "bold",
    "misc",
)
TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(CHANNEL_TYPES)}

# Stored units and the factor from MNE's SI data: EEG in volts becomes microvolts, so the
# values sit near 1-100 and survive float16 storage.
UNIT_SCALE: dict[str, tuple[str, float]] = {
    "eeg": ("µV", 1e6),
    "seeg": ("µV", 1e6),
    "ecog": ("µV", 1e6),
    "dbs": ("µV", 1e6),
    "eog": ("µV", 1e6),
    "ecg": ("µV", 1e6),
    "emg": ("µV", 1e6),
    "mag": ("fT", 1e15),
    "grad": ("fT/cm", 1e13),
}

SIGNAL_MODALITIES = ("eeg", "meg", "ieeg")

# A channel whose amplitudes are implausible for its type's stored unit (no unit in the file, or a
# wrong one) is stored as read, with this unit (`sharding/readers/units.py`).
UNKNOWN_UNIT = "unknown"


def stats_key(ch_type: str, unit: str | None) -> str:
    """The statistics entry a channel is normalised with: its type, or ``"<type>@<unit>"`` when its
    unit is not the type's stored one (``"ecog@unknown"``), so such channels are never normalised
    with the constants of channels in µV, fT or fT/cm."""
    stored = UNIT_SCALE.get(ch_type, (None, 1.0))[0]
    return ch_type if unit is None or stored is None or unit == stored else f"{ch_type}@{unit}"


def type_index(ch_type: str) -> int:
    """Index of an MNE channel type in ``CHANNEL_TYPES``; unknown types map to ``"misc"``."""
    return TYPE_INDEX.get(ch_type, TYPE_INDEX["misc"])
