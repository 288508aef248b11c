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


def type_index(ch_type: str) -> int:
    """Index of an MNE channel type in ``CHANNEL_TYPES``; unknown types map to ``"misc"``."""
    return TYPE_INDEX.get(ch_type, TYPE_INDEX["misc"])
