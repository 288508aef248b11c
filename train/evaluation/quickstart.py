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
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurotrain.train.run.configs import shipped_config
from neurotrain.train.run.fit_once import CLASSIFICATION_METRICS as METRICS
from neurotrain.train.run.fit_once import fit_once, last_scores, print_scores, say

FACE_HOUSE = {"face-upright": 0, "face-inverted": 0, "house-upright": 1, "house-inverted": 1}


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
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.examples import fetch

    out = Path(out)
    budget = FAST if fast else FULL
    say(f"[1/6] example EEG (pylossless 0.2.0, cached in {fetch('eeg').parent})")
    shards = out / "shards" / "eeg"
    say(f"[2/6] sharding into {shards}")
    shard_dataset(["example:eeg"], shards, workers=workers, progress=True)
    runs = out / "runs"
    common = [
        f"--data.datasets=[{shards}]",
        "--group=quickstart",
        *budget.encoder,
    ]
    val = f"--trainer.limit_val_batches={budget.limit_val_batches}"
    say(f"[3/6] pretraining ({budget.pretrain_steps} steps)")
    pre = fit_once(
        runs,
        "pretrain",
        [
            *_config("eeg_pretrain"),
            *common,
            "--trainer.limit_val_batches=5",
            f"--data.window_seconds={budget.pretrain_window_seconds}",
            f"--trainer.max_steps={budget.pretrain_steps}",
            "--trainer.max_epochs=1000",
        ],
    )
    say("[4/6] fine-tuning face vs house from the pretrained encoder, and from scratch")
    finetune = [*_config("eeg_finetune"), *common, val, f"--trainer.max_epochs={budget.finetune_epochs}"]
    fit_once(runs, "finetune-pretrained", [*finetune, f"--model.init_from={pre}"])
    fit_once(runs, "finetune-scratch", finetune)
    say("[5/6] classical baselines on the same epochs")
    results = {
        "protocol": "cross-subject: train s01, test s02 (final epoch, no selection on s02)",
        "methods": {
            "encoder, pretrained + fine-tuned": last_scores(runs / "finetune-pretrained"),
            "encoder, fine-tuned from scratch": last_scores(runs / "finetune-scratch"),
            **_baselines(shards),
        },
        "budget": budget.__dict__,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    say("[6/6] report")
    _print_table(results)
    from neurotrain.train.report.compare import build_report

    build_report(
        [runs], out / "report.html", title="neurotrain quickstart", preamble_html=_results_html(results)
    )
    say(f"wrote {out / 'results.json'} and {out / 'report.html'}")
    return results


def _config(name: str) -> list[str]:
    return ["--config", str(shipped_config(name))]


def _baselines(shards: Path) -> dict[str, dict[str, float]]:
    from neurotrain.datamodules.loading.datamodule import ShardDataModule
    from neurotrain.train.evaluation.baselines import BASELINES, score_on_loaders

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
    return score_on_loaders(BASELINES, dm.train_dataloader(), dm.val_dataloader(), dm.sfreq)


def _print_table(results: dict[str, Any]) -> None:
    rows = {name: [f"{scores[m]:.3f}" for m in METRICS] for name, scores in results["methods"].items()}
    print_scores(f"face vs house — {results['protocol']}", rows)


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


def add_quickstart_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain quickstart``."""
    p = sub.add_parser("quickstart", help="real EEG to pretrained, fine-tuned, evaluated and compared models")
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument("--fast", action="store_true", help="short budget (~3 min on 2 CPU cores), for CI")
    p.add_argument("--workers", type=int, default=2, help="processes for sharding")
    p.set_defaults(handler=lambda a: quickstart(a.out, a.fast, a.workers) and 0)
