"""Per-subject input layers (MindBridge-like): subjects of different widths and no shared channel
names share one encoder, and a new subject is adapted by training only its layer.

Each synthetic subject records the same two latent sources through its own random mixing into
its own number of channels (6, 9, 12; the new subject 7), named per subject and without
positions: class ``a`` evokes source 0, class ``b`` source 1. Nothing but a subject-specific map
makes the channels of one subject comparable with another's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neurotrain.datamodules import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.models.modules import ClassifierModule
from neurotrain.models.subject_layers import SubjectLayers

SFREQ = 128.0
WIDTHS = {"01": 6, "02": 9, "03": 12}
NEW = ("04", 7)
TINY = {"size": "tiny", "patch_size": 16}
EPOCHS = {"mode": "epochs", "tmin": 0.0, "tmax": 0.5, "label_map": {"a": 0, "b": 1}, "batch_size": 16}


def write_subject(path: Path, subject: str, n_channels: int, seconds: float = 120.0, seed: int = 0) -> Path:
    """A FIF recording: two latent sources mixed into ``n_channels`` channels (module docstring)."""
    import mne

    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    latent = 0.3 * rng.standard_normal((2, n))  # [2, T]
    onsets = np.arange(1.0, seconds - 1.0, 1.0)
    labels = rng.choice(["a", "b"], len(onsets))
    bump = np.sin(np.pi * np.arange(int(0.3 * SFREQ)) / (0.3 * SFREQ))  # a 0.3 s half sine
    for onset, label in zip(onsets, labels, strict=True):
        a = int(round((onset + 0.1) * SFREQ))
        latent[0 if label == "a" else 1, a : a + len(bump)] += 2.0 * bump
    mixing = rng.standard_normal((n_channels, 2))
    data = (mixing @ latent + 0.3 * rng.standard_normal((n_channels, n))) * 10e-6  # volts
    info = mne.create_info([f"S{subject}-{k:02d}" for k in range(n_channels)], SFREQ, "eeg")
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations(list(onsets), [0.0] * len(onsets), list(labels)))
    raw.save(path, overwrite=True, verbose="error")
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("subjects")
    files = [
        write_subject(root / f"sub-{s}_task-ab_raw.fif", s, w, seed=i)
        for i, (s, w) in enumerate(WIDTHS.items())
    ]
    shard_dataset(files, root / "train", segment_seconds=20.0, split_ratios=(1.0, 0.0, 0.0))
    new = write_subject(root / f"sub-{NEW[0]}_task-ab_raw.fif", NEW[0], NEW[1], seed=9)
    shard_dataset([new], root / "new", segment_seconds=20.0, split_ratios=(1.0, 0.0, 0.0))
    return {"train": root / "train", "new": root / "new"}


def trainer(root: Path, epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )


def balanced_accuracy(model: ClassifierModule, dm: ShardDataModule) -> float:
    model.eval()
    correct, counts = np.zeros(2), np.zeros(2)
    with torch.no_grad():
        for batch in dm.val_dataloader():
            pred = model(batch).argmax(-1).numpy()
            y = batch["labels"].numpy()
            for k in (0, 1):
                counts[k] += (y == k).sum()
                correct[k] += ((pred == k) & (y == k)).sum()
    return float((correct / np.maximum(counts, 1)).mean())


@pytest.fixture(scope="module")
def trained(shards: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier with subject layers fitted on subjects 01-03; its checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    model = ClassifierModule(encoder=TINY, subject_layers={"channels": 4}, optimizer={"lr": 3e-3})
    dm = ShardDataModule([str(shards["train"])], val_split="train", **EPOCHS)
    t = trainer(root, 12)
    t.fit(model, dm)
    assert balanced_accuracy(model, dm) > 0.85  # the three subjects share the encoder through their layers
    t.save_checkpoint(root / "multi.ckpt")
    return root / "multi.ckpt"


def test_layers_map_each_subjects_width_to_the_shared_channels(shards: dict[str, Path]) -> None:
    dm = ShardDataModule([str(shards["train"])], val_split="train", **{**EPOCHS, "batch_size": 64})
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    layers = SubjectLayers(sorted(WIDTHS), dm.c_max, 4)
    out = layers(batch)
    assert dm.c_max == max(WIDTHS.values()) and out["signal"].shape == (64, 4, batch["signal"].shape[-1])
    assert out["channel_mask"].all() and not out["position_mask"].any()
    # a subject's map reads only its real channels: padded slots cannot change the output
    noisy = dict(batch, signal=torch.where(batch["channel_mask"][..., None], batch["signal"], 99.0))
    assert torch.allclose(layers(noisy)["signal"], out["signal"])
    with pytest.raises(KeyError, match=r"no subject layer for subject\(s\) \['01'\]"):
        SubjectLayers(["02", "03"], dm.c_max, 4)(batch)


def test_a_new_subject_is_adapted_by_training_only_its_layer_and_the_head(
    trained: Path, shards: dict[str, Path], tmp_path: Path
) -> None:
    halves = {"train": {"time": [[0.0, 60.0]]}, "val": {"time": [[60.0, 120.0]]}}

    def new_subject() -> ShardDataModule:
        return ShardDataModule(
            [str(shards["new"])], train_split="all", val_split="all", selection=halves, **EPOCHS
        )

    dm = new_subject()
    torch.manual_seed(0)
    model = ClassifierModule(
        encoder=TINY,
        subject_layers={"channels": 4},
        adapt_from=str(trained),
        adapt_subjects=[NEW[0]],
        adapt_head=True,
        optimizer={"lr": 3e-2},
    )
    t = trainer(tmp_path, 0)  # set the model up (load, add the layer, freeze) without a step
    t.fit(model, dm)
    before = balanced_accuracy(model, new_subject())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    t = trainer(tmp_path, 25)
    t.fit(model, dm)
    after = balanced_accuracy(model, new_subject())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    head = {k for k in start if k.startswith("head.")}
    assert changed == {f"subject_layers.layers.s_{NEW[0]}.weight", *head}  # the encoder never moved
    assert set(model.subject_layers.subjects) == {*WIDTHS, NEW[0]}
    # 60 s of the new subject (~60 trials) teach its layer; scored on the other 60 s
    assert 0.3 < before < 0.7 and after > 0.8, (before, after)  # measured: 0.5 -> 1.0
    assert model.hparams["subject_layers"]["in_channels"] == max(WIDTHS.values())


def test_adapt_from_needs_its_subjects_and_subject_layers() -> None:
    with pytest.raises(ValueError, match="go together"):
        ClassifierModule(encoder=TINY, subject_layers={"channels": 4}, adapt_from="x.ckpt")
    with pytest.raises(ValueError, match="set subject_layers"):
        ClassifierModule(encoder=TINY, adapt_from="x.ckpt", adapt_subjects=["04"])


def test_the_shipped_recipe_fits_several_subjects_then_adapts_a_new_one(
    shards: dict[str, Path], tmp_path: Path
) -> None:
    from neurotrain.train.run.lightning_cli import build_cli

    common = [
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    multi = build_cli(
        [
            "fit",
            "--config",
            "subject_layers",
            f"--data.datasets=[{shards['train']}]",
            "--data.val_split=train",
        ]
        + common
        + ["--trainer.max_steps=2", "--run_name=multi"]
    )
    assert multi.model.subject_layers.subjects == sorted(WIDTHS)
    ckpt = tmp_path / "multi" / "checkpoints" / "last.ckpt"
    adapt = [
        "fit",
        "--config",
        "subject_layers",
        f"--data.datasets=[{shards['new']}]",
        "--data.val_split=train",
    ]
    adapt += [
        f"--model.adapt_from={ckpt}",
        f'--model.adapt_subjects=["{NEW[0]}"]',
        "--trainer.fast_dev_run=2",
    ]
    cli = build_cli(adapt + common + ["--run_name=adapt"])
    trainable = {n for n, p in cli.model.named_parameters() if p.requires_grad}
    assert trainable == {f"subject_layers.layers.s_{NEW[0]}.weight"}


def test_alignment_puts_subjects_of_different_widths_through_their_layers(shards: dict[str, Path]) -> None:
    from neurotrain.models.modules import AlignmentModule
    from neurotrain.models.modules.base import SIGNAL_KEYS

    dm = ShardDataModule([str(shards["train"])], val_split="train", **{**EPOCHS, "batch_size": 512})
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    batch.update({f"pair_{k}": batch[k] for k in SIGNAL_KEYS})  # the second view: the same channels
    layers = {"channels": 4, "subjects": sorted(WIDTHS), "in_channels": dm.c_max}
    model = AlignmentModule(encoder=TINY, pair="signal", subject_layers=layers, embed_dim=8)
    out = model.compute_loss(batch)
    out["loss"].backward()
    for s in WIDTHS:  # every subject's layer gets a gradient from its own windows
        assert model.subject_layers.layers[f"s_{s}"].weight.grad.abs().sum() > 0
    z = model(batch)
    with torch.no_grad():
        model.subject_layers.layers["s_01"].weight.mul_(-1.0)
    moved = (model(batch) - z).abs().sum(-1) > 1e-6  # [B]
    assert moved.tolist() == [s == "01" for s in batch["subject"]]  # only subject 01's embeddings
