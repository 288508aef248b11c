"""A sweep file written the way W&B users write them: nested parameters, ``{value: …}`` settings,
``trainer.default_root_dir`` in the file, a W&B-style metric name (``val_loss``).

The metric is read as the name the run logs (``val_loss`` is ``val/loss``) or refused before any
trial starts, listing what the run logs; the file's ``trainer.default_root_dir`` is where the runs go,
the same setting as ``--root``, so the two must agree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
from model_registry import get_entry, get_model, list_models
from test_sweep_local import SWEEP_CMD, study_of
from torch.utils.data import DataLoader

import neurotrain.train.sweeps.local as sweep_local
from neurotrain.train.cli import main as cli_main
from neurotrain.train.sweeps.schema import SweepError, check_against_config, load_sweep
from neurotrain.train.sweeps.trial import trial_command
from neurotrain.train.tracking.run_folder import read_summary

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"


def wandb_style_file(
    tmp_path: Path,
    runs: Path | str,
    *,
    metric: str = "val_loss",
    config: str = "eeg_pretrain.yaml",
    name: str = "wb",
) -> Path:
    """A sweep file as a W&B user writes it (the issue's), its runs in ``runs``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""method: random
metric:
  name: {metric}
  goal: minimize
parameters:
  model:
    parameters:
      optimizer:
        parameters:
          lr: {{distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}}
  trainer:
    parameters:
      max_steps: {{value: 8}}
      default_root_dir: {{value: {runs}}}
command: [neurotrain, fit, --config, {CONFIGS / config}, "${{args}}"]
"""
    )
    return path


# the metric ----------------------------------------------------------------------------------------


def test_wandb_style_metric_is_read_as_the_name_the_run_logs(tmp_path: Path) -> None:
    from neurotrain.train.sweeps.wandb_backend import wandb_config

    spec = load_sweep(wandb_style_file(tmp_path, tmp_path / "runs"))
    check_against_config(spec)
    assert spec.metric == "val/loss" and spec.metric_as_written == "val_loss"
    assert wandb_config(spec)["metric"] == {"name": "val/loss", "goal": "minimize"}  # what W&B reads
    cmd = trial_command(spec, {}, extra=[], root=tmp_path, run_name="r", group="g", sweep_id="s")
    assert "--monitor=val/loss" in cmd


def test_metric_the_run_does_not_log_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    path = wandb_style_file(tmp_path, runs, metric="val_accuracy")
    assert cli_main(["sweep", str(path), "--validate"]) == 2
    err = capsys.readouterr().err
    assert "metric.name: the run does not log 'val_accuracy' (nor 'val/accuracy')" in err
    assert "it logs train/loss, val/loss" in err  # what a PretrainModule run logs
    assert not runs.exists()


@pytest.mark.parametrize(
    ("written", "logged"),
    [
        ("val/balanced_accuracy", "val/balanced_accuracy"),
        ("val_balanced_accuracy", "val/balanced_accuracy"),
        ("val_loss", "val/loss"),
        ("train_loss", "train/loss"),
    ],
)
def test_classifier_metric_names(written: str, logged: str) -> None:
    from neurotrain.train.sweeps.run_metrics import logged_metrics, resolve_metric

    names = logged_metrics({"model": {"class_path": "neurotrain.models.modules.ClassifierModule"}})
    assert resolve_metric(written, names) == logged
    with pytest.raises(ValueError, match="it logs .*val/auroc.*val/kappa"):
        resolve_metric("val_accuracy", names)


def test_unknown_model_class_is_not_checked() -> None:
    from neurotrain.train.sweeps.run_metrics import logged_metrics

    assert logged_metrics({"model": {"class_path": "my_lab.MyModule"}}) is None


@pytest.mark.parametrize("name", list_models("module"))
def test_logged_metrics_are_what_a_validation_logs(name: str, tmp_path: Path) -> None:
    """The names `logged_metrics` gives without building anything are those a real fit logs."""
    from neurotrain.train.sweeps.run_metrics import logged_metrics

    entry = get_entry(name)
    model = get_model(name, **entry.tiny)
    data = DataLoader([entry.example_batch(4) for _ in range(2)], batch_size=None)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        max_steps=2,  # one epoch of the 2 batches: it ends with a validation
        limit_val_batches=2,
    )
    trainer.fit(model, data, data)
    cls = type(model)
    parsed = {"model": {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": entry.tiny}}
    assert set(logged_metrics(parsed)) == {k for k in trainer.callback_metrics if "/" in k}


# where the runs go ---------------------------------------------------------------------------------


def test_the_files_default_root_dir_is_where_the_runs_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(sweep_local, "run_local", lambda spec, **kw: calls.append(kw) or 0)
    monkeypatch.chdir(tmp_path)
    path = wandb_style_file(tmp_path, "runs")  # relative: from the working folder, as --root
    assert cli_main(["sweep", str(path), "--backend", "local"]) == 0
    assert cli_main(["sweep", str(path), "--backend", "local", "--root", str(tmp_path / "runs")]) == 0
    assert [kw["root"] for kw in calls] == [tmp_path / "runs"] * 2
    assert f"runs go to {tmp_path / 'runs'}" in capsys.readouterr().out

    spec = load_sweep(path)
    assert spec.root == "runs" and "trainer.default_root_dir" not in {p.key for p in spec.params}
    values = {"trainer.default_root_dir": "runs", "trainer.max_steps": 8}  # as the W&B agent passes them
    cmd = trial_command(spec, values, extra=[], root=tmp_path / "runs", run_name="r", group="g", sweep_id="s")
    assert [a for a in cmd if "default_root_dir" in a] == [f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    assert '"trainer.default_root_dir"' not in next(a for a in cmd if a.startswith("--sweep_params="))


@pytest.mark.parametrize(
    "given",
    [["--root", "elsewhere"], ["--set", "trainer.default_root_dir=elsewhere"]],
    ids=["--root", "--set"],
)
def test_root_and_the_files_default_root_dir_disagreeing_is_an_error(
    given: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sweep_local, "run_local", lambda spec, **kw: pytest.fail("the sweep started"))
    path = wandb_style_file(tmp_path, tmp_path / "runs")
    assert cli_main(["sweep", str(path), "--backend", "local", *given]) == 2
    err = capsys.readouterr().err
    assert f"{given[0]} {given[1].split('=')[0] if given[0] == '--set' else ''}".strip() in err
    assert f"says the runs go to {Path('elsewhere').resolve()}" in err
    assert f"the sweep file's trainer.default_root_dir says {tmp_path / 'runs'}" in err
    assert "they are the same setting (trainer.default_root_dir); give one folder" in err


def test_a_swept_default_root_dir_is_refused(tmp_path: Path) -> None:
    path = wandb_style_file(tmp_path, tmp_path / "runs")
    path.write_text(path.read_text().replace("{value: " + str(tmp_path / "runs") + "}", "{values: [a, b]}"))
    with pytest.raises(
        SweepError, match="parameters.trainer.default_root_dir: where the runs go is one folder"
    ):
        load_sweep(path)


# the whole flow --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_wandb_style_file_runs_its_trials_where_it_says(eeg_shards: Path, tmp_path: Path) -> None:
    """The file exactly as its user wrote it (no forced validation: a fit stopped by max_steps
    validates at its end)."""
    runs = tmp_path / "runs"
    work = tmp_path / "work"  # the working folder: nothing may land in its checkpoints/
    work.mkdir()
    path = wandb_style_file(tmp_path, runs)
    sets = [
        f"data.datasets=[{eeg_shards}]",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.window_seconds=1.0",
        "trainer.accelerator=cpu",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "media_every_n_val=0",
    ]
    cmd = [
        *SWEEP_CMD,
        str(path),
        "--backend",
        "local",
        "--count",
        "2",
        *(a for s in sets for a in ("--set", s)),
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "metric val_loss: the run logs it as val/loss" in proc.stdout

    assert not (work / "checkpoints").exists()
    folders = sorted(p for p in runs.iterdir() if p.name != "sweeps")
    assert len(folders) == 2
    trials = study_of(path, runs).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        summary = read_summary(runs / trial.user_attrs["run_name"])
        assert summary["status"] == "finished" and summary["global_step"] == 8
        assert summary["monitor"]["name"] == "val/loss"
        assert trial.value == pytest.approx(summary["monitor"]["best"])
        assert trial.intermediate_values  # reported at each validation
