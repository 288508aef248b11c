"""Learned encoding readouts (``encode_factorised``, ``encode_attention``): the readouts recover a
known receptive field, the module trains through Lightning, and ``neurotrain evaluate --protocol
encoding`` fits it and its shuffled-pairing control on the train images and scores both on held-out
images of the simulated paired EEG (responses generated from ``layer2`` of the saved network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_paired import shard_two_ways, write_paired_dataset
from test_brain_image_protocols import _layer2

from neurotrain.models.readouts import AttentionReadout, FactorisedReadout, bin_time
from neurotrain.train.cli import main
from neurotrain.train.evaluation.stimulus_responses import SubjectResponses


def _receptive_field_data(n: int = 512, k: int = 8, p: int = 16, seed: int = 0):
    """Features [n, k, p]; two channels, channel c reads position 3 + 7c through its own weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, p, generator=g)
    w = torch.randn(2, 2, k, generator=g)  # [C, bins, K]
    y = torch.stack([torch.einsum("nk,tk->nt", x[:, :, 3 + 7 * c], w[c]) for c in range(2)], 1)  # [n, 2, 2]
    return x, y + 0.1 * torch.randn(y.shape, generator=g)


def _fit(readout: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 400) -> float:
    opt = torch.optim.Adam(readout.parameters(), lr=2e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((readout(x) - y) ** 2).mean() + readout.penalty()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((readout(x) - y) ** 2).mean())


def test_factorised_readout_finds_each_channels_position(one_thread) -> None:
    torch.manual_seed(0)
    x, y = _receptive_field_data()
    readout = FactorisedReadout(channels=2, bins=2, features=8, positions=16, mask_l1=1e-3)
    assert torch.allclose(readout.mask, torch.full((2, 16), 1 / 16))  # starts as mean pooling
    mse = _fit(readout, x, y)
    assert mse < 0.1 * float(y.var())
    assert readout.mask.abs().argmax(1).tolist() == [3, 10]
    mask = readout.mask.detach().abs()
    assert (mask.max(1).values / mask.sum(1) > 0.5).all()  # sparse: most of the mask in one place
    # without the L1 penalty or a position to find, the same readout cannot fit shuffled positions
    shuffled = FactorisedReadout(2, 2, 8, 16)
    x_moved = x[..., torch.randperm(16)].roll(1, 0)  # features no longer those that made y
    assert _fit(shuffled, x_moved, y, steps=200) > 0.8 * float(y.var())


def test_attention_readout_attends_to_each_channels_position(one_thread) -> None:
    torch.manual_seed(0)
    x, y = _receptive_field_data()
    readout = AttentionReadout(channels=2, bins=2, features=8, positions=16, dim=32, heads=4)
    mse = _fit(readout, x, y, steps=600)
    assert mse < 0.2 * float(y.var())
    _, weights = readout.attend(x[:64])  # [64, C, P]
    assert weights.mean(0).argmax(1).tolist() == [3, 10]


def test_bins_match_the_ridge_protocols_bins() -> None:
    epochs = np.random.default_rng(0).standard_normal((3, 2, 4, 50)).astype(np.float32)
    resp = SubjectResponses(epochs, np.full((4, 3), np.nan), ["eeg"] * 4)
    ours = bin_time(torch.from_numpy(epochs), 5).numpy().reshape(3, 2, 20)
    np.testing.assert_allclose(ours, resp.binned(5), atol=1e-6)
    with pytest.raises(ValueError, match="time bins"):
        bin_time(torch.zeros(2, 3, 4), 5)


def test_a_parcel_r_map_is_a_glass_brain(tmp_path: Path) -> None:
    from neurotrain.train.evaluation.encoding_protocol import r_map

    centroids = np.array([[-0.04, -0.08, 0.0], [0.04, -0.08, 0.0], [0.0, 0.02, 0.03]])  # m, MNI
    parcels = SubjectResponses(np.zeros((1, 1, 3, 2), np.float32), centroids, ["bold"] * 3)
    assert r_map(np.array([0.5, 0.2, -0.1]), parcels, tmp_path / "p.png", "parcels") == "parcels"
    assert (tmp_path / "p.png").stat().st_size > 5000
    no_positions = SubjectResponses(np.zeros((1, 1, 3, 2), np.float32), np.full((3, 3), np.nan), ["bold"] * 3)
    assert r_map(np.zeros(3), no_positions, tmp_path / "b.png", "bars") == "bars"
    contacts = SubjectResponses(np.zeros((1, 1, 3, 2), np.float32), centroids, ["seeg"] * 3)
    assert r_map(np.zeros(3), contacts, tmp_path / "c.png", "contacts") == "bars"
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory):
    """60 photographs x 3 repeats x 2 subjects, responses from layer2; 42 / 6 / 12 images."""
    root = tmp_path_factory.mktemp("paired_readout")
    ds = write_paired_dataset(root, n_images=60, repeats=3, noise=0.5, features_fn=_layer2)
    return (ds, *shard_two_ways(root, ds))


def _args(command: str, config: str, ds, shards: Path, out: Path, *extra: str) -> list[str]:
    head = [command, "--config", config]
    if command == "evaluate":
        head += ["--protocol", "encoding", "--out", str(out)]
    else:
        head += ["--trainer.default_root_dir", str(out), "--run_name", "fit"]
    return [
        *head,
        f"--data.datasets=[{shards}]",
        "--data.num_workers=0",
        "--data.image_size=64",
        f"--model.image_weights={ds.weights}",
        "--model.layer=layer2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.mark.parametrize("config", ["encode_factorised", "encode_attention"])
def test_each_readout_config_fits(config: str, paired, tmp_path: Path, one_thread) -> None:
    ds, shards, _ = paired
    steps = ("--trainer.max_steps=2", "--trainer.limit_val_batches=1")
    assert main(_args("fit", config, ds, shards, tmp_path, *steps)) == 0
    ckpt = torch.load(tmp_path / "fit" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["subjects"] == ["01", "02"] and hp["channel_slots"] == 16 and hp["input_size"] == 64
    assert hp["readout"] == config.split("_")[1]
    assert any(k.startswith("readouts.s_01.") for k in ckpt["state_dict"])


def test_evaluate_scores_a_learned_readout_against_its_shuffled_pairing_control(
    paired, tmp_path: Path, one_thread
) -> None:
    """~35 s: 2 fits of 15 epochs (the readout and its control), scored on 12 held-out images."""
    ds, shards, _ = paired
    out = tmp_path / "factorised"
    assert main(_args("evaluate", "encode_factorised", ds, shards, out, "--trainer.max_epochs=15")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "learned readout" and results["test_images_in_training"] == 0
    assert len(results["test_images"]) == 12
    of = json.loads((shards / "manifest.json").read_text())["splits"]["stimuli"]
    assert {of[n] for n in results["test_images"]} == {"test"}
    for row in results["rows"]:
        assert row["images"] == 12 and row["repeats"] == 3 and row["targets"] == 16 * 4
        # measured 0.87 / 0.90 against -0.08 / -0.04; ceiling 0.94 / 0.95
        assert row["median_r"] > 0.6 and row["median_r"] > row["median_control_r"] + 0.5
        assert abs(row["median_control_r"]) < 0.2
        assert row["median_normalised"] > 0.7
        assert row["median_ridge_r"] > 0.6  # the pooled-layer ridge on the same split (0.93 measured)
    assert (out / "r_map_01_factorised_seed0.png").stat().st_size > 1000
    assert {p.name for p in (out / "runs").iterdir()} >= {"model_seed0", "control_seed0"}
    assert "control r (shuffled pairing)" in (out / "results.md").read_text()


def test_learned_encoding_refuses_bad_input(paired, tmp_path: Path, capsys, one_thread) -> None:
    ds, shards, by_subject = paired
    quick = ("--trainer.fast_dev_run=1",)
    assert main(_args("evaluate", "encode_factorised", ds, by_subject, tmp_path / "a", *quick)) == 2
    assert "--split-by stimulus" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before any fit: nothing written
    bad_layer = _args(
        "evaluate", "encode_attention", ds, shards, tmp_path / "b", *quick, "--model.layer=layer9"
    )
    assert main(bad_layer) == 2
    err = capsys.readouterr().err
    assert "layer9" in err and "resnet18" in err
    assert not (tmp_path / "b").exists()  # the model is built (and refused) before any fit
    other_arch = _args(
        "evaluate", "encode_factorised", ds, shards, tmp_path / "c", *quick, "--model.image_model=resnet34"
    )
    assert main(other_arch) == 2
    err = capsys.readouterr().err
    assert "weights.safetensors" in err and "resnet34" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("freeze", [True, False])
def test_the_image_network_trains_only_when_unfrozen(freeze: bool, one_thread) -> None:
    from neurotrain.models.modules import EncodingReadoutModule

    m = EncodingReadoutModule(
        image_weights="random",
        layer="layer2",
        freeze_backbone=freeze,
        subjects=["01"],
        channel_slots=4,
        input_size=32,
    )
    batch = {
        "image": torch.randn(3, 3, 32, 32),
        "signal": torch.randn(3, 4, 20),
        "channel_mask": torch.tensor([[True, True, True, False]] * 3),
        "subject": ["01"] * 3,
    }
    m.train()
    m.compute_loss(batch, shuffle=False)["loss"].backward()
    backbone_grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert bool(backbone_grads) is (not freeze)
    assert m.readouts["s_01"].weight.grad is not None
    assert m.backbone.training is (not freeze)  # a frozen network keeps its BatchNorm statistics
    with pytest.raises(KeyError, match="subject '02' has no readout"):
        m({**batch, "subject": ["02"] * 3})
