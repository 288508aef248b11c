"""Moved: the channel-type vocabulary lives in `neurotrain.datamodules.format.channel_types`.

This module keeps the old import path ``neurotrain.datamodules.channel_types`` working.
"""

from neurotrain.datamodules.format.channel_types import (  # noqa: F401
    CHANNEL_TYPES,
    SIGNAL_MODALITIES,
    TYPE_INDEX,
    UNIT_SCALE,
    type_index,
)
