"""One trial of a sweep: its ``neurotrain fit`` command, and the contract between the sweep process and it.

    cmd = trial_command(spec, values, extra=extra, root=root, run_name=name, group=study, sweep_id=study,
                        reporter=True)                  # both backends build the trial's command here
    channel = TrialChannel.create(folder / "trials", name, metric="val/loss")   # the sweep process
    subprocess.Popen(cmd, env={**os.environ, **channel.env()})

The contract is ``$NEUROTRAIN_SWEEP_TRIAL``, a JSON object the sweep process puts in the trial's
environment: ``metric`` (the value to report), ``values_file`` (the trial appends one line
``{"n": N, "value": V}`` per validation: the N-th validation that logged ``metric``), ``stop_file``
(the sweep process creates it to end the run early, e.g. when the pruner prunes the trial) and
``parent_pid`` (the trial process ends when the sweep process dies). `TrialReporter`, the Lightning
callback that ``reporter=True`` adds to the fit, is the trial's side of it; without the variable it does
nothing. The trial process never opens the Optuna study: the sweep process owns the trial, reports
its values and asks the pruner (`local`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from neurotrain.datamodules.io.processes import pid_alive, signal_on_parent_death
from neurotrain.train.sweeps.schema import ROOT_KEY, SweepSpec

TRIAL_ENV = "NEUROTRAIN_SWEEP_TRIAL"
ORPHANED_EXIT = 75  # a trial process whose sweep process is already gone ends at once with this code


def trial_command(
    spec: SweepSpec,
    values: Mapping[str, Any],
    *,
    extra: Sequence[str],
    root: str | Path,
    run_name: str,
    group: str,
    sweep_id: str,
    sweep_params: Mapping[str, Any] | None = None,
    reporter: bool = False,
    wandb_project: str | None = None,
) -> list[str]:
    """The ``neurotrain fit`` command line of one trial (``python -m neurotrain.train.cli fit …``).

    The sweep file's config and literal arguments, the ``--set`` overrides (``extra``), the trial's
    values as ``--key=value``, its run folder ``root/run_name``, and the sweep it belongs to
    (``sweep_params`` recorded with the run; default ``values``). ``reporter`` adds `TrialReporter`;
    ``wandb_project`` names the W&B project; the sweep's metric, when it has one, becomes ``--monitor``.
    A ``trainer.default_root_dir`` among the values (the W&B agent passes the file's fixed one) is
    left out: ``root`` is where the runs go (`command` checked that the two agree).
    """
    values = {k: v for k, v in values.items() if k != ROOT_KEY}
    if sweep_params is not None:
        sweep_params = {k: v for k, v in sweep_params.items() if k != ROOT_KEY}
    cmd = [
        sys.executable,
        "-m",
        "neurotrain.train.cli",
        *spec.base_args(),
        *extra,
        *spec.trial_args(dict(values)),
        f"--trainer.default_root_dir={root}",
        f"--run_name={run_name}",
        f"--group={group}",
        f"--sweep_id={sweep_id}",
        f"--sweep_params={json.dumps(dict(values if sweep_params is None else sweep_params))}",
    ]
    if wandb_project:
        cmd.append(f"--wandb_project={wandb_project}")
    if reporter:
        cmd.append(f"--trainer.callbacks+={TrialReporter.__module__}.{TrialReporter.__qualname__}")
    if spec.metric:
        cmd.append(f"--monitor={spec.metric}")
    return cmd


@dataclass(frozen=True)
class TrialChannel:
    """The files through which a trial process reports its validations and is asked to stop."""

    metric: str
    values_file: Path
    stop_file: Path
    parent_pid: int

    @classmethod
    def at(cls, folder: str | Path, run_name: str, metric: str) -> TrialChannel:
        """The channel of run ``run_name`` in ``folder``, owned by this process, its files as they are."""
        folder = Path(folder)
        return cls(metric, folder / f"{run_name}.values.jsonl", folder / f"{run_name}.stop", os.getpid())

    @classmethod
    def create(cls, folder: str | Path, run_name: str, metric: str) -> TrialChannel:
        """A fresh channel for run ``run_name`` in ``folder`` (old files of that name removed)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        channel = cls.at(folder, run_name, metric)
        channel.values_file.unlink(missing_ok=True)
        channel.stop_file.unlink(missing_ok=True)
        return channel

    def env(self) -> dict[str, str]:
        """``{TRIAL_ENV: json}``, to add to the trial process's environment."""
        payload = {
            "metric": self.metric,
            "values_file": str(self.values_file),
            "stop_file": str(self.stop_file),
            "parent_pid": self.parent_pid,
        }
        return {TRIAL_ENV: json.dumps(payload)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrialChannel | None:
        """The channel ``$NEUROTRAIN_SWEEP_TRIAL`` describes, or None outside a sweep."""
        raw = (os.environ if environ is None else environ).get(TRIAL_ENV)
        if not raw:
            return None
        cfg = json.loads(raw)
        return cls(cfg["metric"], Path(cfg["values_file"]), Path(cfg["stop_file"]), int(cfg["parent_pid"]))

    # the trial's side

    def append_value(self, n: int, value: float) -> None:
        """Record the ``n``-th validation's value (one whole line per write, flushed at once)."""
        with open(self.values_file, "a") as fh:
            fh.write(json.dumps({"n": n, "value": value}) + "\n")

    def stop_requested(self) -> bool:
        """Whether the sweep process asked this run to end."""
        return self.stop_file.exists()

    # the sweep process's side

    def read_values(self, after: int = 0) -> list[tuple[int, float]]:
        """``(n, value)`` of the validations after the ``after``-th (complete lines only)."""
        try:
            text = self.values_file.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):  # being written
                break
            row = json.loads(line)
            if int(row["n"]) > after:
                out.append((int(row["n"]), float(row["value"])))
        return out

    def request_stop(self) -> None:
        """Ask the trial process to end its run (it stops as a normal finished fit)."""
        self.stop_file.touch()


class TrialReporter(Callback):
    """Inside a trial's ``neurotrain fit``: records the metric at each validation; stops when asked.

    Configured by ``$NEUROTRAIN_SWEEP_TRIAL`` (`TrialChannel`); without it the callback does nothing.
    Global rank zero records the values; every rank checks for the stop request after each training
    batch and validation, agreeing through the strategy, so all ranks stop at the same step. The run
    then ends like one stopped by early stopping: ``trainer.should_stop``, a finished fit.
    """

    def __init__(self) -> None:
        self.channel = TrialChannel.from_env()
        self.n_val = 0
        self.stopped = False
        if self.channel:
            die_with_parent(self.channel.parent_pid)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.channel or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.channel.metric)
        if value is not None and trainer.is_global_zero:
            self.n_val += 1
            self.channel.append_value(self.n_val, float(value))
        self._stop_if_asked(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.channel:
            self._stop_if_asked(trainer)

    def _stop_if_asked(self, trainer: pl.Trainer) -> None:
        asked = self.channel is not None and self.channel.stop_requested()
        if trainer.world_size > 1:  # every rank takes part, so all stop at the same step
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        if asked and not self.stopped:
            self.stopped = True
            if trainer.is_global_zero:
                print("the sweep asked this trial to stop (pruned): ending the run", flush=True)
        if self.stopped:
            trainer.should_stop = True


def die_with_parent(parent: int) -> None:
    """End this process (SIGTERM) when its parent dies, even by SIGKILL (Linux); at once if ``parent`` is gone.

    The parent of the fit is the sweep process; a DDP worker the fit starts is the fit's child and so
    ends with it in turn.
    """
    if not pid_alive(parent):  # orphaned while starting up
        os._exit(ORPHANED_EXIT)
    if signal_on_parent_death() and not pid_alive(parent):  # died before the signal was armed
        os._exit(ORPHANED_EXIT)
