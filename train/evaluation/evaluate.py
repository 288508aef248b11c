"""``neurotrain evaluate``: a fine-tune config scored under a reproducible protocol, folds × seeds.

    neurotrain evaluate --config train/configs/eeg_finetune.yaml --protocol within-subject \\
        --init_from checkpoints/pretrain/checkpoints/last.ckpt --seeds 0 1 2 --folds 5 --out eval/ws

The protocol's folds are planned once from the manifest's labelled epochs and ``--split_seed``
(`folds`); for each training seed, each fold's selection is written to
``OUT/folds/seed<S>/<fold>.json`` and the config is fine-tuned (or linear-probed) on the fold's
training part, from ``--init_from`` when given, and scored on its held-out part after the final
epoch (no model selection on held-out data). The classical baselines run on the identical epochs
of every fold; every method's per-epoch predictions are kept (``OUT/predictions``) and give the
bootstrap intervals and paired differences of `intervals`. Results:

- ``OUT/results.json``: every fold's scores, the splits (subjects, counts, selection file and its
  sha256), the manifests' sha256, the command, and mean ± std across folds and seeds;
- ``OUT/results.md``: the same as Markdown tables;
- a W&B run (``job_type=evaluate``; offline unless logged in) with the per-fold table and the means.

Every fold is a normal run folder under ``OUT/runs`` (compare them with ``neurotrain compare``).
Re-running the same command skips finished folds and resumes an interrupted one; ``OUT`` refuses
an evaluation with other settings than the one it holds.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from neurotrain.datamodules.io.files import atomic_write_json, atomic_write_text, sha256_file
from neurotrain.models.metric_names import CLASSIFICATION_METRICS as METRICS
from neurotrain.train.evaluation.folds import PROTOCOLS, Fold, FoldError, plan_folds
from neurotrain.train.evaluation.intervals import interval_lines, intervals
from neurotrain.train.evaluation.scores import last_scores, print_scores
from neurotrain.train.run.fit_once import fit_once, say

MODEL_METHOD = "encoder"


class EvaluateError(ValueError):
    """The evaluation cannot run as asked (config, protocol, or an output folder in use)."""


def evaluate(
    config: str | Path,
    protocol: str,
    seeds: list[int] | None = None,
    folds: int = 5,
    out: str | Path = "evaluate",
    init_from: str | None = None,
    linear_probe: bool = False,
    baselines: list[str] | None = None,
    overrides: list[str] | None = None,
    wandb_project: str = "neurotrain",
    split_seed: int = 0,
) -> dict[str, Any]:
    """Run every fold of every seed (skipping finished ones) and write the results; return them.

    The folds are dealt once, by ``split_seed``; each of ``seeds`` re-runs the same folds with
    another training seed, so the seeds of a fold are scored on identical epochs.
    """
    from neurotrain.datamodules.loading.datamodule import ShardDataModule
    from neurotrain.train.evaluation.baselines import BASELINES

    seeds = [0] if seeds is None else list(seeds)
    baselines = list(BASELINES if baselines is None else baselines)
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise EvaluateError(f"unknown baselines {sorted(unknown)}; known: {', '.join(BASELINES)}")
    out = Path(out)
    cfg = _check_config(config, overrides or [])
    encoder_classifier = _is_encoder_classifier(cfg)
    if (init_from or linear_probe) and not encoder_classifier:
        raise EvaluateError(
            f"{cfg['model.class_path']} trains from scratch: --init_from and --linear_probe do not apply"
        )
    if init_from:
        cfg["model.init_args.init_from"] = init_from
    if linear_probe:
        cfg["model.init_args.linear_probe"] = True
    data = cfg["data"].as_dict()
    # the model's row in the tables: "encoder", or the braindecode network's name (EEGNet, ...)
    method = MODEL_METHOD if encoder_classifier else str(cfg["model.init_args.network"])
    plan = {
        "config": str(config),
        "config_sha256": sha256_file(config),
        "protocol": protocol,
        "folds": folds,
        "seeds": seeds,
        "overrides": list(overrides or []),
        "init_from": init_from,
        "linear_probe": linear_probe,
        "baselines": baselines,
        "split_seed": split_seed,
    }
    _claim(out, plan)
    dm = ShardDataModule(**{**data, "selection": None})
    events = dm.labelled_events("all")
    say(
        f"evaluate: {protocol}, {len(events)} labelled epochs of {len({e['subject'] for e in events})} subjects"
    )
    records: list[dict[str, Any]] = []
    planned = plan_folds(events, protocol, folds, split_seed)
    predictions: list[dict[str, Any]] = []  # per fold run: method -> per-epoch predictions
    for seed in seeds:
        for i, fold in enumerate(planned):
            tag = f"seed{seed}-{fold.name.replace('/', '-')}"
            say(
                f"[seed {seed}, fold {i + 1}/{len(planned)}] {fold.name}: {fold.n_train} train / {fold.n_test} held-out epochs"
            )
            selection = out / "folds" / f"seed{seed}" / f"{fold.name.replace('/', '-')}.json"
            atomic_write_json(selection, fold.selection)
            fold_cfg = cfg.clone()
            for key, value in {
                "data.selection": str(selection),
                "data.train_split": "all",
                "data.val_split": "all",
                "data.seed": seed,
                "seed_everything": seed,
                "group": f"evaluate-{protocol}",
                "tags": ["evaluate", protocol, f"seed{seed}"],
                "save_top_k": 0,
            }.items():
                fold_cfg[key] = value
            fit_once(out / "runs", tag, fold_cfg)
            scores = {method: last_scores(out / "runs" / tag)}
            predicted = _baselines(out, tag, data, selection, baselines, seed)
            scores.update({title: p["scores"] for title, p in predicted.items()})
            predictions.append(
                {
                    "fold": i,
                    "seed": seed,
                    "name": fold.name,
                    "methods": _fold_predictions(out, tag, method, predicted),
                }
            )
            records.append(
                {
                    "seed": seed,
                    **fold.record(),
                    "run": str(out / "runs" / tag),
                    "selection_file": str(selection),
                    "selection_sha256": sha256_file(selection),
                    "scores": scores,
                }
            )
    results = {
        **plan,
        "command": "neurotrain evaluate " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["evaluate"] else []),
        "datasets": [
            {"path": d, "manifest_sha256": m["_sha256"]}
            for d, m in zip(dm.datasets, dm.manifests, strict=True)
        ],
        "init_from_sha256": sha256_file(init_from) if init_from and Path(init_from).is_file() else None,
        "scoring": "final epoch on each fold's held-out epochs; no model selection on them",
        "n_epochs": len(events),
        "folds_detail": records,
        "summary": summarize(records),
        "intervals": intervals(predictions, method),
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))
    _print_table(results)
    _log_wandb(out, results, wandb_project)
    say(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return results


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and metric: mean, std (sample, ddof 1; 0 for one value) and n over folds × seeds."""
    methods: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        for method, scores in rec["scores"].items():
            for m in METRICS:
                methods.setdefault(method, {}).setdefault(m, []).append(float(scores[m]))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, by_metric in methods.items():
        out[method] = {}
        for m, values in by_metric.items():
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
            out[method][m] = {"mean": mean, "std": math.sqrt(var), "n": len(values)}
    return out


def markdown(results: dict[str, Any]) -> str:
    """The summary (mean ± std) and per-fold tables as Markdown."""
    head = "| method | " + " | ".join(m.replace("_", " ") for m in METRICS) + " |"
    rule = "| --- |" + " ---: |" * len(METRICS)
    lines = [
        f"# {results['protocol']} evaluation",
        "",
        f"Config `{results['config']}`, seeds {results['seeds']}, "
        f"{len(results['folds_detail'])} fold runs; {results['scoring']}.",
        "",
        "Mean ± std across folds and seeds:",
        "",
        head,
        rule,
    ]
    for method, by_metric in results["summary"].items():
        cells = [f"{by_metric[m]['mean']:.3f} ± {by_metric[m]['std']:.3f}" for m in METRICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += interval_lines(results.get("intervals"))
    lines += ["", "Per fold:", "", "| seed | fold | method | " + " | ".join(METRICS) + " |"]
    lines.append("| ---: | --- | --- |" + " ---: |" * len(METRICS))
    for rec in results["folds_detail"]:
        for method, scores in rec["scores"].items():
            cells = " | ".join(f"{scores[m]:.3f}" for m in METRICS)
            lines.append(f"| {rec['seed']} | {rec['name']} | {method} | {cells} |")
    return "\n".join(lines) + "\n"


# helpers ---------------------------------------------------------------------------------------------


def _check_config(config: str | Path, overrides: list[str]) -> Namespace:
    """The fine-tune config with the user's overrides (nothing built); errors name the problem."""
    from neurotrain.models.modules import BraindecodeClassifierModule, ClassifierModule
    from neurotrain.train.run.lightning_cli import load_config, model_class

    try:
        cfg = load_config(["--config", str(config), "--media_every_n_val=0", *overrides])
    except Exception as exc:
        raise EvaluateError(f"the config does not parse: {str(exc).strip().splitlines()[0]}") from exc
    model = model_class(cfg)
    if model is None or not issubclass(model, (ClassifierModule, BraindecodeClassifierModule)):
        raise EvaluateError(
            f"evaluate scores classifiers; the config's model is {cfg.get('model.class_path') or 'not set'}"
        )
    if cfg["data.mode"] != "epochs":
        raise EvaluateError("evaluate needs event epochs: set data.mode: epochs and a label_map")
    return cfg


def _is_encoder_classifier(cfg: Namespace) -> bool:
    """Whether the config's model is the encoder classifier (``init_from`` and probing apply)."""
    from neurotrain.models.modules import ClassifierModule
    from neurotrain.train.run.lightning_cli import model_class

    model = model_class(cfg)
    return model is not None and issubclass(model, ClassifierModule)


def _claim(out: Path, plan: dict[str, Any]) -> None:
    """Record the settings in ``OUT/evaluate.json``; refuse a folder holding another evaluation."""
    path = out / "evaluate.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != plan:
            changed = sorted(k for k in set(before) | set(plan) if before.get(k) != plan.get(k))
            raise EvaluateError(
                f"{out} holds an evaluation with other settings ({', '.join(changed)}); "
                "choose another --out or delete it"
            )
        say(f"evaluate: continuing the evaluation in {out}")
        return
    atomic_write_json(path, plan)


def _baselines(
    out: Path, tag: str, data: dict[str, Any], selection: Path, names: list[str], seed: int
) -> dict[str, dict[str, Any]]:
    """The baselines' scores and per-epoch predictions on the fold's epochs, by title (cached in
    ``OUT/baselines/<tag>.json``)."""
    if not names:
        return {}
    from neurotrain.train.evaluation.baselines import TITLES

    cache = out / "baselines" / f"{tag}.json"
    if cache.exists():  # in the order of ``names``, as a fresh run gives them
        cached = json.loads(cache.read_text())
        if all("sample_ids" in cached.get(TITLES[n], {}) for n in names):
            return {TITLES[n]: cached[TITLES[n]] for n in names}
    from neurotrain.datamodules.loading.datamodule import ShardDataModule
    from neurotrain.train.evaluation.baselines import predict_on_loaders

    dm = ShardDataModule(
        **{
            **data,
            "selection": str(selection),
            "train_split": "all",
            "val_split": "all",
            "drop_bad_channels": False,  # one montage across subjects, as the baselines need
            "batch_size": 64,
        }
    )
    dm.setup("fit")
    predicted = predict_on_loaders(
        names, dm.eval_dataloader("train"), dm.eval_dataloader("val"), dm.sfreq, seed=seed
    )
    atomic_write_json(cache, predicted)
    return predicted


def _fold_predictions(
    out: Path, tag: str, method: str, baselines: dict[str, dict[str, Any]]
) -> dict[str, dict[str, list]]:
    """Every method's held-out predictions of one fold run, sorted by sample id (``OUT/predictions``).

    The model's come from its run's last validation (`read_predictions`); a fold whose model and
    baselines were scored on different epochs is refused, naming the fold.
    """
    from neurotrain.train.run.predictions import read_predictions

    methods: dict[str, dict[str, list]] = {}
    model = read_predictions(out / "runs" / tag)
    if model is not None:
        methods[method] = {k: model[k] for k in ("sample_ids", "y_true", "y_pred")}
    for title, p in baselines.items():
        rows = sorted(zip(p["sample_ids"], p["y_true"], p["y_pred"], strict=True))
        methods[title] = {
            "sample_ids": [r[0] for r in rows],
            "y_true": [r[1] for r in rows],
            "y_pred": [r[2] for r in rows],
        }
    ids = {title: m["sample_ids"] for title, m in methods.items()}
    if len({tuple(v) for v in ids.values()}) > 1:
        counts = ", ".join(f"{t}: {len(v)}" for t, v in ids.items())
        raise EvaluateError(f"fold run {tag}: the methods were scored on different epochs ({counts})")
    atomic_write_json(out / "predictions" / f"{tag}.json", methods)
    return methods


def _print_table(results: dict[str, Any]) -> None:
    rows = {
        method: [f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in METRICS]
        for method, s in results["summary"].items()
    }
    print_scores(f"{results['protocol']}: mean ± std over {len(results['folds_detail'])} fold runs", rows)


def _log_wandb(out: Path, results: dict[str, Any], project: str) -> None:
    """One W&B run holding the per-fold table and the means (offline unless logged in)."""
    from neurotrain.train.tracking import wandb_run as tracking
    from neurotrain.train.tracking.wandb_server import resolve_mode

    mode = resolve_mode()
    if mode == "disabled":
        return
    import wandb

    settings = wandb.Settings(silent=True, init_timeout=tracking.INIT_TIMEOUT_S)
    run = wandb.init(
        project=project,
        dir=str(out),
        mode=mode,
        name=f"evaluate-{results['protocol']}",
        group=f"evaluate-{results['protocol']}",
        job_type="evaluate",
        config={k: results[k] for k in ("config", "protocol", "folds", "seeds", "init_from", "linear_probe")},
        settings=settings,
        reinit="create_new",
    )
    try:
        columns = ["seed", "fold", "method", *METRICS]
        rows = [
            [rec["seed"], rec["name"], method, *(scores[m] for m in METRICS)]
            for rec in results["folds_detail"]
            for method, scores in rec["scores"].items()
        ]
        summary_rows = [
            [method, *(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in METRICS)]
            for method, s in results["summary"].items()
        ]
        run.log(
            {
                "evaluate/folds": wandb.Table(columns=columns, data=rows),
                "evaluate/summary": wandb.Table(columns=["method", *METRICS], data=summary_rows),
            }
        )
        for method, by_metric in results["summary"].items():
            for m, stats in by_metric.items():
                run.summary[f"{method}/{m}_mean"] = stats["mean"]
                run.summary[f"{method}/{m}_std"] = stats["std"]
    finally:
        run.finish()
    if mode == "offline":
        say(f"W&B run saved offline in {out / 'wandb'}; upload it with: neurotrain sync {out}")


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="fine-tune and score a config under within-subject, cross-subject or LOSO folds",
        description="Extra arguments after the options (e.g. --trainer.max_epochs=3) go to every fit.",
    )
    p.add_argument("--config", required=True, help="fine-tune config (LightningCLI YAML, data.mode: epochs)")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="training seeds (each re-runs every fold)"
    )
    p.add_argument("--split_seed", "--split-seed", type=int, default=0, help="seed of the fold deal")
    p.add_argument("--folds", type=int, default=5, help="folds (within-subject, cross-subject)")
    p.add_argument("--init_from", "--init-from", default=None, help="pretrained checkpoint to fine-tune from")
    p.add_argument("--linear_probe", "--linear-probe", action="store_true", help="freeze the encoder")
    p.add_argument(
        "--baselines", nargs="*", default=None, help="classical baselines on the same folds (default: all)"
    )
    p.add_argument("--out", default="evaluate", help="output folder (default ./evaluate)")
    p.add_argument("--wandb_project", default="neurotrain")
    p.set_defaults(handler=_run, accepts_extra=True)


def _run(args: argparse.Namespace) -> int:
    try:
        evaluate(
            args.config,
            args.protocol,
            args.seeds,
            args.folds,
            args.out,
            args.init_from,
            args.linear_probe,
            args.baselines,
            args.extra,
            args.wandb_project,
            args.split_seed,
        )
    except (EvaluateError, FoldError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["Fold", "evaluate", "intervals", "markdown", "summarize"]
