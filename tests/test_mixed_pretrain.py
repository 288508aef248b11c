"""One pretraining run over a mix of four datasets at four rates (``mixed_pretrain.yaml``).

Tiny stand-ins for the config's four datasets (``tests/mixed_corpus.py``, written by MNE) sharded
by ``shard_dataset``: EEG at 256 Hz with 10-20 positions, a 4-channel EEG with generic names and no
positions as EDF at 250 Hz, iEEG-like ECoG at 1000 Hz, and simulated MEG (``synthetic.write_meg_fif``
at 200 Hz, its 16 strongest magnetometers and 4 EEG kept). The config's data section (``sfreq``,
``weights``, ``channel_types``, ``window_seconds``) loads them; its model section, shrunk, trains
on them, and its held-out loss falls on each of the four.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import yaml
from mixed_corpus import (
    SECONDS,
    write_eeg_with_positions,
    write_four_channel_edf,
    write_ieeg,
    write_small_meg,
)

from neurotrain.datamodules.format.channel_types import type_index
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.models.modules import PretrainModule

CONFIG = Path(__file__).resolve().parents[1] / "train" / "configs" / "mixed_pretrain.yaml"
TRAIN_S, VAL_S = 28.0, (28.0, SECONDS)  # train on each recording's first 28 s, score on the rest


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Shard folders ``eeg``, ``eeg4``, ``ieeg``, ``meg`` (4 s segments, every subject in train)."""
    root = tmp_path_factory.mktemp("mixed")
    sources = {
        "eeg": write_eeg_with_positions(root / "eeg_raw.fif"),
        "eeg4": write_four_channel_edf(root / "four.edf"),
        "ieeg": write_ieeg(root / "ieeg_raw.fif"),
        "meg": write_small_meg(root / "meg_raw.fif"),
    }
    out = []
    for name, src in sources.items():
        shard_dataset(
            [src],
            root / name,
            segment_seconds=4.0,
            min_segment_seconds=1.0,
            split_ratios=(1.0, 0.0, 0.0),
            noisy_threshold=0.0,  # simulated sensors near the dipoles are not noisy
        )
        out.append(root / name)
    return out


def config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def datamodule(folders: list[Path], **overrides: Any) -> ShardDataModule:
    """The config's data section on the test's shards (CPU-sized: no worker threads)."""
    data = {**config()["data"], "datasets": [str(f) for f in folders], "num_workers": 0, **overrides}
    return ShardDataModule(**data)


def test_config_mixes_four_datasets_at_one_rate_with_equal_weights() -> None:
    data = config()["data"]
    assert len(data["datasets"]) == 4 and data["weights"] == [0.25] * 4
    assert data["sfreq"] == 256


def test_one_batch_mixes_all_four_datasets_at_the_config_rate(mixed: list[Path]) -> None:
    rate = config()["data"]["sfreq"]
    dm = datamodule(mixed, batch_size=32)
    dm.setup("fit")
    assert dm.dataset_names == ["eeg", "eeg4", "ieeg", "meg"]
    batch = next(iter(dm.train_dataloader()))
    T = int(round(config()["data"]["window_seconds"] * rate))
    assert batch["signal"].shape[-1] == T and torch.all(batch["sfreq"] == rate)
    ds = batch["dataset"]
    assert set(ds.tolist()) == {0, 1, 2, 3}
    real = batch["channel_mask"]
    known = batch["position_mask"]
    four = ds == 1
    assert (real[four].sum(dim=1) == 4).all()
    assert not known[four].any()  # no positions: the encoder's unknown-position embedding
    for d in (0, 2, 3):  # positions from the montage, the ECoG strip, MNE's MEG sensors
        rows = ds == d
        assert torch.equal(known[rows], real[rows])
    meg_types = batch["channel_types"][ds == 3]
    assert (meg_types == type_index("mag")).any() and (meg_types == type_index("eeg")).any()
    assert (batch["channel_types"][ds == 2][real[ds == 2]] == type_index("ecog")).all()
    assert torch.isfinite(batch["signal"]).all()


def test_different_rates_without_sfreq_is_an_error_naming_each_dataset(mixed: list[Path]) -> None:
    dm = datamodule(mixed, sfreq=None)
    with pytest.raises(ValueError, match="different sampling rates") as err:
        dm.setup("fit")
    text = str(err.value)
    for folder, rate in zip(mixed, ("256 Hz", "250 Hz", "1000 Hz", "200 Hz"), strict=True):
        assert f"{folder}: {rate}" in text
    assert "sfreq" in text


def model() -> PretrainModule:
    """The config's model section with a smaller encoder (CPU seconds, not minutes)."""
    args = dict(config()["model"]["init_args"])
    args["encoder"] = {**args["encoder"], "dim": 32, "depth": 2, "heads": 2}
    args["optimizer"] = {**args["optimizer"], "lr": 3e-3, "warmup_steps": 5}
    return PretrainModule(**args)


def held_out_losses(trainer: pl.Trainer, module: PretrainModule, dm: ShardDataModule) -> dict[str, float]:
    (metrics,) = trainer.validate(module, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in metrics.items() if k.startswith("val/loss/")}


def test_one_model_loss_falls_on_every_dataset_of_the_mix(
    mixed: list[Path], tmp_path: Path, one_thread: None
) -> None:
    selection = {"train": {"time": [[0.0, TRAIN_S]]}, "val": {"time": [list(VAL_S)]}}
    dm = datamodule(mixed, batch_size=8, train_split="all", val_split="all", selection=selection)
    torch.manual_seed(0)
    module = model()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=60,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    eval_trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    before = held_out_losses(eval_trainer, module, dm)
    assert set(before) == {f"val/loss/{n}" for n in ("eeg", "eeg4", "ieeg", "meg")}
    trainer.fit(module, datamodule=dm)
    assert {f"train/loss/{n}" for n in ("eeg", "eeg4", "ieeg", "meg")} <= set(trainer.callback_metrics)
    after = held_out_losses(eval_trainer, module, dm)
    for name, loss in before.items():
        assert after[name] < 0.8 * loss, f"{name}: held-out loss {loss:.3f} -> {after[name]:.3f}"
