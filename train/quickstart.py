"""``neurotrain quickstart [--out DIR] [--fast]``: real EEG to compared models in one command.

1. fetch the example EEG (pylossless BIDS, 2 subjects × 128 channels; cached),
2. shard it (subject-level split: s01 train, s02 held out),
3. pretrain a small channel-agnostic encoder by masked reconstruction on the unlabelled
   continuous EEG of the training subject,
4. fine-tune face vs house (upright and inverted pooled, 0–0.75 s after onset) from that
   checkpoint, and the same fine-tune from a random initialisation,
5. run the classical baselines (logistic regression; XDAWN + tangent space) on exactly the same
   epochs and split,
6. print a results table and write ``DIR/results.json`` and ``DIR/report.html`` (the compare
   report of the runs with the results on top).

Every step is resumable: finished runs are kept, an interrupted run continues from its last
checkpoint, shards and the data cache are reused. Scores are those of the final epoch on the
held-out subject (no selection on it), i.e. the cross-subject protocol.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent / "configs"
FACE_HOUSE = {"face-upright": 0, "face-inverted": 0, "house-upright": 1, "house-inverted": 1}
METRICS = ("balanced_accuracy", "kappa", "f1_weighted", "auroc")


@dataclass(frozen=True)
class Budget:
    """Training lengths: the full run fits in ~15 min on 2 CPU cores, ``--fast`` in ~3."""

    pretrain_steps: int
    finetune_epochs: int
    limit_val_batches: int | float  # of the fine-tunes (their scores); pretraining validates 5 batches
    encoder: tuple[str, ...] = ()  # overrides of the configs' encoder, the same for every run
    pretrain_window_seconds: float = 1.0  # 500 tokens a window: ~2.5x cheaper steps than 2 s windows


FULL = Budget(pretrain_steps=300, finetune_epochs=5, limit_val_batches=1.0)
# The CI-sized encoder (dim 64, depth 2): the pipeline end to end in ~3 minutes, not its scores.
FAST = Budget(
    pretrain_steps=40,
    finetune_epochs=2,
    limit_val_batches=4,
    encoder=("--model.encoder.dim=64", "--model.encoder.depth=2"),
)


def quickstart(out: str | Path = "quickstart", fast: bool = False, workers: int = 2) -> dict[str, Any]:
    """Run every step (skipping finished ones); return the results table as a dict."""
    from neurotrain.datamodules.example_data import fetch
    from neurotrain.datamodules.sharding import shard_dataset

    out = Path(out)
    budget = FAST if fast else FULL
    _say(f"[1/6] example EEG (pylossless 0.2.0, cached in {fetch('eeg').parent})")
    shards = out / "shards" / "eeg"
    _say(f"[2/6] sharding into {shards}")
    shard_dataset(["example:eeg"], shards, workers=workers, progress=True)
    runs = out / "runs"
    common = [
        f"--data.datasets=[{shards}]",
        f"--trainer.default_root_dir={runs}",
        "--group=quickstart",
        *budget.encoder,
    ]
    val = f"--trainer.limit_val_batches={budget.limit_val_batches}"
    _say(f"[3/6] pretraining ({budget.pretrain_steps} steps)")
    pre = _fit_once(
        runs,
        "pretrain",
        "eeg_pretrain",
        [
            *common,
            "--trainer.limit_val_batches=5",
            f"--data.window_seconds={budget.pretrain_window_seconds}",
            f"--trainer.max_steps={budget.pretrain_steps}",
            "--trainer.max_epochs=1000",
        ],
    )
    finetune = [*common, val, f"--trainer.max_epochs={budget.finetune_epochs}"]
    _say("[4/6] fine-tuning face vs house from the pretrained encoder, and from scratch")
    _fit_once(runs, "finetune-pretrained", "eeg_finetune", [*finetune, f"--model.init_from={pre}"])
    _fit_once(runs, "finetune-scratch", "eeg_finetune", finetune)
    _say("[5/6] classical baselines on the same epochs")
    results = {
        "protocol": "cross-subject: train s01, test s02 (final epoch, no selection on s02)",
        "methods": {
            "encoder, pretrained + fine-tuned": _last_scores(runs / "finetune-pretrained"),
            "encoder, fine-tuned from scratch": _last_scores(runs / "finetune-scratch"),
            **_baselines(shards),
        },
        "budget": budget.__dict__,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    _say("[6/6] report")
    _print_table(results)
    from neurotrain.train.compare import build_report

    build_report(
        [runs], out / "report.html", title="neurotrain quickstart", preamble_html=_results_html(results)
    )
    _say(f"wrote {out / 'results.json'} and {out / 'report.html'}")
    return results


def _fit_once(runs: Path, name: str, config: str, args: list[str]) -> Path:
    """Run (or resume, or skip) one fit; return its last checkpoint."""
    from neurotrain.train.lightning_cli import build_cli
    from neurotrain.train.run_record import read_summary

    run = runs / name
    last = run / "checkpoints" / "last.ckpt"
    summary = read_summary(run) or {}
    if summary.get("status") == "finished" and last.exists():
        _say(f"      {name}: finished earlier, kept")
        return last
    resume = [f"--ckpt_path={last}"] if last.exists() else []
    if resume:
        _say(f"      {name}: resuming from {last}")
    argv = ["fit", "--config", str(CONFIGS / f"{config}.yaml"), f"--run_name={name}", *args, *resume]
    build_cli([*argv, "--checkpoint_every_n_steps=50"])
    return last


def _last_scores(run: Path) -> dict[str, float]:
    """The metrics of the last validation of a run (from its metrics.csv)."""
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/balanced_accuracy")]
    if not rows:
        raise RuntimeError(f"{run}: no validation metrics were logged")
    return {m: float(rows[-1][f"val/{m}"]) for m in METRICS}


def _baselines(shards: Path) -> dict[str, dict[str, float]]:
    from neurotrain.datamodules.shard_datamodule import ShardDataModule
    from neurotrain.train.baselines import collect_epochs, fit_and_score

    # Same epochs and normalisation as the fine-tune; every channel kept so both subjects share a montage.
    dm = ShardDataModule(
        datasets=[str(shards)],
        mode="epochs",
        tmin=0.0,
        tmax=0.75,
        label_map=FACE_HOUSE,
        batch_size=64,
        drop_bad_channels=False,
    )
    dm.setup("fit")
    x_tr, y_tr, _ = collect_epochs(dm.train_dataloader())
    x_te, y_te, _ = collect_epochs(dm.val_dataloader())
    x_tr, x_te = x_tr[:, :, ::2], x_te[:, :, ::2]  # 128 Hz, as the reference figures
    return {
        "logistic regression": fit_and_score("logreg", x_tr, y_tr, x_te, y_te),
        "XDAWN + tangent space": fit_and_score("xdawn_ts", x_tr, y_tr, x_te, y_te),
    }


def _print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"face vs house — {results['protocol']}")
    table.add_column("method")
    for m in METRICS:
        table.add_column(m.replace("_", " "), justify="right")
    for name, scores in results["methods"].items():
        table.add_row(name, *(f"{scores[m]:.3f}" for m in METRICS))
    Console().print(table)


def _results_html(results: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(m.replace('_', ' '))}</th>" for m in METRICS)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{s[m]:.3f}</td>" for m in METRICS) + "</tr>"
        for name, s in results["methods"].items()
    )
    return (
        f'<h2>Results</h2><p class="meta">face vs house · {html.escape(results["protocol"])}</p>'
        f'<table id="quickstart-results"><thead><tr><th>method</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_quickstart_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain quickstart``."""
    p = sub.add_parser("quickstart", help="real EEG to pretrained, fine-tuned, evaluated and compared models")
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument("--fast", action="store_true", help="short budget (~3 min on 2 CPU cores), for CI")
    p.add_argument("--workers", type=int, default=2, help="processes for sharding")
    p.set_defaults(handler=lambda a: quickstart(a.out, a.fast, a.workers) and 0)
