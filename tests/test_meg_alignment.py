"""EEG <-> MEG alignment on one simulated recording: ``AlignmentModule(pair="signal")`` with one
encoder per view (EEG; MEG through ``pair_channel_types``), trained on the first 80 s and scored
by top-k retrieval on the 20 held-out 1 s windows of the last 20 s (contiguous blocks of whole
segments: no window is shared), against a control trained on shuffled pairs.

Measured (seed 0, 200 steps on CPU, one thread, N = 20 held-out windows, chance top-1 = 0.05,
top-5 = 0.25): true pairs top-1 0.95 / top-5 1.00 in both directions (test InfoNCE loss 0.31);
shuffled pairs top-1 0.05 / top-5 0.25 (loss 2.50, ln 16 = 2.77 at chance). Asserted: top-1 at
least 10x chance and top-5 >= 0.8 both ways; the control at most 4x chance and top-5 <= 0.5.
The MEG view is the 102 magnetometers (``pair_channel_types=["mag"]``) to keep the slow test near
a minute; the smoke test trains on magnetometers and gradiometers together.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import synthetic
import torch

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.models.modules.alignment import AlignmentModule

ENCODER = {"size": "tiny", "patch_size": 50}  # 1 s windows at 100 Hz: 2 patches per channel


class ShuffledPairs(AlignmentModule):
    """The control: in training, each window's pair view is another window's (rolled by one)."""

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.training:
            batch = {
                k: v.roll(1, 0) if k.startswith("pair_") and isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
        return super().compute_loss(batch)


def datamodule(shards: Path, pair_types: list[str], seconds: float) -> ShardDataModule:
    """EEG view + MEG view of the same 1 s windows; train on [0, seconds - 20), test on the rest."""
    return ShardDataModule(
        [str(shards)],
        window_seconds=1.0,
        batch_size=16,
        train_split="all",
        val_split="all",
        test_split="all",
        channel_types=["eeg"],
        pair_channel_types=pair_types,
        selection={"train": {"time": [[0.0, seconds - 20.0]]}, "test": {"time": [[seconds - 20.0, seconds]]}},
        shuffle_buffer=256,
        seed=0,
    )


def fit_and_score(module: AlignmentModule, dm: ShardDataModule, steps: int) -> dict[str, float]:
    """Train ``steps`` optimizer steps, then the module's own test retrieval (``test/top{k}_*``)."""
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    (scores,) = trainer.test(module, dataloaders=dm.test_dataloader(), verbose=False)
    return scores


def test_alignment_trains_on_eeg_and_meg_views(tmp_path: Path) -> None:
    """Smoke test: a few steps move both encoders, the MEG one's orientation map included."""
    src = synthetic.write_meg_fif(tmp_path / "sim_raw.fif", seconds=40.0, sfreq=100.0)
    shards = tmp_path / "shards"
    shard_dataset([src], shards, segment_seconds=10.0, split_ratios=(1.0, 0.0, 0.0), noisy_threshold=0.0)
    dm = datamodule(shards, ["mag", "grad"], 40.0)  # 20 training windows: one batch
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pair_orientation_mask"].all() and not batch["orientation_mask"].any()
    pl.seed_everything(0)
    module = AlignmentModule(encoder=ENCODER, pair="signal", embed_dim=32, optimizer={"lr": 3e-3})
    eeg_map = module.encoder.orientation.proj.weight.detach().clone()
    scores = fit_and_score(module, dm, steps=3)
    assert set(scores) >= {"test/loss", "test/top1_a2b", "test/top1_b2a", "test/top5_a2b"}
    assert torch.isfinite(torch.tensor(scores["test/loss"]))
    assert module.pair_encoder.orientation.proj.weight.abs().sum() > 0  # MEG normals were used
    torch.testing.assert_close(module.encoder.orientation.proj.weight, eeg_map)  # EEG has none


@pytest.mark.slow
def test_eeg_meg_retrieval_beats_chance_and_shuffled_pairs_do_not(tmp_path: Path, one_thread: None) -> None:
    seconds = 100.0
    src = synthetic.write_meg_alignment_fif(tmp_path / "sim_raw.fif", seconds=seconds, sfreq=100.0)
    shards = tmp_path / "shards"
    shard_dataset([src], shards, segment_seconds=10.0, split_ratios=(1.0, 0.0, 0.0), noisy_threshold=0.0)
    dm = datamodule(shards, ["mag"], seconds)
    dm.setup("fit")
    dm.setup("test")
    n_test = sum(1 for batch in dm.test_dataloader() for _ in batch["sample_id"])
    assert n_test == 20
    chance = 1.0 / n_test

    def run(cls: type[AlignmentModule]) -> dict[str, float]:
        pl.seed_everything(0)
        module = cls(encoder=ENCODER, pair="signal", embed_dim=32, optimizer={"lr": 3e-3, "warmup_steps": 5})
        return fit_and_score(module, dm, steps=200)

    aligned = run(AlignmentModule)
    for way in ("a2b", "b2a"):  # EEG -> MEG and MEG -> EEG: at least 10x chance
        assert aligned[f"test/top1_{way}"] >= 10 * chance, aligned
        assert aligned[f"test/top5_{way}"] >= 0.8, aligned
    control = run(ShuffledPairs)
    for way in ("a2b", "b2a"):  # near chance: at most 4 of 20 by luck
        assert control[f"test/top1_{way}"] <= 4 * chance, control
        assert control[f"test/top5_{way}"] <= 0.5, control
