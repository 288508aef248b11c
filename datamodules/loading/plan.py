"""The epoch plan: which windows each rank and worker delivers, in which order, from the index alone.

Pure functions of (segments, window counts, seed, epoch, rank, world size, worker processes); no
signal is read to plan an epoch:

1. every segment gives a known number of windows (``windows.window_count``), on the grid it is
   loaded at (``windows.loaded_grid``: resampled to ``spec.sfreq`` when set);
2. training: segments are shuffled with ``rng(seed, epoch)`` (datasets mixed by ``weights``) and
   random crop starts drawn; evaluation: segments in stored order, windows tiled (``plan_epoch``);
3. the window list is cut into ``world_size`` equal contiguous ranges, one per rank, so every
   rank gets the same number of batches and no window goes to two ranks, however few shards
   (``rank_range``);
4. a rank's range is cut into *blocks* of ``shuffle_buffer`` windows (permuted inside the block
   in training, by ``streaming.ShardStream``); DataLoader worker processes get blocks dealt
   round-robin (``worker_batches``) and deliver in the DataLoader's round-robin worker order
   (``output_order``), so resuming after ``n`` batches is a per-worker skip plus the next worker
   (``resume_point``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from neurotrain.datamodules.loading.tar_index import Segment
from neurotrain.datamodules.loading.windows import WindowSpec, loaded_grid, segment_windows


@dataclass
class StreamConfig:
    """Everything that fixes the order of batches, plus how bad samples are handled."""

    batch_size: int
    shuffle: bool
    shuffle_buffer: int = 1024
    seed: int = 0
    drop_last: bool = True
    weights: list[float] | None = None
    on_corrupt: str = "fail"
    check_finite: bool = True
    normalize: bool = True


@dataclass
class EpochPlan:
    """All windows of one epoch in global order: ``seg [N]`` segment ids, ``start [N]``, ``label [N]``."""

    seg: np.ndarray
    start: np.ndarray
    label: np.ndarray


def plan_epoch(
    segments: list[Segment], counts: np.ndarray, spec: WindowSpec, cfg: StreamConfig, epoch: int
) -> EpochPlan:
    """The global window order of ``epoch``; identical in every rank and worker.

    ``counts [S]`` (int64) is the number of windows of each of the ``S`` segments
    (``windows.window_count``; 1 for a volume).
    """
    if not cfg.shuffle:
        order = [i for i in range(len(segments)) if counts[i] > 0]
        return _expand(segments, order, spec, None, None)
    rng = np.random.default_rng([cfg.seed, epoch])
    n_datasets = max(s.dataset for s in segments) + 1 if segments else 0
    by_ds = [
        [i for i in range(len(segments)) if segments[i].dataset == d and counts[i] > 0]
        for d in range(n_datasets)
    ]
    runs: list[tuple[int, int]] = []  # (segment, windows taken from it)
    total = int(counts.sum())
    for d, ids in enumerate(by_ds):
        if not ids:
            continue
        have = int(counts[ids].sum())
        want = have if cfg.weights is None else round(cfg.weights[d] / sum(cfg.weights) * total)
        # Weighted mixing: cycle through the dataset's shuffled segments until `want` windows.
        while want > 0:
            for i in rng.permutation(ids):
                take = min(int(counts[i]), want)
                runs.append((int(i), take))
                want -= take
                if want == 0:
                    break
    perm = rng.permutation(len(runs))
    order = [runs[j][0] for j in perm]
    takes = [runs[j][1] for j in perm]
    return _expand(segments, order, spec, rng, takes)


def _expand(
    segments: list[Segment],
    order: list[int],
    spec: WindowSpec,
    rng: np.random.Generator | None,
    takes: list[int] | None,
) -> EpochPlan:
    """The windows of the segments ``order`` in turn (crops drawn from ``rng``, None: tiling),
    the ``j``-th cut to its first ``takes[j]`` windows."""
    segs, starts, labels = [], [], []
    for j, i in enumerate(order):
        s = segments[i]
        if s.kind == "volume":
            st, lb = np.zeros(1, dtype=np.int64), np.full(1, -1, dtype=np.int64)
        else:
            st, lb = segment_windows(*loaded_grid(s, spec), s.events, spec, rng)  # resampled grid
        if rng is not None and spec.mode == "epochs":
            p = rng.permutation(st.size)
            st, lb = st[p], lb[p]
        if takes is not None:
            st, lb = st[: takes[j]], lb[: takes[j]]
        segs.append(np.full(st.size, i, dtype=np.int64))
        starts.append(st)
        labels.append(lb)
    if not segs:
        empty = np.zeros(0, dtype=np.int64)
        return EpochPlan(empty, empty, empty)
    return EpochPlan(np.concatenate(segs), np.concatenate(starts), np.concatenate(labels))


def rank_range(
    n_windows: int, rank: int, world: int, batch_size: int, drop_last: bool
) -> tuple[int, int, int]:
    """``(lo, hi, n_batches)``: this rank's window range and batch count, equal on every rank.

    Each rank gets ``n_windows // world`` windows (at most ``world - 1`` are left out); training
    drops the last partial batch, evaluation keeps it (same count on every rank either way).
    """
    per = n_windows // world
    n_batches = per // batch_size if drop_last else math.ceil(per / batch_size)
    lo = rank * per
    hi = lo + (n_batches * batch_size if drop_last else per)
    return lo, hi, n_batches


def worker_batches(n_batches: int, block_batches: int, n_workers: int) -> list[list[int]]:
    """Rank batch indices handled by each worker: blocks of ``block_batches`` dealt round-robin."""
    out: list[list[int]] = [[] for _ in range(max(1, n_workers))]
    for j, b0 in enumerate(range(0, n_batches, block_batches)):
        out[j % len(out)].extend(range(b0, min(b0 + block_batches, n_batches)))
    return out


def output_order(counts: list[int], first: int = 0) -> list[int]:
    """Worker of each delivered batch: the DataLoader asks workers in turn, skipping exhausted ones."""
    left = list(counts)
    order, w = [], first
    while any(left):
        if left[w]:
            order.append(w)
            left[w] -= 1
        w = (w + 1) % len(left)
    return order


def resume_point(counts: list[int], consumed: int) -> tuple[list[int], int]:
    """Per-worker batches already delivered after ``consumed`` batches, and the next worker."""
    order = output_order(counts)
    skips = [0] * len(counts)
    for w in order[:consumed]:
        skips[w] += 1
    nxt = order[consumed] if consumed < len(order) else 0
    return skips, nxt
