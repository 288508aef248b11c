"""Moved: the example-data fetcher lives in `neurotrain.datamodules.sharding.examples`.

This module keeps the old import path ``neurotrain.datamodules.example_data`` working.
"""

from neurotrain.datamodules.sharding.examples import DATASETS, FetchError, fetch  # noqa: F401
