"""Participant information (BIDS ``participants.tsv``) recorded with every recording.

Subject-level labels (age, group, a clinical score) live in ``participants.tsv`` at the dataset
root, not in the recordings. Sharding reads the file once per root and stores the subject's row
as ``participant`` in each sample's ``meta.json`` and in its manifest summary, so the shards alone
carry what `ShardDataModule(label_source="participants", label_column=...)` reads; nothing
looks back at the source folder when training.

The file is found at the root of the source given to ``neurotrain shard`` (a BIDS dataset, or any
folder that holds one). Rows match on ``participant_id`` (``sub-01``, or ``01``). Cells: ``n/a``
and empty become ``None``; numbers become ``int`` / ``float``; anything else stays text. An
unreadable file or one without ``participant_id`` is a `ShardError` naming it (the message
names the table; the error may be reported under the recording being sharded): a label file that
is silently ignored would train on no labels.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from neurotrain.datamodules.sharding.options import ShardError

FILE_NAME = "participants.tsv"


def participant_row(path: Path, source: str, subject: str) -> dict[str, Any] | None:
    """The ``participants.tsv`` row of ``subject`` (without ``participant_id``), or None.

    ``path`` is the recording's absolute path and ``source`` that path relative to the source
    root, so the root is ``path`` less ``source``'s parts.
    """
    depth = len(Path(source).parts)
    if depth == 0 or depth > len(path.parts):
        return None
    root = path.parents[depth - 1] if depth <= len(path.parents) else None
    if root is None:
        return None
    table = _read(root / FILE_NAME)
    if table is None:
        return None
    sub = str(subject)
    return table.get(sub if sub.startswith("sub-") else f"sub-{sub}")


@lru_cache(maxsize=16)
def _read(path: Path) -> dict[str, dict[str, Any]] | None:
    """``participant_id`` (``sub-`` prefixed) -> the row's other columns, or None without a file."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ShardError(
            str(path), f"{path} cannot be read as a tab-separated participants table: {exc}"
        ) from exc
    if rows and "participant_id" not in rows[0]:
        raise ShardError(
            str(path), f"{path} has no participant_id column (its columns: {', '.join(rows[0])})"
        )
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        pid = str(row.pop("participant_id") or "").strip()
        if not pid:
            continue
        key = pid if pid.startswith("sub-") else f"sub-{pid}"
        table[key] = {str(k).strip(): _value(v) for k, v in row.items() if k is not None}
    return table


def _value(cell: str | None) -> Any:
    """``n/a``/empty -> None, integers -> int, other numbers -> float, else the stripped text."""
    text = (cell or "").strip()
    if text in ("", "n/a", "N/A", "NaN", "nan"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else None
