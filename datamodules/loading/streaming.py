"""``ShardStream``: the iterable that delivers an epoch plan as ready batches.

The order of windows comes from ``plan`` (deterministic, rank-balanced, known before any signal
is read). A rank's range is cut into *blocks* of ``shuffle_buffer`` windows, permuted inside the
block in training; a block's segments are read once, whole, and all its batches cut from them.
Threads (``iter_threads``) deliver the rank's batches in order; DataLoader worker processes get
blocks dealt round-robin and deliver in the DataLoader's round-robin worker order, which
``plan.output_order`` mirrors.

Because the whole order is a function of (seed, epoch, rank, world size, worker processes),
resuming after ``n`` batches only needs ``(epoch, n)``: threads start at batch ``n``; each worker
process skips the batches the DataLoader had already delivered from it, and worker ids are rotated
so the next batch comes from the right worker.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from neurotrain.datamodules.loading.collate import Layout, collate_windows
from neurotrain.datamodules.loading.images import EventImages
from neurotrain.datamodules.loading.plan import (
    EpochPlan,
    StreamConfig,
    plan_epoch,
    rank_range,
    resume_point,
    worker_batches,
)
from neurotrain.datamodules.loading.recentring import Recentring, apply_recentring
from neurotrain.datamodules.loading.tar_index import CorruptShardError, Segment, SegmentReader
from neurotrain.datamodules.loading.windows import WindowSpec

log = logging.getLogger(__name__)


@dataclass
class SegmentTable:
    """Per-segment batch metadata, indexed by segment id: what ``_batch`` would otherwise look up
    in every window's ``meta`` dict."""

    sfreq: np.ndarray  # float64
    onset_s: np.ndarray  # float64, 0 where unknown
    subject: list[str]
    recording: list[str]
    key: list[str]

    @classmethod
    def of(cls, segments: list[Segment]) -> SegmentTable:
        return cls(
            np.array(
                [float(s.meta["sfreq"]) if s.kind != "volume" else np.nan for s in segments], dtype=np.float64
            ),
            np.array([float(s.meta.get("onset_s") or 0.0) for s in segments], dtype=np.float64),
            [str(s.meta.get("subject")) for s in segments],
            [str(s.meta.get("recording")) for s in segments],
            [s.key for s in segments],
        )


class SegmentBuffers:
    """Recycled read buffers for whole segments, at most ``max_bytes`` of them.

    Reading a segment into a fresh buffer page-faults (and zeroes) every page of it: glibc hands
    buffers this large back to the kernel when freed, so each read of a 3.9 MB segment paid
    ~1.4 ms of faults on top of ~0.3 ms of copying. The loader reads every segment once per
    epoch, so this was a third of its work. Arrays handed out are views of a pool buffer and keep
    it referenced, so a buffer whose only reference is the pool's holds no live segment and is
    reused (the batch arrays of ``collate.BufferPool`` work the same way). Memory stays bounded by
    the read-ahead (the blocks being cut), never by the dataset.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self.buffers: list[np.ndarray] = []
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least ``nbytes`` (at most twice that) that nobody else holds."""
        with self.lock:
            # references to a free buffer: the pool's list, the loop variable, getrefcount's argument
            free = [a for a in self.buffers if sys.getrefcount(a) == 3]
            fitting = [a for a in free if nbytes <= a.size <= 2 * nbytes]
            if fitting:
                return min(fitting, key=lambda a: a.size)
            held = sum(a.size for a in self.buffers)
            dropped = set()
            for a in free:  # make room: drop free buffers, oldest first
                if held + nbytes <= self.max_bytes:
                    break
                dropped.add(id(a))
                held -= a.size
            if dropped:
                self.buffers = [a for a in self.buffers if id(a) not in dropped]
            buf = np.empty(nbytes, dtype=np.uint8)
            if held + nbytes <= self.max_bytes:
                self.buffers.append(buf)
            return buf


_SEGMENT_BUFFERS = SegmentBuffers()


class PooledSegmentReader(SegmentReader):
    """A ``SegmentReader`` whose ``read`` fills a recycled buffer (``SegmentBuffers``)."""

    def read(self, seg: Segment, out: np.ndarray | None = None) -> np.ndarray:
        return super().read(seg, _SEGMENT_BUFFERS.take(seg.nbytes) if out is None else out)


@dataclass
class ShardStream(IterableDataset):
    """Iterable of ready batches for one split on one rank (``DataLoader(batch_size=None)``).

    ``epoch`` and ``skip`` are set by the loader before each iteration; worker processes receive
    them with the pickled dataset. ``num_workers`` counts worker *processes* (0 with threads).
    ``len()`` is the full epoch's batch count on this rank.
    """

    segments: list[Segment]
    counts: np.ndarray
    layouts: list[Layout | None]  # per segment (shared for equal channel sets; None: volume)
    spec: WindowSpec
    cfg: StreamConfig
    c_max: int
    rank: int = 0
    world: int = 1
    num_workers: int = 0
    epoch: int = 0
    skip: int = 0
    skipped: int = 0
    _reader: SegmentReader = field(default_factory=PooledSegmentReader)
    # Paired views (off by default): a second channel subset of the same windows, emitted as
    # ``pair_*`` keys, and the stimulus image of each event epoch, emitted as ``image``.
    pair_layouts: list[Layout | None] | None = None
    pair_c_max: int = 0
    images: EventImages | None = None
    # Per-subject re-centring of ``signal`` (``recentring``), fitted on this stage's windows.
    recentring: dict[str, Recentring] | None = None
    stage: str = ""
    # A continuous target (``target_channel``): per segment its stored row, and how a window's
    # values become its label ("end": the last sample, "mean").
    target_rows: list[int] | None = None
    target_reduce: str = "end"
    # Per-segment metadata as arrays and lists (``_segment_table``), built on first use.
    _table: SegmentTable | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return rank_range(
            int(self.counts.sum()), self.rank, self.world, self.cfg.batch_size, self.cfg.drop_last
        )[2]

    def batches_per_worker(self) -> list[int]:
        n = len(self)
        return [len(b) for b in worker_batches(n, self._block_batches(), self.num_workers)]

    def _block_batches(self) -> int:
        # Evaluation uses blocks too (unpermuted): a segment is then read once, not once per batch.
        return max(1, self.cfg.shuffle_buffer // self.cfg.batch_size)

    def __iter__(self):
        info = get_worker_info()
        n_workers = info.num_workers if info is not None else 1
        if n_workers != max(1, self.num_workers):
            raise RuntimeError(f"ShardStream planned for {self.num_workers} workers, runs in {n_workers}")
        if info is None:
            return self._generate(0, self.skip)
        counts = self.batches_per_worker()
        skips, first = resume_point(counts, self.skip)
        physical = info.id if info is not None else 0
        worker = (physical + first) % n_workers  # rotate so delivery resumes at the right worker
        return self._generate(worker, skips[worker])

    def _generate(self, worker: int, skip: int):
        plan = plan_epoch(self.segments, self.counts, self.spec, self.cfg, self.epoch)
        lo, hi, n_batches = rank_range(
            plan.seg.size, self.rank, self.world, self.cfg.batch_size, self.cfg.drop_last
        )
        G, bs = self._block_batches(), self.cfg.batch_size
        mine = worker_batches(n_batches, G, self.num_workers)[worker][skip:]
        cache: dict[int, np.ndarray] = {}  # block -> permuted window indices
        data: dict[int, np.ndarray | None] = {}
        for b in mine:
            block = b // G
            if block not in cache:
                cache.clear()
                data.clear()
                cache[block] = self._block_windows(block, lo, hi)
            idx = cache[block][(b - block * G) * bs : (b - block * G + 1) * bs]
            yield self._batch(plan, idx, data)

    def iter_threads(self, n_threads: int):
        """Batches ``skip..len-1`` in order, built by ``n_threads`` threads of this process.

        No worker processes: no fork per epoch, no copy of each batch through shared memory.
        Reading (``pread``) and numpy's copies release the GIL, so threads overlap. One reader
        thread loads whole blocks (the next one ahead) while the builders cut and collate.
        """
        plan = plan_epoch(self.segments, self.counts, self.spec, self.cfg, self.epoch)
        lo, hi, n_batches = rank_range(
            plan.seg.size, self.rank, self.world, self.cfg.batch_size, self.cfg.drop_last
        )
        G, bs = self._block_batches(), self.cfg.batch_size
        blocks: dict[int, Future] = {}

        def load_block(block: int) -> tuple[np.ndarray, dict[int, np.ndarray | None]]:
            idx = self._block_windows(block, lo, hi)
            return idx, {int(i): self._read(self.segments[int(i)]) for i in np.unique(plan.seg[idx])}

        def build(b: int) -> dict[str, Any]:
            idx, data = blocks[b // G].result()
            return self._batch(plan, idx[(b % G) * bs : (b % G + 1) * bs], data)

        reader = ThreadPoolExecutor(1, thread_name_prefix="shard-read")
        builders = ThreadPoolExecutor(max(1, n_threads), thread_name_prefix="shard-batch")
        pending: deque[tuple[int, Future]] = deque()
        nxt = self.skip
        try:
            while pending or nxt < n_batches:
                while nxt < n_batches and len(pending) < 2 * max(1, n_threads):
                    for block in (nxt // G, nxt // G + 1):
                        if block * G < n_batches and block not in blocks:
                            blocks[block] = reader.submit(load_block, block)
                    pending.append((nxt, builders.submit(build, nxt)))
                    nxt += 1
                b, fut = pending.popleft()
                batch = fut.result()
                for block in [k for k in blocks if k < b // G]:
                    del blocks[block]  # every batch of older blocks has been built
                yield batch
        finally:
            builders.shutdown(wait=True, cancel_futures=True)
            reader.shutdown(wait=True, cancel_futures=True)

    def _block_windows(self, block: int, lo: int, hi: int) -> np.ndarray:
        """Indices (into the epoch plan) of a block's windows, permuted in training."""
        G, bs = self._block_batches(), self.cfg.batch_size
        idx = np.arange(lo + block * G * bs, min(lo + (block + 1) * G * bs, hi))
        if self.cfg.shuffle:
            rng = np.random.default_rng([self.cfg.seed, self.epoch, self.rank, block, 7])
            idx = idx[rng.permutation(idx.size)]
        return idx

    def _batch(self, plan: EpochPlan, idx: np.ndarray, data: dict[int, np.ndarray | None]) -> dict[str, Any]:
        """One batch: the windows ``idx`` of the plan, collated, with their metadata.

        The metadata comes from per-segment tables by array indexing, not from a loop over the
        batch's windows (only the strings are built per window).
        """
        seg_ids: list[int] = plan.seg[idx].tolist()
        for i in dict.fromkeys(seg_ids):  # distinct segments, in order of first use
            if i not in data:
                data[i] = self._read(self.segments[i])
        keep = [j for j, i in enumerate(seg_ids) if data[i] is not None]
        if len(keep) < len(seg_ids):  # corrupt segments skipped
            idx = idx[keep]
            seg_ids = [seg_ids[j] for j in keep]
        starts: list[int] = plan.start[idx].tolist()
        windows = [(data[i], st, self.layouts[i]) for i, st in zip(seg_ids, starts, strict=True)]
        if seg_ids and self.segments[seg_ids[0]].kind == "volume":
            labels = plan.label[idx].tolist()
            rows = [(self.segments[i], st, lb) for i, st, lb in zip(seg_ids, starts, labels, strict=True)]
            return self._volume_batch(windows, rows)
        batch: dict[str, Any] = collate_windows(
            windows, self.spec.window_samples, self.c_max, self.cfg.normalize
        )
        table = self._segment_table()
        ids = np.asarray(seg_ids, dtype=np.intp)
        sfreq = table.sfreq[ids]
        label = plan.label[idx]
        batch["sfreq"] = torch.from_numpy(sfreq.astype(np.float32))
        # float64 as the Python floats were, rounded to float32 once
        batch["onset_s"] = torch.from_numpy((table.onset_s[ids] + plan.start[idx] / sfreq).astype(np.float32))
        batch["labels"] = torch.from_numpy(label.astype(np.int64, copy=False))
        batch["subject"] = [table.subject[i] for i in seg_ids]
        batch["recording"] = [table.recording[i] for i in seg_ids]
        keys = table.key
        batch["sample_id"] = [
            f"{keys[i]}@{st}" if lb < 0 else f"{keys[i]}@{st}:{lb}"
            for i, st, lb in zip(seg_ids, starts, label.tolist(), strict=True)
        ]
        if self.target_rows is not None:
            batch["labels"] = self._targets(seg_ids, starts, data)
        if self.recentring is not None:
            apply_recentring(batch, self.recentring, self.stage)
        if self.pair_layouts is not None or self.images is not None:
            self._paired(batch, seg_ids, starts, label.tolist(), windows)
        return batch

    def _targets(
        self, seg_ids: list[int], starts: list[int], data: dict[int, np.ndarray | None]
    ) -> torch.Tensor:
        """float32 [B]: each window's target channel value, at its last sample or averaged."""
        T = self.spec.window_samples
        out = np.empty(len(seg_ids), dtype=np.float32)
        for j, (i, st) in enumerate(zip(seg_ids, starts, strict=True)):
            values = data[i][self.target_rows[i], st : st + T]
            out[j] = values[-1] if self.target_reduce == "end" else values.astype(np.float64).mean()
        return torch.from_numpy(out)

    def _segment_table(self) -> SegmentTable:
        table = self._table
        if table is None:  # two threads may both build it: same content
            table = self._table = SegmentTable.of(self.segments)
        return table

    def _paired(
        self, batch: dict[str, Any], seg_ids: list[int], starts: list[int], labels: list[int], windows
    ) -> None:
        """Add the second views: ``pair_*`` (same windows, pair channel subset) and ``image``."""
        if self.pair_layouts is not None:
            pair_windows = [
                (x, start, self.pair_layouts[i]) for (x, start, _), i in zip(windows, seg_ids, strict=True)
            ]
            pair = collate_windows(
                pair_windows, self.spec.window_samples, self.pair_c_max, self.cfg.normalize
            )
            for key, value in pair.items():
                batch[f"pair_{key}"] = value
            batch["pair_sfreq"] = batch["sfreq"]
        if self.images is not None:
            rows = list(zip(seg_ids, starts, labels, strict=True))
            batch["image"] = self.images.batch(self._reader, rows)

    def _volume_batch(self, items: list, meta_rows: list) -> dict[str, Any]:
        """``volume`` float32 [B, D, H, W] plus labels and ids, for structural images."""
        volume = (
            np.stack([x for x, _, _ in items]).astype(np.float32)
            if items
            else np.zeros((0, 0, 0, 0), np.float32)
        )
        return {
            "volume": torch.from_numpy(volume),
            "labels": torch.full((len(items),), -1, dtype=torch.int64),
            "subject": [str(s.meta.get("subject")) for s, _, _ in meta_rows],
            "recording": [str(s.meta.get("recording")) for s, _, _ in meta_rows],
            "sample_id": [s.key for s, _, _ in meta_rows],
        }

    def _read(self, seg: Segment) -> np.ndarray | None:
        """The segment's signal, or None when it is bad and ``on_corrupt == "skip"``."""
        try:
            x = self._reader.read(seg)
            if self.cfg.check_finite and not all_finite(x):
                raise CorruptShardError(f"sample {seg.name}: non-finite values in signal")
            return x
        except CorruptShardError:
            if self.cfg.on_corrupt == "fail":
                raise
            self.skipped += int(self.counts[self.segments.index(seg)])
            log.warning(
                "skipping corrupt sample %s (%d windows skipped so far in this worker)",
                seg.name,
                self.skipped,
            )
            return None


def all_finite(x: np.ndarray) -> bool:
    """``np.isfinite(x).all()``, ~10x faster for float16: NaN/inf are the all-ones exponent."""
    if x.dtype == np.float16:
        return not bool(((x.view(np.uint16) & 0x7C00) == 0x7C00).any())
    return bool(np.isfinite(x).all())
