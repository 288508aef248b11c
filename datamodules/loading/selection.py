"""Restrict a stage's data to some subjects or some events: how evaluation folds reach the loader.

A selection maps a stage (``train``, ``val``, ``test``, ``predict``) to a rule::

    {"train": {"subjects": ["s01", "s03"]},              # segments of these subjects only
     "val":   {"events": ["sub-s02_..._000004#17", ...]}}  # these events only (epochs mode)

An event is named ``"<sample key>#<i>"``: the ``i``-th entry of that sample's ``events.json``.
The name does not depend on ``tmin``/``tmax`` or the label map, so a fold written once selects
the same epochs whatever window the model uses. Both keys in one rule keep the intersection.
A rule may also carry ``"labels": {"<event>": class, ...}``: those events are given that class
instead of the label map's (the shuffled-label control of ``neurotrain evaluate`` permutes the
training labels this way, so every method reads the same shuffled labels); the events it names
must be labelled ones. ``"time": [[start_s, end_s], ...]`` keeps the segments lying wholly inside
one of these spans of their recording (seconds from its start): contiguous blocks of one recording
for training and scoring, with no window shared between blocks (windows never cross a segment).
A stage without a rule keeps its whole split. ``ShardDataModule(selection=...)`` takes the
mapping itself or the path of a JSON file holding it (what ``neurotrain evaluate`` writes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from neurotrain.datamodules.loading.tar_index import Segment

Selection = dict[str, dict[str, Any]]
STAGES = ("train", "val", "test", "predict")
RULE_KEYS = ("subjects", "events", "labels", "time")


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
            raise ValueError(
                f"{source}: {stage}: a rule has 'subjects', 'events' and/or 'time' lists (and 'labels'), got {rule!r}"
            )
        labels = rule.get("labels", {})
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in labels.items()
        ):
            raise ValueError(f"{source}: {stage}.labels must map event names to integer classes")
        spans = rule.get("time", [])
        if not isinstance(spans, list) or not all(
            isinstance(sp, list | tuple)
            and len(sp) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in sp)
            and sp[0] < sp[1]
            for sp in spans
        ):
            raise ValueError(f"{source}: {stage}.time must be a list of [start_s, end_s] with start < end")
        for key, names in rule.items():
            if key in ("labels", "time"):
                continue
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{source}: {stage}.{key} must be a list of strings")
    return value


def apply_rule(segments: list[Segment], rule: dict[str, Any] | None) -> list[Segment]:
    """The segments (and, for an ``events`` rule, the events inside them) the rule keeps.

    Segments keep their index order. With an ``events`` rule a segment keeps only the named
    events: the others stay in its copy marked ``"selected": False``, so no window is cut around
    them but they still count as bad spans and next stimuli (``windows.screen_events``), and an
    event is cut exactly when it would be without the rule. A segment with none named is dropped.
    """
    if not rule:
        return segments
    subjects = set(rule["subjects"]) if "subjects" in rule else None
    events = set(rule["events"]) if "events" in rule else None
    labels = rule.get("labels") or {}
    spans = rule.get("time")
    kept: list[Segment] = []
    for seg in segments:
        if subjects is not None and str(seg.meta.get("subject")) not in subjects:
            continue
        if spans is not None and not _inside(seg, spans):
            continue
        if events is not None:
            chosen = [event_id(seg, i) in events for i in range(len(seg.events))]
            if not any(chosen):
                continue
            marked = [
                ev if c else {**ev, "selected": False} for ev, c in zip(seg.events, chosen, strict=True)
            ]
            seg = dataclasses.replace(seg, events=marked)
        if labels:
            relabelled = [
                {**ev, "class": labels[event_id(seg, i)]} if event_id(seg, i) in labels else ev
                for i, ev in enumerate(seg.events)
            ]
            seg = dataclasses.replace(seg, events=relabelled)
        kept.append(seg)
    return kept


def _inside(seg: Segment, spans: list) -> bool:
    """Whether the segment's ``[onset_s, onset_s + duration_s]`` lies inside one span (1 µs slack)."""
    start = float(seg.meta.get("onset_s") or 0.0)
    duration = seg.meta.get("duration_s")
    if duration is None:
        duration = seg.shape[-1] / float(seg.meta["sfreq"])
    end = start + float(duration)
    return any(a - 1e-6 <= start and end <= b + 1e-6 for a, b in spans)


def describe(selection: Selection | None) -> dict[str, Any]:
    """Counts per stage, for logs: ``{"train": {"subjects": 2}, "val": {"events": 160}}``."""
    return {stage: {k: len(v) for k, v in rule.items()} for stage, rule in (selection or {}).items()}
