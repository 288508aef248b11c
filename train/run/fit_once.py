"""Run-once fits for commands that chain many runs (quickstart, evaluate): skip, resume or start.

A run folder whose ``summary.json`` says ``finished`` and that holds ``last.ckpt`` is kept as is;
one with a ``last.ckpt`` but no finish continues from it (``--ckpt_path``); otherwise the fit
starts. ``last.ckpt`` is refreshed every ``checkpoint_every_n_steps`` optimizer steps, so an
interrupted chain loses at most that much work when re-run.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

CLASSIFICATION_METRICS = ("balanced_accuracy", "kappa", "f1_weighted", "auroc")


def fit_once(runs: Path, name: str, argv: list[str], checkpoint_every_n_steps: int = 50) -> Path:
    """Run (or resume, or skip) ``neurotrain fit ARGV --run_name=NAME`` under ``runs``; its last.ckpt."""
    from neurotrain.train.run.lightning_cli import build_cli
    from neurotrain.train.tracking.run_record import read_summary

    run = runs / name
    last = run / "checkpoints" / "last.ckpt"
    summary = read_summary(run) or {}
    if summary.get("status") == "finished" and last.exists():
        say(f"      {name}: finished earlier, kept")
        return last
    resume = [f"--ckpt_path={last}"] if last.exists() else []
    if resume:
        say(f"      {name}: resuming from {last}")
    build_cli(
        [
            "fit",
            *argv,
            f"--trainer.default_root_dir={runs}",
            f"--run_name={name}",
            f"--checkpoint_every_n_steps={checkpoint_every_n_steps}",
            *resume,
        ]
    )
    return last


def last_scores(run: Path, metrics: tuple[str, ...] = CLASSIFICATION_METRICS) -> dict[str, float]:
    """The metrics of the last validation of a run (from its metrics.csv): the final epoch's scores."""
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"val/{metrics[0]}")]
    if not rows:
        raise RuntimeError(f"{run}: no validation metrics were logged")
    return {m: float(rows[-1][f"val/{m}"]) for m in metrics}


def say(message: str) -> None:
    """A progress line on stderr (stdout stays for tables and results)."""
    print(message, file=sys.stderr, flush=True)


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
