"""``neurotrain shard --split-by stimulus``: every repeat of one image in one split, every
recording in every stage, and a stage's epochs only those of its split's images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic_paired import write_paired_dataset

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.stimulus_splits import assign_stimulus_splits, stimulus_names

RATIOS = (0.6, 0.2, 0.2)


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("paired")
    ds = write_paired_dataset(root, n_images=20, repeats=2)
    out = root / "shards"
    shard_dataset(
        [ds.bids_root],
        out,
        stimuli=ds.stimuli,
        split_by="stimulus",
        split_ratios=RATIOS,
        segment_seconds=20.0,
        dtype="float32",
    )
    return ds, out


def epochs(out: Path, **kw) -> ShardDataModule:
    return ShardDataModule([out], mode="epochs", tmin=0.0, tmax=0.5, images=True, image_size=32, **kw)


def test_manifest_records_each_image_once_and_every_recording_in_every_stage(paired) -> None:
    ds, out = paired
    m = json.loads((out / "manifest.json").read_text())
    of = m["splits"]["stimuli"]
    assert m["splits"]["by"] == "stimulus" and m["splits"]["seed"] == 0
    assert sorted(of) == sorted(f"{n}.png" for n in ds.names)  # every image, by its file name
    assert m["splits"]["counts"] == {"train": 12, "val": 4, "test": 4}
    assert {e["split"] for e in m["shards"]} == {"all"} and {r["split"] for r in m["recordings"]} == {"all"}
    assert m["statistics"]["split"] == "all"
    # the same folder and seed give the same split; another seed another one
    assert assign_stimulus_splits(stimulus_names(ds.stimuli), RATIOS, 0) == of
    assert assign_stimulus_splits(stimulus_names(ds.stimuli), RATIOS, 1) != of


def test_no_test_image_is_in_any_training_epoch(paired) -> None:
    ds, out = paired
    of = json.loads((out / "manifest.json").read_text())["splits"]["stimuli"]
    dm = epochs(out, batch_size=16)
    shown: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for stage in ("train", "val", "test"):
        table = dm.epoch_stimuli(stage)
        names = [table[sid] for batch in dm.eval_dataloader(stage) for sid in batch["sample_id"]]
        shown[stage], counts[stage] = set(names), len(names)
        assert {of[n] for n in names} == {stage}  # only the stage's own images
    assert not shown["train"] & shown["test"] and not shown["train"] & shown["val"]
    # every presentation is used: 2 subjects x 2 repeats of each image, all images
    assert counts == {"train": 12 * 4, "val": 4 * 4, "test": 4 * 4}
    # both recordings feed every stage (the split is by image, not by subject)
    for stage in ("train", "test"):
        subjects = {s for batch in dm.eval_dataloader(stage) for s in batch["subject"]}
        assert subjects == {"01", "02"}


def test_the_shuffled_training_stream_holds_only_training_images(paired) -> None:
    _, out = paired
    of = json.loads((out / "manifest.json").read_text())["splits"]["stimuli"]
    dm = epochs(out, batch_size=8)
    table = dm.epoch_stimuli("train")
    dm.setup("fit")
    seen = {table[sid] for batch in dm.train_dataloader() for sid in batch["sample_id"]}
    assert seen and {of[n] for n in seen} == {"train"}


def test_split_by_stimulus_needs_stimuli_and_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split_by stimulus needs --stimuli"):
        ShardOptions(split_by="stimulus")
    empty = tmp_path / "stim"
    empty.mkdir()
    with pytest.raises(ShardError, match="no .png/.jpg/.jpeg image"):
        stimulus_names(empty)


def test_the_shard_command_takes_split_by_stimulus(paired, tmp_path: Path, capsys) -> None:
    from neurotrain.train.cli import main

    ds, out = paired
    again = tmp_path / "again"
    args = [
        "shard",
        str(ds.bids_root),
        "--out",
        str(again),
        "--stimuli",
        str(ds.stimuli),
        "--split-by",
        "stimulus",
    ]
    assert main([*args, "--split", "0.6", "0.2", "0.2", "--segment-seconds", "20", "--dtype", "float32"]) == 0
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["splits"] == json.loads((out / "manifest.json").read_text())["splits"]
    assert manifest["options"]["split_by"] == "stimulus"
    bad = ["shard", str(ds.bids_root), "--out", str(tmp_path / "x"), "--split-by", "stimulus"]
    assert main(bad) != 0
    assert "split_by stimulus needs --stimuli" in capsys.readouterr().err
    assert not (tmp_path / "x" / "manifest.json").exists()
