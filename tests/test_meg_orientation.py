"""MEG coil orientations: carried in batches (``orientations``, ``orientation_mask``, and the
``pair_*`` view) as MNE's info has them, and used by the signal encoder only where they exist;
encoder weights from before ``use_orientation`` still load strictly and give the same outputs."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import synthetic
import torch

from neurotrain.datamodules.format.channel_types import TYPE_INDEX
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.models.checkpoint_io import load_encoder_weights
from neurotrain.models.modules.alignment import AlignmentModule
from neurotrain.models.signal_encoder import SignalEncoder
from neurotrain.models.synthetic import synthetic_signal_batch


def meg_batch() -> dict[str, torch.Tensor]:
    """Two samples of 6 channels: 0-3 MEG (unit normals known), 4-5 EEG (none); sample 1 padded."""
    batch = synthetic_signal_batch(batch_size=2, channels=6)
    g = torch.Generator().manual_seed(1)
    normals = torch.nn.functional.normalize(torch.randn(2, 6, 3, generator=g), dim=-1)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, :4] = True
    batch["orientations"] = normals * mask[..., None]
    batch["orientation_mask"] = mask
    batch["channel_types"][:, :4] = TYPE_INDEX["mag"]
    return batch


@pytest.fixture
def trained() -> SignalEncoder:
    """A tiny encoder whose orientation map is non-zero, as after training."""
    torch.manual_seed(0)
    encoder = SignalEncoder(size="tiny", patch_size=16).eval()
    torch.nn.init.normal_(encoder.orientation.proj.weight, std=0.5)
    return encoder


def test_orientation_changes_meg_channels_and_never_eeg(trained: SignalEncoder) -> None:
    batch = meg_batch()
    out = trained(batch)
    turned = {key: value.clone() for key, value in batch.items()}
    turned["orientations"][0, 1] = -batch["orientations"][0, 1]  # one MEG coil flipped
    changed = trained(turned)
    assert not torch.allclose(changed.tokens[0, 1], out.tokens[0, 1])
    assert not torch.allclose(changed.pooled[0], out.pooled[0])
    torch.testing.assert_close(changed.pooled[1], out.pooled[1])  # the other sample is untouched

    # EEG channels (mask False): whatever sits in their orientation rows is ignored
    garbage = {key: value.clone() for key, value in batch.items()}
    garbage["orientations"][:, 4:] = torch.tensor([0.0, 0.6, 0.8])
    torch.testing.assert_close(trained(garbage).tokens, out.tokens)
    sensor = trained.sensor_encoding(batch)
    expected = trained.position(batch["positions"].float()) + trained.channel_type(batch["channel_types"])
    torch.testing.assert_close(sensor[0, 4:], expected[0, 4:])
    assert not torch.allclose(sensor[0, :4], expected[0, :4])


def test_a_batch_without_orientation_keys_reads_as_none_known(trained: SignalEncoder) -> None:
    batch = meg_batch()
    plain = {k: v for k, v in batch.items() if k not in ("orientations", "orientation_mask")}
    unknown = {**batch, "orientation_mask": torch.zeros_like(batch["orientation_mask"])}
    torch.testing.assert_close(trained(plain).tokens, trained(unknown).tokens)
    assert not torch.allclose(trained(plain).tokens, trained(batch).tokens)


def test_fresh_orientation_map_has_no_effect_but_learns() -> None:
    torch.manual_seed(0)
    encoder = SignalEncoder(size="tiny", patch_size=16)
    batch = meg_batch()
    plain = {k: v for k, v in batch.items() if k not in ("orientations", "orientation_mask")}
    torch.testing.assert_close(encoder(batch).tokens, encoder(plain).tokens)
    encoder(batch).pooled.square().sum().backward()
    assert encoder.orientation.proj.weight.grad.abs().sum() > 0  # trainable from the first step


def test_weights_from_before_the_option_load_strictly_with_the_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = SignalEncoder(size="tiny", patch_size=16, use_orientation=False).eval()
    state = old.state_dict()
    assert not any(k.startswith("orientation.") for k in state)
    new = SignalEncoder(size="tiny", patch_size=16).eval()
    torch.nn.init.normal_(new.orientation.proj.weight)  # overwritten by the load
    new.load_state_dict(state, strict=True)
    assert new.orientation.proj.weight.abs().sum() == 0
    batch = meg_batch()
    torch.testing.assert_close(new(batch).tokens, old(batch).tokens)
    # the init_from path: an old Lightning checkpoint's ``encoder.*`` weights
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in state.items()}}, path)
    again = SignalEncoder(size="tiny", patch_size=16).eval()
    load_encoder_weights(again, str(path))
    torch.testing.assert_close(again(batch).tokens, old(batch).tokens)
    # only the orientation keys are filled in: any other missing key is still refused
    broken = {k: v for k, v in state.items() if k != "patch_embed.bias"}
    with pytest.raises(RuntimeError, match="patch_embed.bias"):
        SignalEncoder(size="tiny", patch_size=16).load_state_dict(broken)
    # and weights with an orientation map do not load into an encoder without one
    with pytest.raises(RuntimeError, match="orientation.proj.weight"):
        SignalEncoder(size="tiny", patch_size=16, use_orientation=False).load_state_dict(new.state_dict())


def test_alignment_pair_view_passes_its_orientations() -> None:
    module = AlignmentModule(encoder={"size": "tiny", "patch_size": 16}, pair="signal")
    batch = meg_batch()
    both = {**batch, **{f"pair_{k}": v for k, v in batch.items()}}
    view = module.pair_batch(both)
    assert view["orientation_mask"] is batch["orientation_mask"]
    eeg_only = {**batch, **{f"pair_{k}": v for k, v in batch.items() if "orientation" not in k}}
    assert "orientations" not in module.pair_batch(eeg_only)


@pytest.fixture(scope="module")
def meg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("meg_orientation")
    src = synthetic.write_meg_fif(root / "sim_meg_raw.fif", seconds=12.0, sfreq=100.0)
    out = root / "shards"
    shard_dataset([src], out, segment_seconds=10.0, split_ratios=(1.0, 0.0, 0.0), noisy_threshold=0.0)
    return src, out


def test_batch_orientations_are_mnes_coil_normals(meg: tuple[Path, Path]) -> None:
    src, out = meg
    info = mne.io.read_info(src, verbose="error")
    dm = ShardDataModule(
        [str(out)], window_seconds=1.0, batch_size=3, train_split="all", pair_channel_types=["mag"]
    )
    dm.setup("fit")
    batch = next(iter(dm.eval_dataloader("train")))
    assert batch["orientations"].shape == (3, len(info.ch_names), 3)
    assert batch["orientations"].dtype == torch.float32 and batch["orientation_mask"].dtype == torch.bool
    is_meg = np.array([mne.channel_type(info, i) in ("mag", "grad") for i in range(len(info.ch_names))])
    assert (batch["orientation_mask"].numpy() == is_meg[None]).all()  # 306 MEG True, 12 EEG False
    normals = np.stack([ch["loc"][9:12] / np.linalg.norm(ch["loc"][9:12]) for ch in info["chs"]])
    got = batch["orientations"][0].numpy()
    assert np.allclose(got[is_meg], normals[is_meg], atol=1e-6)
    assert (got[~is_meg] == 0).all()
    # the pair view (magnetometers only) carries its own slots' normals
    mags = [i for i in range(len(info.ch_names)) if mne.channel_type(info, i) == "mag"]
    assert batch["pair_orientation_mask"].all()
    assert np.allclose(batch["pair_orientations"][1].numpy(), normals[mags], atol=1e-6)


def test_eeg_batches_carry_empty_orientations(tmp_path: Path) -> None:
    src = synthetic.write_fif(tmp_path / "eeg_raw.fif", seconds=12.0)
    out = tmp_path / "shards"
    shard_dataset([src], out, segment_seconds=10.0, split_ratios=(1.0, 0.0, 0.0))
    dm = ShardDataModule([str(out)], window_seconds=1.0, batch_size=2, train_split="all")
    dm.setup("fit")
    batch = next(iter(dm.eval_dataloader("train")))
    assert batch["orientations"].shape == (2, 8, 3) and (batch["orientations"] == 0).all()
    assert not batch["orientation_mask"].any()
