"""Subject-level labels: each window's label from its recording's ``participants.tsv`` row.

``ShardDataModule(label_source="participants", label_column="age")`` labels every window (or
volume) of a recording with that column of the subject's row, which sharding
stored as ``meta["participant"]`` (`neurotrain.datamodules.sharding.participants`).

- With a ``label_map`` the values are classes: ``labels`` int64 [B], the value's text looked up
  in the map (``{"patient": 1, "control": 0}``; numbers as their text, ``"1"``); a value outside
  the map, or missing, is -1 (no label, left out of the loss and the metrics).
- Without one they are regression targets: ``labels`` float32 [B], NaN where missing.

A column no recording has is an error naming the columns there are; recordings without the
value are counted and said once.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LABEL_SOURCES = ("events", "participants")


def participant_labels(
    metas: list[dict[str, Any]], names: list[str], column: str, label_map: dict[str, int] | None
) -> np.ndarray:
    """Per segment, its label: int64 [S] classes (-1 = none) with ``label_map``, else float32 [S]
    values (NaN = none). ``metas[i]`` is segment ``i``'s ``meta.json``, ``names[i]`` its name (for
    messages)."""
    rows = [m.get("participant") or {} for m in metas]
    if not rows:  # a stage with no samples
        return np.zeros(0, np.int64 if label_map is not None else np.float32)
    if not any(column in r for r in rows):
        seen = sorted({k for r in rows for k in r})
        where = (
            f"their participants.tsv columns: {', '.join(seen)}"
            if seen
            else (
                "no sample carries participants.tsv values (shard a source whose root holds a participants.tsv)"
            )
        )
        raise ValueError(f"label_column {column!r} is in no sample's participant row; {where}")
    values = [r.get(column) for r in rows]
    missing = [n for n, v in zip(names, values, strict=True) if v is None]
    if label_map is not None:
        out = np.array([label_map.get(_text(v), -1) if v is not None else -1 for v in values], np.int64)
        unmapped = sorted({_text(v) for v in values if v is not None and _text(v) not in label_map})
        if unmapped:
            log.warning("label_column %r: values outside label_map are unlabelled: %s", column, unmapped)
    else:
        try:
            out = np.array([math.nan if v is None else float(v) for v in values], np.float32)
        except (TypeError, ValueError):
            kinds = sorted({_text(v) for v in values if v is not None})[:8]
            raise ValueError(
                f"label_column {column!r} holds text ({', '.join(kinds)}): give label_map to use it "
                "as classes, e.g. {" + ", ".join(f"{k}: {i}" for i, k in enumerate(kinds)) + "}"
            ) from None
    if missing:
        log.warning(
            "label_column %r: %d of %d samples have no value (e.g. %s); they are unlabelled",
            column,
            len(missing),
            len(names),
            missing[0],
        )
    return out


def _text(value: Any) -> str:
    """A cell as the text a ``label_map`` key is (``2`` and ``2.0`` both ``"2"``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
