"""Where windows start inside a stored segment: random crops, fixed tiling, or event epochs.

Window length is a training choice, not a sharding choice: segments are stored whole and cut here.
The cutting functions return sample indices ``starts [k]`` (int64) into the segment's time axis
and ``labels [k]`` (int64, -1 = unlabeled), all windows ``window_samples`` long and fully inside
the segment. The number of windows of a segment never depends on the random draw, so epoch length
is known before reading any signal (``window_count``, ``window_counts``); ``common_sfreq`` is the
one sampling rate window lengths are converted at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurotrain.datamodules.loading.tar_index import Segment


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut: ``mode`` "windows" (crops/tiles) or "epochs" (around events).

    ``window_samples`` is T; ``tmin`` (seconds, epochs mode) is where a window starts relative to
    its event; ``label_map`` maps event names to classes (events not in it are dropped; ``None``
    keeps every label, numbered in ``labels`` order).
    """

    mode: str
    window_samples: int
    tmin: float = 0.0
    label_map: dict[str, int] | None = None


def window_count(n_times: int, sfreq: float, events: list[dict], spec: WindowSpec) -> int:
    """Number of windows a segment gives, identical for training and evaluation."""
    if spec.mode == "windows":
        return n_times // spec.window_samples
    return int(event_windows(n_times, sfreq, events, spec)[0].size)


def window_counts(segments: list[Segment], spec: WindowSpec) -> np.ndarray:
    """``counts [S]`` int64: ``window_count`` of each segment, 1 for a volume (one item per sample)."""
    return np.array(
        [
            1 if s.kind == "volume" else window_count(s.shape[1], float(s.meta["sfreq"]), s.events, spec)
            for s in segments
        ],
        dtype=np.int64,
    )


def common_sfreq(segments: list[Segment]) -> float | None:
    """The one sampling rate of these signal segments (None without any); several is an error."""
    rates = sorted({float(s.meta["sfreq"]) for s in segments if s.kind == "signal"})
    if len(rates) > 1:
        raise ValueError(f"datasets have different sampling rates {rates}; reshard them with one --sfreq")
    return rates[0] if rates else None


def segment_windows(
    n_times: int, sfreq: float, events: list[dict], spec: WindowSpec, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(starts [k], labels [k])`` for one segment.

    Windows mode: ``rng`` given gives ``n_times // T`` uniformly random crops (training), ``rng``
    None gives the non-overlapping tiling from the segment start (evaluation). Epochs mode is
    deterministic either way: one window per kept event.
    """
    if spec.mode == "epochs":
        return event_windows(n_times, sfreq, events, spec)
    T = spec.window_samples
    k = n_times // T
    if rng is None:
        starts = np.arange(k, dtype=np.int64) * T
    else:
        starts = rng.integers(0, n_times - T + 1, size=k, dtype=np.int64)
    return starts, np.full(k, -1, dtype=np.int64)


def event_windows(
    n_times: int, sfreq: float, events: list[dict], spec: WindowSpec
) -> tuple[np.ndarray, np.ndarray]:
    """One window per event whose label is in ``label_map`` and whose epoch lies inside the segment.

    Epochs that would cross the segment's edge are dropped (the neighbouring segment is a separate
    sample), so with 60 s segments and 1 s epochs about 1-2 % of events are lost.
    """
    _, starts, labels = kept_events(n_times, sfreq, events, spec)
    return starts, labels


def kept_events(
    n_times: int, sfreq: float, events: list[dict], spec: WindowSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices [k], starts [k], labels [k])`` of the events that give an epoch.

    ``indices`` point into ``events``: ``(sample key, index)`` names an epoch independently of
    ``tmin``, which is how evaluation folds select epochs (``selection``).
    """
    T = spec.window_samples
    indices, starts, labels = [], [], []
    for i, ev in enumerate(events):
        label = ev.get("label")
        if spec.label_map is None or label not in spec.label_map:
            continue
        start = int(round((float(ev["onset"]) + spec.tmin) * sfreq))
        if start >= 0 and start + T <= n_times:
            indices.append(i)
            starts.append(start)
            labels.append(spec.label_map[label])
    as_array = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return as_array(indices), as_array(starts), as_array(labels)
