"""The local sweep engine: Optuna runs a W&B sweep file, each trial a normal ``neurotrain fit`` process.

    run_local(spec, count=8, workers=2, root="checkpoints")          # SQLite in checkpoints/sweeps/<name>/
    run_local(spec, storage="postgresql://u:p@db/sweeps", ...)      # agents on many machines, one study

grid -> GridSampler, random -> RandomSampler, bayes -> TPESampler; ``early_terminate: hyperband`` ->
HyperbandPruner, fed at each validation by ``TrialReporter``, a Lightning callback inside the trial
process that reports the monitored metric through the shared storage and stops a pruned run.

Why a subprocess per trial: a crash (even a segfault or OOM kill) fails one trial, not the sweep; each
trial gets a fresh W&B run, seed and CUDA context; and ``--workers K`` is K such processes at once.

Resilience: a trial process that exits non-zero is a FAIL trial with its error (``user_attrs["error"]``)
and the sweep goes on. RUNNING trials left by a dead sweep process are failed and re-queued with the
same parameters (``RetryStale``): at once when that process ran on this host, otherwise
when its heartbeat is older than the grace period. The budget (``--count``/``run_cap``/grid size)
counts trials, not counting ones superseded by their retry, so a restart runs exactly what is left.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from pytorch_lightning.callbacks import Callback

from neurotrain.train.sweeps.schema import SweepSpec
from neurotrain.train.tracking.run_record import read_summary

# Optuna 4.9 renamed the stale-trial retry callback and its RDBStorage argument; accept both.
try:
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStale

    _STALE_KW = "heartbeat_stale_trial_callback"
except ImportError:  # optuna < 4.9
    from optuna.storages import RetryStale as RetryStale

    _STALE_KW = "failed_trial_callback"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

TRIAL_ENV = "NEUROTRAIN_SWEEP_TRIAL"
HEARTBEAT_S = 10
MAX_RETRY = 3


class TrialFailed(RuntimeError):
    """A trial process that exited with an error (the trial becomes FAIL; the sweep goes on)."""


def run_local(
    spec: SweepSpec,
    *,
    count: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    root: str | Path = "checkpoints",
    extra: list[str] = (),
    sweep_id: str | None = None,
    direction: str | None = None,
    heartbeat_s: int = HEARTBEAT_S,
) -> int:
    """Run (or continue) the sweep's study until its budget is used; prints the best trial. Exit code."""
    root = Path(root).resolve()
    sweep_id = sweep_id or spec.fingerprint
    study_name = f"{spec.name}-{sweep_id}"
    folder = root / "sweeps" / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{folder / 'optuna.db'}"
    study = optuna.create_study(
        study_name=study_name,
        storage=make_storage(url, heartbeat_s),
        sampler=_sampler(spec),
        pruner=make_pruner(spec.early_terminate),
        direction=direction or spec.goal,
        load_if_exists=True,
    )
    study.set_user_attr("sweep_file", str(spec.path))
    study.set_user_attr("sweep", spec.raw)
    revived = retry_dead_local_trials(study)
    budget = _budget(spec, count)
    print(
        f"sweep {study_name}: {spec.method} search, {workers} worker(s), budget "
        f"{budget if budget is not None else 'unbounded (Ctrl-C stops)'}, storage {_redact(url)}"
        + (f"; re-queued {revived} trial(s) of a dead sweep process" if revived else ""),
        flush=True,
    )
    runner = _Runner(spec, study, url, root, folder, list(extra), study_name, budget)
    threads = [threading.Thread(target=runner.loop, name=f"sweep-worker-{i}") for i in range(max(1, workers))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        # Ctrl-C reached the trial processes too; let them end, then re-queue what they were running.
        runner.stopping.set()
        print("interrupted: stopping; the running trials are re-queued for the next run", flush=True)
        for t in threads:
            t.join()
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if frozen.number in runner.interrupted:
                RetryStale(max_retry=MAX_RETRY)(study, frozen)
        raise
    return report(study, root, study_name)


def make_storage(url: str, heartbeat_s: int = HEARTBEAT_S) -> RDBStorage:
    """An RDB storage with heartbeats, stale trials retried, and SQLite waiting out concurrent writers."""
    return RDBStorage(
        _driver(url),
        engine_kwargs=_engine(url),
        heartbeat_interval=heartbeat_s,
        grace_period=3 * heartbeat_s,
        **{_STALE_KW: RetryStale(max_retry=MAX_RETRY)},
    )


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


def retry_dead_local_trials(study: optuna.Study) -> int:
    """Fail and re-queue RUNNING trials whose sweep process on this host is gone (killed, rebooted)."""
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("sweep_pid")
        if t.user_attrs.get("host") != host or not pid or _alive(int(pid)):
            continue
        reason = (
            f"sweep process {pid} on {host} died while this trial ran; re-queued with the same parameters"
        )
        study._storage.set_trial_user_attr(t._trial_id, "error", reason)
        if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
            RetryStale(max_retry=MAX_RETRY)(study, study._storage.get_trial(t._trial_id))
            n += 1
    return n


def report(study: optuna.Study, root: Path, study_name: str) -> int:
    """Print trial states and the best trial with its run folder; 0 when a trial completed."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    print(
        f"sweep {study_name}: {len(trials)} trials: "
        + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    )
    for t in trials:
        if t.state == TrialState.FAIL:
            print(f"  trial {t.number} FAIL: {str(t.user_attrs.get('error', '?')).splitlines()[-1][:200]}")
    try:
        best = study.best_trial
    except ValueError:
        print("no trial completed", file=sys.stderr)
        return 1
    run = root / best.user_attrs.get("run_name", "")
    params = best.user_attrs.get("values", best.params)
    print(f"best trial {best.number}: {study.direction.name.lower()} value {best.value:.6g} with {params}")
    print(f"best run folder: {run}")
    return 0


class TrialReporter(Callback):
    """Inside a trial's ``neurotrain fit``: reports the metric at each validation, stops if pruned.

    Configured by ``$NEUROTRAIN_SWEEP_TRIAL`` (storage URL, study, trial id, metric, early_terminate,
    parent pid), set by the sweep engine; without it the callback does nothing.
    """

    def __init__(self) -> None:
        self.cfg = json.loads(os.environ.get(TRIAL_ENV) or "null")
        self.n_val = 0
        self._trial: optuna.trial.Trial | None = None
        if self.cfg:
            _die_with_parent(int(self.cfg["parent_pid"]))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.cfg or trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.cfg["metric"])
        if value is None:
            return
        self.n_val += 1
        trial = self._get_trial()
        trial.report(float(value), self.n_val)
        if trial.should_prune():
            trial.set_user_attr("pruned_at", self.n_val)
            print(f"trial {trial.number} pruned by hyperband at validation {self.n_val}", flush=True)
            trainer.should_stop = True

    def _get_trial(self) -> optuna.trial.Trial:
        if self._trial is None:
            c = self.cfg
            storage = RDBStorage(_driver(c["storage"]), engine_kwargs=_engine(c["storage"]))
            study = optuna.load_study(
                study_name=c["study"], storage=storage, pruner=make_pruner(c["early_terminate"])
            )
            self._trial = optuna.trial.Trial(study, int(c["trial_id"]))
        return self._trial


# helpers -------------------------------------------------------------------------------------------------


class _Runner:
    """K worker threads; each claims a slot of the budget, then runs one trial process at a time."""

    def __init__(
        self,
        spec: SweepSpec,
        study: optuna.Study,
        url: str,
        root: Path,
        folder: Path,
        extra: list[str],
        study_name: str,
        budget: int | None,
    ) -> None:
        self.spec, self.study, self.url, self.root, self.folder = spec, study, url, root, folder
        self.extra, self.study_name, self.budget = extra, study_name, budget
        self.local = threading.local()
        self.stopping = threading.Event()
        self.interrupted: set[int] = set()
        self.claiming = threading.Lock()  # held from a claim until its trial exists in the storage

    def loop(self) -> None:
        while True:
            self.claiming.acquire()
            self.local.holding = True
            try:
                if self.stopping.is_set() or (self.budget is not None and self._used() >= self.budget):
                    return
                self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
            finally:
                self._release()

    def _release(self) -> None:
        if getattr(self.local, "holding", False):
            self.local.holding = False
            self.claiming.release()

    def _used(self) -> int:
        trials = self.study.get_trials(deepcopy=False)
        superseded = {RetryStale.retried_trial_number(t) for t in trials} - {None}
        return sum(1 for t in trials if t.number not in superseded)

    def objective(self, trial: optuna.trial.Trial) -> float:
        self._release()  # the trial exists now, so the next claim counts it
        values = {p.key: p.suggest(trial) for p in self.spec.params}
        fixed = {p.key: p.spec["value"] for p in self.spec.params if p.distribution == "constant"}
        run_name = f"{self.study_name}-{trial.number:03d}"
        for key, value in {
            "host": socket.gethostname(),
            "sweep_pid": os.getpid(),
            "run_name": run_name,
            "values": {**values, **fixed},
        }.items():
            trial.set_user_attr(key, value)
        cmd = [
            sys.executable,
            "-m",
            "neurotrain.train.cli",
            *self.spec.base_args(),
            *self.extra,
            *self.spec.trial_args(values),
            f"--trainer.default_root_dir={self.root}",
            f"--run_name={run_name}",
            f"--group={self.study_name}",
            f"--sweep_id={self.study_name}",
            f"--sweep_params={json.dumps({**values, **fixed})}",
            "--trainer.callbacks+=neurotrain.train.sweeps.local.TrialReporter",
        ]
        if self.spec.metric:
            cmd.append(f"--monitor={self.spec.metric}")
        env = dict(os.environ)
        env[TRIAL_ENV] = json.dumps(
            {
                "storage": self.url,
                "study": self.study_name,
                "trial_id": trial._trial_id,
                "metric": self.spec.metric or "val/loss",
                "early_terminate": self.spec.early_terminate,
                "parent_pid": os.getpid(),
            }
        )
        print(f"trial {trial.number} started: {run_name} {values}", flush=True)
        log = self.folder / "logs" / f"{run_name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as fh:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
        return self._outcome(trial, rc, self.root / run_name, log)

    def _outcome(self, trial: optuna.trial.Trial, rc: int, run_dir: Path, log: Path) -> float:
        summary = read_summary(run_dir) or {}
        attrs = self.study._storage.get_trial(trial._trial_id).user_attrs
        if rc != 0 and self.stopping.is_set():
            self.interrupted.add(trial.number)
            trial.set_user_attr("error", "interrupted (Ctrl-C); re-queued with the same parameters")
            raise TrialFailed("interrupted")
        if rc != 0:
            err = summary.get("error") or {}
            message = f"{err.get('type')}: {err.get('message')}" if err else _tail(log)
            message = f"exit code {rc}: {message} (log: {log})"
            trial.set_user_attr("error", message)
            print(f"trial {trial.number} FAILED: {message.splitlines()[0][:300]}", flush=True)
            raise TrialFailed(message)
        value = (summary.get("monitor") or {}).get("best")
        if "pruned_at" in attrs:
            print(f"trial {trial.number} PRUNED at validation {attrs['pruned_at']}", flush=True)
            raise optuna.TrialPruned(f"pruned at validation {attrs['pruned_at']}")
        if value is None:
            name = (summary.get("monitor") or {}).get("name") or self.spec.metric
            message = f"the run recorded no value of {name} (no validation ran?) (log: {log})"
            trial.set_user_attr("error", message)
            raise TrialFailed(message)
        print(f"trial {trial.number} finished: best {value:.6g}", flush=True)
        return float(value)


def _budget(spec: SweepSpec, count: int | None) -> int | None:
    caps = [c for c in (count, spec.run_cap, spec.grid_size() if spec.method == "grid" else None) if c]
    return min(caps) if caps else None


def _sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.method == "grid":
        # One seed everywhere: a trial number maps to the same grid point in every agent process.
        return optuna.samplers.GridSampler(spec.grid_space(), seed=0)
    if spec.method == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler(n_startup_trials=5)


def _engine(url: str) -> dict[str, Any]:
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def _driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only that is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent(parent: int) -> None:
    """A trial process ends (SIGTERM) when its sweep process dies, even by SIGKILL (Linux)."""
    if os.getppid() != parent:  # already orphaned while starting up
        os._exit(75)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:
            os._exit(75)


def _tail(log: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return " | ".join(lines[-n:])


def _redact(url: str) -> str:
    """A storage URL without its password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}"
    return url
