"""Where windows start inside a stored segment: random crops, fixed tiling, or event epochs.

Window length is a training choice, not a sharding choice: segments are stored whole and cut here.
The cutting functions return sample indices ``starts [k]`` (int64) into the segment's time axis
and ``labels [k]`` (int64, -1 = unlabeled), all windows ``window_samples`` long and fully inside
the segment. The number of windows of a segment never depends on the random draw, so epoch length
is known before reading any signal (``window_count``, ``window_counts``).

Rates: window lengths are converted at one rate. Without ``WindowSpec.sfreq`` every segment must
be at the same rate (``common_sfreq``: datasets at different rates are an error naming each
dataset's rates and the ``sfreq`` option). With it, segments stored at another rate are
resampled to it when read (``resample``), and every function here sees a segment's length and
rate as loaded (``loaded_grid``), so a window of ``window_seconds`` covers the same duration in
every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurotrain.datamodules.loading.resample import resampled_length
from neurotrain.datamodules.loading.tar_index import Segment


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut: ``mode`` "windows" (crops/tiles) or "epochs" (around events).

    ``window_samples`` is T; ``tmin`` (seconds, epochs mode) is where a window starts relative to
    its event; ``label_map`` maps event names to classes (events not in it are dropped; ``None``
    keeps every label, numbered in ``labels`` order).

    Epochs mode also leaves out epochs for what happens inside their window (``screen_events``):
    ``tmax`` is the window end in seconds after the onset (``None``: ``tmin + T / sfreq``);
    ``reject_bad_spans`` drops an epoch whose window ``[onset + tmin, onset + tmax)`` overlaps a
    span labelled ``bad*`` (any case); ``include_next_event`` False drops an epoch whose window
    holds, after its own onset, the onset of another event in ``label_map``.

    ``sfreq`` is the load rate: a segment stored at another rate is resampled to it when read,
    and its windows are cut on that grid (``loaded_grid``); ``None``: every segment as stored.
    """

    mode: str
    window_samples: int
    tmin: float = 0.0
    label_map: dict[str, int] | None = None
    tmax: float | None = None
    reject_bad_spans: bool = True
    include_next_event: bool = False
    sfreq: float | None = None


REJECT_REASONS = ("bad_span", "next_event")


def is_bad_span(label: object) -> bool:
    """An annotation that marks bad data: its label starts with "bad", any case (MNE's
    ``reject_by_annotation`` convention: ``BAD_break``, ``bad_pylossless_ch_sd`` ...)."""
    return isinstance(label, str) and label.lower().startswith("bad")


def window_count(n_times: int, sfreq: float, events: list[dict], spec: WindowSpec) -> int:
    """Number of windows a segment gives, identical for training and evaluation."""
    if spec.mode == "windows":
        return n_times // spec.window_samples
    return int(event_windows(n_times, sfreq, events, spec)[0].size)


def loaded_grid(seg: Segment, spec: WindowSpec) -> tuple[int, float]:
    """``(n_times, sfreq)`` of a signal segment as the loader delivers it: stored, or resampled
    to ``spec.sfreq`` (``resample.resampled_length``)."""
    n, rate = int(seg.shape[1]), float(seg.meta["sfreq"])
    if spec.sfreq is None or spec.sfreq == rate:
        return n, rate
    return resampled_length(n, rate, spec.sfreq), float(spec.sfreq)


def window_counts(segments: list[Segment], spec: WindowSpec) -> np.ndarray:
    """``counts [S]`` int64: ``window_count`` of each segment, 1 for a volume (one item per sample)."""
    return np.array(
        [1 if s.kind == "volume" else window_count(*loaded_grid(s, spec), s.events, spec) for s in segments],
        dtype=np.int64,
    )


def common_sfreq(segments: list[Segment], names: list[str] | None = None) -> float | None:
    """The one sampling rate of these signal segments (None without any).

    Several rates are a ``ValueError`` that names each dataset's rates (``names[d]`` for
    ``Segment.dataset == d``) and the two ways out: ``sfreq`` (resample at load) or resharding.
    """
    rates = sorted({float(s.meta["sfreq"]) for s in segments if s.kind == "signal"})
    if len(rates) > 1:
        by_ds: dict[int, set[float]] = {}
        for s in segments:
            if s.kind == "signal":
                by_ds.setdefault(s.dataset, set()).add(float(s.meta["sfreq"]))
        said = "; ".join(
            f"{names[d] if names is not None and d < len(names) else f'dataset {d}'}: "
            + ", ".join(f"{r:g} Hz" for r in sorted(rs))
            for d, rs in sorted(by_ds.items())
        )
        raise ValueError(
            f"datasets have different sampling rates ({said}); set the data option sfreq "
            f"(e.g. `sfreq: {rates[-1]:g}`) to resample every segment to one rate when it is read, "
            "or reshard them with one --sfreq"
        )
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
    sample), so with 60 s segments and 1 s epochs about 1-2 % of events are lost; so are epochs
    over a bad span or holding the next stimulus, as the spec asks (``screen_events``).
    """
    _, starts, labels = kept_events(n_times, sfreq, events, spec)
    return starts, labels


def kept_events(
    n_times: int, sfreq: float, events: list[dict], spec: WindowSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices [k], starts [k], labels [k])`` of the events that give an epoch.

    ``indices`` point into ``events``: ``(sample key, index)`` names an epoch independently of
    ``tmin``, which is how evaluation folds select epochs (``selection``). Events left out by
    ``screen_events`` (bad span, next event) give none.
    """
    indices, starts, labels, reasons = screen_events(n_times, sfreq, events, spec)
    keep = np.array([r is None for r in reasons], dtype=bool)
    return indices[keep], starts[keep], labels[keep]


def rejection_counts(n_times: int, sfreq: float, events: list[dict], spec: WindowSpec) -> dict[str, int]:
    """``{"bad_span": n, "next_event": n}``: epochs of this segment ``screen_events`` leaves out."""
    reasons = screen_events(n_times, sfreq, events, spec)[3]
    return {r: reasons.count(r) for r in REJECT_REASONS}


def screen_events(
    n_times: int, sfreq: float, events: list[dict], spec: WindowSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """``(indices [k], starts [k], labels [k], reasons [k])`` of the events whose epoch fits.

    An event counts when its label is in ``label_map``, its epoch lies inside the segment and it
    is not marked ``"selected": False`` (``selection.apply_rule``). ``reasons[j]`` is None for an
    epoch that is kept, else why it is left out:

    - ``"bad_span"`` (``spec.reject_bad_spans``): the window ``[onset + tmin, onset + tmax)``
      overlaps a span ``[onset, onset + duration)`` of an event labelled ``bad*`` (``is_bad_span``;
      a zero-duration one counts as a point). Checked first: an epoch failing both counts here.
    - ``"next_event"`` (not ``spec.include_next_event``): another event whose label is in
      ``label_map`` (selected or not, fitting or not) has its onset strictly after this onset and
      before ``onset + tmax``, so the window would hold the response to the next stimulus.

    Only the segment's own events are known: a span or stimulus in the neighbouring segment (the
    recording was cut into segments) does not reject an epoch.
    """
    T = spec.window_samples
    label_map = spec.label_map
    tmax = spec.tmax if spec.tmax is not None else spec.tmin + T / sfreq
    indices, starts, labels, onsets = [], [], [], []
    for i, ev in enumerate(events):
        label = ev.get("label")
        if label_map is None or label not in label_map or ev.get("selected") is False:
            continue
        onset = float(ev["onset"])
        start = int(round((onset + spec.tmin) * sfreq))
        if start >= 0 and start + T <= n_times:
            indices.append(i)
            starts.append(start)
            labels.append(int(ev["class"]) if "class" in ev else label_map[label])  # a selection's override
            onsets.append(onset)
    as_array = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    reasons: list[str | None] = [None] * len(indices)
    if indices:
        reasons = _reasons(np.asarray(onsets), indices, events, spec, tmax)
    return as_array(indices), as_array(starts), as_array(labels), reasons


def _reasons(
    onsets: np.ndarray, indices: list[int], events: list[dict], spec: WindowSpec, tmax: float
) -> list[str | None]:
    """Why each epoch (event ``indices[j]`` at ``onsets[j]``) is left out; None: kept."""
    bad = np.zeros(onsets.size, dtype=bool)
    if spec.reject_bad_spans:
        spans = [(j, ev) for j, ev in enumerate(events) if is_bad_span(ev.get("label"))]
        if spans:
            s = np.array([float(ev["onset"]) for _, ev in spans])[None, :]
            d = np.array([float(ev.get("duration") or 0.0) for _, ev in spans])[None, :]
            a, b = (onsets + spec.tmin)[:, None], (onsets + tmax)[:, None]
            hit = (s < b) & np.where(d > 0, s + d > a, s >= a)
            hit &= np.array([j for j, _ in spans])[None, :] != np.asarray(indices)[:, None]
            bad = hit.any(axis=1)
    late = np.zeros(onsets.size, dtype=bool)
    if not spec.include_next_event and tmax > 0:
        stimuli = np.sort([float(ev["onset"]) for ev in events if ev.get("label") in spec.label_map])
        after = np.searchsorted(stimuli, onsets, side="right")
        late = np.searchsorted(stimuli, onsets + tmax, side="left") > after
    return ["bad_span" if x else "next_event" if y else None for x, y in zip(bad, late, strict=True)]
