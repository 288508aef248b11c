"""Callbacks that put a ``neurotrain fit`` subprocess at an exact moment, named on its command line.

    python -m neurotrain.train.cli fit ... --trainer.callbacks+=run_probes.KillAt \\
        --trainer.callbacks.hook=on_validation_start --trainer.callbacks.epoch=0

The subprocess needs this folder on ``PYTHONPATH`` (`probe_env`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

TESTS = Path(__file__).resolve().parent


def probe_env(**extra: str) -> dict[str, str]:
    """The environment of a fit subprocess that can import these probes (W&B offline)."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}


class KillAt(Callback):
    """SIGKILL this process at ``hook`` of training epoch ``epoch`` (sanity checks excluded)."""

    def __init__(self, hook: str = "on_validation_start", epoch: int = 0) -> None:
        self.hook = hook
        self.epoch = epoch

    def _maybe_kill(self, trainer: pl.Trainer, hook: str) -> None:
        if hook == self.hook and not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_kill(trainer, "on_validation_start")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_kill(trainer, "on_train_epoch_end")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_kill(trainer, "on_train_epoch_start")


class WaitFor(Callback):
    """Hold the fit at the start of training until ``path`` exists (at most ``timeout_s``). While it
    holds, ``<path>.waiting`` exists: the run's set-up (config, summary, lock) is complete."""

    def __init__(self, path: str, timeout_s: float = 300.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        deadline = time.monotonic() + self.timeout_s
        self.path.with_name(self.path.name + ".waiting").touch()
        while not self.path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
