"""``evaluate --init_from`` reads back what the checkpoint's pretraining read and says, per fold,
whether it saw the scored subjects (``pretrain_scope``: train-only | all-unlabelled | unknown)."""

from __future__ import annotations

from pathlib import Path

import torch

from neurotrain.train.evaluation.pretraining import fold_scope, pretraining_scope, scope_line


class Payload:
    """Stands for any object a hostile checkpoint would have unpickled."""


MANIFEST = {
    "_sha256": "a" * 64,
    "shards": [
        {"name": "s01-0.tar", "subject": "s01", "split": "train"},
        {"name": "s02-0.tar", "subject": "s02", "split": "val"},
        {"name": "s03-0.tar", "subject": "s03", "split": "train"},
    ],
}


def _checkpoint(tmp_path: Path, name: str, **data) -> Path:
    hp = {
        "datasets": ["/somewhere/else/eeg"],  # never opened: matched by manifest sha256
        "train_split": "train",
        "selection": None,
        "normalization": {"datasets": [{"path": "/somewhere/else/eeg", "manifest_sha256": "a" * 64}]},
        **data,
    }
    path = tmp_path / f"{name}.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "datamodule_hyper_parameters": hp}, path)
    return path


def test_scope_follows_the_split_and_selection_the_pretraining_read(tmp_path: Path) -> None:
    scope = pretraining_scope(_checkpoint(tmp_path, "train"), [MANIFEST])
    assert scope["known"] and scope["subjects"] == ["s01", "s03"]
    assert fold_scope(scope, ["s02"]) == "train-only"
    assert fold_scope(scope, ["s03"]) == fold_scope(scope, ["s02", "s01"]) == "all-unlabelled"
    every = pretraining_scope(_checkpoint(tmp_path, "all", train_split="all"), [MANIFEST])
    assert every["subjects"] == ["s01", "s02", "s03"] and fold_scope(every, ["s02"]) == "all-unlabelled"
    chosen = {"train": {"subjects": ["s01"]}}
    one = pretraining_scope(_checkpoint(tmp_path, "one", selection=chosen), [MANIFEST])
    assert one["subjects"] == ["s01"] and fold_scope(one, ["s03"]) == "train-only"
    as_file = pretraining_scope(_checkpoint(tmp_path, "file", selection="/elsewhere/sel.json"), [MANIFEST])
    assert as_file["subjects"] == ["s01", "s03"] and "not opened" in as_file["note"]
    assert fold_scope(None, ["s01"]) is None and pretraining_scope(None, [MANIFEST]) is None
    results = {"pretraining": scope, "folds_detail": [{"name": "sub-s02", "pretrain_scope": "train-only"}]}
    assert "s01, s03" in scope_line(results)[1] and "train-only: sub-s02" in scope_line(results)[1]


def test_scope_is_unknown_when_the_checkpoint_cannot_tell(tmp_path: Path) -> None:
    other = pretraining_scope(_checkpoint(tmp_path, "x"), [{**MANIFEST, "_sha256": "b" * 64}])
    assert not other["known"] and "other datasets" in other["why"] and fold_scope(other, ["s01"]) == "unknown"
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, bare)
    assert "no datamodule settings" in pretraining_scope(bare, [MANIFEST])["why"]
    assert not pretraining_scope(tmp_path / "model.safetensors", [MANIFEST])["known"]
    # a checkpoint that would unpickle an object is never loaded: the scope is unknown, and why
    evil = tmp_path / "evil.ckpt"
    torch.save({"datamodule_hyper_parameters": {"a": Payload()}}, evil)
    refused = pretraining_scope(evil, [MANIFEST])
    assert not refused["known"] and "Payload" in refused["why"]
