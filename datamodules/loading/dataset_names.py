"""Short names for the datasets of a mix, for per-dataset metrics (``train/loss/<name>``).

A batch says which dataset each window came from by index (``dataset`` int64 [B], into
``ShardDataModule.datasets``); these are the names those indices get in logs. A dataset's name is
the last component of its folder or URL (``shards/eeg`` -> ``eeg``, ``pipe:curl -fsS
https://host/shards/meg/{}`` -> ``meg``), reduced to letters, digits, ``_``, ``.`` and ``-`` so it
is one metric-name component; names that would repeat get ``-<index>`` appended.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[/\\\s:]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def dataset_names(datasets: list[str]) -> list[str]:
    """One short, distinct, metric-safe name per dataset path or URL, in order."""
    base = []
    for i, d in enumerate(datasets):
        parts = [p for p in _SEPARATORS.split(str(d).replace("{}", "")) if p]
        name = _UNSAFE.sub("_", parts[-1]).strip("_") if parts else ""
        base.append(name or f"dataset{i}")
    return [f"{n}-{i}" if base.count(n) > 1 else n for i, n in enumerate(base)]
