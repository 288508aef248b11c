"""Restrict a stage's data to some subjects or some events: how evaluation folds reach the loader.

A selection maps a stage (``train``, ``val``, ``test``, ``predict``) to a rule::

    {"train": {"subjects": ["s01", "s03"]},              # segments of these subjects only
     "val":   {"events": ["sub-s02_..._000004#17", ...]}}  # these events only (epochs mode)

An event is named ``"<sample key>#<i>"``: the ``i``-th entry of that sample's ``events.json``.
The name does not depend on ``tmin``/``tmax`` or the label map, so a fold written once selects
the same epochs whatever window the model uses. Both keys in one rule keep the intersection.
A stage without a rule keeps its whole split. ``ShardDataModule(selection=...)`` takes the
mapping itself or the path of a JSON file holding it (what ``neurotrain evaluate`` writes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from neurotrain.datamodules.loading.tar_index import Segment

Selection = dict[str, dict[str, list[str]]]
STAGES = ("train", "val", "test", "predict")
RULE_KEYS = ("subjects", "events")


def event_id(segment: Segment, index: int) -> str:
    """The name of the ``index``-th event of ``segment`` (stable across window choices)."""
    return f"{segment.key}#{index}"


def load_selection(value: Selection | str | Path | None) -> Selection | None:
    """Read and check a selection (the mapping, or a JSON file path); ``None`` passes through."""
    if value is None:
        return None
    source = "selection"
    if isinstance(value, str | Path):
        source = str(value)
        try:
            value = json.loads(Path(value).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source}: cannot read the selection file: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{source}: expected a mapping of stage -> rule, got {type(value).__name__}")
    for stage, rule in value.items():
        if stage not in STAGES:
            raise ValueError(f"{source}: unknown stage {stage!r} (known: {', '.join(STAGES)})")
        if not isinstance(rule, dict) or not set(rule) <= set(RULE_KEYS) or not rule:
            raise ValueError(f"{source}: {stage}: a rule has 'subjects' and/or 'events' lists, got {rule!r}")
        for key, names in rule.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{source}: {stage}.{key} must be a list of strings")
    return value


def apply_rule(segments: list[Segment], rule: dict[str, list[str]] | None) -> list[Segment]:
    """The segments (and, for an ``events`` rule, the events inside them) the rule keeps.

    Segments keep their index order. With an ``events`` rule a segment keeps only the named
    events (the others are removed from its copy, so no window is cut around them) and a
    segment left with none is dropped.
    """
    if not rule:
        return segments
    subjects = set(rule["subjects"]) if "subjects" in rule else None
    events = set(rule["events"]) if "events" in rule else None
    kept: list[Segment] = []
    for seg in segments:
        if subjects is not None and str(seg.meta.get("subject")) not in subjects:
            continue
        if events is not None:
            chosen = [ev for i, ev in enumerate(seg.events) if event_id(seg, i) in events]
            if not chosen:
                continue
            seg = dataclasses.replace(seg, events=chosen)
        kept.append(seg)
    return kept


def describe(selection: Selection | None) -> dict[str, Any]:
    """Counts per stage, for logs: ``{"train": {"subjects": 2}, "val": {"events": 160}}``."""
    return {stage: {k: len(v) for k, v in rule.items()} for stage, rule in (selection or {}).items()}
