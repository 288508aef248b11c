"""Turn one recording into shard samples: quality checks, segmentation, encoding.

``recording_samples`` reads the recording (signals through MNE here, fMRI/T1 through nibabel in
``volume_samples``),
detects flat channels and non-finite values (handled per option, never silently written),
cuts signals into segments of ``segment_seconds`` with the events that fall in them, and
yields samples as ready-to-write byte dicts. It also returns the recording's summary (for the
manifest) and its normalisation accumulators (merged later over the train split).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.format.channel_types import stats_key
from neurotrain.datamodules.io.files import dumps_json
from neurotrain.datamodules.sharding import statistics as stats
from neurotrain.datamodules.sharding.encoding import RecordingOutput, encode_npy_as, recording_ids
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.edf import helper_threads
from neurotrain.datamodules.sharding.readers.signals import SignalRecording, read_signal
from neurotrain.datamodules.sharding.sources import VOLUME_MODALITIES, SourceItem
from neurotrain.datamodules.sharding.stimuli import Stimulus, event_stimuli
from neurotrain.datamodules.sharding.volume_samples import anat_samples, fmri_samples

_ANNOTATION_PREFIXES = ("bad", "edge", "boundary")


def is_annotation(label: str) -> bool:
    """Bad-span and boundary markers are annotations, not labels to learn."""
    return label.lower().startswith(_ANNOTATION_PREFIXES)


def recording_samples(item: SourceItem, options: ShardOptions) -> RecordingOutput:
    """Read ``item`` and prepare its samples; raises ``ShardError`` naming the file."""
    _check_modality(item, options.modality)
    if item.kind == "signal":
        return _signal_samples(item, options)
    if item.kind == "fmri":
        return fmri_samples(item, options)
    return anat_samples(item, options)


def _check_modality(item: SourceItem, modality: str | None) -> None:
    """Refuse a ``--modality`` of the other family: a signal modality for an image, or the reverse."""
    if modality is None:
        return
    image = item.kind != "signal"
    if image and modality not in VOLUME_MODALITIES:
        raise ShardError(
            str(item.path),
            f"--modality {modality} is for EEG/MEG/iEEG recordings, and this is a {item.fmt.upper()} image "
            "(use --modality fmri or anat, or leave it out)",
        )
    if not image and modality in VOLUME_MODALITIES:
        raise ShardError(
            str(item.path),
            f"--modality {modality} is for NIfTI/MGZ images, and this is an {item.fmt.upper()} recording "
            "(use --modality eeg, meg or ieeg, or leave it out)",
        )


def _signal_samples(item: SourceItem, options: ShardOptions) -> RecordingOutput:
    rec = read_signal(item, options)
    flat, noisy = _outlier_channels(rec, options)
    if flat and options.flat == "fail":
        raise ShardError(str(item.path), f"flat channels: {', '.join(flat)} (use --flat mark|drop)")
    if flat and options.flat == "drop":
        keep = [i for i, n in enumerate(rec.ch_names) if n not in flat]
        rec = _subset(rec, keep)
    bads = sorted(set(rec.bad_channels) | set(noisy) | (set(flat) if options.flat == "mark" else set()))
    exclude = np.array([n in bads for n in rec.ch_names])

    seg_len = int(round(options.segment_seconds * rec.sfreq))
    min_len = int(round(options.min_segment_seconds * rec.sfreq))
    n_times = rec.data.shape[1]
    starts = [s for s in range(0, n_times, seg_len) if min(seg_len, n_times - s) >= min_len]
    if not starts:
        raise ShardError(
            str(item.path),
            f"recording is {n_times / rec.sfreq:.1f} s long, shorter than --min-segment-seconds "
            f"{options.min_segment_seconds}",
        )
    # float16: each segment's max and min say at once whether it is finite (NaN and inf reach
    # them) and how far it goes (the overflow check below), one pass fewer than a sum and a peak.
    half = options.dtype == "float16"
    kept, dropped, zeroed, peaks = [], [], 0, []
    for k, s in enumerate(starts):
        seg = rec.data[:, s : s + seg_len]
        if half:
            hi, lo = float(seg.max()), float(seg.min())
            if math.isfinite(hi) and math.isfinite(lo):
                kept.append((k, s))
                peaks.append(max(hi, -lo))
                continue
        elif np.isfinite(seg.sum()):  # NaN/inf propagate into the sum (fast path; exact check below)
            kept.append((k, s))
            continue
        bad = ~np.isfinite(seg)
        if bad.any():
            where = f"segment {k} ({s / rec.sfreq:.1f} s), channels " + ", ".join(
                rec.ch_names[i] for i in np.nonzero(bad.any(axis=1))[0][:5]
            )
            if options.nonfinite == "fail":
                raise ShardError(
                    str(item.path), f"NaN or infinite values in {where} (use --nonfinite drop|zero)"
                )
            if options.nonfinite == "drop":
                dropped.append({"segment": k, "onset_s": s / rec.sfreq, "reason": "non-finite values"})
                continue
            zeroed += int(bad.sum())
            seg[bad] = 0.0
        kept.append((k, s))
        if half:
            peaks.append(max(float(seg.max()), -float(seg.min())))
    if not kept:
        raise ShardError(str(item.path), "every segment was dropped for non-finite values")
    dtype = options.dtype
    if half:
        # float16 holds |x| < 65504 and keeps 3 significant digits down to ~6e-5: a recording
        # outside that (DC offsets, values stored as read with an unknown unit) is stored in float32.
        peak = max(peaks)
        levels = [v["stored_median_std"] for v in rec.preprocessing.get("units", {}).values()]
        smallest = min((v for v in levels if v > 0), default=1.0)
        if peak >= 65504 or smallest < 1e-2:
            dtype = "float32"
            why = f"values up to {peak:.3g}" if peak >= 65504 else f"a median channel std of {smallest:.3g}"
            rec.warnings.append(f"{why} do not fit float16: this recording is stored in float32")

    if len(kept) == len(starts):  # the usual case: a view, no copy of the whole recording
        used = rec.data[:, : min(starts[-1] + seg_len, n_times)]
    else:
        used = rec.data[:, np.concatenate([np.arange(s, min(s + seg_len, n_times)) for _, s in kept])]
    # Resolved before anything is written: a missing image fails the recording, not a later shard.
    stims = event_stimuli(item, rec.events, options.stimuli) if options.stimuli is not None else None
    # The statistics (exact float64 sums, two passes over the data) run on a helper thread while
    # the segments are encoded and written: numpy releases the GIL in both.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-stats")
    keys = [stats_key(t, u) for t, u in zip(rec.ch_types, rec.units, strict=True)]
    acc = pool.submit(stats.accumulate, used, keys, exclude)
    pool.shutdown(wait=False)  # the thread ends once the statistics are done
    summary = _signal_summary(item, rec, options, bads, flat, dropped, zeroed, len(kept))
    summary["noisy_channels"] = noisy
    if stims is not None:
        summary["stimuli"] = len({st.path for st in stims if st is not None})
    summary["dtype"] = dtype
    summary["warnings"] = list(rec.warnings)
    return RecordingOutput(_iter_signal(item, rec, dtype, kept, seg_len, bads, stims), summary, acc)


def _iter_signal(
    item,
    rec: SignalRecording,
    dtype_name: str,
    kept,
    seg_len,
    bads,
    stims: list[Stimulus | None] | None = None,
) -> Iterator[dict[str, Any]]:
    dtype = np.dtype(dtype_name)
    half = np.empty((rec.data.shape[0], seg_len), dtype=np.float16) if dtype == np.float16 else None
    positions = [None if not np.isfinite(p).all() else [float(v) for v in p] for p in rec.positions]
    onsets = np.array([e[0] for e in rec.events])
    # meta.json differs between segments in four fields: the rest is encoded once.
    fixed = _json_items(
        {
            **recording_ids(item),
            "modality": rec.modality,
            "sfreq": rec.sfreq,
            "ch_names": rec.ch_names,
            "ch_types": rec.ch_types,
            "units": rec.units,
            "positions": positions,
            "position_frame": rec.position_frame,
            "position_source": rec.position_source,
            "coordinate_system": rec.coordinate_system,
            **_geometry(rec),
            "bad_channels": bads,
            "dtype": dtype_name,
            "preprocessing": rec.preprocessing,
        }
    )
    for k, s in kept:
        seg = rec.data[:, s : s + seg_len]
        t0, t1 = s / rec.sfreq, (s + seg.shape[1]) / rec.sfreq
        inside = np.nonzero((onsets >= t0) & (onsets < t1))[0] if len(onsets) else []
        events = [
            {
                "onset": round(rec.events[i][0] - t0, 6),
                "duration": rec.events[i][1],
                "label": rec.events[i][2],
            }
            for i in inside
        ]
        images: dict[Path, str] = {}  # each image once per segment: path -> member "image.<n>.<ext>"
        if stims is not None:
            for ev, i in zip(events, inside, strict=True):
                st = stims[i]
                if st is not None:
                    member = images.setdefault(st.path, f"image.{len(images)}.{st.ext}")
                    ev["image"] = member
                    ev["stim_file"] = st.name
        varying = {"n_times": int(seg.shape[1]), "segment_index": k, "onset_s": t0, "duration_s": t1 - t0}
        meta = _join_json_items({**fixed, **_json_items(varying)})
        if half is not None:  # already float16: encode_npy_as copies it as it is
            seg = _cast_float16(seg, half[:, : seg.shape[1]])
        sample = {
            "__key__": f"{item.recording_id}_seg{k:05d}",
            "signal.npy": encode_npy_as(seg, dtype),
            "meta.json": meta.encode(),
            "events.json": events_json(events),
        }
        for path, member in images.items():
            try:
                sample[member] = path.read_bytes()
            except OSError as exc:
                raise ShardError(str(item.path), f"cannot read stimulus {path}: {exc}") from exc
        yield sample


_CAST_CHUNK = 16384  # values per torch call: below torch's parallel grain (32768), so it runs serially


def _cast_float16(seg: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``seg`` (float32, finite, below float16's maximum) cast into ``out``: the bits of ``astype``.

    Both numpy and torch round to the nearest float16, ties to even, subnormals included (the
    IEEE 754 conversion), so the bits are the same; torch converts with the CPU's F16C/AVX-512
    instructions, 5-10x faster than numpy's per-element conversion (1-2 ms against 6-9 ms for one
    60 s segment of 128 channels at 256 Hz). torch is imported already (webdataset imports it).
    It is called on pieces smaller than torch's parallel grain, so each call runs in this thread:
    a call on the whole segment starts an OpenMP team, and worker processes forked after that
    (``--workers 2`` after a 1-worker run in the same process) hang in their first parallel call.
    """
    import torch

    n = seg.shape[1]
    for r in range(seg.shape[0]):
        for a in range(0, n, _CAST_CHUNK):
            b = min(n, a + _CAST_CHUNK)
            torch.from_numpy(out[r, a:b]).copy_(torch.from_numpy(seg[r, a:b]))
    return out


def events_json(events: list[dict[str, Any]]) -> bytes:
    """``dumps_json(events).encode()`` for a list of flat dicts, without json's pure-Python indenter.

    ``json.dumps`` with ``indent`` encodes item by item in Python (most of the JSON time of a
    recording with 1,600 events); this writes the same layout (one space of indent per level,
    keys sorted, ``","`` at line ends and ``": "`` after keys) with json's own spellings of
    strings and numbers. Anything
    but str, int, float, bool or None values, or a non-finite float, goes through ``dumps_json``.
    """
    if not events:
        return b"[]\n"
    parts = []
    for ev in events:
        items = []
        for key in sorted(ev):
            value = _json_scalar(ev[key])
            if value is None or not isinstance(key, str):
                return dumps_json(events).encode()
            items.append(f"  {_encode_str(key)}: {value}")
        parts.append(" {\n" + ",\n".join(items) + "\n }" if items else " {}")
    return ("[\n" + ",\n".join(parts) + "\n]\n").encode()


_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) quotes strings with


def _json_scalar(value: Any) -> str | None:
    """json's text for a scalar (as ``json.dumps`` spells it), or None for anything else."""
    if isinstance(value, str):
        return _encode_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float) and value - value == 0:  # finite (NaN and inf: dumps_json refuses them)
        return float.__repr__(value)
    return None


def _json_items(obj: dict[str, Any]) -> dict[str, str]:
    """Each item of ``obj`` as its text inside ``dumps_json`` of a dict holding it (same depth)."""
    return {k: dumps_json({k: v})[2:-3] for k, v in obj.items()}


def _join_json_items(items: dict[str, str]) -> str:
    """``dumps_json`` of the dict whose items ``_json_items`` encoded (keys sorted, as it sorts)."""
    return "{\n" + ",\n".join(items[k] for k in sorted(items)) + "\n}\n"


def _outlier_channels(rec: SignalRecording, options: ShardOptions) -> tuple[list[str], list[str]]:
    """(flat, noisy): std 0 or below ``flat_threshold`` × the type's median std; above ``noisy_threshold`` ×.

    Noisy channels are marked bad (kept in the shards, left out of the statistics and, by
    default, of the batches); a few of them would otherwise dominate the normalisation scale.
    """
    # Row blocks: the same per-row float32 reductions as ``data.std(axis=1)`` (bit-identical)
    # without a temporary the size of the recording; in a process sharding alone, two threads
    # share the blocks (numpy releases the GIL in its reductions).
    block = max(1, (1 << 21) // max(1, rec.data.shape[1]))
    blocks = [rec.data[i : i + block] for i in range(0, rec.data.shape[0], block)]
    if len(blocks) > 1 and helper_threads() > 1:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="shard-std") as pool:
            stds = list(pool.map(lambda b: b.std(axis=1), blocks))
    else:
        stds = [b.std(axis=1) for b in blocks]
    std = np.concatenate(stds or [np.empty(0, rec.data.dtype)])
    flat, noisy = [], []
    for t in set(rec.ch_types):
        idx = [i for i, ct in enumerate(rec.ch_types) if ct == t]
        med = float(np.median(std[idx]))
        flat += [rec.ch_names[i] for i in idx if std[i] == 0 or std[i] < options.flat_threshold * med]
        if options.noisy_threshold and len(idx) >= 4:
            noisy += [rec.ch_names[i] for i in idx if std[i] > options.noisy_threshold * med]
    return sorted(flat), sorted(noisy)


def _geometry(rec: SignalRecording) -> dict[str, Any]:
    """``orientations`` (per channel a unit vector or null) and ``coil_types``, when the recording
    has MEG sensors; nothing for EEG/iEEG (their shards are unchanged)."""
    if rec.orientations is None or not np.isfinite(rec.orientations).all(axis=1).any():
        return {}
    return {
        "orientations": [
            None if not np.isfinite(o).all() else [float(v) for v in o] for o in rec.orientations
        ],
        "coil_types": list(rec.coil_types),
    }


def _subset(rec: SignalRecording, keep: list[int]) -> SignalRecording:
    return SignalRecording(
        data=rec.data[keep],
        sfreq=rec.sfreq,
        ch_names=[rec.ch_names[i] for i in keep],
        ch_types=[rec.ch_types[i] for i in keep],
        units=[rec.units[i] for i in keep],
        positions=rec.positions[keep],
        position_frame=rec.position_frame,
        position_source=rec.position_source,
        bad_channels=[b for b in rec.bad_channels if b in {rec.ch_names[i] for i in keep}],
        events=rec.events,
        modality=rec.modality,
        preprocessing=rec.preprocessing,
        coordinate_system=rec.coordinate_system,
        orientations=None if rec.orientations is None else rec.orientations[keep],
        coil_types=[rec.coil_types[i] for i in keep] if rec.coil_types else [],
        warnings=rec.warnings,
    )


def _signal_summary(item, rec, options, bads, flat, dropped, zeroed, n_segments) -> dict[str, Any]:
    labels = Counter(e[2] for e in rec.events)
    return {
        **recording_ids(item),
        "modality": rec.modality,
        "sfreq": rec.sfreq,
        "n_channels": len(rec.ch_names),
        "ch_names": rec.ch_names,
        "ch_types": rec.ch_types,
        "duration_s": rec.data.shape[1] / rec.sfreq,
        "n_segments": n_segments,
        "segment_seconds": options.segment_seconds,
        "bad_channels": bads,
        "flat_channels": flat,
        "dropped_segments": dropped,
        "zeroed_values": zeroed,
        "position_source": rec.position_source,
        "position_frame": rec.position_frame,
        "coordinate_system": rec.coordinate_system,
        "n_positions": int(np.isfinite(rec.positions).all(axis=1).sum()),
        "event_counts": dict(sorted(labels.items())),
    }
