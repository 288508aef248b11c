"""Moved: the LightningModules live in `neurotrain.models.modules` (one file per objective).

This module keeps the old import path and config ``class_path`` (``neurotrain.models.lightning_modules.
PretrainModule`` …) working.
"""

from neurotrain.models.modules import *  # noqa: F403
from neurotrain.models.modules import __all__  # noqa: F401
