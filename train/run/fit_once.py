"""Run-once fits for commands that chain many runs (quickstart, evaluate): skip, resume or start.

    cfg = load_config(["--config", shipped_config("eeg_finetune")])   # the LightningCLI schema
    cfg["trainer.max_epochs"] = 5
    last = fit_once(runs, "finetune", cfg)

A run folder whose ``summary.json`` says ``finished`` and that holds ``last.ckpt`` is kept as is;
one with a checkpoint but no finish continues from it (``ckpt_path``: its ``last.ckpt``, else its
newest checkpoint); otherwise the fit starts (a folder whose run died before its first checkpoint
is started over, see `neurotrain.train.tracking.run_lock`). ``last.ckpt`` is refreshed every
``checkpoint_every_n_steps`` optimizer steps and at each epoch end, so an interrupted chain loses
at most that much work when re-run. A folder another process is running is refused
(`RunFolderBusy`, raised).
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import Namespace


def fit_once(runs: Path, name: str, config: Namespace, checkpoint_every_n_steps: int = 50) -> Path:
    """Run (or resume, or skip) the fit ``config`` as run ``name`` under ``runs``; its last.ckpt."""
    from neurotrain.train.run.lightning_cli import build_cli
    from neurotrain.train.tracking.run_folder import read_summary, resume_checkpoint

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
    resume = resume_checkpoint(run)
    if resume is not None:
        say(f"      {name}: resuming from {resume}")
        cfg["ckpt_path"] = str(resume)
    build_cli(cfg)
    return last


def seeded_run_config(config: Namespace, seed: int, protocol: str, *tags: str, **settings) -> Namespace:
    """An evaluation's fit of ``config`` for training seed ``seed``: data and global seeds set,
    grouped and tagged as ``evaluate-<protocol>``, no checkpoint kept but the last; ``settings``:
    more dotted keys to set (``**{"model.init_args.x": 1}``)."""
    cfg = config.clone()
    values = {
        "data.seed": seed,
        "seed_everything": seed,
        "group": f"evaluate-{protocol}",
        "tags": ["evaluate", protocol, *tags, f"seed{seed}"],
        "save_top_k": 0,
        **settings,
    }
    for key, value in values.items():
        cfg[key] = value
    return cfg


def say(message: str) -> None:
    """A progress line on stderr (stdout stays for tables and results)."""
    print(message, file=sys.stderr, flush=True)
