"""One set of inputs per fold for every method: the same epochs and the same channels.

A fold's model and its baselines read the fold's epochs through one data configuration (the
fine-tune config's ``data`` with the fold's selection): same events, window, bad-span rejection,
normalisation. What differs between recordings is which channels are usable: the model masks
each recording's bad channels, while the classical pipelines need one montage. `fold_channels`
chooses the channels that are present and good in every recording of the fold's subjects, and
`fold_data` gives every method that list (``data.channels``), so models and baselines see the
same channel set, slot for slot.

    channels = fold_channels(dm.manifests, fold.train_subjects + fold.test_subjects, data)
    data = fold_data(data, selection_file, channels)     # for the fit and for the baselines
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neurotrain.datamodules.format.channel_types import SIGNAL_MODALITIES


class FoldInputError(ValueError):
    """The fold's recordings share no usable channel."""


def fold_channels(
    manifests: Iterable[dict[str, Any]], subjects: Iterable[str], data: dict[str, Any]
) -> list[str]:
    """The channels good in every recording of ``subjects``, in the first recording's order.

    ``data`` is the fine-tune config's data section: its ``channels`` (a user's fixed list, kept
    as the order), ``channel_types`` and ``drop_bad_channels`` apply as the loader applies them,
    with the manifests' per-recording ``bad_channels``.
    """
    wanted = set(subjects)
    types = data.get("channel_types")
    drop_bad = bool(data.get("drop_bad_channels", True))
    chosen: list[str] | None = None
    seen: list[str] = []
    for manifest in manifests:
        sets = {cs["id"]: cs for cs in manifest.get("channel_sets", [])}
        for rec in manifest.get("recordings", []):
            # fMRI parcel series are channel x time signals too (channels: parcels)
            if str(rec.get("subject")) not in wanted or rec.get("modality", "eeg") not in (
                *SIGNAL_MODALITIES,
                "fmri",
            ):
                continue
            cs = sets[rec["channel_set"]]
            bads = set(rec.get("bad_channels") or []) if drop_bad else set()
            good = [
                n
                for n, t in zip(cs["ch_names"], cs["ch_types"], strict=True)
                if n not in bads and (types is None or t in types)
            ]
            chosen = good if chosen is None else [n for n in chosen if n in set(good)]
            seen.append(str(rec["id"]))
    if chosen is None:
        raise FoldInputError(f"no recording of subjects {sorted(wanted)} in the datasets")
    if data.get("channels"):
        user = list(data["channels"])
        chosen = [n for n in user if n in set(chosen)]
    if not chosen:
        raise FoldInputError(
            f"the recordings {', '.join(seen)} share no channel that is good in all of them; "
            "set data.drop_bad_channels: false or give data.channels"
        )
    return chosen


def fold_data(data: dict[str, Any], selection: str | Path, channels: list[str]) -> dict[str, Any]:
    """The data section every method of a fold uses: its selection, both parts, its channels."""
    return {
        **data,
        "selection": str(selection),
        "train_split": "all",
        "val_split": "all",
        "channels": list(channels),
    }
