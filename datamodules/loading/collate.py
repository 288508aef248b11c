"""Channel layouts and batch assembly: any montage padded into one ``[B, C_max, T]`` batch.

A *layout* says, for one channel set, which stored rows are kept and which batch slot each goes
to, with the slot's position, type index and normalisation. Layouts are computed once per
distinct channel set at setup, so collating a window is one array copy plus a few vector reads.

Two ways to fill slots:
- ``channels`` given: slot ``i`` is always channel ``channels[i]``; a sample without it leaves the
  slot masked. Models see the same sensor in the same slot across datasets.
- otherwise: a sample's kept channels fill slots ``0..n-1`` in stored order; the rest is padding.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from neurotrain.datamodules.format.channel_types import stats_key, type_index

log = logging.getLogger(__name__)


@dataclass
class Layout:
    """Where one channel set lands in a batch. Arrays are per slot, length ``C_max``.

    Treated as immutable once made: ``_window_plan`` keeps views of its arrays per window length.
    """

    runs: list[tuple[int, int, int]]  # (stored row, batch slot, length): contiguous copies
    full: bool  # every slot filled, so the batch needs no zeroing
    channel_mask: np.ndarray  # bool [C_max]
    positions: np.ndarray  # float32 [C_max, 3], 0 where unknown
    position_mask: np.ndarray  # bool [C_max]
    types: np.ndarray  # int64 [C_max], 0 = pad
    center: np.ndarray  # float32 [C_max], subtracted (0 on pads)
    inv_scale: np.ndarray  # float32 [C_max], multiplied after centering (1 on pads)
    orientations: np.ndarray  # float32 [C_max, 3], unit MEG coil normals, 0 where unknown
    orientation_mask: np.ndarray  # bool [C_max], True where the slot has a coil normal

    def __getstate__(self) -> dict[str, Any]:
        # The per-window-length plans (``_window_plan``) hold tensors; workers rebuild their own.
        state = self.__dict__.copy()
        state.pop("_plans", None)
        return state


def kept_channels(
    meta: dict[str, Any], channel_types: list[str] | None, drop_bad: bool, exclude: Iterable[str] = ()
) -> list[int]:
    """Stored rows of a sample's channels that a ``(channel_types, drop_bad)`` choice keeps, in order.

    ``drop_bad`` leaves out the channels named in ``meta["bad_channels"]``; ``channel_types``
    (``None``: every type) keeps only channels of those MNE types; ``exclude`` names channels that
    are never input (a regression target channel).
    """
    bads = set(meta.get("bad_channels") or []) if drop_bad else set()
    bads |= set(exclude)
    return [
        i
        for i, (n, t) in enumerate(zip(meta["ch_names"], meta["ch_types"], strict=True))
        if n not in bads and (channel_types is None or t in channel_types)
    ]


def widest_kept(
    metas: Iterable[dict[str, Any]],
    channel_types: list[str] | None,
    drop_bad: bool,
    exclude: Iterable[str] = (),
) -> int:
    """The most channels ``kept_channels`` keeps of any of these samples (0 without any)."""
    return max((len(kept_channels(m, channel_types, drop_bad, exclude)) for m in metas), default=0)


def make_layout(
    meta: dict[str, Any],
    c_max: int,
    channels: list[str] | None,
    channel_types: list[str] | None,
    drop_bad: bool,
    norm: dict[str, tuple[float, float]] | None,
    exclude: Iterable[str] = (),
) -> Layout:
    """Layout of one sample's channel set; ``norm`` maps a statistics key (``stats_key``: the channel
    type, or ``"<type>@<unit>"`` for a channel not in its type's stored unit) -> (center, scale)."""
    names = list(meta["ch_names"])
    types = list(meta["ch_types"])
    keep = kept_channels(meta, channel_types, drop_bad, exclude)
    if channels is not None:
        where = {n: i for i, n in enumerate(channels)}
        keep = [i for i in keep if names[i] in where]
        slot_of = [where[names[i]] for i in keep]
    else:
        if len(keep) > c_max:
            log.warning("%d channels exceed max_channels=%d: the last ones are dropped", len(keep), c_max)
            keep = keep[:c_max]
        slot_of = list(range(len(keep)))
    rows_arr = np.asarray(keep, dtype=np.int64)
    slots_arr = np.asarray(slot_of, dtype=np.int64)
    runs = _runs(rows_arr, slots_arr)
    full = len(keep) == c_max

    channel_mask = np.zeros(c_max, dtype=bool)
    channel_mask[slots_arr] = True
    positions = np.zeros((c_max, 3), dtype=np.float32)
    position_mask = np.zeros(c_max, dtype=bool)
    stored_pos = meta.get("positions")
    if stored_pos is not None:
        for row, slot in zip(keep, slot_of, strict=True):
            p = stored_pos[row]
            if p is not None and all(v is not None for v in p) and np.all(np.isfinite(p)):
                positions[slot] = p
                position_mask[slot] = True
    type_idx = np.zeros(c_max, dtype=np.int64)
    center = np.zeros(c_max, dtype=np.float32)
    inv_scale = np.ones(c_max, dtype=np.float32)
    units = meta.get("units") or [None] * len(types)
    for row, slot in zip(keep, slot_of, strict=True):
        type_idx[slot] = type_index(types[row])
        key = stats_key(types[row], units[row])  # "ecog@unknown": normalised apart from µV channels
        if norm is not None and key in norm:
            c, s = norm[key]
            center[slot] = c
            inv_scale[slot] = 1.0 / s if s > 0 else 1.0
    orientations, orientation_mask = _orientations(meta.get("orientations"), keep, slot_of, c_max)
    return Layout(
        runs,
        full,
        channel_mask,
        positions,
        position_mask,
        type_idx,
        center,
        inv_scale,
        orientations,
        orientation_mask,
    )


def _orientations(
    stored: list[list[float] | None] | None, keep: list[int], slot_of: list[int], c_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per slot the stored unit coil normal (MEG: ``meta["orientations"]``) and whether it has one.

    Returns ``float32 [C_max, 3]`` (0 where unknown) and ``bool [C_max]``. A sample without
    ``orientations`` (EEG, iEEG: the shards store none) gives zeros and an all-False mask, made
    once per layout like the positions, so its batches pay only for stacking two small arrays.
    """
    orientations = np.zeros((c_max, 3), dtype=np.float32)
    mask = np.zeros(c_max, dtype=bool)
    if stored is None:
        return orientations, mask
    for row, slot in zip(keep, slot_of, strict=True):
        o = stored[row]
        if o is not None and all(v is not None for v in o) and np.all(np.isfinite(o)):
            orientations[slot] = o
            mask[slot] = True
    return orientations, mask


def collate_windows(
    windows: list[tuple[np.ndarray, int, Layout]], window_samples: int, c_max: int, normalize: bool
) -> dict[str, torch.Tensor]:
    """Assemble the array part of a batch from ``(segment [C, n], start, layout)`` triples.

    Returns ``signal`` float32 [B, C_max, T] normalised per slot as ``(x - center) * inv_scale``
    (padded slots have center 0, inv_scale 1 and stay 0), ``channel_mask`` bool [B, C_max],
    ``positions`` float32 [B, C_max, 3], ``position_mask`` bool [B, C_max], ``channel_types``
    int64 [B, C_max], ``orientations`` float32 [B, C_max, 3] (unit MEG coil normals, 0 where
    unknown) and ``orientation_mask`` bool [B, C_max]. The signal is allocated once per batch;
    each window is widened from float16 and normalised in place while it is still in cache
    (``_fill_window``).
    """
    B, T = len(windows), window_samples
    layouts = [w[2] for w in windows]
    if get_worker_info() is not None:
        # In a worker process the batch is allocated straight in shared memory: the transfer to
        # the main process then passes a handle instead of copying the batch once more.
        signal = torch.empty(0).set_(torch.UntypedStorage._new_shared(B * c_max * T * 4), 0, (B, c_max, T))
    else:
        signal = torch.from_numpy(_POOL.take((B, c_max, T)))
    sources: dict[int, torch.Tensor] = {}  # one tensor view per segment array, not per window
    for i, (data, start, lay) in enumerate(windows):
        src = sources.get(id(data))
        if src is None:
            src = sources[id(data)] = torch.from_numpy(data)
        _fill_window(signal[i], src, start, _window_plan(lay, T), normalize)
    return {"signal": signal, **_stack_layouts(layouts, c_max)}


def _stack_layouts(layouts: list[Layout], c_max: int) -> dict[str, torch.Tensor]:
    """Per-window layout arrays stacked into ``[B, C_max(, 3)]`` tensors.

    A batch holds few distinct layouts (usually one), so each array is stacked once per distinct
    layout and then gathered (``take``), instead of stacking ``B`` arrays per key.
    """
    names = {
        "channel_mask": "channel_mask",
        "positions": "positions",
        "position_mask": "position_mask",
        "channel_types": "types",
        "orientations": "orientations",
        "orientation_mask": "orientation_mask",
    }
    if not layouts:  # every window of the batch was skipped as corrupt
        return {
            "channel_mask": torch.zeros((0, c_max), dtype=torch.bool),
            "positions": torch.zeros((0, c_max, 3), dtype=torch.float32),
            "position_mask": torch.zeros((0, c_max), dtype=torch.bool),
            "channel_types": torch.zeros((0, c_max), dtype=torch.int64),
            "orientations": torch.zeros((0, c_max, 3), dtype=torch.float32),
            "orientation_mask": torch.zeros((0, c_max), dtype=torch.bool),
        }
    first: dict[int, int] = {}  # id(layout) -> row in the distinct stack
    distinct: list[Layout] = []
    which = np.empty(len(layouts), dtype=np.intp)
    for i, lay in enumerate(layouts):
        j = first.get(id(lay))
        if j is None:
            j = first[id(lay)] = len(distinct)
            distinct.append(lay)
        which[i] = j
    return {
        key: torch.from_numpy(np.stack([getattr(lay, attr) for lay in distinct]).take(which, axis=0))
        for key, attr in names.items()
    }


class BufferPool:
    """Recycles batch arrays that nobody references any more, sparing the page faults of a fresh one.

    A fresh 8 MB array costs ~2 ms of page faults, as much as filling it. A tensor made with
    ``torch.from_numpy`` keeps its array alive for as long as any view of it lives, so an array whose
    only reference is the pool's is provably free for reuse.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.arrays: list[np.ndarray] = []
        self.lock = threading.Lock()

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        with self.lock:
            for a in self.arrays:
                # references: the pool's list, the loop variable and getrefcount's argument
                if a.shape == shape and sys.getrefcount(a) == 3:
                    return a
            a = np.empty(shape, dtype=np.float32)
            if len(self.arrays) >= self.size:
                self.arrays.pop(0)
            self.arrays.append(a)
            return a


_POOL = BufferPool()

# torch splits element-wise work over its intra-op thread pool above this many elements; below it a
# copy runs in the calling thread, which is what a loader thread or worker process wants.
_GRAIN = 32768


@dataclass
class _WindowPlan:
    """How a window of one layout and length is written, in row chunks of at most ``_GRAIN``.

    ``copies``: ``(stored row, slot, rows, center [rows, 1], inv_scale [rows, 1])``, rows
    contiguous in both the segment and the batch; ``zero``: ``(lo, hi)`` slot ranges no stored row
    fills; ``pad_norm``: ``(lo, hi, center, inv_scale)`` for unfilled slots whose normalisation is
    not the identity (never, for layouts from ``make_layout``: pads have center 0, inv_scale 1).
    """

    copies: list[tuple[int, int, int, torch.Tensor, torch.Tensor]]
    zero: list[tuple[int, int]]
    pad_norm: list[tuple[int, int, torch.Tensor, torch.Tensor]]


def _window_plan(lay: Layout, T: int) -> _WindowPlan:
    """The layout's plan for windows of ``T`` samples, built once and kept on the layout."""
    plans: dict[int, _WindowPlan] = lay.__dict__.setdefault("_plans", {})
    plan = plans.get(T)
    if plan is not None:
        return plan
    step = max(1, _GRAIN // T)
    center = torch.from_numpy(np.ascontiguousarray(lay.center, dtype=np.float32))[:, None]
    inv_scale = torch.from_numpy(np.ascontiguousarray(lay.inv_scale, dtype=np.float32))[:, None]
    copies = []
    filled = np.zeros(lay.center.shape[0], dtype=bool)
    for row, slot, n in lay.runs:
        filled[slot : slot + n] = True
        for r in range(0, n, step):
            k = min(step, n - r)
            s = slot + r
            copies.append((row + r, s, k, center[s : s + k], inv_scale[s : s + k]))
    zero: list[tuple[int, int]] = []
    pad_norm = []
    for lo, hi in _false_ranges(filled):
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            zero.append((a, b))
            if np.any(lay.center[a:b] != 0) or np.any(lay.inv_scale[a:b] != 1):
                pad_norm.append((a, b, center[a:b], inv_scale[a:b]))
    plan = plans[T] = _WindowPlan(copies, zero, pad_norm)
    return plan


def _fill_window(
    dst: torch.Tensor, src: torch.Tensor, start: int, plan: _WindowPlan, normalize: bool
) -> None:
    """``dst [C_max, T]`` = the window of ``src [C, n]`` at ``start``, in slots, normalised.

    torch widens float16 while copying (about 3x faster than numpy's cast) and releases the GIL.
    Each chunk (under ``_GRAIN`` elements, so torch keeps it in the calling thread) is centred and
    scaled right after its copy, while it is in cache, rather than in passes over the whole batch;
    the arithmetic (float32 subtract, then float32 multiply) is the same, so the values are too.
    Every element is written (copied or zeroed): recycled batch buffers need no clearing.
    """
    T = dst.shape[1]
    for lo, hi in plan.zero:
        dst[lo:hi].zero_()
    for row, slot, k, center, inv_scale in plan.copies:
        d = dst[slot : slot + k]
        d.copy_(src[row : row + k, start : start + T])
        if normalize:
            d.sub_(center).mul_(inv_scale)
    if normalize:
        for lo, hi, center, inv_scale in plan.pad_norm:
            dst[lo:hi].sub_(center).mul_(inv_scale)


def _false_ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(lo, hi)`` of the maximal stretches where ``mask`` is False."""
    out: list[tuple[int, int]] = []
    for i, m in enumerate(mask.tolist()):
        if m:
            continue
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _runs(rows: np.ndarray, slots: np.ndarray) -> list[tuple[int, int, int]]:
    """``(row, slot, length)`` of maximal stretches where rows and slots both step by one."""
    runs: list[tuple[int, int, int]] = []
    for row, slot in zip(rows.tolist(), slots.tolist(), strict=True):
        if runs and runs[-1][0] + runs[-1][2] == row and runs[-1][1] + runs[-1][2] == slot:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((row, slot, 1))
    return runs
