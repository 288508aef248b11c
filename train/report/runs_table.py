"""The runs tables of the page: one per run kind, showing what differs between its runs.

Runs are grouped by kind (`Run.kind`: the run record's ``job_type`` — pretrain, finetune, eval,
evaluate — or ``sweep trial · <id>`` for a sweep's trials), because settings and scores of different
kinds do not compare: a pretraining and a fine-tune differ in every model key. Each table has the
identity columns (run, status, best/final score of the metric named in the table's title, held-out
size and chance where known, duration, start) and the settings that differ between its runs (`settings.settings_of`); settings equal in
every run, and group/tags/commit when equal, are rendered ``hidden`` and shown by the page's
"show all settings" switch.

The score columns use the metric the kind's runs monitor (a fine-tune's ``val/balanced_accuracy``,
a pretraining's ``val/loss``) unless the report names one (``--metric``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neurotrain.models.metric_names import metric_mode
from neurotrain.train.report.runs import CRASHED_STATUSES, Run, best_and_final, format_value
from neurotrain.train.report.scores import chance_level, read_held_out
from neurotrain.train.report.settings import display, settings_of

# Tables in this order; other kinds (and sweeps) after, in order of first appearance.
KIND_ORDER = ("pretrain", "finetune", "eval", "evaluate")
# Config keys the run record also holds, shown from it as the group and tags columns.
INFO_KEYS = ("group", "tags")


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, the ``data-sort`` value numbers sort by, and a tooltip."""

    text: str
    sort: str | None = None
    title: str = ""


@dataclass(frozen=True)
class Column:
    """A header: ``optional`` columns (the same in every run) are hidden until "show all settings"."""

    label: str
    title: str = ""
    optional: bool = False
    setting: bool = False


@dataclass(frozen=True)
class RunRow:
    """One row: the name and status cells, then one cell per column after them."""

    name: str
    path: str
    status: str
    status_class: str  # "finished", "running", "crashed", "pruned", ... (CSS classes status-* and row-*)
    detail: str
    cells: list[Cell]


@dataclass(frozen=True)
class RunsTable:
    """The table of one run kind."""

    id: str
    kind: str
    metric: str
    mode: str
    columns: list[Column]  # the name and status columns first
    rows: list[RunRow]


def _kind_rank(kind: str) -> tuple[int, int, str]:
    """Tables in a fixed order whatever order the runs were found in: the known kinds
    (`KIND_ORDER`), then sweep trials, then any other kind, each by name."""
    known = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return known, 0 if kind.startswith("sweep trial") else 1, kind


def runs_tables(
    runs: Sequence[Run],
    *,
    metric: str,
    mode: str,
    per_kind_metric: bool,
    ignore: Sequence[str],
    group_by: str | None,
    groups: list[str],
) -> list[RunsTable]:
    """One `RunsTable` per kind of the runs; ``groups`` is each run's ``group_by`` value."""
    by_kind: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        by_kind.setdefault(run.kind, []).append(i)
    order = sorted(by_kind, key=_kind_rank)
    tables = []
    for kind in order:
        members = [runs[i] for i in by_kind[kind]]
        kind_metric, kind_mode = _kind_metric(members) if per_kind_metric else (None, None)
        tables.append(
            _table(
                kind,
                members,
                [groups[i] for i in by_kind[kind]],
                kind_metric or metric,
                kind_mode or mode,
                ignore,
                group_by,
            )
        )
    return tables


def status_class(status: str) -> str:
    """The CSS class of a status: every crash-like one (failed, crashed/killed) is ``crashed``."""
    return "crashed" if status in CRASHED_STATUSES else status.replace("/", "-")


def _table(
    kind: str,
    runs: list[Run],
    groups: list[str],
    metric: str,
    mode: str,
    ignore: Sequence[str],
    group_by: str | None,
) -> RunsTable:
    settings = settings_of(runs, [*ignore, *INFO_KEYS])
    held = [read_held_out(run.path) for run in runs]
    chance = [chance_level(metric, h) for h in held]
    columns = [Column("run"), Column("status")]
    extra_group = bool(group_by) and group_by not in ("group", "summary.group")
    if extra_group:
        columns.append(Column(str(group_by)))
    columns += [Column(s.label, s.key, setting=True) for s in settings if s.differs]
    # The metric is named once, in the table's title: its full name in three headers would not fit.
    columns += [Column("best", f"best {metric} ({mode})"), Column("best step", f"step of the best {metric}")]
    columns.append(Column("final", f"{metric} at the last validation"))
    if any(c is not None for c in chance):
        columns.append(Column("chance", f"{metric} of a classifier that ignores its input"))
    if any(h is not None for h in held):
        columns.append(Column("held-out epochs", "labelled epochs of the last validation"))
    columns += [Column("duration"), Column("started")]
    info = {
        "group": [format_value(r.summary.get("group")) for r in runs],
        "tags": [", ".join(r.summary.get("tags") or []) for r in runs],
        "commit": [_commit(r.summary) for r in runs],
    }
    columns += [Column(name, optional=len(set(values)) < 2) for name, values in info.items()]
    columns += [Column(s.label, s.key, optional=True, setting=True) for s in settings if not s.differs]

    rows = []
    for i, run in enumerate(runs):
        best, best_step, final = best_and_final(run.curves.get(metric), mode)
        cells = [_cell(groups[i])] if extra_group else []
        cells += [_setting_cell(s.key, run.config.get(s.key)) for s in settings if s.differs]
        cells += [_cell(best, sort=best), _cell(best_step, sort=best_step), _cell(final, sort=final)]
        if any(c is not None for c in chance):
            cells.append(_cell(None if chance[i] is None else round(chance[i], 4), sort=chance[i]))
        if any(h is not None for h in held):
            n = held[i].n if held[i] else None
            title = ", ".join(f"class {k}: {v}" for k, v in held[i].counts.items()) if held[i] else ""
            cells.append(Cell(format_value(n), repr(n) if n is not None else None, title))
        cells += [
            _cell(_duration(run.duration_s), sort=run.duration_s),
            Cell(
                (run.summary.get("started") or "").replace("T", " ")[:16],
                title=run.summary.get("started") or "",
            ),
        ]
        cells += [_cell(values[i]) for values in info.values()]
        cells += [_setting_cell(s.key, run.config.get(s.key)) for s in settings if not s.differs]
        rows.append(
            RunRow(
                name=run.name,
                path=str(run.path),
                status=run.status,
                status_class=status_class(run.status),
                detail=run.status_detail,
                cells=cells,
            )
        )
    return RunsTable(_slug(kind), kind, metric, mode, columns, rows)


def _kind_metric(runs: Sequence[Run]) -> tuple[str | None, str | None]:
    """The metric most of ``runs`` monitor, and its mode; (None, None) when none names one."""
    named = Counter((run.summary.get("monitor") or {}).get("name") for run in runs)
    named.pop(None, None)
    if not named:
        return None, None
    metric = named.most_common(1)[0][0]
    for run in runs:
        mon = run.summary.get("monitor") or {}
        if mon.get("name") == metric and mon.get("mode") in ("min", "max"):
            return metric, mon["mode"]
    return metric, metric_mode(metric)


def _setting_cell(key: str, value: Any) -> Cell:
    text, title = display(key, value)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return Cell(text, repr(value) if number else None, title)


def _commit(summary: dict[str, Any]) -> str:
    git = summary.get("git") or {}
    return (git.get("commit") or "")[:8] + ("+dirty" if git.get("dirty") else "")


def _slug(kind: str) -> str:
    return "runs-" + (re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "other")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _cell(value: Any, sort: Any = None) -> Cell:
    number = isinstance(sort, int | float) and not isinstance(sort, bool)
    return Cell(format_value(value), repr(sort) if number else None)
