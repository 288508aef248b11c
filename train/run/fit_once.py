"""Run-once fits for commands that chain many runs (quickstart, evaluate): skip, resume or start.

    cfg = load_config(["--config", shipped_config("eeg_finetune")])   # the LightningCLI schema
    cfg["trainer.max_epochs"] = 5
    last = fit_once(runs, "finetune", cfg)

A run folder whose ``summary.json`` says ``finished`` and that holds ``last.ckpt`` is kept as is;
one with a ``last.ckpt`` but no finish continues from it (``ckpt_path``); otherwise the fit
starts. ``last.ckpt`` is refreshed every ``checkpoint_every_n_steps`` optimizer steps, so an
interrupted chain loses at most that much work when re-run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import Namespace


def fit_once(runs: Path, name: str, config: Namespace, checkpoint_every_n_steps: int = 50) -> Path:
    """Run (or resume, or skip) the fit ``config`` as run ``name`` under ``runs``; its last.ckpt."""
    from neurotrain.train.run.lightning_cli import build_cli
    from neurotrain.train.tracking.run_folder import read_summary

    run = runs / name
    last = run / "checkpoints" / "last.ckpt"
    summary = read_summary(run) or {}
    if summary.get("status") == "finished" and last.exists():
        say(f"      {name}: finished earlier, kept")
        return last
    cfg = config.clone()
    cfg["trainer.default_root_dir"] = str(runs)
    cfg["run_name"] = name
    cfg["checkpoint_every_n_steps"] = checkpoint_every_n_steps
    if last.exists():
        say(f"      {name}: resuming from {last}")
        cfg["ckpt_path"] = str(last)
    build_cli(cfg)
    return last


def say(message: str) -> None:
    """A progress line on stderr (stdout stays for tables and results)."""
    print(message, file=sys.stderr, flush=True)
