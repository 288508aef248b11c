"""The scores of a finished run and the console table every evaluation prints."""

from __future__ import annotations

import csv
from pathlib import Path

from neurotrain.models.metric_names import CLASSIFICATION_METRICS
from neurotrain.train.tracking.run_folder import METRICS_FILE


def last_scores(run: Path, metrics: tuple[str, ...] = CLASSIFICATION_METRICS) -> dict[str, float]:
    """The metrics of the last validation of a run (from its metrics.csv): the final epoch's scores."""
    with open(run / METRICS_FILE) as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"val/{metrics[0]}")]
    if not rows:
        raise RuntimeError(f"{run}: no validation metrics were logged")
    return {m: float(rows[-1][f"val/{m}"]) for m in metrics}


def print_scores(title: str, rows: dict[str, list[str]]) -> None:
    """A Rich table: one row per method, one column per classification metric (cells pre-formatted)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("method")
    for m in CLASSIFICATION_METRICS:
        table.add_column(m.replace("_", " "), justify="right")
    for method, cells in rows.items():
        table.add_row(method, *cells)
    Console().print(table)
