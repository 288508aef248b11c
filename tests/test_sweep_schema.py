"""Sweep files: every shipped one validates against its run config; bad files are refused before any run."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from neurotrain.train.cli import main as cli_main
from neurotrain.train.sweeps.params import override
from neurotrain.train.sweeps.schema import SweepError, check_against_config, load_sweep
from neurotrain.train.tracking.config_keys import cli_key

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
PRETRAIN = SWEEPS.parent / "train" / "configs" / "eeg_pretrain.yaml"


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_validates(path: Path) -> None:
    spec = load_sweep(path)
    parsed = check_against_config(spec)
    assert spec.config is not None and spec.config.is_file()
    assert parsed["model"]["class_path"].startswith("neurotrain.models.")


def test_shipped_sweeps_are_the_ones_the_issue_names() -> None:
    pre, ft = load_sweep(SWEEPS / "eeg_pretrain.yaml"), load_sweep(SWEEPS / "eeg_finetune.yaml")
    assert pre.method == "bayes" and pre.early_terminate["type"] == "hyperband"
    assert {p.key for p in pre.params} == {"model.optimizer.lr", "model.mask_ratio", "model.encoder.depth"}
    assert ft.method == "grid" and ft.grid_size() == 12
    assert {p.key for p in ft.params} == {"model.optimizer.lr", "model.linear_probe", "model.layer_decay"}


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"command: [neurotrain, fit, --config, {PRETRAIN}, '${{args}}']\n{body}")
    return path


BAD = {
    "unknown top-level key": (
        "method: random\nparameters: {model.lr: {values: [0.1]}}\nbudget: 3\n",
        "budget: unknown top-level key",
    ),
    "unknown distribution": (
        "method: random\nparameters: {model.lr: {distribution: gamma, min: 0.1, max: 1}}\n",
        "parameters.model.lr: unknown distribution 'gamma'",
    ),
    "min > max": (
        "method: random\nparameters: {model.lr: {distribution: uniform, min: 0.1, max: 0.01}}\n",
        "parameters.model.lr: min (0.1) > max (0.01)",
    ),
    "bayes without metric": (
        "method: bayes\nparameters: {model.lr: {min: 0.01, max: 0.1}}\n",
        "metric: bayes search needs metric.name",
    ),
    "grid over a continuous law": (
        "method: grid\nparameters: {model.lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}}\n",
        "parameters.model.lr: grid search needs values",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_file_is_refused_with_key_and_reason(case: str, tmp_path: Path) -> None:
    body, expected = BAD[case]
    with pytest.raises(SweepError) as err:
        load_sweep(_write(tmp_path, body))
    assert expected in str(err.value)


def test_parameter_the_config_lacks_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write(
        tmp_path,
        "method: random\nparameters:\n  model.init_args.optimizer.lr: {values: [0.001]}\n"
        "  model.no_such_knob: {values: [1, 2]}\n  model.mask_ratio: {values: [fast]}\n",
    )
    spec = load_sweep(path)
    with pytest.raises(SweepError) as err:
        check_against_config(spec)
    text = str(err.value)
    assert "parameters.model.no_such_knob: the run config has no such option" in text
    assert "parameters.model.mask_ratio:" in text and "fast" in text  # a value of the wrong type
    assert "model.optimizer.lr" not in text  # model.init_args.optimizer.lr is model.optimizer.lr and exists
    root = tmp_path / "runs"
    assert cli_main(["sweep", str(path), "--backend", "local", "--root", str(root), "--count", "1"]) == 2
    assert "no_such_knob" in capsys.readouterr().err
    assert not root.exists()  # refused before anything ran or was written


def test_keys_and_overrides_use_the_lightningcli_shorthand() -> None:
    assert cli_key("model.init_args.encoder.depth") == "model.encoder.depth"
    assert override("model.init_args.linear_probe", True) == "--model.linear_probe=true"
    assert override("data.datasets", ["a", "b"]) == '--data.datasets=["a", "b"]'
    assert override("model.lr", 0.001) == "--model.lr=0.001"


def test_nested_parameters_and_distributions_sample_in_bounds(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "method: random\nparameters:\n  model:\n    parameters:\n"
        "      lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}\n"
        "      mask_ratio: {distribution: q_uniform, min: 0.3, max: 0.7, q: 0.1}\n"
        "      weight_decay: {distribution: normal, mu: 0.05, sigma: 0.01}\n"
        "      warmup_steps: {min: 0, max: 10}\n",
    )
    spec = load_sweep(path)
    by_key = {p.key: p for p in spec.params}
    assert by_key["model.warmup_steps"].distribution == "int_uniform"  # W&B's default for int bounds
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        v = {p.key: p.suggest(trial) for p in spec.params}
        assert 1e-4 <= v["model.lr"] <= 1e-2 and 0.3 <= v["model.mask_ratio"] <= 0.7
        assert isinstance(v["model.warmup_steps"], int) and 0 <= v["model.warmup_steps"] <= 10
        assert 0.0 < v["model.weight_decay"] < 0.1
        study.tell(trial, 0.0)
