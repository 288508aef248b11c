"""Resampling at load: datasets stored at different rates meet at one per-config rate (``data.sfreq``).

Why resample at load rather than cut patches of a fixed duration in seconds: the encoder's
``patch_size`` is in samples and its patch embedding is a linear map of ``patch_size`` samples,
so one weight matrix only means one thing when every batch has one rate; a patch of fixed
seconds would hold 64 samples of 256 Hz EEG but 250 of 1000 Hz iEEG and need one embedding per
rate (or a resampling inside the model). Resampling when a segment is read keeps the shards as
recorded (no reshard per experiment, ``--sfreq`` at sharding still works), keeps every batch one
``[B, C, T]`` tensor with ``T = window_seconds x sfreq`` for every dataset, and costs nothing
where a dataset is already at the rate (its segments take the exact path they took before).

How: ``scipy.signal.resample_poly`` (polyphase FIR, its default Kaiser-windowed anti-alias
low-pass at the lower of the two Nyquist frequencies), one call per segment read, all channels
at once along the time axis. A segment is resampled whole, not window by window: its windows
are then cut from the resampled array exactly as from a stored one, and only the segment's two
ends see the filter's edge. Edges: the signal is extended by reflection (``padtype="reflect"``,
MNE's choice for its own polyphase resampling), so the first and last ``10 x max(up, down) /
up`` input samples (about 40 ms for 1000 -> 256 Hz, 20 ms for 200 -> 256 Hz) are filtered
against a mirrored signal rather than the true neighbours, which live in the recording's
previous and next segments (separate samples). Accepted and documented rather than reading
across segments: it is a few tens of ms of a segment of tens of seconds.

Cost: only the rows a batch uses are resampled (``rows``: the channels the layouts keep, e.g.
the 102 magnetometers of a 306-sensor MEG recording loaded with ``channel_types: [mag]``), into a
compact array whose rows follow one another, so a window is copied into its batch in a few
contiguous blocks rather than one copy per scattered stored row (``streaming``). Resampled segments are kept in a bounded LRU
(``ResampledCache``, 256 MB per process), because weighted mixing cycles a small dataset's
segments many times per epoch (a 19 s iEEG recording at weight 0.25 of a large EEG corpus is
read dozens of times) and every epoch reads them again; a segment is resampled once while it
stays in the cache.

Output sample ``k`` is at time ``k / sfreq`` from the segment start (the polyphase filter is
zero-phase after its delay is removed), so event onsets in seconds keep pointing at the same
instant. Output length: ``ceil(n x up / down)`` (``resampled_length``), known before reading
the signal, so epoch plans stay a function of the index alone.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from fractions import Fraction

import numpy as np

# A rate ratio whose reduced fraction needs more than this many up/down steps is refused: the
# FIR filter has 20 x max(up, down) + 1 taps, so such a ratio (e.g. 1000 -> 999.7) is a typo.
MAX_FACTOR = 4096


def rate_ratio(src: float, dst: float) -> tuple[int, int]:
    """``(up, down)``: the smallest integers with ``src x up / down == dst``.

    Rates are read as fractions with denominators up to 1000 (so 1000.0, 256.0, 2048.0 or 1/TR
    values like 0.5 are exact); a ratio needing more than ``MAX_FACTOR`` is a ``ValueError``.
    """
    if not (src > 0 and dst > 0 and math.isfinite(src) and math.isfinite(dst)):
        raise ValueError(f"sampling rates must be positive and finite, got {src} -> {dst}")
    ratio = Fraction(dst).limit_denominator(1000) / Fraction(src).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    if max(up, down) > MAX_FACTOR:
        raise ValueError(
            f"resampling {src:g} Hz -> {dst:g} Hz needs up/down factors {up}/{down} "
            f"(more than {MAX_FACTOR}); choose a data.sfreq with a simpler ratio to the stored rates"
        )
    return up, down


def resampled_length(n_times: int, src: float, dst: float) -> int:
    """Samples a segment of ``n_times`` at ``src`` Hz has at ``dst`` Hz: ``ceil(n x up / down)``."""
    if src == dst:
        return int(n_times)
    up, down = rate_ratio(src, dst)
    return -(-int(n_times) * up // down)


def resample_segment(x: np.ndarray, src: float, dst: float, rows: np.ndarray | None = None) -> np.ndarray:
    """``x [C, n]`` at ``src`` Hz as float32 ``[C, resampled_length(n)]`` at ``dst`` Hz.

    Returns ``x`` itself when the rates are equal (no copy, no cast). Otherwise one
    ``scipy.signal.resample_poly`` call over all channels, or only over ``rows`` (int indices, in
    that order: the result is then ``[len(rows), resampled_length(n)]``), anti-alias filtered with
    reflected edges, computed in float32 (stored segments are float16 or float32).
    """
    if src == dst:
        return x
    from scipy.signal import resample_poly

    up, down = rate_ratio(src, dst)
    picked = x if rows is None else x[np.asarray(rows, dtype=np.intp)]  # [R, n]
    y = resample_poly(np.asarray(picked, dtype=np.float32), up, down, axis=1, padtype="reflect")
    return np.ascontiguousarray(y, dtype=np.float32)


class ResampledCache:
    """Resampled segments by key, least recently used dropped beyond ``max_bytes`` (thread-safe).

    ``get(key, make)`` returns the cached array or stores ``make()``'s; arrays handed out are
    shared and must not be written to (the loader only copies windows out of them). Two threads
    asking for the same missing key may both compute it: the same values, one is kept.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
                return hit
        value = make()
        with self.lock:
            if key not in self.items and value.nbytes <= self.max_bytes:
                self.items[key] = value
                self.bytes += value.nbytes
                while self.bytes > self.max_bytes:
                    _, old = self.items.popitem(last=False)
                    self.bytes -= old.nbytes
        return value
