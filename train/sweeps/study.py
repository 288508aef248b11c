"""The Optuna study of a local sweep: storage, sampler and pruner from a sweep file, and dead trials re-queued.

    storage = make_storage("sqlite:///checkpoints/sweeps/eeg_pretrain/optuna.db")   # or postgresql://…
    study = optuna.create_study(storage=storage, sampler=make_sampler(spec),
                                pruner=make_pruner(spec.early_terminate), ...)
    revive_dead_local_trials(study.study_name, storage, root=root, channels=folder / "trials",
                             metric="val/loss")   # RUNNING trials of a dead sweep process here

grid -> GridSampler, random -> RandomSampler, bayes -> TPESampler; ``early_terminate: hyperband`` ->
HyperbandPruner over validations. The storage keeps heartbeats: a trial whose sweep process stopped
beating for the grace period is failed and re-queued with the same parameters (``RetryStale``), and
`revive_dead_local_trials` does so at once for a sweep process of this host that is gone; unless the
trial's run had finished before its sweep process died (its run folder's ``summary.json`` says
``finished``): then the study is told the run's result (``monitor.best``), as that process would have.
"""

from __future__ import annotations

import importlib.util
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from neurotrain.datamodules.io.processes import pid_alive
from neurotrain.train.sweeps.schema import SweepSpec
from neurotrain.train.sweeps.trial import TrialChannel
from neurotrain.train.tracking.run_folder import SUMMARY_FILE, read_summary

# Optuna 4.9 renamed the stale-trial retry callback and its RDBStorage argument; accept both.
try:
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStale

    _STALE_KW = "heartbeat_stale_trial_callback"
except ImportError:  # optuna < 4.9
    from optuna.storages import RetryFailedTrialCallback as RetryStale

    _STALE_KW = "failed_trial_callback"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = 10
MAX_RETRY = 3


def make_storage(url: str, heartbeat_s: int = HEARTBEAT_S) -> RDBStorage:
    """An RDB storage with heartbeats, stale trials retried, and SQLite waiting out concurrent writers."""
    return RDBStorage(
        _driver(url),
        engine_kwargs=_engine(url),
        heartbeat_interval=heartbeat_s,
        grace_period=3 * heartbeat_s,
        **{_STALE_KW: RetryStale(max_retry=MAX_RETRY)},
    )


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The sampler of the sweep's ``method``."""
    if spec.method == "grid":
        # One seed everywhere: a trial number maps to the same grid point in every agent process.
        return optuna.samplers.GridSampler(spec.grid_space(), seed=0)
    if spec.method == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler(n_startup_trials=5)


def make_pruner(early: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """W&B hyperband (min_iter, or max_iter and s; eta) as Optuna's HyperbandPruner over validations."""
    if not early:
        return optuna.pruners.NopPruner()
    eta = int(early.get("eta", 3))
    max_iter = early.get("max_iter")
    min_iter = early.get("min_iter") or max(1, int(max_iter / eta ** early.get("s", 0)))
    return optuna.pruners.HyperbandPruner(
        min_resource=int(min_iter), max_resource=int(max_iter) if max_iter else "auto", reduction_factor=eta
    )


@dataclass
class Revived:
    """What `revive_dead_local_trials` did: one line per trial told its finished run's result, and
    how many trials it failed and re-queued."""

    recovered: list[str] = field(default_factory=list)
    requeued: int = 0


def revive_dead_local_trials(
    study_name: str,
    storage: str | BaseStorage,
    *,
    root: str | Path | None = None,
    channels: str | Path | None = None,
    metric: str | None = None,
) -> Revived:
    """Settle the RUNNING trials whose sweep process on this host is gone (killed, rebooted).

    A trial whose run had finished (``<root>/<run_name>/summary.json``: status ``finished``, its
    monitor ``metric``) gets that run's result, as its sweep process would have given it: COMPLETE
    with ``monitor.best``, PRUNED when the sweep had pruned it, FAIL (not retried) when the run
    recorded no value; the values its run recorded at each validation (``channels``, the
    `trial.TrialChannel` folder) that the study lacks are reported first. Any other such trial is
    failed and re-queued: it keeps the ``error`` its sweep process wrote when it started it (which
    names that process); its retry, a WAITING trial with the same parameters, runs next.
    """
    rdb = storage if isinstance(storage, BaseStorage) else optuna.storages.get_storage(storage)
    # A sampler without an after-trial hook: telling GridSampler's study that a trial failed may
    # stop the study, which only an optimize loop can.
    study = optuna.load_study(study_name=study_name, storage=rdb, sampler=optuna.samplers.RandomSampler())
    host, out = socket.gethostname(), Revived()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("sweep_pid")
        if t.user_attrs.get("host") != host or not pid or pid_alive(int(pid)):
            continue
        try:
            line = _tell_finished_run(study, rdb, t, root, channels, metric)
            if line is not None:
                out.recovered.append(line)
                continue
            frozen = study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, UpdateFinishedTrialError):  # another sweep process settled it first
            continue
        RetryStale(max_retry=MAX_RETRY)(study, frozen)
        out.requeued += 1
    return out


def dead_trial_message(pid: int, host: str) -> str:
    """The ``error`` a trial keeps when its sweep process dies while it runs."""
    return (
        f"sweep process {pid} on {host} died while this trial ran; "
        f"re-queued with the same parameters (at most {MAX_RETRY} times)"
    )


def _tell_finished_run(
    study: optuna.Study,
    storage: BaseStorage,
    trial: optuna.trial.FrozenTrial,
    root: str | Path | None,
    channels: str | Path | None,
    metric: str | None,
) -> str | None:
    """Tell the study the result of ``trial``'s finished run and say so in one line; None if unfinished."""
    run_name = trial.user_attrs.get("run_name")
    if root is None or not run_name:
        return None
    run = Path(root) / run_name
    summary = read_summary(run) or {}
    monitor = summary.get("monitor") or {}
    if summary.get("status") != "finished" or (metric and monitor.get("name") not in (None, metric)):
        return None
    recorded = (summary.get("sweep") or {}).get("params")
    if "values" in trial.user_attrs and recorded is not None and recorded != trial.user_attrs["values"]:
        return None  # an older run of that name (the study was made anew), not this trial's
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), trial.number
    )
    if channels is not None:  # validations the dead sweep process had not reported yet
        for n, value in TrialChannel.at(channels, run_name, metric or "").read_values():
            if n not in trial.intermediate_values:
                storage.set_trial_intermediate_value(trial_id, n, value)
    best = monitor.get("best")
    where = str(run / SUMMARY_FILE)
    said = f"trial {trial.number}: its run had finished when its sweep process died;"
    storage.set_trial_user_attr(trial_id, "recovered_from", where)
    if "pruned_at" in trial.user_attrs:
        storage.set_trial_user_attr(trial_id, "error", None)
        study.tell(trial.number, state=TrialState.PRUNED)
        return f"{said} PRUNED at validation {trial.user_attrs['pruned_at']} (from {where})"
    if best is None:
        message = f"the run recorded no value of {monitor.get('name') or metric} (no validation ran?)"
        storage.set_trial_user_attr(trial_id, "error", f"{message} ({where})")
        study.tell(trial.number, state=TrialState.FAIL)
        return f"{said} FAIL: {message} (from {where})"
    storage.set_trial_user_attr(trial_id, "error", None)
    study.tell(trial.number, float(best))
    return f"{said} COMPLETE, best {float(best):.6g} (from {where})"


def _engine(url: str) -> dict[str, Any]:
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def _driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only that is installed."""
    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url
