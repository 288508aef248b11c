"""What a sweep says and does for a user: a quiet ``--validate``, study names that follow the file and the
``--set`` values, and one line per failed trial naming its log (issue 18, "Sweeps surprise").

Everything runs in this process; the trials of the local engine are stand-in processes that fail at
once with a traceback, so no model is trained here.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

import optuna
import pytest
import torch

from neurotrain.train.cli import main as cli_main
from neurotrain.train.run import lightning_cli
from neurotrain.train.sweeps import local as sweep_local
from neurotrain.train.sweeps.naming import study_name
from neurotrain.train.sweeps.schema import check_against_config, load_sweep

PRETRAIN = Path(__file__).resolve().parents[1] / "train" / "configs" / "eeg_pretrain.yaml"
FAILING_TRIAL = (  # a message of two lines, as jsonargparse's are
    "def fit():\n    raise ValueError('encoder size huge is unknown\\nchoose one of tiny, small')\n"
    "print('starting')\nfit()\n"
)


def sweep_file(tmp_path: Path, lrs: str = "[0.001, 0.002]", name: str = "tiny", comment: str = "") -> Path:
    """A two-parameter grid over the shipped pretraining config."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"{comment}method: grid\nmetric: {{name: val/loss, goal: minimize}}\n"
        f"parameters:\n  model.optimizer.lr: {{values: {lrs}}}\n  model.mask_ratio: {{values: [0.3, 0.5]}}\n"
        f"command: [neurotrain, fit, --config, {PRETRAIN}, '${{args}}']\n"
    )
    return path


def test_validate_parses_once_and_neither_seeds_nor_says_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # Lightning logs "Seed set to N" at INFO
    monkeypatch.setattr(lightning_cli, "_CONFIG_CLI", {})  # build the parse-only CLI here, as a fresh process
    built = []
    init = lightning_cli._ConfigOnly.__init__
    monkeypatch.setattr(
        lightning_cli._ConfigOnly, "__init__", lambda self, *a, **k: built.append(1) or init(self, *a, **k)
    )
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # what seed_everything sets
    torch.manual_seed(1234)

    assert cli_main(["sweep", str(sweep_file(tmp_path)), "--validate"]) == 0
    out, err = capfd.readouterr()
    assert "valid (grid, 2 parameters" in out and "nothing was built or run" in out
    assert "Seed set to" not in out + err + caplog.text
    assert "PL_GLOBAL_SEED" not in os.environ and torch.initial_seed() == 1234  # nothing was seeded
    assert built == [1]  # one parser for the base config and every parameter's values


def test_reused_parser_gives_the_config_a_fresh_one_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    a = ["fit", "--config", str(PRETRAIN), "--model.optimizer.lr=0.002"]
    b = ["--config", str(PRETRAIN), "--model.mask_ratio=0.7", "--seed_everything=7"]
    monkeypatch.setattr(lightning_cli, "_CONFIG_CLI", {})
    first, other, again = (
        lightning_cli.load_config(a),
        lightning_cli.load_config(b),
        lightning_cli.load_config(a),
    )
    monkeypatch.setattr(lightning_cli, "_CONFIG_CLI", {})
    fresh = lightning_cli.load_config(a)
    assert first == again == fresh and first is not again
    assert first["seed_everything"] == 0 and other["seed_everything"] == 7  # as parsed, not consumed
    assert other["model.init_args.mask_ratio"] == 0.7 and again["model.init_args.mask_ratio"] != 0.7


def test_bad_parameter_is_still_named_when_values_are_checked_together(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, lrs="[0.001, fast]")
    with pytest.raises(Exception, match=r"parameters\.model\.optimizer\.lr:.*'fast'") as err:
        check_against_config(load_sweep(path))
    assert "mask_ratio" not in str(err.value)  # the good parameter is not blamed


def test_study_name_follows_the_file_content_and_the_set_values(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = load_sweep(sweep_file(tmp_path))
    base = study_name(spec, [])
    assert base == f"tiny-{spec.fingerprint}"  # without --set: the name studies always had
    assert study_name(load_sweep(sweep_file(tmp_path)), []) == base  # an identical rerun meets itself
    assert study_name(load_sweep(sweep_file(tmp_path, comment="# a note\n")), []) == base  # comments
    assert study_name(load_sweep(sweep_file(tmp_path, lrs="[0.001, 0.003]")), []) != base  # content
    two = study_name(spec, ["--trainer.max_epochs=2"])
    assert two != base and two != study_name(spec, ["--trainer.max_epochs=3"])
    assert study_name(spec, ["--trainer.max_epochs=2"]) == two
    assert study_name(spec, ["--trainer.max_epochs=3"], sweep_id="mine") == "tiny-mine"  # explicit: kept

    path = str(sweep_file(tmp_path))
    names = []
    for sets in (["trainer.max_epochs=2"], ["trainer.max_epochs=3"], ["trainer.max_epochs=2"]):
        assert cli_main(["sweep", path, "--validate", *(a for s in sets for a in ("--set", s))]) == 0
        names.append(capsys.readouterr().out.split("local study: ")[1].split()[0])
    assert names[0] == names[2] == two and names[1] != two  # what --validate says is what would run


def failing_trials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every trial is a process that prints, then dies with a Python traceback (a stand-in for a fit)."""
    script = tmp_path / "failing_fit.py"
    script.write_text(FAILING_TRIAL)
    monkeypatch.setattr(sweep_local, "trial_command", lambda *a, **k: [sys.executable, str(script)])


def test_a_changed_set_is_a_new_study_and_the_same_command_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    failing_trials(monkeypatch, tmp_path)
    spec, root = load_sweep(sweep_file(tmp_path)), tmp_path / "runs"
    a, b = ["--trainer.max_epochs=2"], ["--trainer.max_epochs=3"]

    sweep_local.run_local(spec, count=1, root=root, extra=a)
    assert "a new study" in capfd.readouterr().out
    sweep_local.run_local(spec, count=1, root=root, extra=a)  # the same command: its study, budget used
    out = capfd.readouterr().out
    assert f"sweep {study_name(spec, a)}: continuing its study (1 trial(s) so far)" in out
    assert "started" not in out

    sweep_local.run_local(spec, count=1, root=root, extra=b)  # other --set values: a new study that runs
    out = capfd.readouterr().out
    old_id = study_name(spec, a).removeprefix("tiny-")
    assert f"sweep {study_name(spec, b)}: a new study" in out and "trial 0 started" in out
    assert f"an earlier study of tiny here: tiny-{old_id} (1 trial(s), --set trainer.max_epochs=2)" in out
    assert f"--sweep-id {old_id}" in out

    sweep_local.run_local(spec, count=2, root=root, extra=b, sweep_id=old_id)  # continue that one
    out = capfd.readouterr().out
    assert (
        f"sweep tiny-{old_id}: continuing its study" in out and "ran with --set trainer.max_epochs=2" in out
    )
    url = f"sqlite:///{root / 'sweeps' / 'tiny' / 'optuna.db'}"
    assert sorted(optuna.get_all_study_names(url)) == sorted([f"tiny-{old_id}", study_name(spec, b)])
    assert len(optuna.load_study(study_name=f"tiny-{old_id}", storage=url).trials) == 2


def test_failed_trial_is_one_line_naming_its_log_which_holds_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    failing_trials(monkeypatch, tmp_path)
    spec, root = load_sweep(sweep_file(tmp_path)), tmp_path / "runs"
    # Optuna's terminal handler (a plain StreamHandler, unlike pytest's own) keeps the stream it was
    # made with, out of reach of capfd: read what it would print there
    terminal = io.StringIO()
    for handler in optuna.logging.get_logger("optuna").handlers:
        if type(handler) is logging.StreamHandler:
            monkeypatch.setattr(handler, "stream", terminal)
    assert sweep_local.run_local(spec, count=1, root=root, extra=[]) == 1  # no trial completed
    out, err = capfd.readouterr()
    shown = out + err + terminal.getvalue()
    assert "Traceback" not in shown and "Trial 0 failed" not in shown  # nor Optuna's report of it
    failed = [line for line in out.splitlines() if line.startswith("trial 0 FAILED")]
    assert len(failed) == 1, out
    log = root / "sweeps" / "tiny" / "logs" / f"{study_name(spec)}-000.log"
    reason = "ValueError: encoder size huge is unknown choose one of tiny, small"  # the exception, one line
    assert failed[0] == f"trial 0 FAILED: exit code 1: {reason} (log: {log})"
    assert "Traceback (most recent call last)" in log.read_text()  # the trial's own traceback, kept
    assert "trial 0 FAIL: exit code 1:" in out and f"(log: {log})" in out.split("trials:")[-1]  # report
    sweep_log = (root / "sweeps" / "tiny" / sweep_local.SWEEP_LOG).read_text()
    assert "Trial 0 failed" in sweep_log and "Traceback" in sweep_log  # Optuna's report, with its traceback
    trial = optuna.load_study(
        study_name=study_name(spec), storage=f"sqlite:///{log.parents[1] / 'optuna.db'}"
    )
    assert trial.trials[0].user_attrs["log"] == str(log)
