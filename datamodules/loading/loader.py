"""``ShardLoader``: the DataLoader over a ``ShardStream`` that sets the epoch and resume point.

Batches are built whole by the stream (``batch_size=None``): ``signal`` float32 [B, C_max, T]
and the other keys listed in ``datamodule``. Before each iteration the loader asks its
``position`` callback for ``(epoch, batches to skip)``; ``resume_position`` is how a checkpoint's
data position becomes that pair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

from neurotrain.datamodules.loading.streaming import ShardStream

if TYPE_CHECKING:
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

log = logging.getLogger(__name__)

Position = Callable[[int], tuple[int, int]]  # batches in the epoch -> (epoch, batches to skip)


def _identity(batch: dict[str, Any]) -> dict[str, Any]:
    """Batches arrive ready-made: skip DataLoader's default conversion walk over the dict."""
    return batch


class ShardLoader(DataLoader):
    """A ``DataLoader`` over a ``ShardStream`` that sets the epoch and resume point per iteration.

    Batches are built whole by the stream (``batch_size=None``), in ``threads`` threads or in
    DataLoader worker processes; pinning is off (CPU default; Lightning moves batches).
    ``position`` (None: epoch and skip stay as the stream has them) maps the epoch's batch count
    to the ``(epoch, batches to skip)`` of the iteration about to start.
    """

    def __init__(
        self,
        stream: ShardStream,
        position: Position | None,
        num_workers: int = 0,
        worker_mode: str = "threads",
    ) -> None:
        self.threads = num_workers if worker_mode == "threads" else 0
        num_workers = 0 if worker_mode == "threads" else num_workers
        super().__init__(
            stream,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=False,
            prefetch_factor=2 if num_workers else None,
            persistent_workers=False,
            collate_fn=_identity,
        )
        self._position = position

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stream: ShardStream = self.dataset  # type: ignore[assignment]
        if self._position is not None:
            stream.epoch, stream.skip = self._position(len(stream))
        if self.threads:
            return stream.iter_threads(self.threads)
        return super().__iter__()

    # Lightning saves and restores a loader that has these (``fit_loop`` "combined_loader"): they
    # carry the same position as the datamodule state, so either route resumes at the same batch.
    datamodule: ShardDataModule | None = None

    def state_dict(self) -> dict[str, Any]:
        return self.datamodule.state_dict().get("position", {}) if self.datamodule is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.datamodule is not None and state_dict:
            self.datamodule.load_state_dict({"position": state_dict})

    @property
    def skipped_samples(self) -> int:
        """Windows skipped as corrupt in this process (workers log their own counts)."""
        return self.dataset.skipped  # type: ignore[attr-defined]


def resume_position(
    position: dict[str, Any], world: int, num_workers: int, n_batches: int
) -> tuple[int, int]:
    """``(epoch, batches to skip)`` for the first train iteration after restoring ``position``.

    ``position`` is what ``ShardDataModule.state_dict`` recorded (``epoch``, ``batches`` delivered,
    ``world_size``, ``num_workers``); ``world`` and ``num_workers`` are the stream's now and
    ``n_batches`` its epoch length. A finished epoch resumes at the next one. The batch order
    depends on the world size and on the number of worker *processes* (0 with threads): with
    other values the position cannot be carried over exactly, and the epoch restarts.
    """
    now, then = (world, num_workers), (position["world_size"], position["num_workers"])
    if position["batches"] < n_batches and now != then:
        log.warning(
            "resuming with (world_size, worker processes) %s, checkpoint %s: the epoch restarts",
            now,
            then,
        )
        return position["epoch"], 0
    if position["batches"] >= n_batches:
        return position["epoch"] + 1, 0
    return position["epoch"], position["batches"]
