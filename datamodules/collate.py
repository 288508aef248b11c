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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from neurotrain.datamodules.channel_types import type_index

log = logging.getLogger(__name__)


@dataclass
class Layout:
    """Where one channel set lands in a batch. Arrays are per slot, length ``C_max``."""

    runs: list[tuple[int, int, int]]  # (stored row, batch slot, length): contiguous copies
    full: bool  # every slot filled, so the batch needs no zeroing
    channel_mask: np.ndarray  # bool [C_max]
    positions: np.ndarray  # float32 [C_max, 3], 0 where unknown
    position_mask: np.ndarray  # bool [C_max]
    types: np.ndarray  # int64 [C_max], 0 = pad
    center: np.ndarray  # float32 [C_max], subtracted (0 on pads)
    inv_scale: np.ndarray  # float32 [C_max], multiplied after centering (1 on pads)


def make_layout(
    meta: dict[str, Any],
    c_max: int,
    channels: list[str] | None,
    channel_types: list[str] | None,
    drop_bad: bool,
    norm: dict[str, tuple[float, float]] | None,
) -> Layout:
    """Layout of one sample's channel set; ``norm`` maps channel type -> (center, scale)."""
    names = list(meta["ch_names"])
    types = list(meta["ch_types"])
    bads = set(meta.get("bad_channels") or []) if drop_bad else set()
    keep = [i for i, (n, t) in enumerate(zip(names, types, strict=True)) if n not in bads]
    if channel_types is not None:
        keep = [i for i in keep if types[i] in channel_types]
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
    for row, slot in zip(keep, slot_of, strict=True):
        type_idx[slot] = type_index(types[row])
        if norm is not None and types[row] in norm:
            c, s = norm[types[row]]
            center[slot] = c
            inv_scale[slot] = 1.0 / s if s > 0 else 1.0
    return Layout(runs, full, channel_mask, positions, position_mask, type_idx, center, inv_scale)


def collate_windows(
    windows: list[tuple[np.ndarray, int, Layout]], window_samples: int, c_max: int, normalize: bool
) -> dict[str, torch.Tensor]:
    """Assemble the array part of a batch from ``(segment [C, n], start, layout)`` triples.

    Returns ``signal`` float32 [B, C_max, T] normalised per slot as ``(x - center) * inv_scale``
    (padded slots have center 0, inv_scale 1 and stay 0), ``channel_mask`` bool [B, C_max],
    ``positions`` float32 [B, C_max, 3], ``position_mask`` bool [B, C_max] and ``channel_types``
    int64 [B, C_max]. The signal is allocated once per batch and widened from float16 once.
    """
    B, T = len(windows), window_samples
    layouts = [w[2] for w in windows]
    if get_worker_info() is not None:
        # In a worker process the batch is allocated straight in shared memory: the transfer to
        # the main process then passes a handle instead of copying the batch once more.
        signal = torch.empty(0).set_(torch.UntypedStorage._new_shared(B * c_max * T * 4), 0, (B, c_max, T))
    else:
        signal = torch.from_numpy(_POOL.take((B, c_max, T)))
    if not all(lay.full for lay in layouts):
        signal.zero_()
    for i, (data, start, lay) in enumerate(windows):
        _copy_window(signal[i], torch.from_numpy(data), start, T, lay)
    out = signal.numpy()

    def stack(name: str) -> np.ndarray:
        if not layouts:  # every window of the batch was skipped as corrupt
            dt = {"types": np.int64, "channel_mask": bool, "position_mask": bool}
            return np.zeros(
                (0, c_max, 3) if name == "positions" else (0, c_max), dtype=dt.get(name, np.float32)
            )
        return np.stack([getattr(lay, name) for lay in layouts])

    if normalize and B:
        # numpy, in place, per-batch [B, C_max, 1] operands (ufuncs release the GIL)
        np.subtract(out, stack("center")[:, :, None], out=out)
        np.multiply(out, stack("inv_scale")[:, :, None], out=out)
    return {
        "signal": signal,
        "channel_mask": torch.from_numpy(stack("channel_mask")),
        "positions": torch.from_numpy(stack("positions")),
        "position_mask": torch.from_numpy(stack("position_mask")),
        "channel_types": torch.from_numpy(stack("types")),
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


def _copy_window(dst: torch.Tensor, src: torch.Tensor, start: int, T: int, lay: Layout) -> None:
    """``dst[slots] = float32(src[rows, start:start+T])`` for one window ``dst [C_max, T]``.

    torch widens float16 while copying (about 3x faster than numpy's cast) and releases the GIL.
    The copy goes run by run (rows contiguous in both source and batch), in chunks under ``_GRAIN``
    elements so it stays in the calling thread.
    """
    step = max(1, _GRAIN // T)
    for row, slot, n in lay.runs:
        for r in range(0, n, step):
            k = min(step, n - r)
            dst[slot + r : slot + r + k].copy_(src[row + r : row + r + k, start : start + T])


def _runs(rows: np.ndarray, slots: np.ndarray) -> list[tuple[int, int, int]]:
    """``(row, slot, length)`` of maximal stretches where rows and slots both step by one."""
    runs: list[tuple[int, int, int]] = []
    for row, slot in zip(rows.tolist(), slots.tolist(), strict=True):
        if runs and runs[-1][0] + runs[-1][2] == row and runs[-1][1] + runs[-1][2] == slot:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((row, slot, 1))
    return runs
