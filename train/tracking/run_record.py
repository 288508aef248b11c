"""The local record of one run, ``checkpoints/<run>/``, readable without W&B.

    run_dir = Path("checkpoints") / run_name
    trainer = pl.Trainer(
        logger=[csv_logger(run_dir), WandbLogger(...)],  # the CSV logger first: trainer.log_dir is its folder
        callbacks=[RunRecord(run_dir, group="eeg", job_type="pretrain", monitor="val/loss", mode="min")],
    )

The folder then holds ``config.yaml`` (LightningCLI's SaveConfigCallback writes it to ``trainer.log_dir``;
``RunRecord(config=...)`` writes it for runs made without LightningCLI), ``metrics.csv`` (Lightning's
CSVLogger), ``summary.json`` (this module, schema below) and ``media/`` (figures made at validation).

``summary.json`` is rewritten atomically at setup, at every validation end, on a throttled heartbeat
during training and at the end, so a run killed at any moment leaves a readable record up to that point:

    schema_version, name, group, tags, job_type, parent_run, stage, status ("running" | "finished" |
    "crashed" | "interrupted"), error {type, message, traceback} | null, resumes (when resumed), started, finished, heartbeat
    (ISO-8601 UTC), heartbeat_interval_s, duration_s, pid, host, monitor {name, mode, best, best_step,
    best_epoch, final, final_step, final_epoch}, metrics {name: last value}, global_step, epoch,
    git {commit, branch, dirty} | null, sweep {sweep_id, params} | null, wandb {mode, id, project,
    dir, url, sweep_id} | null, media [paths relative to the run folder], checkpoint {best, last} | null,
    versions {python, neurotrain, torch, pytorch-lightning, wandb}, extra.

A run left ``running`` whose pid is gone (same host) or whose heartbeat is stale was killed outright;
``neurotrain compare`` shows it as ``crashed/killed``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

from neurotrain.train.tracking.csv_logger import RunCSVLogger
from neurotrain.train.tracking.provenance import git_info, package_versions
from neurotrain.train.tracking.run_folder import (
    CONFIG_FILE,
    MEDIA_DIR,
    MEDIA_SUFFIXES,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    read_summary,
    write_summary,
)


class RunRecord(Callback):
    """Keeps ``<run_dir>/summary.json`` current: status, timing, best/final monitored metric, provenance.

    Only global rank zero writes. Args:
        run_dir: the run folder (created).
        name, group, tags, job_type: how the run is named and grouped (name defaults to the folder name).
        monitor, mode: the metric whose best and final values are recorded, and whether lower is better.
        sweep_id, sweep_params: the sweep this run belongs to and the values it swept; ``sweep_id``
            falls back to the W&B run's sweep or ``$WANDB_SWEEP_ID``.
        parent_run: the run a fine-tune starts from (name, path or W&B artifact).
        config: when given, written as ``config.yaml`` if the folder has none (runs outside LightningCLI).
        extra: any JSON-able provenance (dataset names, manifest hashes) stored as ``extra``.
        heartbeat_s: the least time between two heartbeat writes during training batches.
        resume: continue the record of an earlier process in ``run_dir`` (resuming from its checkpoint):
            its start time, duration and best value carry over, ``resumes`` counts the restarts, and
            when the fit restored a checkpoint, the ``metrics.csv`` rows of the steps it redoes (at
            or after the restored step) are dropped when training starts.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        name: str | None = None,
        group: str | None = None,
        tags: Iterable[str] = (),
        job_type: str | None = None,
        monitor: str = "val/loss",
        mode: str = "min",
        sweep_id: str | None = None,
        sweep_params: Mapping[str, Any] | None = None,
        parent_run: str | None = None,
        config: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        heartbeat_s: float = 30.0,
        resume: bool = False,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.mode = mode
        self.heartbeat_s = heartbeat_s
        self.resume = resume
        self._config = dict(config) if config is not None else None
        self._last_beat = 0.0
        self._t0 = 0.0
        self.summary: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": name or self.run_dir.name,
            "group": group,
            "tags": list(tags),
            "job_type": job_type,
            "parent_run": parent_run,
            "sweep": {"sweep_id": sweep_id, "params": dict(sweep_params or {})}
            if sweep_id or sweep_params
            else None,
            "extra": dict(extra or {}),
        }

    @property
    def media_dir(self) -> Path:
        """Where validation figures go (``<run_dir>/media``); created on first access."""
        path = self.run_dir / MEDIA_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def summary_path(self) -> Path:
        return self.run_dir / SUMMARY_FILE

    # Lightning hooks ---------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resume and "started" not in self.summary:
            self._carry_over(read_summary(self.run_dir) or {})
        if self._config is not None and not (self.run_dir / CONFIG_FILE).exists():
            (self.run_dir / CONFIG_FILE).write_text(yaml.safe_dump(self._config, sort_keys=False))
        self._t0 = time.monotonic() - (self.summary.get("duration_s") or 0.0)
        s = self.summary
        s.setdefault("started", _now())
        s.setdefault("monitor", _empty_monitor(self.monitor, self.mode))
        s.update(
            stage=stage,
            status="running",
            error=None,
            finished=None,
            heartbeat_interval_s=self.heartbeat_s,
            pid=os.getpid(),
            host=socket.gethostname(),
            git=git_info(),
            versions=package_versions(),
            wandb=_safe_wandb_info(trainer),
        )
        self._fill_sweep(s["wandb"])
        self._write(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The checkpoint is restored now: rows a killed process wrote after it are redone.
        if not trainer.is_global_zero or not self.resume or not trainer.ckpt_path:
            return
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.drop_rows_from(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._heartbeat(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._heartbeat(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        self.summary["metrics"] = metrics
        value = metrics.get(self.monitor)
        if value is not None:
            self._update_monitor(value, trainer)
        # Flush the CSV so metrics.csv and summary.json describe the same moment if the process dies now.
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
        self._write(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not trainer.is_global_zero:
            return
        interrupted = isinstance(exception, KeyboardInterrupt | SystemExit)
        self.summary["status"] = "interrupted" if interrupted else "crashed"
        self.summary["error"] = {
            "type": type(exception).__name__,
            "message": str(exception)[:2000],
            "traceback": "".join(traceback.format_exception(exception))[-4000:],
        }
        self._finish(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning calls callback teardown only when the stage ends without an exception.
        if not trainer.is_global_zero or self.summary.get("status") != "running":
            return
        self.summary["status"] = "finished"
        self._finish(trainer)

    # helpers -----------------------------------------------------------------------------------------

    def _update_monitor(self, value: float, trainer: pl.Trainer) -> None:
        mon = self.summary["monitor"]
        # Loggers stamp rows with the fit loop's optimizer-step count, which during the validation at an
        # epoch end is one less than global_step; recording the same number lets best_step find its row.
        step = _logged_step(trainer, self.monitor)
        epoch = trainer.current_epoch
        mon.update(final=value, final_step=step, final_epoch=epoch)
        best = mon.get("best")
        better = best is None or (value < best if self.mode == "min" else value > best)
        if better and math.isfinite(value):
            mon.update(best=value, best_step=step, best_epoch=epoch)

    def _carry_over(self, old: dict[str, Any]) -> None:
        if not old:
            return
        for key in ("started", "duration_s", "metrics"):
            if key in old:
                self.summary[key] = old[key]
        if (old.get("monitor") or {}).get("name") == self.monitor:
            self.summary["monitor"] = old["monitor"]
        self.summary["resumes"] = int(old.get("resumes") or 0) + 1

    def _fill_sweep(self, wandb: dict[str, Any] | None) -> None:
        sweep_id = (wandb or {}).get("sweep_id") or os.environ.get("WANDB_SWEEP_ID")
        if sweep_id and not (self.summary["sweep"] or {}).get("sweep_id"):
            self.summary["sweep"] = {
                "sweep_id": sweep_id,
                "params": (self.summary["sweep"] or {}).get("params", {}),
            }

    def _heartbeat(self, trainer: pl.Trainer) -> None:
        now = time.monotonic()
        if trainer.is_global_zero and now - self._last_beat >= self.heartbeat_s:
            self._write(trainer)

    def _finish(self, trainer: pl.Trainer) -> None:
        self.summary["finished"] = _now()
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        self._last_beat = time.monotonic()
        s = self.summary
        s.update(
            heartbeat=_now(),
            duration_s=round(time.monotonic() - self._t0, 3),
            global_step=trainer.global_step,
            epoch=trainer.current_epoch,
            media=_media_files(self.run_dir),
            checkpoint=_checkpoint_paths(trainer),
        )
        try:
            write_summary(self.run_dir, s)
        except OSError as exc:  # a full disk must not end a long training; the next write retries
            rank_zero_warn(f"could not write {self.summary_path}: {exc}")


def find_run_record(trainer: pl.Trainer) -> RunRecord | None:
    """The trainer's RunRecord callback, so models can find ``media_dir`` without knowing the CLI."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, RunRecord)), None)


def _checkpoint_paths(trainer: pl.Trainer) -> dict[str, str | None] | None:
    """The best checkpoint of the trainer's first ModelCheckpoint, and the last one any of them saved."""
    ckpt = trainer.checkpoint_callback
    if ckpt is None:
        return None
    last = (getattr(cb, "last_model_path", None) for cb in [ckpt, *trainer.checkpoint_callbacks])
    return {
        "best": getattr(ckpt, "best_model_path", None) or None,
        "last": next((path for path in last if path), None),
    }


def _logged_step(trainer: pl.Trainer, metric: str) -> int:
    """The step of the row ``metric`` was last logged on (the CSV logger records it), else global_step."""
    for logger in trainer.loggers:
        if isinstance(logger, RunCSVLogger) and metric in logger.logged_steps:
            return logger.logged_steps[metric]
    return trainer.global_step


def _empty_monitor(name: str, mode: str) -> dict[str, Any]:
    keys = ("best", "best_step", "best_epoch", "final", "final_step", "final_epoch")
    return {"name": name, "mode": mode, **dict.fromkeys(keys)}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _scalar(value: Any) -> float | None:
    """A finite float from a tensor or number; None otherwise (JSON has no NaN)."""
    try:
        out = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return out if math.isfinite(out) else None


def _media_files(run_dir: Path) -> list[str]:
    media = run_dir / MEDIA_DIR
    if not media.is_dir():
        return []
    return sorted(
        p.relative_to(run_dir).as_posix() for p in media.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES
    )


def _safe_wandb_info(trainer: pl.Trainer) -> dict[str, Any] | None:
    try:
        return _wandb_info(trainer)
    except Exception as exc:  # the record is provenance; a W&B hiccup must not stop the run
        return {"mode": "unknown", "error": f"{type(exc).__name__}: {exc}"}


def _wandb_info(trainer: pl.Trainer) -> dict[str, Any] | None:
    """Mode, id and local folder of the attached W&B run (the folder ``wandb sync`` uploads)."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
    if logger is None:
        return None
    run = logger.experiment
    if getattr(run, "disabled", False):
        return {"mode": "disabled", "id": None, "project": None, "dir": None, "url": None, "sweep_id": None}
    offline = bool(getattr(run, "offline", False))
    settings = getattr(run, "settings", None)
    return {
        "mode": "offline" if offline else "online",
        "id": getattr(run, "id", None),
        "project": getattr(run, "project", None),
        "dir": str(getattr(settings, "sync_dir", "") or "") or None,
        "url": None if offline else getattr(run, "url", None),
        "sweep_id": getattr(run, "sweep_id", None),
    }
