"""The ``neurotrain compare`` page: runs tables, metric curves, parallel coordinates, media, as one HTML file.

`render_report` turns the runs into the values the page shows; the Jinja2 template
``assets/report.html.j2`` lays them out (autoescaped), with the style ``assets/report.css`` and the
script ``assets/report.js`` inlined. The page is self-contained: plotly.js (from the installed
``plotly`` package), the data as JSON and the images as base64 are all inline, so it opens from disk
with no server and no network. Curves are drawn by the page's script from the raw logged values, so
the smoothing slider and the step/epoch switch work without regenerating the report.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from neurotrain.train.report.panels import SECTION_TITLES, SECTIONS, make_panels
from neurotrain.train.report.runs import (
    CRASHED_STATUSES,
    DEFAULT_IGNORED_KEYS,
    Curve,
    Run,
    best_and_final,
    format_value,
)
from neurotrain.train.report.runs_table import Cell, runs_tables
from neurotrain.train.report.tables import ReportTable

# Plotly's default qualitative palette, so group colours match what users know from plotly/W&B.
PALETTE = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A",
    "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52",
)  # fmt: skip
MEDIA_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
TEMPLATE = "report.html.j2"
# "recon_step000120.png" and "recon_epoch3.png" belong to the series "recon".
_SERIES_SUFFIX = re.compile(r"([_-]?(step|epoch|e|s))?[_-]?\d+$", re.IGNORECASE)
# An HTML parser ends a <script> or <style> element at the first "</script" or "</style", any case.
_END_TAG = re.compile(r"</(script|style)", re.IGNORECASE)


@dataclass
class ReportOptions:
    """What the report shows; the CLI options of ``neurotrain compare``."""

    metric: str
    mode: str  # "min" or "max"
    config_keys: Sequence[str]  # differing between all runs: the parallel-coordinates fallback
    group_by: str | None = None
    smoothing: float = 0.0
    x: str = "step"
    media: str = "last"  # "all", "last" (the newest image of each series) or "none"
    title: str = "neurotrain compare"
    filters: Sequence[str] = ()
    tables: Sequence[ReportTable] = ()  # shown above the runs table (e.g. the quickstart's results)
    ignore_keys: Sequence[str] = DEFAULT_IGNORED_KEYS  # config keys never shown as settings
    per_kind_metric: bool = False  # each runs table scores its runs' monitored metric, not ``metric``


def render_report(runs: Sequence[Run], opts: ReportOptions, plotly_js: str) -> str:
    """The whole HTML page for ``runs``; ``plotly_js`` is the plotly.js source to inline."""
    groups = _group_values(runs, opts.group_by)
    colors = _colors(runs, groups)
    scores = {id(run): best_and_final(run.curves.get(opts.metric), opts.mode) for run in runs}
    panels = make_panels(runs, opts.metric)
    data = {
        "x": opts.x,
        "smoothing": opts.smoothing,
        "panels": [p.to_json() for p in panels],
        "runs": [
            {
                "name": run.name,
                "color": colors[i],
                "group": groups[i],
                "job_type": run.job_type,
                "status": run.status,
                "crashed": run.status in CRASHED_STATUSES,
                "curves": {k: _curve_json(c) for k, c in run.curves.items()},
            }
            for i, run in enumerate(runs)
        ],
        "parcoords": _parcoords(runs, opts, groups, scores),
    }
    tables = runs_tables(
        runs,
        metric=opts.metric,
        mode=opts.mode,
        per_kind_metric=opts.per_kind_metric,
        ignore=opts.ignore_keys,
        group_by=opts.group_by,
        groups=groups,
    )
    sections = [
        {"id": name, "title": SECTION_TITLES[name]}
        for name in SECTIONS
        if any(p.section == name for p in panels)
    ]
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=opts.title,
            css=_inline_code(_asset("report.css")),
            plotly_js=_inline_code(plotly_js),
            page_js=_inline_code(_asset("report.js")),
            n_runs=len(runs),
            metric=opts.metric,
            mode=opts.mode,
            filters=", ".join(opts.filters) or "none",
            generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            tables=opts.tables,
            runs_tables=tables,
            group_table=_group_table(runs, opts, groups, scores) if opts.group_by else None,
            sections=sections,
            x=opts.x,
            smoothing=opts.smoothing,
            media=_media(runs, opts.media),
            data=data,
        )
    )


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("neurotrain.train.report", "assets"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # `tojson` of the report data: JSON has no NaN (curves carry gaps as null); values JSON has no
    # type for (dates, paths) as text; keys in insertion order, as the page lists them.
    env.policies["json.dumps_kwargs"] = {"allow_nan": False, "default": str}
    env.filters["value"] = format_value
    return env


@functools.cache
def _asset(name: str) -> str:
    return (resources.files("neurotrain.train.report") / "assets" / name).read_text(encoding="utf-8")


def _inline_code(code: str) -> Markup:
    """Trusted code (our own assets, plotly.js of the installed package) for inside <script>/<style>.

    Marking it safe is right: it is never user data, and entity escaping would corrupt it (a browser
    does not decode entities inside <script> or <style>). The one thing that could break the page,
    an end tag ending the element early, is written ``<\\/script``, which means ``</script`` in the
    JavaScript strings and regular expressions where it can occur.
    """
    return Markup(_END_TAG.sub(r"<\\/\1", code))


def _group_table(runs: Sequence[Run], opts: ReportOptions, groups: list[str], scores: dict) -> dict[str, Any]:
    """Per-group aggregate of the best monitored value (mean, std, min, max over the group's runs)."""
    rows = []
    for group in dict.fromkeys(groups):
        members = [run for run, g in zip(runs, groups, strict=True) if g == group]
        values = [scores[id(r)][0] for r in members if scores[id(r)][0] is not None]
        crashed = sum(r.status in CRASHED_STATUSES for r in members)
        stats = (
            [
                statistics.fmean(values),
                statistics.stdev(values) if len(values) > 1 else 0.0,
                min(values),
                max(values),
            ]
            if values
            else [None] * 4
        )
        cells = [_cell(group), _cell(len(members), sort=len(members)), _cell(crashed, sort=crashed)]
        rows.append(cells + [_cell(v, sort=v) for v in stats])
    key = opts.group_by or ""
    columns = [key, "runs", "crashed"] + [f"{s} best {opts.metric}" for s in ("mean", "std", "min", "max")]
    return {"key": key, "columns": columns, "rows": rows}


def _parcoords(
    runs: Sequence[Run], opts: ReportOptions, groups: list[str], scores: dict
) -> list[dict[str, Any]]:
    """One parallel-coordinates chart per sweep (runs sharing ``sweep_id``), or of all runs with --group-by."""
    sets: dict[str, list[int]] = {}
    if opts.group_by:
        sets[f"runs by {opts.group_by}"] = list(range(len(runs)))
    else:
        for i, run in enumerate(runs):
            sweep_id = (run.summary.get("sweep") or {}).get("sweep_id")
            if sweep_id:
                sets.setdefault(f"sweep {sweep_id}", []).append(i)
    charts = []
    for title, members in sets.items():
        members = [i for i in members if scores[id(runs[i])][0] is not None]
        if len(members) < 2:
            continue
        swept = sorted(
            {k for i in members for k in ((runs[i].summary.get("sweep") or {}).get("params") or {})}
        )
        keys = [k for k in (swept or opts.config_keys) if all(k in runs[i].config for i in members)]
        if not keys:
            continue
        dims = [_dimension(k, [runs[i].config[k] for i in members]) for k in keys]
        best = [scores[id(runs[i])][0] for i in members]
        dims.append({"label": f"best {opts.metric}", "values": best})
        if opts.group_by:
            labels = list(dict.fromkeys(groups[i] for i in members))
            color = [labels.index(groups[i]) for i in members]
            scale = [[j / max(1, len(labels) - 1), PALETTE[j % len(PALETTE)]] for j in range(len(labels))]
        else:
            color, scale = best, "Viridis"
        charts.append(
            {
                "title": title,
                "dims": dims,
                "color": color,
                "colorscale": scale,
                "runs": [runs[i].name for i in members],
            }
        )
    return charts


def _dimension(label: str, values: list[Any]) -> dict[str, Any]:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return {"label": label, "values": values}
    text = [format_value(v) for v in values]
    levels = sorted(set(text))
    return {
        "label": label,
        "values": [levels.index(t) for t in text],
        "tickvals": list(range(len(levels))),
        "ticktext": levels,
    }


def _media(runs: Sequence[Run], which: str) -> list[dict[str, Any]]:
    """The figures of each run that has some, as data URIs; none with ``--media none``."""
    if which == "none":
        return []
    blocks = []
    for run in runs:
        files = run.media if which == "all" else _last_of_each_series(run.media)
        if files:
            figures = [{"name": p.name, "src": _data_uri(p)} for p in files]
            blocks.append({"name": run.name, "figures": figures})
    return blocks


def _last_of_each_series(files: Sequence[Path]) -> list[Path]:
    """The newest file of each series; zero-padded or not, numbers sort numerically."""
    latest: dict[str, Path] = {}
    for path in sorted(files, key=_natural_key):
        latest[_SERIES_SUFFIX.sub("", path.stem) or path.stem] = path
    return sorted(latest.values())


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def _data_uri(path: Path) -> str:
    mime = MEDIA_MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _curve_json(curve: Curve) -> dict[str, list[Any]]:
    # JSON has no NaN/inf; a gap (null) is also what plotly draws for them.
    values = [v if math.isfinite(v) else None for v in curve.value]
    return {"step": curve.step, "epoch": curve.epoch, "value": values}


def _group_values(runs: Sequence[Run], key: str | None) -> list[str]:
    return [format_value(run.get(key)) or "(none)" for run in runs] if key else [""] * len(runs)


def _colors(runs: Sequence[Run], groups: list[str]) -> list[str]:
    if any(groups):
        order = list(dict.fromkeys(groups))
        return [PALETTE[order.index(g) % len(PALETTE)] for g in groups]
    return [PALETTE[i % len(PALETTE)] for i in range(len(runs))]


def _cell(value: Any, sort: Any = None) -> Cell:
    number = isinstance(sort, int | float) and not isinstance(sort, bool)
    return Cell(format_value(value), repr(sort) if number else None)
