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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from neurotrain.datamodules.io.files import atomic_write_json
from neurotrain.models.metric_names import CLASSIFICATION_METRICS as METRICS
from neurotrain.train.evaluation.scores import last_scores, print_scores
from neurotrain.train.report.tables import ReportTable
from neurotrain.train.run.configs import shipped_config
from neurotrain.train.run.fit_once import fit_once, say


@dataclass(frozen=True)
class Budget:
    """Training lengths: the full run fits in ~15 min on 2 CPU cores, ``--fast`` in ~3."""

    pretrain_steps: int
    finetune_epochs: int
    limit_val_batches: int | float  # of the fine-tunes (their scores); pretraining validates 5 batches
    encoder: tuple[tuple[str, Any], ...] = ()  # (field, value) overrides of the configs' encoder, every run
    pretrain_window_seconds: float = 1.0  # 500 tokens a window: ~2.5x cheaper steps than 2 s windows


FULL = Budget(pretrain_steps=300, finetune_epochs=5, limit_val_batches=1.0)
# The CI-sized encoder (dim 64, depth 2): the pipeline end to end in ~3 minutes, not its scores.
FAST = Budget(pretrain_steps=40, finetune_epochs=2, limit_val_batches=4, encoder=(("dim", 64), ("depth", 2)))


def quickstart(out: str | Path = "quickstart", fast: bool = False, workers: int = 2) -> dict[str, Any]:
    """Run every step (skipping finished ones); return the results table as a dict."""
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.examples import fetch

    out = Path(out)
    budget = FAST if fast else FULL
    say(f"[1/6] example EEG (pylossless 0.2.0, cached in {fetch('eeg').parent})")
    shards = out / "shards" / "eeg"
    say(f"[2/6] sharding into {shards}")
    shard_dataset(["example:eeg"], shards, workers=workers, progress=True)
    runs = out / "runs"
    pretrain, finetune = run_configs(shards, budget)
    say(f"[3/6] pretraining ({budget.pretrain_steps} steps)")
    pre = fit_once(runs, "pretrain", pretrain)
    say("[4/6] fine-tuning face vs house from the pretrained encoder, and from scratch")
    from_pretrained = finetune.clone()
    from_pretrained["model.init_args.init_from"] = str(pre)
    fit_once(runs, "finetune-pretrained", from_pretrained)
    fit_once(runs, "finetune-scratch", finetune)
    say("[5/6] classical baselines on the same epochs")
    results = {
        "protocol": "cross-subject: train s01, test s02 (final epoch, no selection on s02)",
        "methods": {
            "encoder, pretrained + fine-tuned": last_scores(runs / "finetune-pretrained"),
            "encoder, fine-tuned from scratch": last_scores(runs / "finetune-scratch"),
            **_baselines(finetune),
        },
        "budget": budget.__dict__,
    }
    atomic_write_json(out / "results.json", results, sort_keys=False)
    say("[6/6] report")
    _print_table(results)
    from neurotrain.train.report.compare import build_report

    build_report([runs], out / "report.html", title="neurotrain quickstart", tables=[_results_table(results)])
    say(f"wrote {out / 'results.json'} and {out / 'report.html'}")
    return results


def run_configs(shards: Path, budget: Budget) -> tuple[Namespace, Namespace]:
    """The pretraining and fine-tuning configs: the shipped ones, set to these shards and budget."""
    common: dict[str, Any] = {"data.datasets": [str(shards)], "group": "quickstart"}
    common.update({f"model.init_args.encoder.{field}": value for field, value in budget.encoder})
    pretrain = _shipped(
        "eeg_pretrain",
        {
            **common,
            "trainer.limit_val_batches": 5,
            "data.window_seconds": budget.pretrain_window_seconds,
            "trainer.max_steps": budget.pretrain_steps,
            "trainer.max_epochs": 1000,
        },
    )
    finetune = _shipped(
        "eeg_finetune",
        {
            **common,
            "trainer.limit_val_batches": budget.limit_val_batches,
            "trainer.max_epochs": budget.finetune_epochs,
        },
    )
    return pretrain, finetune


def _shipped(name: str, values: dict[str, Any]) -> Namespace:
    from neurotrain.train.run.lightning_cli import load_config

    cfg = load_config(["--config", str(shipped_config(name))])
    for key, value in values.items():
        cfg[key] = value
    return cfg


def _baselines(finetune: Namespace) -> dict[str, dict[str, float]]:
    from neurotrain.datamodules.loading.datamodule import ShardDataModule
    from neurotrain.train.evaluation.baselines import BASELINES, score_on_loaders

    # The fine-tune's own data config: the same epochs, split and normalisation; every channel kept
    # so both subjects share a montage.
    dm = ShardDataModule(**{**finetune["data"].as_dict(), "batch_size": 64, "drop_bad_channels": False})
    dm.setup("fit")
    return score_on_loaders(BASELINES, dm.train_dataloader(), dm.val_dataloader(), dm.sfreq)


def _print_table(results: dict[str, Any]) -> None:
    rows = {name: [f"{scores[m]:.3f}" for m in METRICS] for name, scores in results["methods"].items()}
    print_scores(f"face vs house — {results['protocol']}", rows)


def _results_table(results: dict[str, Any]) -> ReportTable:
    """The results as the report's table above the runs (the page escapes every value)."""
    return ReportTable(
        id="quickstart-results",
        title="Results",
        note=f"face vs house · {results['protocol']}",
        columns=["method", *(m.replace("_", " ") for m in METRICS)],
        rows=[[name, *(f"{s[m]:.3f}" for m in METRICS)] for name, s in results["methods"].items()],
    )


def add_quickstart_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain quickstart``."""
    p = sub.add_parser("quickstart", help="real EEG to pretrained, fine-tuned, evaluated and compared models")
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument("--fast", action="store_true", help="short budget (~3 min on 2 CPU cores), for CI")
    p.add_argument("--workers", type=int, default=2, help="processes for sharding")
    p.set_defaults(handler=lambda a: quickstart(a.out, a.fast, a.workers) and 0)
