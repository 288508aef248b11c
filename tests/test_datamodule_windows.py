"""Event epochs with labels, mixed montages in one batch, weighted mixing, window counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synthetic
import torch
from fixtures_datamodule import ids, manifest, synthetic_shards

from neurotrain.datamodules.loading.datamodule import ShardDataModule

EVENTS = [
    (2.0, "face"),
    (5.0, "house"),
    (9.0, "checker"),
    (19.9, "face"),
    (25.0, "house"),
    (30.0, "BAD_break"),
]


def test_event_epochs_labels_onsets_and_values(tmp_path: Path) -> None:
    out = synthetic_shards(tmp_path, "ev", ["a"], seconds=40.0, events=EVENTS)
    dm = ShardDataModule(
        [str(out)],
        mode="epochs",
        tmin=-0.1,
        tmax=0.5,
        label_map={"face": 0, "house": 1},
        normalize=False,
        batch_size=8,
        val_split="train",
    )
    (b,) = list(dm.val_dataloader())
    # 19.9 s "face" crosses the 20 s segment edge and checker/BAD_break are not in the map: dropped
    assert b["labels"].tolist() == [0, 1, 1]
    assert b["onset_s"].tolist() == pytest.approx([1.9, 4.9, 24.9], abs=1 / 128)
    assert b["signal"].shape == (3, 8, 77)
    raw = synthetic.make_raw(seconds=40.0, seed=0, events=EVENTS)
    for i in range(3):
        start = int(round(float(b["onset_s"][i]) * 128))
        np.testing.assert_allclose(
            b["signal"][i].numpy(), raw.get_data(start=start, stop=start + 77) * 1e6, rtol=1e-5
        )
    # Without a map every label of the manifest counts, numbered in sorted order.
    dm = ShardDataModule([str(out)], mode="epochs", tmin=0.0, tmax=0.5, batch_size=8, val_split="train")
    (b,) = list(dm.val_dataloader())
    assert dm.label_map == {"checker": 0, "face": 1, "house": 2}
    assert b["labels"].tolist() == [1, 2, 0, 2]
    # Training draws the same epochs in a shuffled order (last partial batch dropped).
    dm = ShardDataModule([str(out)], mode="epochs", tmin=0.0, tmax=0.5, batch_size=2, seed=3)
    assert len(dm.train_dataloader()) == 2 and len(ids(dm.train_dataloader())) == 4


def test_real_eeg_face_house_epochs(eeg_shards: Path) -> None:
    lm = {"face-upright": 0, "face-inverted": 0, "house-upright": 1, "house-inverted": 1}
    dm = ShardDataModule([str(eeg_shards)], mode="epochs", tmin=0.0, tmax=0.8, label_map=lm, batch_size=64)
    val = list(dm.val_dataloader())
    labels = torch.cat([b["labels"] for b in val])
    (rec,) = [r for r in manifest(eeg_shards)["recordings"] if r["subject"] == "s02"]
    n_events = sum(rec["event_counts"][k] for k in lm)
    # 0.8 s epochs: some overlap bad spans, some hold the next stimulus (0.76 s apart at least);
    # of the others, a few cross segment edges
    rejected = dm.rejected_epochs("val")
    assert rejected["bad_span"] > 0 and rejected["next_event"] > 0
    assert 0.95 * n_events <= labels.numel() + sum(rejected.values()) <= n_events
    assert set(labels.tolist()) == {0, 1} and abs(labels.float().mean() - 0.5) < 0.05
    assert val[0]["signal"].shape[1:] == (dm.c_max, 205)
    assert (val[0]["channel_mask"].sum(1) == 128 - len(rec["bad_channels"])).all()
    assert len({i for b in val for i in b["sample_id"]}) == labels.numel()


NAMES_A = synthetic.CHANNELS_1020[:8]  # Fp1 … P4
NAMES_B = ["Cz", "Pz", "C3", "O1"]  # two of them absent from A


@pytest.fixture(scope="module")
def two_montages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("montages")
    a = synthetic_shards(root, "ma", ["a1", "a2"], names=NAMES_A, seconds=40.0)
    b = synthetic_shards(root, "mb", ["b1", "b2"], names=NAMES_B, seconds=40.0)
    return a, b


def test_mixed_montages_share_a_batch_with_correct_masks(two_montages: tuple[Path, Path]) -> None:
    a, b = two_montages
    dm = ShardDataModule(
        [str(a), str(b)], window_seconds=1.0, batch_size=32, shuffle_buffer=320, normalize=False
    )
    batch = next(iter(dm.train_dataloader()))
    from_b = torch.tensor(["task-mb" in r for r in batch["recording"]])
    assert 0 < from_b.sum() < 32  # both datasets in one batch
    n_real = batch["channel_mask"].sum(1)
    assert (n_real[from_b] == 4).all() and (n_real[~from_b] == 8).all()
    assert (batch["position_mask"] == batch["channel_mask"]).all()
    assert (batch["signal"][from_b][:, 4:] == 0).all() and (
        batch["signal"][from_b][:, :4].abs().sum(-1) > 0
    ).all()


def test_channels_by_name_align_slots_across_montages(two_montages: tuple[Path, Path]) -> None:
    a, b = two_montages
    wanted = ["Cz", "C3", "Fp1", "O1", "Pz"]
    dm = ShardDataModule(
        [str(a), str(b)],
        window_seconds=1.0,
        batch_size=32,
        shuffle_buffer=320,
        channels=wanted,
        normalize=False,
    )
    batch = next(iter(dm.train_dataloader()))
    from_b = torch.tensor(["task-mb" in r for r in batch["recording"]])
    mask_a = torch.tensor([False, True, True, False, False])
    mask_b = torch.tensor([True, True, False, True, True])
    assert (batch["channel_mask"][~from_b] == mask_a).all() and (
        batch["channel_mask"][from_b] == mask_b
    ).all()
    # C3 sits in slot 1 for both montages, with the same position
    c3 = batch["positions"][:, 1]
    assert torch.allclose(c3, c3[0].expand_as(c3))
    # and its values are the recording's C3 (subject index = seed of the synthetic recording)
    i = int(torch.nonzero(from_b)[0])
    seed = ["b1", "b2"].index(batch["subject"][i])
    raw = synthetic.make_raw(seconds=40.0, seed=seed, names=NAMES_B)
    start = int(round(float(batch["onset_s"][i]) * 128))
    np.testing.assert_allclose(
        batch["signal"][i, 1].numpy(),
        raw.get_data(picks=["C3"], start=start, stop=start + 128)[0] * 1e6,
        rtol=1e-5,
    )


def test_weights_set_each_dataset_share(two_montages: tuple[Path, Path]) -> None:
    a, b = two_montages
    dm = ShardDataModule([str(a), str(b)], weights=[3.0, 1.0], window_seconds=1.0, batch_size=8)
    recs = [r for batch in dm.train_dataloader() for r in batch["recording"]]
    share_b = np.mean(["task-mb" in r for r in recs])
    assert abs(share_b - 0.25) < 0.03
    assert len(dm.train_dataloader()) == 160 // 8  # epoch length stays the datasets' total
