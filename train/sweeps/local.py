"""The local sweep engine: Optuna runs a W&B sweep file, each trial a normal ``neurotrain fit`` process.

    run_local(spec, count=8, workers=2, root="checkpoints")          # SQLite in checkpoints/sweeps/<name>/
    run_local(spec, storage="postgresql://u:p@db/sweeps", ...)      # agents on many machines, one study

Here: the worker threads, one trial process each at a time, and the final report; the study's
storage, sampler and pruner are in `study`, its name (the file's content and the ``--set`` values)
in `naming`, the trial's command and its channel in `trial`.

What the terminal shows: one line per trial as it starts and ends; a failed one is one line with the
exception its log ends with and that log (``<root>/sweeps/<name>/logs/<run name>.log``: the trial's
output and traceback). Optuna's own log records (its report of a failed trial, with a traceback) go
to ``<root>/sweeps/<name>/sweep.log`` instead (`optuna_log`).

Why a subprocess per trial: a crash (even a segfault or OOM kill) fails one trial, not the sweep; each
trial gets a fresh W&B run, seed and CUDA context; and ``--workers K`` is K such processes at once.

Pruning: the worker thread that runs a trial owns its ``optuna.trial.Trial``. While the trial process
runs, the thread follows the values it records at each validation (`trial.TrialChannel`), reports
each one (``trial.report(value, n)``) and asks ``trial.should_prune()``; when pruned it records
``pruned_at``, asks the process to stop (the run ends as a normal finished fit), and the trial
ends PRUNED. The trial process never opens the study.

Resilience: a trial process that exits non-zero is a FAIL trial with its error (``user_attrs["error"]``)
and the sweep goes on. RUNNING trials left by a dead sweep process of this host are settled when the
sweep starts (`study.revive_dead_local_trials`): one whose run had finished is given that run's
result from its run folder (``summary.json``: ``monitor.best``), as the dead process would have; the
others are failed and re-queued with the same parameters. Those of another host are failed and
re-queued once their heartbeat is older than the grace period. A failed one keeps the ``error``
written when it started, which says its sweep process died. The budget (``--count``/``run_cap``/grid
size) counts trials, not counting ones superseded by their retry, so a restart runs exactly what is
left.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import TrialState

from neurotrain.train.sweeps import naming
from neurotrain.train.sweeps.schema import SweepSpec
from neurotrain.train.sweeps.study import (
    HEARTBEAT_S,
    MAX_RETRY,
    RetryStale,
    dead_trial_message,
    make_pruner,
    make_sampler,
    make_storage,
    revive_dead_local_trials,
)
from neurotrain.train.sweeps.trial import TrialChannel, trial_command
from neurotrain.train.tracking.run_folder import read_summary, write_summary

POLL_S = 0.5  # how often a worker thread looks for new validations of its trial
SWEEP_LOG = "sweep.log"  # in the sweep folder: Optuna's own messages (a failed trial's full report)


class TrialFailed(RuntimeError):
    """A trial process that exited with an error (the trial becomes FAIL; the sweep goes on)."""


def run_local(
    spec: SweepSpec,
    *,
    count: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    root: str | Path = "checkpoints",
    extra: Sequence[str] = (),
    sweep_id: str | None = None,
    direction: str | None = None,
    monitor: str | None = None,
    heartbeat_s: int = HEARTBEAT_S,
) -> int:
    """Run (or continue) the sweep's study until its budget is used; prints the best trial. Exit code.

    ``direction`` and ``monitor`` stand in for the file's ``metric`` when it has none (the model's own
    monitored metric and which way it goes).
    """
    root = Path(root).resolve()
    study_name = naming.study_name(spec, extra, sweep_id)
    folder = root / "sweeps" / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    with optuna_log(folder / SWEEP_LOG):  # Optuna's own messages go to the sweep's log file
        url = storage or f"sqlite:///{folder / 'optuna.db'}"
        rdb = make_storage(url, heartbeat_s)
        for line in naming.describe_start(
            study_name, rdb, spec.name, list(extra), explicit=sweep_id is not None
        ):
            print(line, flush=True)
        study = optuna.create_study(
            study_name=study_name,
            storage=rdb,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec.early_terminate),
            direction=direction or spec.goal,
            load_if_exists=True,
        )
        study.set_user_attr("sweep_file", str(spec.path))
        study.set_user_attr("sweep", spec.raw)
        study.set_user_attr(naming.SET_ATTR, list(extra))
        metric = spec.metric or monitor or "val/loss"
        revived = revive_dead_local_trials(
            study_name, rdb, root=root, channels=folder / "trials", metric=metric
        )
        budget = _budget(spec, count)
        print(
            f"sweep {study_name}: {spec.method} search, {workers} worker(s), budget "
            f"{budget if budget is not None else 'unbounded (Ctrl-C stops)'}, storage {_redact(url)}"
            + (
                f"; re-queued {revived.requeued} trial(s) of a dead sweep process" if revived.requeued else ""
            ),
            flush=True,
        )
        for line in revived.recovered:
            print(line, flush=True)
        runner = _Runner(spec, study, root, folder, list(extra), study_name, budget, metric)
        threads = [
            threading.Thread(target=runner.loop, name=f"sweep-worker-{i}") for i in range(max(1, workers))
        ]
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


@contextmanager
def optuna_log(path: Path) -> Iterator[None]:
    """Send Optuna's log records to the file ``path`` instead of the terminal, while the block runs.

    Optuna reports a failed trial as a warning with the objective's traceback; the sweep prints one
    line per trial itself (`_Runner._outcome`), so Optuna's records (INFO and up) are appended to the
    sweep's log file, through Optuna's public logging controls, and its stderr handler comes back after.
    """
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = optuna.logging.get_logger("optuna")
    logger.addHandler(handler)
    optuna.logging.disable_default_handler()
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        optuna.logging.enable_default_handler()


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
            print(
                f"  trial {t.number} FAIL: {failure_line(t.user_attrs.get('error'), t.user_attrs.get('log'))}"
            )
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


# helpers -------------------------------------------------------------------------------------------------


class _Runner:
    """K worker threads; each claims a slot of the budget, then runs one trial process at a time."""

    def __init__(
        self,
        spec: SweepSpec,
        study: optuna.Study,
        root: Path,
        folder: Path,
        extra: list[str],
        study_name: str,
        budget: int | None,
        metric: str,
    ) -> None:
        self.spec, self.study, self.root, self.folder = spec, study, root, folder
        self.extra, self.study_name, self.budget, self.metric = extra, study_name, budget, metric
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
        host, pid = socket.gethostname(), os.getpid()
        for key, value in {
            "host": host,
            "sweep_pid": pid,
            "run_name": run_name,
            "values": {**values, **fixed},
            "error": dead_trial_message(pid, host),  # what the trial keeps if this process dies
        }.items():
            trial.set_user_attr(key, value)
        cmd = trial_command(
            self.spec,
            values,
            extra=self.extra,
            root=self.root,
            run_name=run_name,
            group=self.study_name,
            sweep_id=self.study_name,
            sweep_params={**values, **fixed},
            reporter=True,
        )
        channel = TrialChannel.create(self.folder / "trials", run_name, self.metric)
        print(f"trial {trial.number} started: {run_name} {values}", flush=True)
        log = self.folder / "logs" / f"{run_name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **channel.env()}
            )
            rc = self._follow(trial, proc, channel)
        return self._outcome(trial, rc, self.root / run_name, log)

    def _follow(self, trial: optuna.trial.Trial, proc: subprocess.Popen, channel: TrialChannel) -> int:
        """Wait for the trial process, reporting each validation it records; stop it once pruned."""
        reported, pruned = 0, False
        try:
            while True:
                rc = proc.poll()  # before reading: once it has exited, every value is in the file
                if not pruned:
                    for n, value in channel.read_values(after=reported):
                        reported = n
                        trial.report(value, n)
                        if trial.should_prune():
                            pruned = True
                            trial.set_user_attr("pruned_at", n)
                            channel.request_stop()
                            print(f"trial {trial.number} pruned by hyperband at validation {n}", flush=True)
                            break
                if rc is not None:
                    return rc
                time.sleep(POLL_S)
        except Exception as exc:  # the storage failed us: end the run, fail the trial, go on
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            raise TrialFailed(f"reporting trial {trial.number} to the study failed: {exc!r}") from exc

    def _outcome(self, trial: optuna.trial.Trial, rc: int, run_dir: Path, log: Path) -> float:
        summary = read_summary(run_dir) or {}
        attrs = trial.user_attrs
        if rc != 0 and self.stopping.is_set():
            self.interrupted.add(trial.number)
            trial.set_user_attr("error", "interrupted (Ctrl-C); re-queued with the same parameters")
            raise TrialFailed("interrupted")
        if rc != 0:
            err = summary.get("error") or {}
            # the run's recorded error, else the exception its log ends with
            last = " ".join(f"{err.get('type')}: {err.get('message')}".split()) if err else _exception(log)
            message = f"exit code {rc}: {last if err else _tail(log)} (log: {log})"
            trial.set_user_attr("error", message)
            trial.set_user_attr("log", str(log))
            print(f"trial {trial.number} FAILED: {failure_line(f'exit code {rc}: {last}', log)}", flush=True)
            raise TrialFailed(message)
        value = (summary.get("monitor") or {}).get("best")
        if "pruned_at" in attrs:
            trial.set_user_attr("error", None)
            if summary.get("sweep"):  # its fit ended as a normal finished one: `compare` reads this
                write_summary(run_dir, {**summary, "sweep": {**summary["sweep"], "state": "pruned"}})
            print(f"trial {trial.number} PRUNED at validation {attrs['pruned_at']}", flush=True)
            raise optuna.TrialPruned(f"pruned at validation {attrs['pruned_at']}")
        if value is None:
            name = (summary.get("monitor") or {}).get("name") or self.spec.metric
            message = f"the run recorded no value of {name} (no validation ran?) (log: {log})"
            trial.set_user_attr("error", message)
            trial.set_user_attr("log", str(log))
            print(f"trial {trial.number} FAILED: {failure_line(message, log)}", flush=True)
            raise TrialFailed(message)
        trial.set_user_attr("error", None)
        print(f"trial {trial.number} finished: best {value:.6g}", flush=True)
        return float(value)


def _budget(spec: SweepSpec, count: int | None) -> int | None:
    caps = [c for c in (count, spec.run_cap, spec.grid_size() if spec.method == "grid" else None) if c]
    return min(caps) if caps else None


def failure_line(error: str | None, log: str | Path | None, width: int = 300) -> str:
    """A failed trial on one line: the last line of its ``error`` (cut to ``width``), then its log file.

    The error as `_Runner._outcome` records it ends with ``(log: PATH)``; the log is shown whole even
    when the message is cut, since it is where the full traceback is.
    """
    text = str(error or "?").strip()
    if log is not None:
        text = text.removesuffix(f" (log: {log})")
    last = (text.splitlines() or ["?"])[-1].strip()
    last = last if len(last) <= width else last[: width - 1] + "…"
    return f"{last} (log: {log})" if log is not None else last


def _exception(log: Path, dump: int = 200) -> str:
    """The exception a trial's log ends with, on one line; else the log's last line.

    That is the text after the frames of the log's last traceback (``ValueError: …`` and the lines of
    a message of many lines), without lines longer than ``dump`` characters (printed values).
    """
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    heads = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not heads:
        return _tail(log, 1)
    i = heads[-1] + 1
    while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):  # the frames
        i += 1
    text = " ".join(line.strip() for line in lines[i:] if line.strip() and len(line) <= dump)
    return text or _tail(log, 1)


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
