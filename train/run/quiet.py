"""Lightning's messages that every run printed and that ask nothing of a neurotrain user, silenced
one by one, by message: everything else Lightning says is left as it is.

- the litlogger tip (``💡 Tip: For seamless cloud logging …``): an advertisement logged at INFO by
  Lightning's logger connector whenever no ``LitLogger`` is attached; dropped by a filter on
  Lightning's rank-zero logger that matches that message only (the logger's other INFO lines,
  such as ``GPU available``, stay).
- ``isinstance(treespec, LeafSpec)`` is deprecated: a ``FutureWarning`` torch raises when
  Lightning's own ``utilities/_pytree.py`` builds a ``LeafSpec``; nothing in neurotrain uses it,
  and only a Lightning release can change it.
- ``Your IterableDataset has __len__ defined …``: Lightning warns about every iterable dataset
  with a length; ours (``datamodules/loading/streaming``) splits each epoch's plan between the
  DataLoader workers, so its length is exact with any ``num_workers``.

``ModelCheckpoint could not find the monitored key`` is fixed, not silenced: a fit without
validation no longer asks for best checkpoints (``train/run/callbacks.py``, `BestCheckpoint`).
"""

from __future__ import annotations

import logging
import warnings

LITLOGGER_TIP = "💡 Tip: For seamless cloud logging and experiment tracking"
# The loggers Lightning's ``rank_zero_info`` may write to (whichever package set it last).
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_TIP_FILTER = _DropMessage(LITLOGGER_TIP)


def quiet_lightning() -> None:
    """Silence the messages listed above (idempotent).

    The warning filters join the current ``warnings`` filters: called inside
    ``warnings.catch_warnings()`` (as `build_cli` does) they end with it. The log filter stays on
    Lightning's rank-zero logger for the process (it matches the tip only).
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"Your `IterableDataset` has `__len__` defined",
        category=UserWarning,
        module=r"pytorch_lightning\.utilities\.data",
    )
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
