"""Stimulus images paired with events, found at shard time (``neurotrain shard --stimuli DIR``).

For each event of a recording the image is, in this order:

1. the BIDS ``events.tsv`` column ``stim_file`` of the row with the event's onset and label (BIDS
   recordings only), relative to ``DIR``; a row that names a file that does not exist is an error;
2. otherwise ``DIR/<label>.png``, ``.jpg`` or ``.jpeg`` (the first that exists).

Annotations (``bad_*``, ``boundary``, ``edge``) never get images. An event without an image whose
label other events of the recording have images for is an error naming the event and the path
tried, and so is a recording with labelled events of which none has an image (a wrong ``DIR``).
Each image is opened once with PIL to check that it is one; its bytes are stored as found.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.datamodules.sharding.sources import SourceItem

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_ONSET_TOLERANCE_S = 0.05  # events.tsv onsets vs. onsets rounded to a sample by the reader
_EXT_OF_FORMAT = {"PNG": "png", "JPEG": "jpg"}


@dataclass(frozen=True)
class Stimulus:
    """One image file: ``path`` on disk, ``name`` relative to ``DIR``, ``ext`` of its tar member."""

    path: Path
    name: str
    ext: str


def event_stimuli(
    item: SourceItem, events: list[tuple[float, float, str]], stimuli_dir: str
) -> list[Stimulus | None]:
    """The stimulus of each of ``events`` (``None``: no image); raises ``ShardError`` naming the file."""
    from neurotrain.datamodules.sharding.samples import is_annotation

    root = Path(stimuli_dir).expanduser().resolve()
    listed = _stim_files(item)
    checked: dict[Path, Stimulus] = {}
    out: list[Stimulus | None] = []
    for onset, _, label in events:
        if is_annotation(label):
            out.append(None)
            continue
        ref = _lookup(listed, onset, label)
        if ref is not None:
            path = root / ref
            if not path.is_file():
                raise ShardError(
                    str(item.path),
                    f"event '{label}' at {onset:.3f} s: stimulus image not found: {path} "
                    f"(stim_file {ref!r} in {_events_tsv(item)})",
                )
        else:
            path = next((p for p in _label_paths(root, label) if p.is_file()), None)
        if path is None:
            out.append(None)
            continue
        if path not in checked:
            checked[path] = _check_image(item, path, root)
        out.append(checked[path])

    with_images = {ev[2] for ev, st in zip(events, out, strict=True) if st is not None}
    for (onset, _, label), st in zip(events, out, strict=True):
        if st is None and label in with_images:
            tried = "|".join(str(p) for p in _label_paths(root, label))
            raise ShardError(
                str(item.path),
                f"event '{label}' at {onset:.3f} s has no stimulus image (tried {tried}) "
                f"while other '{label}' events have one",
            )
    labelled = sorted({ev[2] for ev in events if not is_annotation(ev[2])})
    if labelled and not with_images:
        tried = "|".join(str(p) for p in _label_paths(root, labelled[0]))
        raise ShardError(
            str(item.path),
            f"no event has a stimulus image in {root} (labels {', '.join(labelled[:5])}; "
            f"tried e.g. {tried} and the events.tsv stim_file column)",
        )
    return out


def _label_paths(root: Path, label: str) -> list[Path]:
    return [root / f"{label}{ext}" for ext in IMAGE_EXTENSIONS]


def _check_image(item: SourceItem, path: Path, root: Path) -> Stimulus:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            fmt = str(img.format)
            img.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise ShardError(str(item.path), f"stimulus {path} is not a readable image: {exc}") from exc
    try:
        name = path.relative_to(root).as_posix()
    except ValueError:
        name = str(path)
    return Stimulus(path, name, _EXT_OF_FORMAT.get(fmt, fmt.lower()))


def _events_tsv(item: SourceItem) -> Path | None:
    """``..._events.tsv`` beside a BIDS recording, or None."""
    if item.bids_root is None:
        return None
    name = item.path.name
    if "_" not in name:
        return None
    path = item.path.with_name(name[: name.rfind("_")] + "_events.tsv")
    return path if path.is_file() else None


def _stim_files(item: SourceItem) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``{trial_type: (sorted onsets, stim_files)}`` of the rows of events.tsv that name a file."""
    path = _events_tsv(item)
    if path is None:
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ShardError(str(item.path), f"cannot read {path}: {exc}") from exc
    grouped: dict[str, list[tuple[float, str]]] = {}
    for row in rows:
        ref = (row.get("stim_file") or "").strip()
        if not ref or ref == "n/a":
            continue
        try:
            onset = float(row["onset"])
        except (KeyError, TypeError, ValueError):
            continue
        grouped.setdefault(str(row.get("trial_type") or ""), []).append((onset, ref))
    out = {}
    for label, pairs in grouped.items():
        pairs.sort()
        out[label] = (np.array([p[0] for p in pairs]), [p[1] for p in pairs])
    return out


def _lookup(listed: dict[str, tuple[np.ndarray, list[str]]], onset: float, label: str) -> str | None:
    """The stim_file of the row nearest ``onset`` with this label (or with no trial_type column)."""
    best: tuple[float, str] | None = None
    for key in (label, ""):
        if key not in listed:
            continue
        onsets, refs = listed[key]
        j = int(np.searchsorted(onsets, onset))
        for k in (j - 1, j):
            if 0 <= k < len(onsets):
                d = abs(float(onsets[k]) - onset)
                if d <= _ONSET_TOLERANCE_S and (best is None or d < best[0]):
                    best = (d, refs[k])
    return best[1] if best is not None else None
