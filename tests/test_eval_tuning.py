"""Nested selection of a model's settings: the grid, the choice from inner runs, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_fit import CONFIGS

from neurotrain.train.evaluation.tuning import (
    EPOCHS_KEY,
    LR_KEY,
    TuneError,
    choose,
    combinations,
    inner_scores,
    load_grid,
)
from neurotrain.train.run.lightning_cli import load_config


@pytest.fixture(scope="module")
def config():
    return load_config(["--config", str(CONFIGS / "eeg_finetune.yaml")])


def test_default_grid_brackets_the_configs_learning_rate(config) -> None:
    lr = float(config[LR_KEY])
    assert load_grid(None, config) == {LR_KEY: [lr / 3, lr, lr * 3]}


def test_a_grid_file_is_checked_against_the_config(config, tmp_path: Path) -> None:
    good = tmp_path / "grid.yaml"
    good.write_text(f"{LR_KEY}: [1.0e-3, 3.0e-3]\nmodel.init_args.layer_decay: [0.65, 0.75]\n")
    grid = load_grid(good, config)
    assert combinations(grid) == [
        {LR_KEY: 1e-3, "model.init_args.layer_decay": 0.65},
        {LR_KEY: 1e-3, "model.init_args.layer_decay": 0.75},
        {LR_KEY: 3e-3, "model.init_args.layer_decay": 0.65},
        {LR_KEY: 3e-3, "model.init_args.layer_decay": 0.75},
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model.init_args.no_such_thing: [1, 2]\n")
    with pytest.raises(TuneError, match="no_such_thing is not a key"):
        load_grid(bad, config)
    bad.write_text(f"{EPOCHS_KEY}: [1, 2]\n")
    with pytest.raises(TuneError, match="chosen per epoch"):
        load_grid(bad, config)
    bad.write_text(f"{LR_KEY}: []\n")
    with pytest.raises(TuneError, match="non-empty list"):
        load_grid(bad, config)


def test_choice_takes_the_best_inner_epoch_and_breaks_ties_early() -> None:
    tried = [
        ({LR_KEY: 1e-3}, [(1, 0.60), (2, 0.70), (3, 0.65)]),
        ({LR_KEY: 3e-3}, [(1, 0.55), (2, 0.70), (3, 0.68)]),
    ]
    tuned = choose(tried)
    assert tuned.chosen == {LR_KEY: 1e-3, EPOCHS_KEY: 2}  # 0.70 twice: the earlier combination
    assert len(tuned.table) == 6
    tried[1] = ({LR_KEY: 3e-3}, [(1, 0.80), (2, 0.70)])
    assert choose(tried).chosen == {LR_KEY: 3e-3, EPOCHS_KEY: 1}


def test_inner_scores_are_read_per_epoch_from_the_run(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss,val/balanced_accuracy\n0,5,0.7,\n0,9,,0.61\n1,19,,0.66\n"
    )
    assert inner_scores(tmp_path) == [(1, 0.61), (2, 0.66)]
