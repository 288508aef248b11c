"""Paired samples for contrastive alignment: stimulus images (``--stimuli``) and two channel-type views."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import synthetic
import torch
from fixtures_datamodule import manifest

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.images import IMAGENET_MEAN, IMAGENET_STD
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.models.modules import AlignmentModule

TINY = {"size": "tiny", "patch_size": 16}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}
FORMATS = {"red": "PNG", "green": "PNG", "blue": "JPEG"}  # both encodings as found on disk
SFREQ = 128.0
BASE_KEYS = {
    "signal",
    "channel_mask",
    "positions",
    "position_mask",
    "channel_types",
    "orientations",
    "orientation_mask",
    "sfreq",
    "onset_s",
    "labels",
    "subject",
    "recording",
    "sample_id",
    "dataset",
}


def write_stimuli(folder: Path, colours: dict[str, tuple[int, int, int]] = COLOURS) -> Path:
    """One small solid-colour image per label: ``<label>.png`` (``.jpg`` for JPEG)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for label, rgb in colours.items():
        fmt = FORMATS.get(label, "PNG")
        Image.new("RGB", (24, 16), rgb).save(folder / f"{label}.{'jpg' if fmt == 'JPEG' else 'png'}", fmt)
    return folder


def cycling_events(seconds: float, labels: list[str], step: float = 1.5) -> list[tuple[float, str]]:
    onsets = np.arange(0.5, seconds - 1.5, step)
    return [(float(t), labels[k % len(labels)]) for k, t in enumerate(onsets)] + [(3.1, "BAD_x")]


def trainer(tmp_path: Path, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **kw,
    )


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two FIF recordings with red/green/blue events (and a BAD_ annotation), sharded with --stimuli."""
    root = tmp_path_factory.mktemp("paired")
    stim = write_stimuli(root / "stimuli")
    events = cycling_events(40.0, list(COLOURS))
    files = [
        synthetic.write_fif(
            root / f"sub-{s}_task-img_raw.fif", seconds=40.0, sfreq=SFREQ, seed=i, events=events
        )
        for i, s in enumerate(["01", "02"])
    ]
    out = root / "shards"
    shard_dataset(
        files, out, segment_seconds=20.0, split_ratios=(1.0, 0.0, 0.0), dtype="float32", stimuli=stim
    )
    return out


def members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def test_sharding_stores_each_image_once_per_segment_and_events_name_it(image_shards: Path) -> None:
    m = manifest(image_shards)
    assert m["options"]["stimuli"].endswith("stimuli")
    assert all(r["stimuli"] == 3 for r in m["recordings"])
    tar = image_shards / m["shards"][0]["name"]
    files = members(tar)
    key = sorted(n.split(".")[0] for n in files)[0]
    events = json.loads(files[f"{key}.events.json"])
    images = sorted(n.split(".", 1)[1] for n in files if n.startswith(f"{key}.image."))
    assert images == ["image.0.png", "image.1.png", "image.2.jpg"]  # three stimuli, once each
    stim = Path(m["options"]["stimuli"])
    for ev in events:
        if ev["label"] == "BAD_x":
            assert "image" not in ev  # annotations get no image
            continue
        assert ev["stim_file"] == f"{ev['label']}.{'jpg' if FORMATS[ev['label']] == 'JPEG' else 'png'}"
        assert files[f"{key}.{ev['image']}"] == (stim / ev["stim_file"]).read_bytes()  # bytes as found


def test_stim_file_from_bids_events_tsv_and_a_missing_one_fails_cleanly(tmp_path: Path) -> None:
    bids = synthetic.write_bids_eeg(tmp_path / "bids", ["01"], seconds=12.0)
    stim = write_stimuli(tmp_path / "stim" / "set1", {"face": (200, 200, 0), "house": (0, 90, 90)})
    tsv = next(bids.rglob("*_events.tsv"))

    def set_stim_files(refs: dict[str, str]) -> None:
        with tsv.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        for row in rows:
            row["stim_file"] = refs.get(row["trial_type"], "n/a")
        with tsv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)

    set_stim_files({"face": "set1/face.png", "house": "set1/house.png"})
    out = tmp_path / "ok"
    shard_dataset([bids], out, segment_seconds=12.0, min_segment_seconds=5.0, stimuli=stim.parent)
    files = members(next(out.glob("*.tar")))
    events = json.loads(next(v for k, v in files.items() if k.endswith(".events.json")))
    assert {ev["label"]: ev.get("stim_file") for ev in events} == {
        "face": "set1/face.png",
        "house": "set1/house.png",
        "BAD_x": None,
    }

    set_stim_files({"face": "set1/face.png", "house": "set1/gone.png"})
    bad = tmp_path / "bad"
    with pytest.raises(ShardError, match=r"event 'house' at 5\.000 s.*not found: .*set1/gone\.png"):
        shard_dataset([bids], bad, segment_seconds=12.0, min_segment_seconds=5.0, stimuli=stim.parent)
    assert not list(bad.glob("*.tar")) and not (bad / "manifest.json").exists()  # nothing half-written


def test_an_image_that_cannot_be_decoded_names_the_file_and_writes_nothing(tmp_path: Path) -> None:
    stim = write_stimuli(tmp_path / "stimuli")
    (stim / "green.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)  # truncated
    events = cycling_events(20.0, list(COLOURS))
    raw = synthetic.write_fif(tmp_path / "sub-01_task-img_raw.fif", seconds=20.0, sfreq=SFREQ, events=events)
    out = tmp_path / "shards"
    with pytest.raises(
        ShardError, match=r"sub-01_task-img_raw\.fif.*stimulus .*green\.png is not a readable image"
    ):
        shard_dataset([raw], out, segment_seconds=20.0, split_ratios=(1.0, 0.0, 0.0), stimuli=stim)
    assert not list(out.glob("*.tar")) and not (out / "manifest.json").exists()


def unnormalise_mean_rgb(image: torch.Tensor) -> np.ndarray:
    """[B, 3, S, S] ImageNet-normalised -> mean colour per image [B, 3] in 0..255."""
    x = image.numpy() * IMAGENET_STD[None, :, None, None] + IMAGENET_MEAN[None, :, None, None]
    return x.mean(axis=(2, 3)) * 255.0


def image_epochs(folder: Path, **kw) -> ShardDataModule:
    """1 s epochs with their stimulus images, 4 per batch unless ``kw`` says otherwise."""
    args = {"mode": "epochs", "tmin": 0.0, "tmax": 1.0, "batch_size": 4, "images": True}
    return ShardDataModule([folder], **{**args, **kw})


def test_batches_carry_the_stimulus_of_each_epoch(image_shards: Path) -> None:
    dm = image_epochs(image_shards, batch_size=5, image_size=48)
    dm.setup("fit")
    names = {v: k for k, v in dm.label_map.items()}
    assert set(names.values()) == set(COLOURS)
    n = 0
    for batch in dm.train_dataloader():
        assert (
            batch["image"].shape == (len(batch["labels"]), 3, 48, 48)
            and batch["image"].dtype == torch.float32
        )
        colours = unnormalise_mean_rgb(batch["image"])
        for rgb, label in zip(colours, batch["labels"].tolist(), strict=True):
            np.testing.assert_allclose(rgb, COLOURS[names[label]], atol=4.0)  # JPEG: a few levels off
            n += 1
    assert n >= 20
    with pytest.raises(ValueError, match="mode='epochs'"):
        ShardDataModule([image_shards], images=True)


def test_images_need_every_kept_label_to_have_one(tmp_path: Path) -> None:
    stim = write_stimuli(tmp_path / "stim", {"red": COLOURS["red"]})
    raw = synthetic.write_fif(
        tmp_path / "sub-01_raw.fif", seconds=20.0, sfreq=SFREQ, events=cycling_events(20.0, ["red", "grey"])
    )
    with pytest.raises(ShardError, match=r"no event has a stimulus image .*grey\.png"):
        shard_dataset([raw], tmp_path / "wrong", segment_seconds=20.0, stimuli=tmp_path)  # a wrong DIR
    out = tmp_path / "shards"
    shard_dataset([raw], out, segment_seconds=20.0, split_ratios=(1.0, 0.0, 0.0), stimuli=stim)
    dm = image_epochs(out, image_size=32)
    with pytest.raises(ValueError, match="without a stimulus image: 'grey'"):
        next(iter(dm.train_dataloader()))
    only_red = image_epochs(out, image_size=32, label_map={"red": 0})
    batch = next(iter(only_red.train_dataloader()))
    np.testing.assert_allclose(unnormalise_mean_rgb(batch["image"]), [COLOURS["red"]] * 4, atol=1.0)


def test_alignment_with_images_fits_and_logs_retrieval(image_shards: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = image_epochs(image_shards, image_size=64, val_split="train")
    model = AlignmentModule(encoder=TINY, pair="image", image_model="resnet18", retrieval_k=[1])
    run = trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=2)
    run.fit(model, datamodule=dm)
    assert {"val/top1_a2b", "val/top1_b2a"} <= set(run.callback_metrics)
    assert run.global_step == 3


# ------------------------------------------------------------------ two modalities of one recording
EEG = ["Fp1", "Fp2", "C3", "C4", "O1"]
MAG = ["MEG0111", "MEG0121", "MEG0131"]


@pytest.fixture(scope="module")
def eeg_meg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """One FIF with 5 EEG + 3 magnetometer channels and labelled events; returns (shards, raw in µV/fT)."""
    import mne

    root = tmp_path_factory.mktemp("eeg_meg")
    rng = np.random.default_rng(3)
    n = int(30 * SFREQ)
    data = np.concatenate(
        [20e-6 * rng.standard_normal((len(EEG), n)), 100e-15 * rng.standard_normal((len(MAG), n))]
    )
    info = mne.create_info(EEG + MAG, SFREQ, ["eeg"] * len(EEG) + ["mag"] * len(MAG))
    raw = mne.io.RawArray(data, info, verbose="error")
    onsets = np.arange(1.0, 28.0, 1.25)
    raw.set_annotations(
        mne.Annotations(onsets, [0.0] * len(onsets), [("a", "b")[k % 2] for k in range(len(onsets))])
    )
    path = root / "sub-01_task-two_raw.fif"
    raw.save(path, verbose="error")
    out = root / "shards"
    shard_dataset([path], out, segment_seconds=30.0, split_ratios=(1.0, 0.0, 0.0), dtype="float32")
    scaled = np.concatenate([data[: len(EEG)] * 1e6, data[len(EEG) :] * 1e15]).astype(np.float32)
    return out, scaled


def test_pair_channel_types_view_the_same_window(eeg_meg: tuple[Path, np.ndarray]) -> None:
    out, raw = eeg_meg
    dm = ShardDataModule(
        [out],
        mode="epochs",
        tmin=0.0,
        tmax=0.5,
        batch_size=6,
        normalize=False,
        channel_types=["eeg"],
        pair_channel_types=["mag"],
    )
    batch = next(iter(dm.train_dataloader()))
    B, T = len(batch["labels"]), int(0.5 * SFREQ)
    assert batch["signal"].shape == (B, len(EEG), T) and batch["pair_signal"].shape == (B, len(MAG), T)
    assert batch["pair_channel_mask"].all() and not batch["pair_position_mask"].any()  # no MEG positions here
    assert (
        set(batch["pair_channel_types"].unique().tolist())
        == {int(batch["pair_channel_types"][0, 0])}
        != set(batch["channel_types"].unique().tolist())
    )
    torch.testing.assert_close(batch["pair_sfreq"], batch["sfreq"])
    for b in range(B):
        s = int(round(float(batch["onset_s"][b]) * SFREQ))
        np.testing.assert_allclose(
            batch["signal"][b].numpy(), raw[: len(EEG), s : s + T], rtol=1e-5, atol=1e-3
        )
        np.testing.assert_allclose(
            batch["pair_signal"][b].numpy(), raw[len(EEG) :, s : s + T], rtol=1e-5, atol=1e-3
        )


def test_alignment_across_channel_types_fits(eeg_meg: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    torch.manual_seed(0)
    out, _ = eeg_meg
    dm = ShardDataModule(
        [out],
        mode="epochs",
        tmin=0.0,
        tmax=1.0,
        batch_size=4,
        channel_types=["eeg"],
        pair_channel_types=["mag"],
        val_split="train",
    )
    model = AlignmentModule(encoder=TINY, pair="signal", retrieval_k=[1])
    run = trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2)
    run.fit(model, datamodule=dm)
    assert {"val/top1_a2b", "val/top1_b2a"} <= set(run.callback_metrics)


def test_options_off_batches_have_no_paired_keys(
    image_shards: Path, eeg_meg: tuple[Path, np.ndarray]
) -> None:
    for folder in (image_shards, eeg_meg[0]):
        dm = ShardDataModule([folder], mode="epochs", tmin=0.0, tmax=1.0, batch_size=4)
        assert set(next(iter(dm.train_dataloader()))) == BASE_KEYS
    windows = ShardDataModule([image_shards], window_seconds=2.0, batch_size=4, pair_channel_types=["eeg"])
    batch = next(iter(windows.train_dataloader()))
    assert set(batch) == BASE_KEYS | {
        f"pair_{k}"
        for k in (
            "signal",
            "channel_mask",
            "positions",
            "position_mask",
            "channel_types",
            "orientations",
            "orientation_mask",
            "sfreq",
        )
    }
    torch.testing.assert_close(batch["pair_signal"], batch["signal"])  # same types: the same view
