"""``neurotrain sweep FILE``: run a W&B sweep file with the W&B controller, or locally with Optuna.

    neurotrain sweep sweeps/eeg_pretrain.yaml --count 20                 # W&B if logged in, else local
    neurotrain sweep sweeps/eeg_finetune.yaml --backend local --workers 2
    neurotrain sweep sweeps/eeg_pretrain.yaml --storage postgresql://user:pw@db/sweeps   # many machines
    neurotrain sweep sweeps/eeg_pretrain.yaml --set data.datasets=[shards/eeg] --set trainer.max_epochs=2
    neurotrain sweep sweeps/eeg_pretrain.yaml --validate                 # check the file, run nothing

The file is checked completely (keys, distributions, bounds, and every parameter against the run
config's LightningCLI parser) before any run starts. Re-running the same command continues the sweep.

Here: the parser of ``neurotrain sweep`` (registered by ``neurotrain.train.cli``) and the choice of
backend; the W&B backend is `wandb_backend`, the local Optuna engine `local`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain sweep``."""
    p = sub.add_parser(
        "sweep",
        help="run a sweep file (W&B sweep schema) with W&B, or locally with Optuna",
        description="Run a sweep file in the W&B sweep schema: with the W&B controller and agent when "
        "W&B is online, else with a local Optuna engine (SQLite, or a shared database for many "
        "machines). Each trial is a normal `neurotrain fit` run. Re-run the same command to continue.",
    )
    p.add_argument("file", metavar="FILE", help="sweep YAML (e.g. sweeps/eeg_pretrain.yaml)")
    p.add_argument("--count", type=int, help="at most this many trials in all (also capped by run_cap)")
    p.add_argument(
        "--backend",
        choices=["auto", "wandb", "local"],
        default="auto",
        help="auto (default): wandb when online and reachable, else local",
    )
    p.add_argument("--storage", help="Optuna RDB URL shared by agents (default: SQLite in the sweep folder)")
    p.add_argument("--workers", type=int, default=1, help="trials run at once on this machine (local)")
    p.add_argument(
        "--root", default="checkpoints", help="root of run folders and sweeps/ (default checkpoints)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fixed override for every trial, e.g. data.datasets=[shards/eeg] (repeatable)",
    )
    p.add_argument(
        "--sweep-id",
        help="name the study <file stem>-<ID> (default: a hash of the file, so the same file meets itself)",
    )
    p.add_argument("--project", default="neurotrain", help="W&B project (wandb backend)")
    p.add_argument("--entity", help="W&B entity (wandb backend)")
    p.add_argument(
        "--wandb-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the W&B server before giving up (default 30)",
    )
    p.add_argument("--validate", action="store_true", help="check the file against its config and exit")
    p.set_defaults(handler=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    """Check the file, then run it with the chosen backend; the exit code."""
    from neurotrain.train.sweeps.schema import SweepError, check_against_config, load_sweep

    extra = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --set {item!r}: expected KEY=VALUE, e.g. trainer.max_epochs=2", file=sys.stderr)
            return 2
        if key.lstrip("-") == "trainer.default_root_dir":
            print("error: set where runs go with --root, not trainer.default_root_dir", file=sys.stderr)
            return 2
        extra.append(f"--{key.lstrip('-')}={value}")
    if args.workers < 1 or (args.count is not None and args.count < 1):
        print("error: --workers and --count must be at least 1", file=sys.stderr)
        return 2
    try:
        spec = load_sweep(args.file)
        parsed = check_against_config(spec, extra)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"sweep file {args.file}: valid ({spec.method}, {len(spec.params)} parameters, config {spec.config})"
    )
    if args.validate:
        return 0
    backend = _choose_backend(args)
    if backend == "wandb":
        from neurotrain.train.sweeps.wandb_backend import WandbUnavailable, run_wandb

        try:
            return run_wandb(
                spec,
                count=args.count,
                extra=extra,
                root=args.root,
                project=args.project,
                entity=args.entity,
                timeout_s=args.wandb_timeout,
            )
        except WandbUnavailable as exc:
            if args.backend == "wandb":
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"W&B is unreachable ({exc}); running the sweep locally with Optuna instead", flush=True)
    from neurotrain.train.sweeps.local import run_local

    monitor, direction = _model_monitor(parsed)
    return run_local(
        spec,
        count=args.count,
        workers=args.workers,
        storage=args.storage,
        root=args.root,
        extra=extra,
        sweep_id=args.sweep_id,
        direction=None if spec.metric else direction,
        monitor=None if spec.metric else monitor,
    )


def _choose_backend(args: argparse.Namespace) -> str:
    """``auto``: wandb when W&B is online (logged in, WANDB_MODE not offline/disabled), else local."""
    if args.backend != "auto":
        return args.backend
    from neurotrain.train.tracking.wandb_server import resolve_mode

    mode = resolve_mode()
    if mode == "online":
        return "wandb"
    raw = os.environ.get("WANDB_MODE")
    why = f"WANDB_MODE={raw}" if raw else "not logged in"
    print(f"W&B is {mode} ({why}): running the sweep locally with Optuna", flush=True)
    return "local"


def _model_monitor(parsed: dict[str, Any]) -> tuple[str, str]:
    """Without ``metric`` in the file, the run's monitored metric and ``minimize``/``maximize``.

    As ``neurotrain fit`` decides it: ``--monitor`` when set (its direction from its name), else the
    model class's ``monitor`` and ``monitor_mode``.
    """
    import importlib

    from neurotrain.models.metric_names import metric_mode

    if parsed.get("monitor"):
        monitor = str(parsed["monitor"])
        return monitor, "maximize" if metric_mode(monitor) == "max" else "minimize"
    path = (parsed.get("model") or {}).get("class_path") or ""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        cls = None
    monitor = getattr(cls, "monitor", None) or "val/loss"
    mode = getattr(cls, "monitor_mode", None) or metric_mode(monitor)
    return monitor, "maximize" if mode == "max" else "minimize"
