"""``neurotrain evaluate``: a fine-tune config scored under a reproducible protocol, folds × seeds.

    neurotrain evaluate --config train/configs/eeg_finetune.yaml --protocol within-subject \\
        --init_from checkpoints/pretrain/checkpoints/last.ckpt --seeds 0 1 2 --folds 5 --out eval/ws \\
        --tune --compare_random --networks EEGNet

The protocol's folds are planned once from the manifest's labelled epochs and ``--split_seed``
(`folds`); for each training seed, each fold's selection is written to
``OUT/folds/seed<S>/<fold>.json`` and every method reads the fold through one data section
(`inputs`: same epochs, same channels, same normalisation). The config is fine-tuned (or
linear-probed) on the fold's training part, from ``--init_from`` when given (and from random
initialisation too with ``--compare_random``; braindecode networks with ``--networks``), and
scored on its held-out part after the final epoch (no model selection on held-out data). With
``--tune`` every trained method and baseline chooses its settings on an inner split of the
fold's training part (`tuning`, `folds.inner_fold`). The classical baselines run on the
identical epochs; every method's per-epoch predictions are kept (``OUT/predictions``) and give
the bootstrap intervals and paired differences of `intervals`; the best method's shuffled-label
and pre-stimulus controls (`controls`) sit beside them. Results:

- ``OUT/results.json``: every fold's scores, settings chosen, the splits (subjects, counts,
  selection file and its sha256, channels), the manifests' sha256, the command, mean ± std
  across folds and seeds, intervals, controls, what an ``--init_from`` checkpoint was pretrained on (each
  fold's ``pretrain_scope``, `pretraining`), and MOABB-style ``rows``;
- ``OUT/results.md``: the same as Markdown tables; ``OUT/results.csv``: the rows (`moabb_rows`);
- a W&B run (``job_type=evaluate``; offline unless logged in) with the per-fold table and the means.

Every fold is a normal run folder under ``OUT/runs`` (compare them with ``neurotrain compare``).
Re-running the same command skips finished folds and resumes an interrupted one; ``OUT`` refuses
an evaluation with other settings than the one it holds, except more (or fewer) ``--seeds``,
``--networks`` and ``--compare_aligned``: those add runs beside the finished ones, which are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jsonargparse import Namespace

from neurotrain.datamodules.io.files import atomic_write_json, atomic_write_text, sha256_file
from neurotrain.models.metric_names import CLASSIFICATION_METRICS as METRICS
from neurotrain.train.evaluation import encoding_protocol, rsa_protocol
from neurotrain.train.evaluation.baselines import BASELINES, TITLES
from neurotrain.train.evaluation.brain_image_inputs import add_brain_image_arguments
from neurotrain.train.evaluation.controls import (
    CONTROLS,
    control_verdict,
    permutation_seeds,
    prestimulus_window,
    shuffled_selection,
)
from neurotrain.train.evaluation.folds import PROTOCOLS, Fold, FoldError, inner_fold, plan_folds
from neurotrain.train.evaluation.inputs import FoldInputError, fold_channels, fold_data
from neurotrain.train.evaluation.intervals import control_lines, interval_lines, intervals
from neurotrain.train.evaluation.moabb_rows import rows as moabb_rows
from neurotrain.train.evaluation.moabb_rows import subject_sessions, to_csv
from neurotrain.train.evaluation.pretraining import fold_scope, pretraining_scope, scope_line
from neurotrain.train.evaluation.retrieval import PROTOCOL as RETRIEVAL
from neurotrain.train.evaluation.retrieval import add_retrieval_arguments
from neurotrain.train.evaluation.retrieval import run_from_args as run_retrieval
from neurotrain.train.evaluation.scores import last_scores, print_scores
from neurotrain.train.evaluation.statistics import (
    FoldPredictions,
    balanced_accuracy,
    chance_level,
    score_interval,
)
from neurotrain.train.evaluation.tuning import (
    TuneError,
    choose,
    combinations,
    has_key,
    inner_scores,
    load_grid,
)
from neurotrain.train.run.configs import resolve_config
from neurotrain.train.run.fit_once import fit_once, say
from neurotrain.train.tracking.run_folder import read_summary

MODEL_METHOD = "encoder"
RANDOM_METHOD = "encoder, random init"
ALIGNED_METHOD = "encoder, aligned"  # the same fine-tune on per-subject re-centred input
# Settings a folder's evaluation may change on a re-run: each adds (or leaves out) runs keyed by
# seed and method, so the runs already finished stay valid and are kept.
EXTENSIBLE = ("seeds", "networks", "compare_aligned")
CONTROL_CHOICES = ("best", "none")
BASELINE_PERMUTATIONS = 5  # shuffled-label fits per fold run of a classical pipeline (seconds each)
MODEL_PERMUTATIONS = 1  # ... of a trained network (minutes each; more training seeds give more)


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
    tune: bool = False,
    tune_grid: str | None = None,
    controls: str = "best",
    compare_random: bool = False,
    only_folds: list[str] | None = None,
    networks: list[str] | None = None,
    compare_aligned: bool = False,
) -> dict[str, Any]:
    """Run every fold of every seed (skipping finished ones) and write the results; return them.

    The folds are dealt once, by ``split_seed``; each of ``seeds`` re-runs the same folds with
    another training seed, so the seeds of a fold are scored on identical epochs. ``tune`` chooses
    the model's grid (`tuning`) and the baselines' regularisation on each fold's inner split;
    ``controls`` (``best`` | ``none``) runs the shuffled-label and pre-stimulus controls of the
    best method; ``compare_random`` also fine-tunes from a random initialisation (with
    ``init_from``), so what pretraining buys is a paired difference on the same folds.
    ``only_folds`` runs only the folds of these names (the quickstart's one held-out subject).
    ``networks`` adds braindecode's networks (EEGNet, ShallowFBCSPNet, Deep4Net), trained from
    scratch by the same loop with the config's trainer settings on the same fold data.
    ``compare_aligned`` also runs the config on per-subject re-centred input (``data.recenter:
    euclidean``, Euclidean alignment: the adaptation the aligned baselines get, on the same epochs).
    """
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

    seeds = [0] if seeds is None else list(seeds)
    baselines = list(BASELINES if baselines is None else baselines)
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise EvaluateError(f"unknown baselines {sorted(unknown)}; known: {', '.join(BASELINES)}")
    if controls not in CONTROL_CHOICES:
        raise EvaluateError(f"--controls is one of {', '.join(CONTROL_CHOICES)}, got {controls!r}")
    if compare_random and not init_from:
        raise EvaluateError("--compare_random compares against --init_from: give the pretrained checkpoint")
    out = Path(out)
    cfg = _check_config(config, overrides or [])
    encoder_classifier = _is_encoder_classifier(cfg)
    if (init_from or linear_probe) and not encoder_classifier:
        raise EvaluateError(
            f"{cfg['model.class_path']} trains from scratch: --init_from and --linear_probe do not apply"
        )
    if linear_probe:
        cfg["model.init_args.linear_probe"] = True
    grid = _grid(tune, tune_grid, cfg)
    data = cfg["data"].as_dict()
    # the model's row in the tables: "encoder", or the braindecode network's name (EEGNet, ...)
    method = MODEL_METHOD if encoder_classifier else str(cfg["model.init_args.network"])
    variants = {method: Variant(cfg, init_from, "", grid)}  # the trained methods of every fold
    if compare_random:
        variants[RANDOM_METHOD] = Variant(cfg, None, "-random", grid)
    if compare_aligned:
        if data.get("recenter", "none") != "none":
            raise EvaluateError("--compare_aligned adds re-centring; the config already has data.recenter")
        aligned = ALIGNED_METHOD if encoder_classifier else f"{method}, aligned"
        variants[aligned] = Variant(cfg, init_from, "-aligned", grid, {"recenter": "euclidean"})
    for network in networks or []:
        if network in variants:
            raise EvaluateError(f"{network} is already the config's model; leave it out of --networks")
        ncfg = _network_config(cfg, network)
        ngrid = _grid(tune, None, ncfg)
        variants[network] = Variant(ncfg, None, f"-{network.lower()}", ngrid)
    plan = {
        "config": str(config),
        "config_sha256": sha256_file(resolve_config(str(config))),  # a shipped name: its file
        "protocol": protocol,
        "folds": folds,
        "seeds": seeds,
        "overrides": list(overrides or []),
        "init_from": init_from,
        "linear_probe": linear_probe,
        "baselines": baselines,
        "split_seed": split_seed,
        "tune": tune,
        "tune_grid": grid,
        "run_controls": controls,
        "compare_random": compare_random,
        "only_folds": only_folds,
        "networks": list(networks or []),
        "compare_aligned": compare_aligned,
    }
    _claim(out, plan)
    dm = ShardDataModule(**{**data, "selection": None})
    events = dm.labelled_events("all")
    rejected = dm.rejected_epochs("all")
    say(
        f"evaluate: {protocol}, {len(events)} labelled epochs of {len({e['subject'] for e in events})} subjects"
        + "".join(f"; {n} left out ({why})" for why, n in rejected.items() if n)
    )
    planned = plan_folds(events, protocol, folds, split_seed)
    scope = pretraining_scope(init_from, dm.manifests)  # what the checkpoint's pretraining read
    if only_folds is not None:
        missing = sorted(set(only_folds) - {f.name for f in planned})
        if missing:
            known = ", ".join(f.name for f in planned)
            raise EvaluateError(f"no fold named {', '.join(missing)} in {protocol}; its folds: {known}")
        planned = [f for f in planned if f.name in set(only_folds)]
    records: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []  # per fold run: method -> per-epoch predictions
    done: list[FoldRun] = []
    for seed in seeds:
        for i, fold in enumerate(planned):
            say(f"[seed {seed}, fold {i + 1}/{len(planned)}] {fold.progress()}")
            run = _run_fold(
                out, data, dm, events, protocol, fold, i, seed, split_seed, variants, tune, baselines
            )
            if scope is not None:
                run.record["pretrain_scope"] = fold_scope(scope, fold.test_subjects)
            done.append(run)
            predictions.append({"fold": i, "seed": seed, "name": fold.name, "methods": run.predictions})
            records.append(run.record)
    summary = summarize(records)
    iv = intervals(predictions, method)
    results = {
        **plan,
        "command": "neurotrain evaluate " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["evaluate"] else []),
        "datasets": [
            {"path": d, "manifest_sha256": m["_sha256"]}
            for d, m in zip(dm.datasets, dm.manifests, strict=True)
        ],
        "init_from_sha256": sha256_file(init_from) if init_from and Path(init_from).is_file() else None,
        "pretraining": scope,
        "scoring": "final epoch on each fold's held-out epochs; no model selection on them"
        + ("; settings chosen on each fold's inner split" if tune else ""),
        "n_epochs": len(events),
        "rejected_epochs": rejected,
        "folds_detail": records,
        "summary": summary,
        "intervals": iv,
    }
    if controls != "none":
        best = max(summary, key=lambda m: summary[m]["balanced_accuracy"]["mean"])
        results["controls"] = _controls(out, cfg, events, done, best)
    sessions = subject_sessions(dm.manifests)
    results["rows"] = moabb_rows(results, "+".join(str(m.get("dataset", "")) for m in dm.manifests), sessions)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))
    atomic_write_text(out / "results.csv", to_csv(results["rows"]))
    _print_table(results)
    _log_wandb(out, results, wandb_project)
    say(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'results.csv'}")
    return results


@dataclass(frozen=True)
class Variant:
    """One trained method of every fold: its config, checkpoint to start from, run-name suffix
    and tuning grid (None: not tuned)."""

    config: Namespace
    init_from: str | None
    suffix: str
    grid: dict[str, list[Any]] | None
    data: dict[str, Any] = field(default_factory=dict)  # data settings on top of the fold's


def _network_config(cfg: Namespace, network: str) -> Namespace:
    """braindecode's ``network`` (shipped ``eeg_eegnet`` config) with ``cfg``'s data, trainer and
    class count: a deep baseline trained on the same fold data by the same loop."""
    from neurotrain.models.modules.braindecode_classifier import NETWORKS
    from neurotrain.train.run.configs import shipped_config
    from neurotrain.train.run.lightning_cli import load_config

    if network not in NETWORKS:
        raise EvaluateError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}")
    ncfg = load_config(["--config", str(shipped_config("eeg_eegnet")), "--media_every_n_val=0"])
    ncfg["model.init_args.network"] = network
    ncfg["model.init_args.num_classes"] = cfg["model.init_args.num_classes"]
    ncfg["data"] = cfg["data"].clone()
    ncfg["trainer"] = cfg["trainer"].clone()
    return ncfg


@dataclass
class FoldRun:
    """One fold run (fold x seed) as the controls need it again."""

    seed: int
    index: int  # the outer fold's position in the plan
    fold: Fold
    tag: str
    data: dict[str, Any]  # the fold's data section (selection, channels) every method read
    configs: dict[str, Namespace]  # model method -> its fit config (tuned settings applied)
    method_data: dict[str, dict[str, Any]]  # model method -> the data section it read
    params: dict[str, dict[str, Any]]  # baseline name -> the settings it used
    record: dict[str, Any]
    predictions: dict[str, dict[str, list]]


def _run_fold(
    out: Path,
    data: dict[str, Any],
    dm: Any,
    events: list[dict[str, Any]],
    protocol: str,
    fold: Fold,
    index: int,
    seed: int,
    split_seed: int,
    variants: dict[str, Variant],
    tune: bool,
    baselines: list[str],
) -> FoldRun:
    """Fit (tuning first, when asked) every model variant and baseline of one fold; its record."""
    name = fold.name.replace("/", "-")
    tag = f"seed{seed}-{name}"
    folder = out / "folds" / f"seed{seed}"
    selection = folder / f"{name}.json"
    atomic_write_json(selection, fold.selection)
    channels = fold_channels(dm.manifests, fold.train_subjects + fold.test_subjects, data)
    fdata = fold_data(data, selection, channels)
    inner_data = None
    inner_record = None
    if tune:
        inner = inner_fold(fold, events, split_seed)
        inner_selection = folder / f"{name}-inner.json"
        atomic_write_json(inner_selection, inner.selection)
        inner_data = fold_data(data, inner_selection, channels)
        inner_record = inner.record()
    configs: dict[str, Namespace] = {}
    scores: dict[str, dict[str, float]] = {}
    times: dict[str, float | None] = {}
    tuning: dict[str, Any] = {}
    model_predictions: dict[str, dict[str, list]] = {}
    method_data: dict[str, dict[str, Any]] = {}
    for method, v in variants.items():
        suffix = v.suffix
        method_data[method] = {**fdata, **v.data}
        base = _fold_config(v.config, method_data[method], protocol, seed, v.init_from)
        if v.grid is not None:
            tried = []
            for k, combo in enumerate(combinations(v.grid)):
                vinner = {**inner_data, **v.data}
                inner_cfg = _fold_config(v.config, vinner, protocol, seed, v.init_from)
                for key, value in combo.items():
                    inner_cfg[key] = value
                inner_tag = f"{tag}{suffix}-inner{k}"
                fit_once(out / "runs", inner_tag, inner_cfg)
                tried.append((combo, inner_scores(out / "runs" / inner_tag)))
            tuned = choose(tried)
            for key, value in tuned.chosen.items():
                base[key] = value
            tuning[method] = tuned.as_dict()
        configs[method] = base
        fit_once(out / "runs", tag + suffix, base)
        scores[method] = last_scores(out / "runs" / (tag + suffix))
        times[method] = (read_summary(out / "runs" / (tag + suffix)) or {}).get("duration_s")
        model_predictions[method] = _model_predictions(out / "runs" / (tag + suffix))
    predicted = _baselines(out, tag, fdata, baselines, seed, inner_data=inner_data)
    params = {}
    for bname in baselines:
        entry = predicted[TITLES[bname]]
        params[bname] = entry.get("params", {})
        if "tuning" in entry:
            tuning[TITLES[bname]] = {"chosen": entry["params"], "table": entry["tuning"]}
    scores.update({title: p["scores"] for title, p in predicted.items()})
    times.update({title: p.get("time") for title, p in predicted.items()})
    methods = _fold_predictions(out, tag, model_predictions, predicted)
    record = {
        "seed": seed,
        **fold.record(),
        "run": str(out / "runs" / tag),
        "selection_file": str(selection),
        "selection_sha256": sha256_file(selection),
        "channels": channels,
        "n_channels": len(channels),
        "scores": scores,
        "times": times,
    }
    if tune:
        record["inner"] = inner_record
        record["tuning"] = tuning
    return FoldRun(seed, index, fold, tag, fdata, configs, method_data, params, record, methods)


def _fold_config(
    cfg: Namespace, fdata: dict[str, Any], protocol: str, seed: int, init_from: str | None
) -> Namespace:
    """The fit config of one fold: its data section, seeds, tags; no checkpoint kept but the last."""
    fold_cfg = cfg.clone()
    for key, value in {
        **{f"data.{k}": v for k, v in fdata.items()},
        "data.seed": seed,
        "seed_everything": seed,
        "group": f"evaluate-{protocol}",
        "tags": ["evaluate", protocol, f"seed{seed}"],
        "save_top_k": 0,
    }.items():
        fold_cfg[key] = value
    if has_key(fold_cfg, "model.init_args.init_from"):
        fold_cfg["model.init_args.init_from"] = init_from
    return fold_cfg


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
        *scope_line(results),
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
    lines += control_lines(results.get("controls"))
    rejected = results.get("rejected_epochs") or {}
    if any(rejected.values()):
        lines += [
            "",
            "Epochs left out before the folds: "
            + ", ".join(f"{n} ({why})" for why, n in rejected.items())
            + ".",
        ]
    tuned = [rec for rec in results["folds_detail"] if rec.get("tuning")]
    if tuned:
        lines += ["", "Settings chosen on each fold's inner split (never on its scored epochs):", ""]
        lines += ["| seed | fold | inner split | method | chosen |", "| ---: | --- | --- | --- | --- |"]
        for rec in tuned:
            inner = rec.get("inner") or {}
            split = f"{inner.get('inner_by', '')}: {inner.get('n_train', '?')} / {inner.get('n_test', '?')}"
            for title, t in rec["tuning"].items():
                chosen = ", ".join(
                    f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
                    for k, v in t["chosen"].items()
                )
                lines.append(f"| {rec['seed']} | {rec['name']} | {split} | {title} | {chosen} |")
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


def _grid(tune: bool, path: str | None, cfg: Namespace) -> dict[str, list[Any]] | None:
    """The model's tuning grid (None without ``--tune``); errors say which key is wrong."""
    if not tune:
        if path:
            raise EvaluateError("--tune_grid needs --tune")
        return None
    try:
        return load_grid(path, cfg)
    except TuneError as exc:
        raise EvaluateError(str(exc)) from exc


def _claim(out: Path, plan: dict[str, Any]) -> None:
    """Record the settings in ``OUT/evaluate.json``; refuse a folder holding another evaluation."""
    path = out / "evaluate.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(plan) if before.get(k) != _default(k, plan.get(k)))
        fixed = [k for k in changed if k not in EXTENSIBLE]
        if fixed:
            raise EvaluateError(
                f"{out} holds an evaluation with other settings ({', '.join(fixed)}); "
                "choose another --out or delete it"
            )
        if changed:  # more seeds or methods: the finished runs of the others are kept
            say(f"evaluate: continuing the evaluation in {out} with new {', '.join(changed)}")
            atomic_write_json(path, plan)
            return
        say(f"evaluate: continuing the evaluation in {out}")
        return
    atomic_write_json(path, plan)


def _default(key: str, value: Any) -> Any:
    """``value``, or what a folder written before ``key`` existed holds for it (nothing)."""
    return None if key == "compare_aligned" and value is False else value


def _baselines(
    out: Path,
    tag: str,
    fdata: dict[str, Any],
    names: list[str],
    seed: int,
    inner_data: dict[str, Any] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The baselines' scores, settings, fit time and per-epoch predictions on the fold's epochs, by
    title (cached in ``OUT/baselines/<tag>.json``).

    They read ``fdata``, the data section the fold's model read (same selection, channels, window,
    rejection, normalisation). With ``inner_data`` (the inner split, same channels) each baseline
    tunes its settings there first; ``params`` gives settings chosen earlier instead.
    """
    if not names:
        return {}
    cache = out / "baselines" / f"{tag}.json"
    if cache.exists():  # in the order of ``names``, as a fresh run gives them
        cached = json.loads(cache.read_text())
        if all("sample_ids" in cached.get(TITLES[n], {}) for n in names):
            return {TITLES[n]: cached[TITLES[n]] for n in names}
    from neurotrain.train.evaluation.baselines import collect_labelled_epochs, predict_on_loaders

    # Each part's epochs are read once; every baseline fits on the same arrays (its time: fit and
    # predict, tuning included, not the read).
    dm = _datamodule(fdata)
    train, test = (collect_labelled_epochs(dm.eval_dataloader(part)) for part in ("train", "val"))
    inner = None
    if inner_data is not None:
        idm = _datamodule(inner_data)
        inner = tuple(collect_labelled_epochs(idm.eval_dataloader(part)) for part in ("train", "val"))
    predicted: dict[str, dict[str, Any]] = {}
    for n in names:
        t0 = time.monotonic()
        entry = predict_on_loaders(
            [n],
            train,
            test,
            dm.sfreq,
            seed=seed,
            **({"inner": inner} if inner is not None else {}),
            **({"params": {n: params[n]}} if params and n in params else {}),
        )[TITLES[n]]
        entry["time"] = round(time.monotonic() - t0, 3)
        entry["channels"] = list(fdata["channels"])
        predicted[TITLES[n]] = entry
    atomic_write_json(cache, predicted)
    return predicted


def _datamodule(fdata: dict[str, Any]) -> Any:
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

    dm = ShardDataModule(**{**fdata, "batch_size": 64})
    dm.setup("fit")
    return dm


def _model_predictions(run: Path) -> dict[str, list] | None:
    """A model run's last-validation predictions (`read_predictions`), or None (an older run)."""
    from neurotrain.train.run.predictions import read_predictions

    model = read_predictions(run)
    return None if model is None else {k: model[k] for k in ("sample_ids", "y_true", "y_pred")}


def _fold_predictions(
    out: Path, tag: str, models: dict[str, dict[str, list] | None], baselines: dict[str, dict[str, Any]]
) -> dict[str, dict[str, list]]:
    """Every method's held-out predictions of one fold run, sorted by sample id (``OUT/predictions``).

    The models' come from their runs' last validation; a fold whose methods were scored on
    different epochs is refused, naming the fold.
    """
    methods: dict[str, dict[str, list]] = {m: p for m, p in models.items() if p is not None}
    for title, p in baselines.items():
        methods[title] = _sorted_predictions(p)
    ids = {title: m["sample_ids"] for title, m in methods.items()}
    if len({tuple(v) for v in ids.values()}) > 1:
        counts = ", ".join(f"{t}: {len(v)}" for t, v in ids.items())
        raise EvaluateError(f"fold run {tag}: the methods were scored on different epochs ({counts})")
    atomic_write_json(out / "predictions" / f"{tag}.json", methods)
    return methods


def _sorted_predictions(p: dict[str, Any]) -> dict[str, list]:
    rows = sorted(zip(p["sample_ids"], p["y_true"], p["y_pred"], strict=True))
    return {
        "sample_ids": [r[0] for r in rows],
        "y_true": [r[1] for r in rows],
        "y_pred": [r[2] for r in rows],
    }


def _controls(
    out: Path,
    cfg: Namespace,
    events: list[dict[str, Any]],
    done: list[FoldRun],
    best: str,
) -> dict[str, Any]:
    """The shuffled-label and pre-stimulus controls of ``best`` on every fold run (`controls`).

    Each control reuses the settings the fold chose for ``best`` (not re-tuned); its scores get a
    bootstrap interval and a verdict against the chance level of its own held-out labels.
    """
    by_title = {TITLES[n]: n for n in BASELINES}
    say(f"controls: shuffled labels and pre-stimulus window for {best}")
    tmin, tmax = prestimulus_window(float(cfg["data.tmin"]), float(cfg["data.tmax"]))
    result: dict[str, Any] = {"method": best, "window": [tmin, tmax], "controls": {}}
    for control in CONTROLS:
        preds: list[FoldPredictions] = []
        per_fold = []
        for run in done:
            short = "shuffled" if control == "shuffled labels" else "prestim"
            ctag = f"{run.tag}-control-{short}"
            model = best in run.configs
            data = dict(run.method_data[best] if model else run.data)
            if control == "shuffled labels":
                n = MODEL_PERMUTATIONS if model else BASELINE_PERMUTATIONS
                variants = []
                for k, pseed in enumerate(permutation_seeds(run.seed, n)):
                    stem = Path(run.data["selection"]).stem
                    path = Path(run.data["selection"]).with_name(f"{stem}-shuffled{k}.json")
                    atomic_write_json(path, shuffled_selection(run.fold.selection, events, pseed))
                    variants.append((f"{ctag}{k}", pseed, {**data, "selection": str(path)}))
            else:
                variants = [(ctag, run.seed, {**data, "tmin": tmin, "tmax": tmax})]
            for vtag, vseed, vdata in variants:
                if model:
                    ccfg = run.configs[best].clone()
                    for key, value in vdata.items():
                        ccfg[f"data.{key}"] = value
                    fit_once(out / "runs", vtag, ccfg)
                    p = _model_predictions(out / "runs" / vtag)
                    if p is None:
                        raise EvaluateError(f"control run {vtag} left no predictions")
                else:
                    name = by_title[best]
                    p = _sorted_predictions(
                        _baselines(out, vtag, vdata, [name], run.seed, params={name: run.params[name]})[best]
                    )
                preds.append(
                    FoldPredictions(run.index, vseed, tuple(p["sample_ids"]), p["y_true"], p["y_pred"])
                )
                per_fold.append(
                    {
                        "seed": run.seed,
                        "fold": run.fold.name,
                        "run": vtag,
                        "n_test": len(p["sample_ids"]),
                        "balanced_accuracy": balanced_accuracy(
                            np.asarray(p["y_true"]), np.asarray(p["y_pred"])
                        ),
                    }
                )
        first = min(fp.seed for fp in preds)
        labels = [y for fp in preds if fp.seed == first for y in fp.y_true]
        chance = chance_level(labels)
        # the shuffled labels' seeds are label permutations: their spread belongs in the interval
        score = score_interval(preds, resample_seeds=control == "shuffled labels")
        result["controls"][control] = {
            "score": score.as_dict(),
            "chance": chance,
            "n_epochs": len(labels),
            "verdict": control_verdict(score, chance),
            "per_fold": per_fold,
        }
    return result


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
        for name, c in (results.get("controls") or {}).get("controls", {}).items():
            run.summary[f"control/{name}/balanced_accuracy"] = c["score"]["estimate"]
            run.summary[f"control/{name}/verdict"] = c["verdict"]
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
    p.add_argument(
        "--protocol",
        required=True,
        choices=(*PROTOCOLS, RETRIEVAL, encoding_protocol.PROTOCOL, rsa_protocol.PROTOCOL),
    )
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
    p.add_argument(
        "--tune",
        action="store_true",
        help="choose settings on each fold's inner split: the model's grid and epochs, the baselines' regularisation",
    )
    p.add_argument(
        "--tune_grid",
        "--tune-grid",
        default=None,
        help="YAML: config key -> values (default: lr x 1/3, 1, 3)",
    )
    p.add_argument(
        "--controls",
        choices=CONTROL_CHOICES,
        default="best",
        help="shuffled-label and pre-stimulus controls of the best method (default), or none",
    )
    p.add_argument(
        "--compare_random",
        "--compare-random",
        action="store_true",
        help="also fine-tune from a random initialisation: pretrained - random with its interval",
    )
    p.add_argument(
        "--networks",
        nargs="*",
        default=[],
        help="braindecode networks trained on the same folds (EEGNet ShallowFBCSPNet Deep4Net)",
    )
    p.add_argument(
        "--compare_aligned",
        "--compare-aligned",
        action="store_true",
        help="also run the config on per-subject re-centred input (Euclidean alignment, data.recenter)",
    )
    p.add_argument("--out", default="evaluate", help="output folder (default ./evaluate)")
    add_retrieval_arguments(p)
    add_brain_image_arguments(p)
    p.add_argument("--wandb_project", default="neurotrain")
    p.set_defaults(handler=_run, accepts_extra=True)


def _run(args: argparse.Namespace) -> int:
    if args.protocol == RETRIEVAL:  # brain-image retrieval on held-out images (retrieval.py)
        return run_retrieval(args)
    if args.protocol == encoding_protocol.PROTOCOL:  # image features -> responses (encoding_protocol.py)
        return encoding_protocol.run_from_args(args)
    if args.protocol == rsa_protocol.PROTOCOL:  # layer x time RDM comparison (rsa_protocol.py)
        return rsa_protocol.run_from_args(args)
    try:
        evaluate(
            args.config,
            args.protocol,
            seeds=args.seeds,
            folds=args.folds,
            out=args.out,
            init_from=args.init_from,
            linear_probe=args.linear_probe,
            baselines=args.baselines,
            overrides=args.extra,
            wandb_project=args.wandb_project,
            split_seed=args.split_seed,
            tune=args.tune,
            tune_grid=args.tune_grid,
            controls=args.controls,
            compare_random=args.compare_random,
            networks=args.networks,
            compare_aligned=args.compare_aligned,
        )
    except (EvaluateError, FoldError, FoldInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["Fold", "evaluate", "intervals", "markdown", "summarize"]
