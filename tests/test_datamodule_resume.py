"""Exact resume: an interrupted and resumed run sees exactly the batches of an uninterrupted one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from fixtures_datamodule import Interrupted, Recorder, ids, synthetic_shards
from pytorch_lightning.callbacks import ModelCheckpoint

from neurotrain.datamodules.loading.datamodule import ShardDataModule


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_shards(tmp_path_factory.mktemp("resume"), "rs", ["a", "b", "c"], seconds=40.0)


def make_dm(shards: Path, num_workers: int, mode: str = "threads") -> ShardDataModule:
    # a shuffle buffer of 3 batches: blocks dealt to workers unevenly, the hard case for ordering
    return ShardDataModule(
        [str(shards)],
        window_seconds=1.0,
        batch_size=8,
        shuffle_buffer=24,
        num_workers=num_workers,
        worker_mode=mode,
    )


@pytest.mark.parametrize(
    ("num_workers", "mode"), [(0, "threads"), (2, "threads"), (2, "processes"), (3, "processes")]
)
def test_stream_resumes_at_any_batch(shards: Path, num_workers: int, mode: str) -> None:
    full = ids(make_dm(shards, num_workers, mode).train_dataloader())
    assert len(full) == 120 and len(set(full)) == 120
    processes = num_workers if mode == "processes" else 0
    for k in (1, 4, 8, 14):
        dm = make_dm(shards, num_workers, mode)
        dm.load_state_dict(
            {"position": {"epoch": 0, "batches": k, "world_size": 1, "num_workers": processes}}
        )
        assert ids(dm.train_dataloader()) == full[8 * k :], k
    # the same batches whatever the number of threads
    if mode == "threads":
        assert ids(make_dm(shards, 1).train_dataloader()) == full
    # epochs differ, and the same epoch is the same everywhere
    dm = make_dm(shards, num_workers, mode)
    first, second = ids(dm.train_dataloader()), ids(dm.train_dataloader())
    assert first == full and second != full and sorted(second) != sorted(full)  # new random crops


def fit(
    dm: ShardDataModule, ckpt_dir: Path, stop_after: int | None = None, ckpt_path: str | None = None
) -> list[str]:
    model = Recorder(stop_after)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_top_k=-1, filename="{step}")
        ],
    )
    with contextlib.suppress(Interrupted):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.parametrize(
    ("num_workers", "mode", "k"), [(0, "threads", 5), (2, "threads", 19), (2, "processes", 8)]
)
def test_killed_and_resumed_run_sees_the_same_batches(
    shards: Path, tmp_path: Path, num_workers: int, mode: str, k: int
) -> None:
    uninterrupted = fit(make_dm(shards, num_workers, mode), tmp_path / "a")
    assert len(uninterrupted) == 2 * 120
    before = fit(make_dm(shards, num_workers, mode), tmp_path / "b", stop_after=k)
    assert len(before) == 8 * k
    ckpt = tmp_path / "b" / f"step={k}.ckpt"
    state = torch.load(ckpt, weights_only=False)
    assert state["ShardDataModule"]["position"]["batches"] == k % 15
    assert "normalization" in state["datamodule_hyper_parameters"]
    after = fit(make_dm(shards, num_workers, mode), tmp_path / "c", ckpt_path=str(ckpt))
    assert before + after == uninterrupted
