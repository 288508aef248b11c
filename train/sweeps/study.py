"""The Optuna study of a local sweep: storage, sampler and pruner from a sweep file, and dead trials re-queued.

    storage = make_storage("sqlite:///checkpoints/sweeps/eeg_pretrain/optuna.db")   # or postgresql://…
    study = optuna.create_study(storage=storage, sampler=make_sampler(spec),
                                pruner=make_pruner(spec.early_terminate), ...)
    retry_dead_local_trials(study.study_name, storage)   # RUNNING trials of a dead sweep process here

grid -> GridSampler, random -> RandomSampler, bayes -> TPESampler; ``early_terminate: hyperband`` ->
HyperbandPruner over validations. The storage keeps heartbeats: a trial whose sweep process stopped
beating for the grace period is failed and re-queued with the same parameters (``RetryStale``), and
`retry_dead_local_trials` does so at once for a sweep process of this host that is gone.
"""

from __future__ import annotations

import importlib.util
import socket
import warnings
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from neurotrain.datamodules.io.processes import pid_alive
from neurotrain.train.sweeps.schema import SweepSpec

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


def retry_dead_local_trials(study_name: str, storage: str | RDBStorage) -> int:
    """Fail and re-queue RUNNING trials whose sweep process on this host is gone (killed, rebooted).

    Such a trial keeps the ``error`` its sweep process wrote when it started it (which names that
    process); its retry, a WAITING trial with the same parameters, runs next. Returns how many.
    """
    # A sampler without an after-trial hook: telling GridSampler's study that a trial failed may
    # stop the study, which only an optimize loop can.
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("sweep_pid")
        if t.user_attrs.get("host") != host or not pid or pid_alive(int(pid)):
            continue
        try:
            frozen = study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, UpdateFinishedTrialError):  # another sweep process failed it first
            continue
        RetryStale(max_retry=MAX_RETRY)(study, frozen)
        n += 1
    return n


def dead_trial_message(pid: int, host: str) -> str:
    """The ``error`` a trial keeps when its sweep process dies while it runs."""
    return (
        f"sweep process {pid} on {host} died while this trial ran; "
        f"re-queued with the same parameters (at most {MAX_RETRY} times)"
    )


def _engine(url: str) -> dict[str, Any]:
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def _driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only that is installed."""
    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url
