"""Progress where no terminal shows a bar (nohup, SLURM, CI): a plain line on stderr every N seconds.

Lightning's Rich and TQDM bars redraw one line in place; written to a file they show nothing
until the end (Rich) or a wall of carriage returns (TQDM). `LogProgress` is a Lightning progress
bar (a ``pytorch_lightning.callbacks.ProgressBar`` subclass: Lightning's documented way to make a
custom one, so ``trainer.progress_bar_callback`` is this callback and no default bar is added)
that prints instead, at most every ``every_s`` seconds of training::

    train step 120/300 (epoch 3, batch 18/34)  train/loss 0.8123  41.2 samples/s  elapsed 0:02:31  ETA 0:03:47

and one line at the end of each validation and test::

    val step 120: val/loss 0.7932  (batches 5, 0:00:04)

``step/total`` counts optimizer steps (``trainer.estimated_stepping_batches``: ``max_steps`` or
the epochs' batches); the loss is the progress-bar metric the module logs (``train/loss``);
samples/s is the ``ThroughputMonitor``'s latest ``…samples_per_sec`` when it has logged one; the ETA
is the mean time per step of this process so far (a resumed fit counts from its resume point)
times the steps left. `NeurotrainCLI` attaches it unless both stdout and stderr are terminals
(Lightning's Rich bar draws on stdout, its TQDM bar on stderr; either redirected to a file shows
nothing until the end); option ``--progress_every_s``, default 30, 0: Lightning's own bar. A
terminal keeps Lightning's bar.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar

LOSS_KEYS = ("train/loss", "loss", "train_loss")
SAMPLES_SUFFIX = "samples_per_sec"


class LogProgress(ProgressBar):
    """Lightning progress bar that writes a line every ``every_s`` seconds to ``stream`` (stderr).

    Only global rank zero prints. ``every_s`` is a minimum interval between training lines (checked
    after each training batch, so a line comes with the first batch after it has passed).
    """

    def __init__(self, every_s: float = 30.0, stream: TextIO | None = None) -> None:
        super().__init__()
        if every_s <= 0:
            raise ValueError(f"LogProgress: every_s must be > 0, got {every_s}")
        self.every_s = float(every_s)
        self._stream = stream
        self._enabled = True
        self._start: float | None = None
        self._start_step = 0
        self._last_line = 0.0
        self._eval_start: float | None = None

    # ProgressBar's interface --------------------------------------------------------------------

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    # hooks ----------------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last_line = time.monotonic()
        self._start_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if now - self._last_line < self.every_s:
            return
        self._last_line = now
        self._write(trainer, self.train_line(trainer, pl_module, batch_idx, now))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start = time.monotonic()

    on_test_start = on_validation_start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, self.eval_line(trainer, "val", self.total_val_batches))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = sum(trainer.num_test_batches) if trainer.num_test_batches else 0
        self._write(trainer, self.eval_line(trainer, "test", total))

    # lines ----------------------------------------------------------------------------------------

    def train_line(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch_idx: int, now: float
    ) -> str:
        """The training line: step/total, epoch and batch, loss, samples/s, elapsed and ETA."""
        step = trainer.global_step
        total = trainer.estimated_stepping_batches
        parts = [
            f"train step {step}/{_count(total)} "
            f"(epoch {trainer.current_epoch}, batch {batch_idx + 1}/{_count(self.total_train_batches)})"
        ]
        metrics = self.get_metrics(trainer, pl_module)
        loss = next((metrics[k] for k in LOSS_KEYS if k in metrics), None)
        if loss is not None:
            parts.append(f"train/loss {_number(loss)}")
        samples = _samples_per_sec(trainer)
        if samples is not None:
            parts.append(f"{samples:.1f} samples/s")
        elapsed = now - (self._start if self._start is not None else now)
        parts.append(f"elapsed {_duration(elapsed)}")
        done = step - self._start_step
        if done > 0 and math.isfinite(float(total)):
            parts.append(f"ETA {_duration(elapsed / done * max(0, total - step))}")
        else:
            parts.append("ETA ?")
        return "  ".join(parts)

    def eval_line(self, trainer: pl.Trainer, stage: str, batches: int | float) -> str:
        """One line of a finished validation or test: its metrics, batches and duration."""
        prefix = f"{stage}/"
        values = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and _is_scalar(v)}
        shown = ", ".join(f"{k} {_number(v)}" for k, v in sorted(values.items())) or "no metrics"
        took = time.monotonic() - self._eval_start if self._eval_start is not None else 0.0
        return f"{stage} step {trainer.global_step}: {shown}  (batches {_count(batches)}, {_duration(took)})"

    def _write(self, trainer: pl.Trainer, line: str) -> None:
        if self._enabled and trainer.is_global_zero:
            stream = self._stream or sys.stderr
            print(line, file=stream, flush=True)


def _samples_per_sec(trainer: pl.Trainer) -> float | None:
    """The ThroughputMonitor's latest samples/s (global under DDP, else this device's), if logged."""
    logged = trainer.logged_metrics
    keys = sorted((k for k in logged if k.endswith(SAMPLES_SUFFIX) and "validate" not in k), key=len)
    for key in keys:  # ``train/samples_per_sec`` (global) before ``train/device/samples_per_sec``
        value = logged[key]
        if _is_scalar(value):
            return float(value)
    return None


def _is_scalar(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def _number(value: Any) -> str:
    return f"{float(value):.4g}"


def _count(value: int | float) -> str:
    return str(int(value)) if math.isfinite(float(value)) else "?"


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(max(0.0, seconds))))
