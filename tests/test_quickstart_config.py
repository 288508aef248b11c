"""The quickstart's pretraining scope: what each choice trains on, and that it is refused otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurotrain.train.evaluation.quickstart import FAST, pretrain_config, quickstart


def test_pretrain_scope_sets_what_the_pretraining_reads(tmp_path: Path) -> None:
    inductive = pretrain_config(tmp_path, FAST, "train-only")
    transductive = pretrain_config(tmp_path, FAST, "all-unlabelled")
    assert inductive["data.train_split"] == "train"  # the training subject's EEG only
    assert transductive["data.train_split"] == "all"  # the held-out subject's unlabelled EEG too
    assert inductive["data.datasets"] == transductive["data.datasets"] == [str(tmp_path)]
    assert transductive["trainer.max_steps"] == FAST.pretrain_steps
    with pytest.raises(ValueError, match="pretrain_scope is one of"):
        quickstart(tmp_path / "qs", fast=True, pretrain_scope="everything")
