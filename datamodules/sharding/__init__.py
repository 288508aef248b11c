"""The writing side: raw recordings in, a verifiable shard dataset (tar shards + manifest) out.

``shard_dataset`` (``pipeline``) runs the flow: ``sources`` finds recordings, ``readers`` decode
them (MNE for signals, nibabel for volumes), ``samples`` cuts segments and checks them,
``stimuli`` attaches stimulus images, ``writer`` writes tar shards, ``statistics`` accumulates
normalisation statistics, ``splits`` assigns subjects to splits, ``manifest_builder`` assembles
``manifest.json`` from the recordings' ``parts``; ``workers`` end with the run that started
them; ``distributed`` shards part K of N (``--part K/N``) and merges a complete set of parts
into one manifest (``merge_parts``, ``--merge``); ``inspection`` summarises and re-verifies a
written dataset; ``examples`` fetches the example recordings that ship in PyPI packages.

May import: ``neurotrain.datamodules.io`` and ``neurotrain.datamodules.format``; never the
loading side, ``models`` or ``train``. Names are resolved lazily, so importing the options does
not import MNE.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PARTS_DIR", "ShardError", "ShardOptions", "merge_parts", "shard_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("shard_dataset", "PARTS_DIR"):
        from neurotrain.datamodules.sharding import pipeline

        return getattr(pipeline, name)
    if name == "merge_parts":
        from neurotrain.datamodules.sharding import distributed

        return distributed.merge_parts
    if name in ("ShardOptions", "ShardError"):
        from neurotrain.datamodules.sharding import options

        return getattr(options, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
