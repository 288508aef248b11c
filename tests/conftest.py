"""Shared fixtures: real example recordings (fetched once, cached) and their shards.

The example EEG comes from the pylossless wheel through ``neurotrain.datamodules.sharding.examples``
(cache: ``$NEUROTRAIN_CACHE`` or ``~/.cache/neurotrain``). Everything else is tiny and made by
``tests/synthetic.py``. W&B never reaches a server from the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def example_eeg() -> Path:
    """BIDS root of the pylossless example EEG (2 subjects, 128 channels, 256 Hz)."""
    from neurotrain.datamodules.sharding.examples import fetch

    return fetch("eeg")


@pytest.fixture(scope="session")
def eeg_shards(example_eeg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example EEG sharded with default options (60 s segments, float16), once per session."""
    from neurotrain.datamodules.sharding import shard_dataset

    out = tmp_path_factory.mktemp("eeg_shards")
    shard_dataset([example_eeg], out, workers=2)
    return out


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread for one test, restored after: the small training tests run
    their many tiny steps faster that way on a shared 2-core machine (two threads were 6-10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
