"""``neurotrain quickstart [--out DIR] [--fast]``: real EEG to compared models in one command.

1. fetch the example EEG (pylossless BIDS, 2 subjects × 128 channels; cached),
2. shard it (subject-level split: s01 train, s02 held out),
3. pretrain a small channel-agnostic encoder by masked reconstruction on unlabelled continuous
   EEG: the training subject's only (``pretrain_scope="train-only"``, the default, inductive) or
   both subjects' (``"all-unlabelled"``: allowed for self-supervision since no label is read,
   but the held-out subject's EEG is seen; recorded with the results),
4. evaluate face vs house (upright and inverted pooled, 0–0.75 s after onset) with
   `neurotrain evaluate` on the one fold train s01 → score s02: the fine-tune from that
   checkpoint and from a random initialisation, and the classical baselines, all reading the
   same prepared epochs (same events, channels good in both subjects, normalisation), every
   method scored on every held-out epoch (``--fast`` too); intervals, paired differences and
   the shuffled-label and pre-stimulus controls of the best method come with the table,
5. print the results and write ``DIR/results.json`` and ``DIR/report.html`` (the compare report
   of the runs with the results on top).

Every step is resumable: finished runs are kept, an interrupted run continues from its last
checkpoint, shards and the data cache are reused. Scores are those of the final epoch on the
held-out subject (no selection on it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from neurotrain.datamodules.io.files import atomic_write_json
from neurotrain.train.report.tables import ReportTable
from neurotrain.train.run.configs import shipped_config
from neurotrain.train.run.fit_once import fit_once, say

PRETRAIN_SCOPES = ("train-only", "all-unlabelled")
HELD_OUT = "sub-s02"  # the leave-one-subject-out fold that scores s02 (the shards' held-out subject)


@dataclass(frozen=True)
class Budget:
    """Training lengths: the full run fits in ~15 min on 2 CPU cores, ``--fast`` in ~3."""

    pretrain_steps: int
    finetune_epochs: int
    encoder: tuple[tuple[str, Any], ...] = ()  # (field, value) overrides of the configs' encoder, every run
    pretrain_window_seconds: float = 1.0  # 500 tokens a window: ~2.5x cheaper steps than 2 s windows


FULL = Budget(pretrain_steps=300, finetune_epochs=5)
# The CI-sized encoder (dim 64, depth 2): the pipeline end to end in ~3 minutes, not its scores.
FAST = Budget(pretrain_steps=40, finetune_epochs=2, encoder=(("dim", 64), ("depth", 2)))


def quickstart(
    out: str | Path = "quickstart", fast: bool = False, workers: int = 2, pretrain_scope: str = "train-only"
) -> dict[str, Any]:
    """Run every step (skipping finished ones); return the results."""
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.examples import fetch
    from neurotrain.train.evaluation.evaluate import evaluate

    if pretrain_scope not in PRETRAIN_SCOPES:
        raise ValueError(f"pretrain_scope is one of {', '.join(PRETRAIN_SCOPES)}, got {pretrain_scope!r}")
    out = Path(out)
    budget = FAST if fast else FULL
    say(f"[1/5] example EEG (pylossless 0.2.0, cached in {fetch('eeg').parent})")
    shards = out / "shards" / "eeg"
    say(f"[2/5] sharding into {shards}")
    shard_dataset(["example:eeg"], shards, workers=workers, progress=True)
    runs = out / "runs"
    pretrain = pretrain_config(shards, budget, pretrain_scope)
    say(f"[3/5] pretraining ({budget.pretrain_steps} steps, {pretrain_scope})")
    # one run and one evaluation folder per scope, so switching scope in one DIR keeps both
    suffix = "" if pretrain_scope == "train-only" else f"-{pretrain_scope}"
    pre = fit_once(runs, f"pretrain{suffix}", pretrain)
    evaluated = out / f"evaluate{suffix}"
    say("[4/5] face vs house: fine-tunes from the pretrained encoder and from scratch, baselines, controls")
    evaluation = evaluate(
        shipped_config("eeg_finetune"),
        "leave-one-subject-out",
        seeds=[0],
        out=evaluated,
        init_from=str(pre),
        overrides=finetune_overrides(shards, budget),
        compare_random=True,
        only_folds=[HELD_OUT],
    )
    results = {
        "protocol": "train s01, score s02 (final epoch, no selection on s02)",
        "pretrain_scope": pretrain_scope,
        "methods": {m: {k: v["mean"] for k, v in by.items()} for m, by in evaluation["summary"].items()},
        "intervals": evaluation["intervals"],
        "controls": evaluation.get("controls"),
        "n_test": evaluation["folds_detail"][0]["n_test"],
        "n_channels": evaluation["folds_detail"][0]["n_channels"],
        "budget": budget.__dict__,
        "evaluation": str(evaluated / "results.json"),
    }
    atomic_write_json(out / "results.json", results, sort_keys=False)
    say("[5/5] report")
    from neurotrain.train.report.compare import build_report

    build_report(
        [runs, evaluated / "runs"],
        out / "report.html",
        title="neurotrain quickstart",
        tables=[results_table(results)],
    )
    say(f"wrote {out / 'results.json'} and {out / 'report.html'}")
    return results


def pretrain_config(shards: Path, budget: Budget, scope: str = "train-only") -> Namespace:
    """The shipped pretraining config, set to these shards, budget and scope."""
    values: dict[str, Any] = {
        "data.datasets": [str(shards)],
        "group": "quickstart",
        **{f"model.init_args.encoder.{field}": value for field, value in budget.encoder},
        "trainer.limit_val_batches": 5,
        "data.window_seconds": budget.pretrain_window_seconds,
        "trainer.max_steps": budget.pretrain_steps,
        "trainer.max_epochs": 1000,
    }
    if scope == "all-unlabelled":
        values["data.train_split"] = "all"
    return _shipped("eeg_pretrain", values)


def finetune_overrides(shards: Path, budget: Budget) -> list[str]:
    """The fine-tune's command-line overrides for `evaluate`: shards, budget, encoder size."""
    return [
        f"--data.datasets=[{shards}]",
        "--group=quickstart",
        f"--trainer.max_epochs={budget.finetune_epochs}",
        *(f"--model.init_args.encoder.{field}={value}" for field, value in budget.encoder),
    ]


def _shipped(name: str, values: dict[str, Any]) -> Namespace:
    from neurotrain.train.run.lightning_cli import load_config

    cfg = load_config(["--config", str(shipped_config(name))])
    for key, value in values.items():
        cfg[key] = value
    return cfg


def results_table(results: dict[str, Any]) -> ReportTable:
    """The results as the report's table above the runs (the page escapes every value)."""
    iv = results.get("intervals") or {"methods": {}}
    rows = []
    for name, scores in results["methods"].items():
        entry = iv["methods"].get(name, {})
        s = entry.get("score")
        d = entry.get("model_minus_method")
        rows.append(
            [
                name,
                f"{s['estimate']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"
                if s
                else f"{scores['balanced_accuracy']:.3f}",
                f"{scores['auroc']:.3f}",
                f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {entry['verdict']}" if d else "",
            ]
        )
    controls = results.get("controls") or {"controls": {}}
    for name, c in controls["controls"].items():
        s = c["score"]
        rows.append(
            [
                f"control: {name} ({controls['method']})",
                f"{s['estimate']:.3f} [{s['low']:.3f}, {s['high']:.3f}]",
                "",
                c["verdict"],
            ]
        )
    return ReportTable(
        id="quickstart-results",
        title="Results",
        note=f"face vs house · {results['protocol']} · {results['n_test']} held-out epochs · "
        f"{results['n_channels']} channels · chance {iv.get('chance', 0.5):.3f} · pretraining {results['pretrain_scope']}",
        columns=[
            "method",
            "balanced accuracy [95% CI]",
            "AUROC",
            f"{iv.get('model', 'encoder')} − method [95% CI]",
        ],
        rows=rows,
    )


def add_quickstart_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain quickstart``."""
    p = sub.add_parser("quickstart", help="real EEG to pretrained, fine-tuned, evaluated and compared models")
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument("--fast", action="store_true", help="short budget (~3 min on 2 CPU cores), for CI")
    p.add_argument("--workers", type=int, default=2, help="processes for sharding")
    p.add_argument(
        "--pretrain_scope",
        "--pretrain-scope",
        choices=PRETRAIN_SCOPES,
        default="train-only",
        help="pretrain on the training subject only (default) or on both subjects' unlabelled EEG",
    )
    p.set_defaults(handler=lambda a: quickstart(a.out, a.fast, a.workers, a.pretrain_scope) and 0)
