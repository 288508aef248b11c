"""The old import path of ``ShardDataModule``, kept so that it still works.

``neurotrain.datamodules.shard_datamodule.ShardDataModule`` was the documented path (README, older
configs' ``class_path``); the class now lives in ``neurotrain.datamodules.loading.datamodule`` (and
``ShardLoader`` in ``neurotrain.datamodules.loading.loader``). Both names are re-exported here
unchanged, so a checkpoint or config naming the old path builds the same objects.
"""

from __future__ import annotations

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.loader import ShardLoader

__all__ = ["ShardDataModule", "ShardLoader"]
