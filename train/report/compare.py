"""``neurotrain compare``: one self-contained HTML dashboard of many runs, read from their run folders.

    neurotrain compare checkpoints/ --out report.html
    neurotrain compare checkpoints/lr-* --metric val/bal_acc --mode max --x epoch --smoothing 0.6
    neurotrain compare checkpoints/ --filter sweep_id=abc123 --group-by model.lr --out sweep.html

Arguments are run folders (holding ``summary.json`` or ``metrics.csv``) or folders searched for them.
Only local files are read, so runs logged with W&B online, offline or disabled all work; the report
opens from disk without a server or network (plotly.js is inlined).

This module holds the command's parser and `build_report`, which picks the runs, the metric and its
direction and writes the page; reading run folders lives in ``runs.py``, the page in ``page.py``. It
is imported when ``neurotrain`` starts, so plotly, jinja2 and Lightning are imported only inside
functions.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from neurotrain.models.metric_names import metric_mode
from neurotrain.train.report.tables import ReportTable

if TYPE_CHECKING:  # the run readers import Lightning; `neurotrain --help` must stay instant
    from neurotrain.train.report.runs import Run


def build_report(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    metric: str | None = None,
    mode: str | None = None,
    filters: Sequence[str] = (),
    group_by: str | None = None,
    smoothing: float = 0.0,
    x: str = "step",
    media: str = "last",
    ignore_keys: Sequence[str] | None = None,
    title: str | None = None,
    tables: Sequence[ReportTable] = (),
) -> list[Run]:
    """Write the report for the runs under ``paths`` to ``out``; returns the runs it shows.

    ``ignore_keys`` are glob patterns of config keys never shown as settings (default
    ``DEFAULT_IGNORED_KEYS``). Without ``metric`` (and ``mode``), each run kind's table scores the
    metric its runs monitor, and the one most runs monitor leads the curves and is the sweep charts'
    axis. ``tables`` (the caller's own results) are shown above the runs tables.
    Raises CompareError for input that cannot make a report (no runs, bad filter, no run left).
    """
    from plotly.offline import get_plotlyjs

    from neurotrain.datamodules.io.files import atomic_write_text
    from neurotrain.train.report.page import ReportOptions, render_report
    from neurotrain.train.report.runs import (
        DEFAULT_IGNORED_KEYS,
        CompareError,
        differing_keys,
        discover,
        load_run,
        matches,
        parse_filters,
    )

    if not 0.0 <= smoothing < 1.0:
        raise CompareError(f"--smoothing must be in [0, 1), got {smoothing}")
    if x not in ("step", "epoch"):
        raise CompareError(f"--x must be 'step' or 'epoch', got {x!r}")
    pairs = parse_filters(filters)
    runs = [load_run(p) for p in discover(paths)]
    kept = [run for run in runs if matches(run, pairs)]
    if not kept:
        raise CompareError(f"none of the {len(runs)} runs found matches --filter {' '.join(filters)}")
    kept.sort(key=lambda run: (run.summary.get("started") or "", run.name))
    # Without --metric/--mode, each kind's table scores the metric its own runs monitor.
    per_kind_metric = metric is None and mode is None
    metric = metric or _default_metric(kept)
    ignore = list(DEFAULT_IGNORED_KEYS if ignore_keys is None else ignore_keys)
    opts = ReportOptions(
        metric=metric,
        mode=mode or _default_mode(kept, metric),
        config_keys=differing_keys(kept, ignore),
        ignore_keys=ignore,
        per_kind_metric=per_kind_metric,
        group_by=group_by,
        smoothing=smoothing,
        x=x,
        media=media,
        title=title or f"neurotrain compare: {len(kept)} runs",
        filters=list(filters),
        tables=list(tables),
    )
    # An old report is replaced only by a complete new one.
    atomic_write_text(Path(out), render_report(kept, opts, get_plotlyjs()))
    return kept


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain compare``."""
    p = sub.add_parser(
        "compare",
        help="one self-contained HTML dashboard of many runs (table, curves, sweep view, media)",
        description="One self-contained HTML dashboard of many runs, read from their run folders (summary.json, "
        "config.yaml, metrics.csv, media/); opens from disk with no server or network.",
    )
    p.add_argument(
        "paths", nargs="+", metavar="RUN_OR_FOLDER", help="run folders, or folders searched for them"
    )
    p.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--metric", help="metric of the best/final columns (default: the runs' monitored metric)")
    p.add_argument("--mode", choices=["min", "max"], help="whether lower or higher --metric is better")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs whose config or summary key equals VALUE (repeatable; e.g. model.lr=1e-3, status=crashed)",
    )
    p.add_argument("--group-by", metavar="KEY", help="colour and aggregate runs by a config or summary key")
    p.add_argument("--smoothing", type=float, default=0.0, help="initial EMA smoothing of curves, 0..0.99")
    p.add_argument("--x", choices=["step", "epoch"], default="step", help="initial x axis of curves")
    p.add_argument(
        "--media",
        choices=["last", "all", "none"],
        default="last",
        help="figures: newest of each series (default)",
    )
    p.add_argument(
        "--ignore-key",
        action="append",
        default=[],
        metavar="PATTERN",
        help="config keys (glob) never shown as differing columns, besides config, trainer.logger*, "
        "trainer.default_root_dir, run_name, ckpt_path",
    )
    p.add_argument("--title", help="page title")
    p.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from neurotrain.train.report.runs import DEFAULT_IGNORED_KEYS, CompareError

    try:
        runs = build_report(
            args.paths,
            args.out,
            metric=args.metric,
            mode=args.mode,
            filters=args.filter,
            group_by=args.group_by,
            smoothing=args.smoothing,
            x=args.x,
            media=args.media,
            ignore_keys=[*DEFAULT_IGNORED_KEYS, *args.ignore_key],
            title=args.title,
        )
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    statuses = Counter(run.status for run in runs)
    print(
        f"wrote {args.out}: {len(runs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})"
    )
    return 0


def _default_metric(runs: Sequence[Run]) -> str:
    """The monitored metric most runs name in their summary, else val/loss, else the first logged one."""
    named = Counter((run.summary.get("monitor") or {}).get("name") for run in runs)
    named.pop(None, None)
    if named:
        return named.most_common(1)[0][0]
    logged = sorted({k for run in runs for k in run.curves})
    if "val/loss" in logged or not logged:
        return "val/loss"
    return logged[0]


def _default_mode(runs: Sequence[Run], metric: str) -> str:
    """The mode a run monitoring ``metric`` names, else what the metric's name says."""
    for run in runs:
        mon = run.summary.get("monitor") or {}
        if mon.get("name") == metric and mon.get("mode") in ("min", "max"):
            return mon["mode"]
    return metric_mode(metric)
