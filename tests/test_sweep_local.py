"""The local Optuna engine end to end on the example EEG: workers, a crashing trial, SIGKILL and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from neurotrain.train.report.compare import build_report
from neurotrain.train.sweeps.schema import load_sweep
from neurotrain.train.tracking.run_folder import read_summary

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
PRETRAIN = SWEEPS.parent / "train" / "configs" / "eeg_pretrain.yaml"
SWEEP_CMD = [sys.executable, "-m", "neurotrain.train.cli", "sweep"]


def tiny(data: Path) -> list[str]:
    """``--set`` options that make every trial a few-second CPU fit on the test shards."""
    sets = [
        f"data.datasets=[{data}]",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.window_seconds=1.0",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.val_check_interval=1",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "media_every_n_val=0",
    ]
    return [arg for s in sets for arg in ("--set", s)]


def sweep(
    file: Path, root: Path, data: Path, *extra: str, timeout: float = 400
) -> subprocess.CompletedProcess:
    cmd = [*SWEEP_CMD, str(file), "--backend", "local", "--root", str(root), *tiny(data), *extra]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def study_of(file: Path, root: Path, storage: str | None = None) -> optuna.Study:
    """The one study of ``file`` in the storage (its name hashes the file and the --set values)."""
    spec = load_sweep(file)
    url = storage or f"sqlite:///{root / 'sweeps' / spec.name / 'optuna.db'}"
    names = [n for n in optuna.get_all_study_names(url) if n.startswith(f"{spec.name}-")]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=url)


def trial_run(root: Path, file: Path, number: int) -> Path | None:
    """The run folder of trial ``number`` of the sweep of ``file`` under ``root``, once it exists."""
    return next(iter(root.glob(f"{file.stem}-*-{number:03d}")), None)


def grid_file(tmp_path: Path, name: str, values: str, key: str = "model.optimizer.lr") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"method: grid\nmetric: {{name: val/loss, goal: minimize}}\n"
        f"parameters:\n  {key}: {{values: {values}}}\n"
        f"command: [neurotrain, fit, --config, {PRETRAIN}, '${{args}}']\n"
    )
    return path


@pytest.mark.slow  # ~45 s: the shipped sweep file with two worker processes
def test_shipped_sweep_end_to_end_with_two_workers(eeg_shards: Path, tmp_path: Path) -> None:
    file = SWEEPS / "eeg_pretrain.yaml"
    root = tmp_path / "runs"
    proc = sweep(file, root, eeg_shards, "--count", "4", "--workers", "2", "--backend", "auto")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "running the sweep locally with Optuna" in proc.stdout
    assert "best run folder:" in proc.stdout

    study = study_of(file, root)
    trials = study.get_trials()
    assert len(trials) == 4
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.intermediate_values for t in trials)  # hyperband was fed at each validation

    runs = sorted(p for p in root.iterdir() if p.name != "sweeps")
    assert len(runs) == 4
    pids = set()
    for run in runs:
        summary = read_summary(run)
        assert summary["status"] == "finished" and summary["group"] == study.study_name
        assert summary["sweep"]["sweep_id"] == study.study_name
        assert set(summary["sweep"]["params"]) == {
            "model.optimizer.lr",
            "model.mask_ratio",
            "model.encoder.depth",
        }
        assert summary["wandb"]["mode"] == "offline"  # each trial its own (offline) W&B run
        pids.add(summary["pid"])
    assert len(pids) == 4

    report = tmp_path / "sweep.html"
    shown = build_report([root], report)
    html = report.read_text()
    assert len(shown) == 4
    assert '<div id="parcoords">' in html and f"sweep {study.study_name}" in html


@pytest.mark.slow  # three trial processes (~23 s)
def test_crashing_trial_is_failed_with_its_error_and_the_sweep_goes_on(
    eeg_shards: Path, tmp_path: Path
) -> None:
    file = grid_file(tmp_path, "crash", "[tiny, no_such_size]", key="model.encoder.size")
    root = tmp_path / "runs"
    proc = sweep(file, root, eeg_shards, "--workers", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = {t.params["model.encoder.size"]: t for t in study_of(file, root).get_trials()}
    assert trials["tiny"].state == optuna.trial.TrialState.COMPLETE
    failed = trials["no_such_size"]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "no_such_size" in failed.user_attrs["error"] and "exit code" in failed.user_attrs["error"]
    assert "FAIL" in proc.stdout


@pytest.mark.slow
def test_sigkilled_sweep_continues_on_restart(eeg_shards: Path, tmp_path: Path) -> None:
    file = grid_file(tmp_path, "killed", "[0.001, 0.002, 0.003]")
    root = tmp_path / "runs"
    cmd = [*SWEEP_CMD, str(file), "--backend", "local", "--root", str(root), *tiny(eeg_shards)]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    # until trial 1 is running: its fit has started
    while not ((second_run := trial_run(root, file, 1)) and (second_run / "summary.json").exists()):
        assert first.poll() is None and time.monotonic() < deadline, "sweep ended before trial 1 ran"
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "re-queued 1 trial(s) of a dead sweep process" in proc.stdout
    trials = study_of(file, root).get_trials()
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1 and len(trials) == 4
    killed = next(t for t in trials if t.state.name == "FAIL")
    assert killed.number == 1 and "died while this trial ran" in killed.user_attrs["error"]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == killed.params and retry.state.name == "COMPLETE"
    done = sorted(t.params["model.optimizer.lr"] for t in trials if t.state.name == "COMPLETE")
    assert done == [0.001, 0.002, 0.003]  # every grid point once: none lost, none repeated
    assert read_summary(second_run)["status"] in ("interrupted", "crashed", "running")


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie its stopped parent has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.slow
def test_trial_that_finished_before_its_sweep_was_killed_is_recorded_not_rerun(
    eeg_shards: Path, tmp_path: Path
) -> None:
    file = grid_file(tmp_path, "finished", "[0.001, 0.002, 0.003]")
    root = tmp_path / "runs"
    cmd = [*SWEEP_CMD, str(file), "--backend", "local", "--root", str(root), *tiny(eeg_shards)]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    try:
        # until trial 0's fit has started
        while not ((run0 := trial_run(root, file, 0)) and (run0 / "summary.json").exists()):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        # Freeze the sweep process: its fit runs to its end, the sweep records nothing of it; then the
        # sweep dies in the window between the run's end and the study learning of it.
        first.send_signal(signal.SIGSTOP)
        while (read_summary(run0) or {}).get("status") != "finished" or not _exited(
            read_summary(run0)["pid"]
        ):
            assert time.monotonic() < deadline, f"trial 0's fit did not finish: {read_summary(run0)}"
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert [t.state.name for t in study_of(file, root).get_trials()] == ["RUNNING"]  # not recorded
    best = read_summary(run0)["monitor"]["best"]
    assert best is not None

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "trial 0: its run had finished when its sweep process died; COMPLETE, best" in proc.stdout
        and "re-queued" not in proc.stdout
    ), proc.stdout
    trials = study_of(file, root).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # the budget: the grid, once
    assert trials[0].value == pytest.approx(best) and trials[0].user_attrs["error"] is None
    assert trials[0].intermediate_values  # the validations the dead sweep had not reported
    assert sorted(t.params["model.optimizer.lr"] for t in trials) == [0.001, 0.002, 0.003]
    runs = sorted(p.name for p in root.iterdir() if p.name != "sweeps")
    assert runs == [f"{run0.name[:-3]}{i:03d}" for i in range(3)]  # no second run of trial 0


def test_dead_sweep_trials_are_settled_from_their_run_folders(tmp_path: Path) -> None:
    """Finished runs give their result (value, pruned, no value); unfinished ones are re-queued."""
    import socket

    from neurotrain.train.sweeps import study as sweep_study
    from neurotrain.train.sweeps.trial import TrialChannel
    from neurotrain.train.tracking.run_folder import write_summary

    gone = subprocess.Popen(["true"])
    gone.wait()  # a sweep process of this host that is no more
    storage = sweep_study.make_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    runs = {"done": ("finished", 0.5), "pruned": ("finished", 0.9), "empty": ("finished", None)}
    runs.update(old=("finished", 0.1), killed=("running", None))  # old: a run of a former study
    for name, (status, best) in runs.items():
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        attrs = {"host": socket.gethostname(), "sweep_pid": gone.pid, "run_name": name, "error": "died"}
        attrs["values"] = {"x": 0.25}
        for key, value in {**attrs, **({"pruned_at": 1} if name == "pruned" else {})}.items():
            trial.set_user_attr(key, value)
        (tmp_path / name).mkdir()
        sweep = {"sweep_id": "s", "params": {"x": 0.75 if name == "old" else 0.25}}
        summary = {"status": status, "monitor": {"name": "val/loss", "best": best}, "sweep": sweep}
        write_summary(tmp_path / name, summary)
        channel = TrialChannel.create(tmp_path / "trials", name, "val/loss")
        channel.append_value(1, 0.7)
    trial.report(0.7, 1)  # the killed trial's first validation had been reported

    revived = sweep_study.revive_dead_local_trials(
        "s", storage, root=tmp_path, channels=tmp_path / "trials", metric="val/loss"
    )
    assert revived.requeued == 2 and len(revived.recovered) == 3
    trials = {t.user_attrs["run_name"]: t for t in study.get_trials()[:5]}
    states = {name: t.state.name for name, t in trials.items()}
    assert states == {
        "done": "COMPLETE",
        "pruned": "PRUNED",
        "empty": "FAIL",
        "old": "FAIL",
        "killed": "FAIL",
    }
    assert trials["done"].value == 0.5 and trials["done"].intermediate_values == {1: 0.7}
    assert trials["done"].user_attrs["error"] is None and trials["pruned"].user_attrs["error"] is None
    assert "recorded no value of val/loss" in trials["empty"].user_attrs["error"]
    retries = study.get_trials()[5:]  # the old and the killed one's: re-queued, WAITING
    assert [t.state.name for t in retries] == ["WAITING"] * 2
    assert [t.params for t in retries] == [trials["old"].params, trials["killed"].params]


def test_pruned_trial_stops_its_run_and_is_recorded_as_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import torch

    from neurotrain.train.sweeps import local as sweep_local
    from neurotrain.train.sweeps import study as sweep_study
    from neurotrain.train.sweeps import trial as sweep_trial
    from neurotrain.train.tracking.run_folder import write_summary

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    always = optuna.pruners.ThresholdPruner(upper=1.0)  # a loss above 1 is pruned at once
    monkeypatch.setattr(sweep_trial, "die_with_parent", lambda pid: None)  # not in the test process
    study = optuna.create_study(study_name="s", storage=sweep_study.make_storage(url), pruner=always)
    trial = study.ask()  # the sweep process owns the trial
    channel = sweep_trial.TrialChannel.create(tmp_path / "trials", "run", metric="val/loss")
    for key, value in channel.env().items():  # what the sweep process puts in the trial's environment
        monkeypatch.setenv(key, value)

    reporter = sweep_trial.TrialReporter()  # what `--trainer.callbacks+=` puts inside the trial's fit
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        world_size=1,
        should_stop=False,
        callback_metrics={"val/loss": torch.tensor(2.5)},
    )
    reporter.on_validation_end(trainer, None)
    run = tmp_path / "run"
    run.mkdir()
    write_summary(run, {"status": "finished", "monitor": {"name": "val/loss", "best": 2.5}})
    child = SimpleNamespace(poll=lambda: 0)  # the trial process, already ended here

    runner = sweep_local._Runner(
        load_sweep(SWEEPS / "eeg_pretrain.yaml"), study, tmp_path, tmp_path, [], "s", 1, "val/loss"
    )
    assert runner._follow(trial, child, channel) == 0  # reports validation 1, is pruned, asks to stop
    reporter.on_train_batch_end(trainer, None, None, None, 0)
    assert trainer.should_stop  # the run ends early, as a normal finished fit
    with pytest.raises(optuna.TrialPruned):
        runner._outcome(trial, 0, run, tmp_path / "log")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frozen = study.get_trials()[0]
    assert frozen.state == optuna.trial.TrialState.PRUNED and frozen.intermediate_values == {1: 2.5}
