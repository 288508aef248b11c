"""``neurotrain sweep FILE``: run a W&B sweep file with the W&B controller, or locally with Optuna.

    neurotrain sweep sweeps/eeg_pretrain.yaml --count 20                 # W&B if logged in, else local
    neurotrain sweep sweeps/eeg_finetune.yaml --backend local --workers 2
    neurotrain sweep sweeps/eeg_pretrain.yaml --storage postgresql://user:pw@db/sweeps   # many machines
    neurotrain sweep sweeps/eeg_pretrain.yaml --set data.datasets=[shards/eeg] --set trainer.max_epochs=2
    neurotrain sweep sweeps/eeg_pretrain.yaml --validate                 # check the file, run nothing

The file is checked completely (keys, distributions, bounds, every parameter against the run
config's LightningCLI parser, and its metric against what the run logs) before any run starts;
``--validate`` does only that: it parses, builds no model and seeds nothing.

Locally the sweep is the Optuna study ``<file stem>-<hash of the file's content and the --set
values>`` (`naming`): re-running the same command continues it, a changed file or other ``--set``
values start a new study (and the start says which earlier studies of the file exist), and
``--sweep-id ID`` names the study ``<file stem>-<ID>`` to continue that one. A failed trial is one
line (its number, the error's last line, its log file); Optuna's own report of it, with the
traceback, goes to ``sweeps/<file stem>/sweep.log``.

Where the runs go is one setting, ``trainer.default_root_dir``, however it is given: ``--root DIR``,
``--set trainer.default_root_dir=DIR``, or the sweep file's ``trainer.default_root_dir: {value: DIR}``
(or a literal ``--trainer.default_root_dir=DIR`` in its ``command``). Each trial runs in
``DIR/<run name>/`` and the sweep keeps its study and logs in ``DIR/sweeps/<file stem>/``; a relative
DIR is from the working folder, as for ``neurotrain fit``. Given in more than one of these places,
they must name the same folder (else nothing starts); given nowhere, the run config's own
``trainer.default_root_dir``, else ``checkpoints``.

Here: the parser of ``neurotrain sweep`` (registered by ``neurotrain.train.cli``) and the choice of
backend; the W&B backend is `wandb_backend`, the local Optuna engine `local`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
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
        "--root",
        help="root of run folders and sweeps/ (default: the file's trainer.default_root_dir, else "
        "checkpoints); the same setting as trainer.default_root_dir, so the two must agree",
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
        help="name the study <file stem>-<ID>, to continue that study (default: a hash of the file's "
        "content and the --set values: the same command continues, a changed one starts anew)",
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
    from neurotrain.train.sweeps.schema import ROOT_KEY, SweepError, check_against_config, load_sweep

    extra, roots = [], []  # roots: (where it was given, folder)
    if args.root is not None:
        roots.append(("--root", args.root))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --set {item!r}: expected KEY=VALUE, e.g. trainer.max_epochs=2", file=sys.stderr)
            return 2
        if key.lstrip("-") == ROOT_KEY:  # the sweep's root, not a trial override
            roots.append((f"--set {ROOT_KEY}", value))
            continue
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
    if spec.root is not None:
        roots.append((f"the sweep file's {ROOT_KEY}", spec.root))
    try:
        root = sweep_root(roots, parsed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"sweep file {args.file}: valid ({spec.method}, {len(spec.params)} parameters, config {spec.config})"
        f"; runs go to {root}"
    )
    if spec.metric_as_written:
        print(
            f"metric {spec.metric_as_written}: the run logs it as {spec.metric} (a W&B-style name: its "
            f"first '_' is read as '/')",
            flush=True,
        )
    if args.validate:
        from neurotrain.train.sweeps.naming import study_name

        print(f"local study: {study_name(spec, extra, args.sweep_id)} (nothing was built or run)")
        return 0
    backend = _choose_backend(args)
    if backend == "wandb":
        from neurotrain.train.sweeps.wandb_backend import WandbUnavailable, run_wandb

        try:
            return run_wandb(
                spec,
                count=args.count,
                extra=extra,
                root=root,
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
        root=root,
        extra=extra,
        sweep_id=args.sweep_id,
        direction=None if spec.metric else direction,
        monitor=None if spec.metric else monitor,
    )


def sweep_root(given: list[tuple[str, str]], parsed: dict[str, Any]) -> Path:
    """The one folder the runs go to, from every place it was ``given`` (``(where, folder)``).

    Places that name different folders are an error (ValueError naming both); none: the parsed run
    config's ``trainer.default_root_dir``, else ``checkpoints``. Relative folders are from here.
    """
    folders = [(where, Path(folder).expanduser().resolve()) for where, folder in given]
    for where, folder in folders[1:]:
        if folder != folders[0][1]:
            raise ValueError(
                f"{folders[0][0]} says the runs go to {folders[0][1]}, {where} says {folder}: "
                "they are the same setting (trainer.default_root_dir); give one folder"
            )
    if folders:
        return folders[0][1]
    default = (parsed.get("trainer") or {}).get("default_root_dir") or "checkpoints"
    return Path(default).expanduser().resolve()


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
    from neurotrain.models.metric_names import metric_mode
    from neurotrain.train.sweeps.run_metrics import model_class

    if parsed.get("monitor"):
        monitor = str(parsed["monitor"])
        return monitor, "maximize" if metric_mode(monitor) == "max" else "minimize"
    cls = model_class(parsed)
    monitor = getattr(cls, "monitor", None) or "val/loss"
    mode = getattr(cls, "monitor_mode", None) or metric_mode(monitor)
    return monitor, "maximize" if mode == "max" else "minimize"
