"""The ``neurotrain compare`` page: runs table, metric curves, parallel coordinates, media, as one HTML file.

The page is self-contained: plotly.js (from the installed ``plotly`` package), the data as JSON and the
PNGs as base64 are all inline, so it opens from disk with no server and no network. Curves are drawn by
the page's script from the raw logged values, so the smoothing slider and the step/epoch switch work
without regenerating the report.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurotrain.train.report.assets_inline import PAGE_CSS, PAGE_JS
from neurotrain.train.report.runs import CRASHED_STATUSES, Curve, Run, best_and_final, format_value

# Plotly's default qualitative palette, so group colours match what users know from plotly/W&B.
PALETTE = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A",
    "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52",
)  # fmt: skip
MEDIA_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
# "recon_step000120.png" and "recon_epoch3.png" belong to the series "recon".
_SERIES_SUFFIX = re.compile(r"([_-]?(step|epoch|e|s))?[_-]?\d+$", re.IGNORECASE)


@dataclass
class ReportOptions:
    """What the report shows; the CLI options of ``neurotrain compare``."""

    metric: str
    mode: str  # "min" or "max"
    config_keys: Sequence[str]
    group_by: str | None = None
    smoothing: float = 0.0
    x: str = "step"
    media: str = "last"  # "all", "last" (the newest image of each series) or "none"
    title: str = "neurotrain compare"
    filters: Sequence[str] = ()
    preamble_html: str = ""  # trusted HTML shown above the runs table (e.g. the quickstart's results)


def render_report(runs: Sequence[Run], opts: ReportOptions, plotly_js: str) -> str:
    """The whole HTML page for ``runs``."""
    groups = _group_values(runs, opts.group_by)
    colors = _colors(runs, groups)
    scores = {id(run): best_and_final(run.curves.get(opts.metric), opts.mode) for run in runs}
    data = {
        "x": opts.x,
        "smoothing": opts.smoothing,
        "metrics": _metric_order(runs, opts.metric),
        "runs": [
            {
                "name": run.name,
                "color": colors[i],
                "group": groups[i],
                "crashed": run.status in CRASHED_STATUSES,
                "curves": {k: _curve_json(c) for k, c in run.curves.items()},
            }
            for i, run in enumerate(runs)
        ],
        "parcoords": _parcoords(runs, opts, groups, scores),
    }
    safe_js = plotly_js.replace("</script", "<\\/script")  # must not end the inline script early
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    filters = ", ".join(opts.filters) or "none"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(opts.title)}</title>",
        f"<style>{PAGE_CSS}</style>",
        f"<script>{safe_js}</script>",
        "</head><body>",
        f"<h1>{_e(opts.title)}</h1>",
        f'<p class="meta">{len(runs)} runs · metric <b>{_e(opts.metric)}</b> ({_e(opts.mode)}) · '
        f"filters: {_e(filters)} · generated {generated}</p>",
        opts.preamble_html,
        "<h2>Runs</h2>",
        _runs_table(runs, opts, groups, scores),
        _group_table(runs, opts, groups, scores) if opts.group_by else "",
        "<h2>Curves</h2>",
        _controls(opts),
        '<div id="curves"></div>',
        '<h2>Sweep</h2><div id="parcoords"></div>' if data["parcoords"] else "",
        _media_section(runs, opts.media),
        f'<script type="application/json" id="report-data">{_json_for_script(data)}</script>',
        f"<script>{PAGE_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _runs_table(runs: Sequence[Run], opts: ReportOptions, groups: list[str], scores: dict) -> str:
    metric = _e(opts.metric)
    head = ["run", "group", "status", "job type", "duration", "started"]
    head += [_e(k) for k in opts.config_keys]
    head += [f"best {metric}", "best step", f"final {metric}", "tags", "commit"]
    # A --group-by column unless it repeats the group column.
    extra_group = bool(opts.group_by) and opts.group_by not in ("group", "summary.group")
    if extra_group:
        head.insert(2, _e(opts.group_by))
    rows = []
    for i, run in enumerate(runs):
        s = run.summary
        best, best_step, final = scores[id(run)]
        git = s.get("git") or {}
        commit = (git.get("commit") or "")[:8] + ("+dirty" if git.get("dirty") else "")
        status_cls = "crashed" if run.status in CRASHED_STATUSES else run.status.replace("/", "-")
        cells = [
            f'<td class="name">{_e(run.name)}<div class="path">{_e(str(run.path))}</div></td>',
            _td(s.get("group")),
            f'<td class="status status-{_e(status_cls)}" title="{_e(run.status_detail)}">{_e(run.status)}'
            + (f'<div class="detail">{_e(run.status_detail[:160])}</div>' if run.status_detail else "")
            + "</td>",
            _td(s.get("job_type")),
            _td(_duration(run.duration_s), sort=run.duration_s),
            _td((s.get("started") or "").replace("T", " ")[:19]),
        ]
        cells += [_td(format_value(run.config.get(k)), sort=run.config.get(k)) for k in opts.config_keys]
        cells += [_td(format_value(best), sort=best), _td(format_value(best_step), sort=best_step)]
        cells += [_td(format_value(final), sort=final), _td(", ".join(s.get("tags") or [])), _td(commit)]
        if extra_group:
            cells.insert(2, _td(groups[i]))
        rows.append(
            f'<tr class="run-row row-{_e(status_cls)}" data-run="{_e(run.name)}">{"".join(cells)}</tr>'
        )
    header = "".join(f'<th data-col="{j}">{h}</th>' for j, h in enumerate(head))
    return (
        '<table id="runs" class="sortable"><thead><tr>'
        + header
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + '<p class="hint">Click a column header to sort.</p>'
    )


def _group_table(runs: Sequence[Run], opts: ReportOptions, groups: list[str], scores: dict) -> str:
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
        cells = [_td(group), _td(str(len(members)), sort=len(members)), _td(str(crashed), sort=crashed)]
        cells += [_td(format_value(v), sort=v) for v in stats]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = [_e(opts.group_by or ""), "runs", "crashed"] + [
        f"{s} best {_e(opts.metric)}" for s in ("mean", "std", "min", "max")
    ]
    header = "".join(f'<th data-col="{j}">{h}</th>' for j, h in enumerate(head))
    return f'<h3>By {_e(opts.group_by or "")}</h3><table id="groups" class="sortable"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _controls(opts: ReportOptions) -> str:
    step_sel = " selected" if opts.x == "step" else ""
    epoch_sel = " selected" if opts.x == "epoch" else ""
    return (
        '<div class="controls">'
        f'<label>x axis <select id="x-axis"><option value="step"{step_sel}>step</option>'
        f'<option value="epoch"{epoch_sel}>epoch</option></select></label>'
        f'<label>smoothing (EMA) <input id="smoothing" type="range" min="0" max="0.99" step="0.01" '
        f'value="{opts.smoothing}"><span id="smoothing-value">{opts.smoothing:.2f}</span></label>'
        "</div>"
    )


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


def _media_section(runs: Sequence[Run], which: str) -> str:
    if which == "none" or not any(run.media for run in runs):
        return ""
    blocks = []
    for run in runs:
        files = run.media if which == "all" else _last_of_each_series(run.media)
        if not files:
            continue
        figures = "".join(
            f'<figure><img alt="{_e(p.name)}" src="{_data_uri(p)}"><figcaption>{_e(p.name)}</figcaption></figure>'
            for p in files
        )
        blocks.append(f'<details open class="media-run"><summary>{_e(run.name)}</summary>{figures}</details>')
    return '<h2>Media</h2><div id="media">' + "".join(blocks) + "</div>"


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


def _metric_order(runs: Sequence[Run], metric: str) -> list[str]:
    names = sorted({k for run in runs for k in run.curves})
    return ([metric] if metric in names else []) + [n for n in names if n != metric]


def _group_values(runs: Sequence[Run], key: str | None) -> list[str]:
    return [format_value(run.get(key)) or "(none)" for run in runs] if key else [""] * len(runs)


def _colors(runs: Sequence[Run], groups: list[str]) -> list[str]:
    if any(groups):
        order = list(dict.fromkeys(groups))
        return [PALETTE[order.index(g) % len(PALETTE)] for g in groups]
    return [PALETTE[i % len(PALETTE)] for i in range(len(runs))]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _td(text: Any, sort: Any = None) -> str:
    attr = ""
    if isinstance(sort, int | float) and not isinstance(sort, bool):
        attr = f' data-sort="{sort!r}"'
    return f"<td{attr}>{_e(format_value(text))}</td>"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _json_for_script(data: Any) -> str:
    # Inside <script>, "</" would end the element early; "<\/" is the same JSON string.
    return json.dumps(data, allow_nan=False, default=str).replace("</", "<\\/")
