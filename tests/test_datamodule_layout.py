"""Batch layout on the real EEG shards and on fMRI parcel shards; normalisation from the manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import synthetic
import torch
from fixtures_datamodule import manifest, write_manifest

from neurotrain.datamodules.format.channel_types import TYPE_INDEX
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset

KEYS = {
    "signal": (torch.float32, 3),
    "channel_mask": (torch.bool, 2),
    "positions": (torch.float32, 3),
    "position_mask": (torch.bool, 2),
    "channel_types": (torch.int64, 2),
    "sfreq": (torch.float32, 1),
    "onset_s": (torch.float32, 1),
    "labels": (torch.int64, 1),
}


def check_layout(batch: dict, B: int, C: int, T: int) -> None:
    for key, (dtype, ndim) in KEYS.items():
        assert batch[key].dtype == dtype and batch[key].ndim == ndim, key
        assert batch[key].shape[0] == B, key
    assert batch["signal"].shape == (B, C, T)
    assert batch["positions"].shape == (B, C, 3)
    for key in ("subject", "recording", "sample_id"):
        assert (
            isinstance(batch[key], list)
            and len(batch[key]) == B
            and all(isinstance(v, str) for v in batch[key])
        )
    # padding is zero everywhere and typed 0
    pad = ~batch["channel_mask"]
    assert (batch["channel_types"][pad] == 0).all()
    assert (batch["signal"][pad] == 0).all() and (batch["positions"][~batch["position_mask"]] == 0).all()


def test_real_eeg_batch_layout_values_and_onsets(eeg_shards: Path, example_eeg: Path) -> None:
    import mne

    dm = ShardDataModule(
        [str(eeg_shards)], window_seconds=1.0, batch_size=16, normalize=False, drop_bad_channels=False
    )
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    check_layout(train, 16, 128, 256)
    assert (train["channel_mask"].sum(1) == 128).all() and (train["position_mask"].sum(1) == 128).all()
    assert (train["channel_types"] == TYPE_INDEX["eeg"]).all()
    radius = train["positions"].norm(dim=-1)
    assert ((radius > 0.03) & (radius < 0.2)).all()  # metres on a head
    assert set(train["subject"]) == {"s01"} and (train["labels"] == -1).all()
    assert (train["sfreq"] == 256.0).all()
    assert len(set(train["sample_id"])) == 16

    val = list(dm.val_dataloader())
    assert {s for b in val for s in b["subject"]} == {"s02"}
    # batches kept by the caller are never recycled under it (75 held, more than the buffer pool)
    again = list(dm.val_dataloader())
    assert len(val) > 16 and all(
        torch.equal(x["signal"], y["signal"]) for x, y in zip(val, again, strict=True)
    )
    assert len({x["signal"].data_ptr() for x in val}) == len(val)
    b = val[3]
    raw = mne.io.read_raw_edf(
        example_eeg / "sub-s02/eeg/sub-s02_task-faceO_eeg.edf", preload=True, verbose="error"
    )
    names = manifest(eeg_shards)["channel_sets"][0]["ch_names"]
    for i in (0, 7):
        start = int(round(float(b["onset_s"][i]) * 256))
        expected = raw.get_data(picks=names, start=start, stop=start + 256) * 1e6  # µV
        np.testing.assert_allclose(b["signal"][i].numpy(), expected, rtol=2e-3, atol=0.05)


def test_normalization_comes_from_the_manifest_and_is_recorded(eeg_shards: Path, tmp_path: Path) -> None:
    # A copy of the dataset whose manifest statistics we change: tars hard-linked (a symlink out of
    # the dataset folder is refused by the loader), manifest rewritten.
    copy = tmp_path / "eeg"
    copy.mkdir()
    for tar in eeg_shards.glob("*.tar"):
        os.link(tar, copy / tar.name)
    m = manifest(eeg_shards)
    m["statistics"]["method"] = "mean_std"
    m["statistics"]["per_type"]["eeg"].update(mean=5.0, std=2.0)
    write_manifest(copy, m)

    raw = next(iter(ShardDataModule([str(copy)], window_seconds=1.0, normalize=False).val_dataloader()))
    dm = ShardDataModule([str(copy)], window_seconds=1.0, normalize=True)
    normed = next(iter(dm.val_dataloader()))
    assert raw["sample_id"] == normed["sample_id"]
    torch.testing.assert_close(normed["signal"], (raw["signal"] - 5.0) / 2.0, rtol=1e-5, atol=1e-5)
    # The table is in the hyperparameters (so in every checkpoint) and in the state dict.
    table = dm.hparams["normalization"]["datasets"][0]
    assert table["per_type"]["eeg"] == {"center": 5.0, "scale": 2.0} and table["method"] == "mean_std"
    assert dm.state_dict()["normalization"] == dm.normalization
    # A datamodule rebuilt from those hyperparameters keeps them even when the manifest changes.
    m["statistics"]["per_type"]["eeg"].update(mean=0.0, std=1.0)
    write_manifest(copy, m)
    again = ShardDataModule(**json.loads(json.dumps(dict(dm.hparams))))
    torch.testing.assert_close(next(iter(again.val_dataloader()))["signal"], normed["signal"])

    robust = manifest(eeg_shards)
    robust["statistics"].update(method="robust")
    robust["statistics"]["per_type"]["eeg"].update(median=1.0, iqr=4.0)
    write_manifest(copy, robust)
    rob = next(iter(ShardDataModule([str(copy)], window_seconds=1.0).val_dataloader()))
    torch.testing.assert_close(rob["signal"], (raw["signal"] - 1.0) / 4.0, rtol=1e-5, atol=1e-5)


def test_fmri_parcels_use_the_same_layout(tmp_path: Path) -> None:
    bold = synthetic.write_fmri(tmp_path / "sub-f1_task-rest_bold.nii.gz", tr=2.0)
    atlas = synthetic.write_atlas(tmp_path / "atlas.nii.gz", n_parcels=4)
    out = tmp_path / "fmri"
    shard_dataset([bold], out, atlas=str(atlas), split_ratios=(1.0, 0.0, 0.0))
    dm = ShardDataModule([str(out)], window_seconds=20.0, batch_size=3)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 1  # 40 TRs = 4 windows of 10 TRs, last partial batch dropped
    b = next(iter(dm.train_dataloader()))
    check_layout(b, 3, 4, 10)
    assert (b["channel_types"] == TYPE_INDEX["bold"]).all() and b["position_mask"].all()
    assert torch.allclose(b["sfreq"], torch.tensor(0.5))
    tiles = list(
        ShardDataModule([str(out)], window_seconds=20.0, batch_size=3, val_split="train").val_dataloader()
    )
    assert [round(float(t), 3) for x in tiles for t in x["onset_s"]] == [0.0, 20.0, 40.0, 60.0]
    assert torch.isfinite(b["signal"]).all() and b["signal"].abs().sum() > 0


def test_bad_channels_are_left_out_and_masked(eeg_shards: Path) -> None:
    dm = ShardDataModule([str(eeg_shards)], window_seconds=1.0, batch_size=8)
    bads = {r["subject"]: r["bad_channels"] for r in manifest(eeg_shards)["recordings"]}
    assert bads["s01"] and bads["s02"]  # from the BIDS channels.tsv
    assert dm.setup("fit") is None and dm.c_max == 128 - min(len(b) for b in bads.values())
    for loader, subject in ((dm.train_dataloader(), "s01"), (dm.val_dataloader(), "s02")):
        b = next(iter(loader))
        assert (b["channel_mask"].sum(1) == 128 - len(bads[subject])).all()
        assert (b["position_mask"] == b["channel_mask"]).all()


@pytest.mark.parametrize("verify", [False, True])
def test_channel_type_subset_and_max_channels(eeg_shards: Path, verify: bool) -> None:
    dm = ShardDataModule(
        [str(eeg_shards)],
        window_seconds=0.5,
        batch_size=4,
        max_channels=130,
        channel_types=["eeg"],
        verify=verify,
        drop_bad_channels=False,
    )
    b = next(iter(dm.val_dataloader()))
    check_layout(b, 4, 130, 128)
    assert (b["channel_mask"].sum(1) == 128).all() and not b["channel_mask"][:, 128:].any()


def test_volumes_come_as_their_own_key(tmp_path: Path) -> None:
    t1s = [synthetic.write_t1(tmp_path / f"sub-v{i}_T1w.nii.gz", seed=i) for i in range(3)]
    out = tmp_path / "anat"
    shard_dataset(t1s, out, split_ratios=(1.0, 0.0, 0.0), volume_shape=(24, 28, 24))
    dm = ShardDataModule([str(out)], batch_size=2, val_split="train")
    (b,) = list(dm.train_dataloader())
    assert b["volume"].shape == (2, 24, 28, 24) and b["volume"].dtype == torch.float32
    assert "signal" not in b and b["labels"].tolist() == [-1, -1]
    val = list(dm.val_dataloader())
    assert [v for x in val for v in x["subject"]] == ["v0", "v1", "v2"]
    assert torch.isfinite(val[0]["volume"]).all() and val[0]["volume"].std() > 0.1
