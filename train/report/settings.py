"""Which config settings the runs table shows, and how: the ones that differ between the runs.

A config flattens to hundreds of keys (`neurotrain.train.tracking.config_keys.flatten`), nearly all
the same in every run of a comparison. The runs table of one run kind shows the settings whose
values differ between its runs; the others are in the page too, hidden until "show all settings"
is ticked. Never shown: keys the caller ignores (`runs.DEFAULT_IGNORED_KEYS`: paths, names, logger
objects), keys empty in every run (``data.label_map: {}``, ``null``), and ``class_path`` keys whose
class is the same everywhere; a differing ``class_path`` is shown under its owner's key (``model``)
as the bare class name. A setting one run has and another lacks (it does not apply to that run's
mode) differs; the run that lacks it shows a blank cell.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from neurotrain.train.report.runs import Run, format_value

CLASS_PATH = "class_path"
MAX_TEXT = 36  # longer values are shortened in the cell, with the full value as its tooltip


@dataclass(frozen=True)
class Setting:
    """One config key as a runs-table column: ``label`` is the header, ``differs`` shows it by default."""

    key: str
    label: str
    differs: bool


def settings_of(runs: Sequence[Run], ignore: Iterable[str]) -> list[Setting]:
    """The config keys worth a column for ``runs``: the differing ones first, each group sorted by key."""
    patterns = list(ignore)
    keys = sorted({k for run in runs for k in run.config})
    out = []
    for key in keys:
        if any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(key, p + ".*") for p in patterns):
            continue
        values = {_canonical(run.config.get(key)) for run in runs}
        if values == {""}:  # empty (or absent) in every run
            continue
        differs = len(values) > 1
        if key.rsplit(".", 1)[-1] == CLASS_PATH and not differs:
            continue
        out.append(Setting(key, label_of(key), differs))
    return sorted(out, key=lambda s: (not s.differs, s.key))


def label_of(key: str) -> str:
    """A column header: the key, with ``.class_path`` dropped (``model.class_path`` is ``model``)."""
    head, _, last = key.rpartition(".")
    return head if last == CLASS_PATH and head else key


def display(key: str, value: Any) -> tuple[str, str]:
    """(cell text, tooltip) of a setting's value: a class path is its class name, long paths keep
    their last two parts, other long text is cut; the tooltip is the full value when shortened."""
    full = format_value(value)
    if key.rsplit(".", 1)[-1] == CLASS_PATH and isinstance(value, str):
        return value.rsplit(".", 1)[-1], full
    if len(full) <= MAX_TEXT:
        return full, ""
    if isinstance(value, str) and "/" in value:
        tail = "/".join(value.rstrip("/").split("/")[-2:])
        return ("…/" + tail)[: MAX_TEXT + 12], full
    return full[: MAX_TEXT - 1] + "…", full


def is_empty(value: Any) -> bool:
    """No value worth a cell: None, "", [] or {}."""
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def _canonical(value: Any) -> str:
    return "" if is_empty(value) else json.dumps(value, sort_keys=True, default=str)
