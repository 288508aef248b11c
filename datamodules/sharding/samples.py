"""Turn one recording into shard samples: quality checks, segmentation, encoding.

``recording_samples`` reads the recording (signals through MNE here, fMRI/T1 through nibabel in
``volume_samples``),
detects flat channels and non-finite values (handled per option, never silently written),
cuts signals into segments of ``segment_seconds`` with the events that fall in them, and
yields samples as ready-to-write byte dicts. It also returns the recording's summary (for the
manifest) and its normalisation accumulators (merged later over the train split).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.io.files import dumps_json
from neurotrain.datamodules.sharding import statistics as stats
from neurotrain.datamodules.sharding.encoding import RecordingOutput, encode_npy_as, recording_ids
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
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
    kept, dropped, zeroed = [], [], 0
    for k, s in enumerate(starts):
        seg = rec.data[:, s : s + seg_len]
        if np.isfinite(seg.sum()):  # NaN/inf propagate into the sum (fast path; exact check below)
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
    if not kept:
        raise ShardError(str(item.path), "every segment was dropped for non-finite values")
    if options.dtype == "float16":
        # max |x| without an |x| temporary: every kept value is finite here
        peak = max(
            max(float(seg.max()), -float(seg.min()))
            for seg in (rec.data[:, s : s + seg_len] for _, s in kept)
        )
        if peak >= 65504:
            raise ShardError(str(item.path), f"values up to {peak:.3g} overflow float16; use --dtype float32")

    if len(kept) == len(starts):  # the usual case: a view, no copy of the whole recording
        used = rec.data[:, : min(starts[-1] + seg_len, n_times)]
    else:
        used = rec.data[:, np.concatenate([np.arange(s, min(s + seg_len, n_times)) for _, s in kept])]
    # Resolved before anything is written: a missing image fails the recording, not a later shard.
    stims = event_stimuli(item, rec.events, options.stimuli) if options.stimuli is not None else None
    # The statistics (exact float64 sums, two passes over the data) run on a helper thread while
    # the segments are encoded and written: numpy releases the GIL in both.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-stats")
    acc = pool.submit(stats.accumulate, used, rec.ch_types, exclude)
    pool.shutdown(wait=False)  # the thread ends once the statistics are done
    summary = _signal_summary(item, rec, options, bads, flat, dropped, zeroed, len(kept))
    summary["noisy_channels"] = noisy
    if stims is not None:
        summary["stimuli"] = len({st.path for st in stims if st is not None})
    return RecordingOutput(_iter_signal(item, rec, options, kept, seg_len, bads, stims), summary, acc)


def _iter_signal(
    item, rec: SignalRecording, options, kept, seg_len, bads, stims: list[Stimulus | None] | None = None
) -> Iterator[dict[str, Any]]:
    dtype = np.dtype(options.dtype)
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
            "bad_channels": bads,
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
        sample = {
            "__key__": f"{item.recording_id}_seg{k:05d}",
            "signal.npy": encode_npy_as(seg, dtype),
            "meta.json": meta.encode(),
            "events.json": dumps_json(events).encode(),
        }
        for path, member in images.items():
            try:
                sample[member] = path.read_bytes()
            except OSError as exc:
                raise ShardError(str(item.path), f"cannot read stimulus {path}: {exc}") from exc
        yield sample


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
    # without a temporary the size of the recording.
    block = max(1, (1 << 21) // max(1, rec.data.shape[1]))
    std = np.concatenate(
        [rec.data[i : i + block].std(axis=1) for i in range(0, rec.data.shape[0], block)]
        or [np.empty(0, rec.data.dtype)]
    )
    flat, noisy = [], []
    for t in set(rec.ch_types):
        idx = [i for i, ct in enumerate(rec.ch_types) if ct == t]
        med = float(np.median(std[idx]))
        flat += [rec.ch_names[i] for i in idx if std[i] == 0 or std[i] < options.flat_threshold * med]
        if options.noisy_threshold and len(idx) >= 4:
            noisy += [rec.ch_names[i] for i in idx if std[i] > options.noisy_threshold * med]
    return sorted(flat), sorted(noisy)


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
        "n_positions": int(np.isfinite(rec.positions).all(axis=1).sum()),
        "event_counts": dict(sorted(labels.items())),
    }
