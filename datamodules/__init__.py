"""Shard datasets: written from recordings, streamed to models as batches.

Four subpackages, in layers:

- ``io``: file helpers every layer uses, each written once (atomic writes, sha256, the cache
  folder, process liveness); imports nothing else of neurotrain.
- ``format``: the shard format, the contract between the two sides (``manifest``: file name,
  schema version and the one checked reader; ``channel_types``); imports ``io`` only.
- ``sharding``: the writing side, recordings to WebDataset tar shards plus ``manifest.json``
  (``neurotrain shard``).
- ``loading``: the reading side, shard datasets to padded, normalised, resumable batches
  (``ShardDataModule``).

Import rules: ``io`` <- ``format`` <- ``sharding`` | ``loading``. The two sides import ``io`` and
``format`` but never each other, and nothing here imports ``neurotrain.models`` or
``neurotrain.train``.

``ShardDataModule`` is exported from here lazily (PEP 562): ``import neurotrain.datamodules.sharding``
does not import Lightning or torch's data loading. ``shard_datamodule`` keeps the old import path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

__all__ = ["ShardDataModule"]


def __getattr__(name: str) -> Any:
    if name == "ShardDataModule":
        from neurotrain.datamodules.loading.datamodule import ShardDataModule

        return ShardDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
