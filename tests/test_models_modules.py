"""The registry and the LightningModules: every entry trains tiny on CPU, configs parse, checkpoints transfer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser
from model_registry import get_entry, get_model, list_models, register
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from neurotrain.models.image_encoder import ImageEncoder
from neurotrain.models.modules import (
    AlignmentModule,
    ClassifierModule,
    PretrainModule,
    RegressorModule,
)
from neurotrain.models.signal_encoder import SignalEncoder, SignalEncoderConfig
from neurotrain.models.synthetic import synthetic_signal_batch

TINY = {"size": "tiny", "patch_size": 16}


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    """A CPU trainer with nothing slow: no progress bar, summary, checkpointing or sanity check."""
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": tmp_path,
    }
    return pl.Trainer(**{**options, **kwargs})


def loader(make_batch, n_batches: int = 2, batch_size: int = 4) -> DataLoader:
    return DataLoader([make_batch(batch_size) for _ in range(n_batches)], batch_size=None)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward_and_backward_tiny(name: str) -> None:
    torch.manual_seed(0)
    entry = get_entry(name)
    model = get_model(name, **entry.tiny)
    assert sum(p.numel() for p in model.parameters()) < 15_000_000, "the tiny configuration is not tiny"
    batch = entry.example_batch(3)
    if entry.kind == "encoder":
        out = model(batch)
        assert out.pooled.shape[0] == 3 and out.tokens.shape[0] == 3
        loss = out.pooled.pow(2).mean()
    else:
        loss = model.compute_loss(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    # Every trainable parameter is on the loss's graph (a zero gradient can be legitimate, e.g. a
    # zero-initialised residual branch, but a missing one means dead weights or a broken path).
    disconnected = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not disconnected, f"{name}: no gradient reaches {disconnected[:5]}"
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(bool(g.abs().sum() > 0) for g in grads) >= 0.5 * len(grads)


@pytest.mark.parametrize("name", list_models("module"))
def test_every_registered_module_fits_and_validates_with_lightning(name: str, tmp_path: Path) -> None:
    entry = get_entry(name)
    model = get_model(name, **entry.tiny)
    data = loader(entry.example_batch)
    run = trainer(tmp_path, max_steps=2, limit_val_batches=2)
    run.fit(model, data, data)
    assert {"train/loss", "val/loss"} <= set(run.callback_metrics)
    assert all(torch.isfinite(value) for value in run.callback_metrics.values())


@pytest.mark.parametrize("name", list_models("module"))
def test_every_registered_module_is_configurable_by_jsonargparse(name: str) -> None:
    # The constructor is the config schema LightningCLI uses: it must parse, override, instantiate.
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(get_entry(name).factory, "model")
    config = parser.parse_args(
        ["--model.encoder.size=tiny", "--model.encoder.patch_size=16", "--model.optimizer.lr=0.0003"]
    )
    model = parser.instantiate(config).model
    assert model.optimizer_config.lr == pytest.approx(3e-4)
    assert model.encoder.config.patch_size == 16
    assert model.hparams["encoder"]["patch_size"] == 16


@pytest.mark.parametrize("name", list_models("module"))
def test_an_empty_batch_is_a_zero_step_not_a_crash(name: str, tmp_path: Path) -> None:
    # The datamodule yields B = 0 when every window of a batch was skipped as corrupt.
    entry = get_entry(name)
    model = get_model(name, **entry.tiny)
    empty = {key: value[:0] for key, value in entry.example_batch(2).items()}
    run = trainer(tmp_path, max_steps=1, limit_val_batches=1)
    run.fit(model, DataLoader([empty], batch_size=None), DataLoader([empty], batch_size=None))
    assert run.global_step == 1
    assert "val/loss" not in run.callback_metrics


@pytest.mark.parametrize("name", list_models("module"))
def test_every_registered_module_predicts(name: str, tmp_path: Path) -> None:
    entry = get_entry(name)
    model = get_model(name, **entry.tiny)
    predictions = trainer(tmp_path).predict(model, loader(entry.example_batch, n_batches=1, batch_size=3))
    assert predictions[0].shape[0] == 3 and torch.isfinite(predictions[0]).all()


def test_pretrain_exposes_reconstruction_for_plots() -> None:
    model = PretrainModule(encoder=TINY)
    batch = synthetic_signal_batch(batch_size=2, channels=6, samples=128)
    out = model.reconstruct(batch, seed=3)
    assert out.reconstruction.shape == (2, 6, 128)
    assert out.per_channel_error.shape == (2, 6) and (out.per_channel_error[1, 4:] == 0).all()
    torch.testing.assert_close(model.reconstruct(batch, seed=3).token_mask, out.token_mask)


def test_pretrain_validation_loss_is_deterministic(tmp_path: Path) -> None:
    model = PretrainModule(encoder=TINY)
    data = loader(synthetic_signal_batch)
    run = trainer(tmp_path)
    first = run.validate(model, data, verbose=False)[0]["val/loss"]
    second = run.validate(model, data, verbose=False)[0]["val/loss"]
    assert first == second


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    assert {
        "signal_encoder",
        "volume_encoder",
        "image_encoder",
        "pretrain",
        "classifier",
        "regressor",
    } <= set(list_models())
    with pytest.raises(KeyError, match="already registered"):
        register("classifier", ClassifierModule, "module")
    with pytest.raises(KeyError, match="unknown model"):
        get_model("no_such_model")


def test_classifier_metrics_are_logged_at_validation_epoch_end(tmp_path: Path) -> None:
    model = ClassifierModule(num_classes=2, encoder=TINY)
    data = loader(lambda n: synthetic_signal_batch(n, labels="class"))
    run = trainer(tmp_path, max_epochs=1)
    run.fit(model, data, data)
    expected = {"val/balanced_accuracy", "val/kappa", "val/f1_weighted", "val/auroc"}
    assert expected <= set(run.callback_metrics)
    run.test(model, data, verbose=False)
    assert {"test/balanced_accuracy", "test/loss"} <= set(run.callback_metrics)


def test_regressor_accepts_multi_output_labels(tmp_path: Path) -> None:
    model = RegressorModule(num_outputs=2, encoder=TINY)

    def batch(n: int) -> dict[str, torch.Tensor]:
        return {**synthetic_signal_batch(n), "labels": torch.randn(n, 2)}

    run = trainer(tmp_path, max_epochs=1)
    run.fit(model, loader(batch), loader(batch))
    assert {"val/pearson_r", "val/r2", "val/loss"} <= set(run.callback_metrics)


def test_linear_probe_leaves_the_encoder_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ClassifierModule(num_classes=2, encoder=TINY, linear_probe=True, optimizer={"lr": 1e-2})
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    run = trainer(tmp_path, max_steps=3, limit_val_batches=0)
    run.fit(model, loader(lambda n: synthetic_signal_batch(n, labels="class"), n_batches=3))
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, encoder_before[key], rtol=0, atol=0)
    assert any(not torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    optimized = {id(p) for group in run.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in model.encoder.parameters()}


def test_attention_pooling_ignores_padding_and_trains_with_a_frozen_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ClassifierModule(
        num_classes=2, encoder=TINY, pooling="attention", linear_probe=True, optimizer={"lr": 1e-2}
    )
    batch = synthetic_signal_batch(4, labels="class")
    batch["channel_mask"][:, -2:] = False  # the last two slots are padding
    padded = {**batch, "signal": batch["signal"].clone()}
    padded["signal"][:, -2:] = 1e3  # whatever the padding holds, the output must not move
    model.eval()
    torch.testing.assert_close(model(batch), model(padded))
    assert model(batch).shape == (4, 2)
    pool_before = {k: v.clone() for k, v in model.pool.state_dict().items()}
    run = trainer(tmp_path, max_steps=3, limit_val_batches=0)
    run.fit(model, loader(lambda n: synthetic_signal_batch(n, labels="class"), n_batches=3))
    # The pool is part of the head: it learns even when the encoder is frozen (linear probe).
    assert any(not torch.equal(v, pool_before[k]) for k, v in model.pool.state_dict().items())
    with pytest.raises(ValueError, match="pooling must be"):
        ClassifierModule(num_classes=2, encoder=TINY, pooling="max")


def test_fine_tuning_uses_layer_decay_in_the_optimizer(tmp_path: Path) -> None:
    model = ClassifierModule(num_classes=2, encoder=TINY, layer_decay=0.5, optimizer={"lr": 1.0})
    run = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    run.fit(model, loader(lambda n: synthetic_signal_batch(n, labels="class"), n_batches=1))
    lr_of = {name: group["lr_scale"] for group in run.optimizers[0].param_groups for name in group["names"]}
    assert lr_of["encoder.patch_embed.weight"] == pytest.approx(0.5**3)
    assert lr_of["head.net.2.weight"] == pytest.approx(1.0)


def test_pretrain_checkpoint_initialises_a_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pretrain = PretrainModule(encoder=TINY)
    pretrain.normalization = {"eeg": {"mean": 1.5, "std": 20.0}}
    run = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    run.fit(pretrain, loader(synthetic_signal_batch))
    checkpoint = tmp_path / "pretrain.ckpt"
    run.save_checkpoint(checkpoint)

    # A Lightning checkpoint written by the trainer must load with weights_only=True.
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert raw["normalization"] == pretrain.normalization

    classifier = ClassifierModule(num_classes=3, encoder=TINY, init_from=str(checkpoint))
    for key, value in pretrain.encoder.state_dict().items():
        torch.testing.assert_close(classifier.encoder.state_dict()[key], value, rtol=0, atol=0)
    assert classifier.normalization == pretrain.normalization

    reloaded = PretrainModule.load_from_checkpoint(checkpoint, weights_only=True)
    assert reloaded.normalization == pretrain.normalization
    torch.testing.assert_close(reloaded.encoder.patch_embed.weight, pretrain.encoder.patch_embed.weight)


def test_init_from_safetensors_and_mismatches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = SignalEncoder(**TINY)
    weights = {f"encoder.{k}": v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file(weights, str(path), metadata={"normalization": json.dumps({"eeg": {"std": 3.0}})})
    regressor = RegressorModule(encoder=TINY, init_from=str(path))
    torch.testing.assert_close(
        regressor.encoder.patch_embed.weight, source.patch_embed.weight, rtol=0, atol=0
    )
    assert regressor.normalization == {"eeg": {"std": 3.0}}

    with pytest.raises(ValueError, match="do not fit"):
        RegressorModule(encoder={"size": "tiny", "patch_size": 32}, init_from=str(path))
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, tmp_path / "headless.ckpt")
    with pytest.raises(KeyError, match="no 'encoder"):
        RegressorModule(encoder=TINY, init_from=str(tmp_path / "headless.ckpt"))
    with pytest.raises(FileNotFoundError):
        RegressorModule(encoder=TINY, init_from=str(tmp_path / "missing.ckpt"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_image_encoder_loads_local_weights(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source = ImageEncoder("test_resnet")  # timm's tiny ResNet: the resnet18 code path, 0.4M parameters
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 96)  # a classifier the headless model drops
    path = tmp_path / f"resnet{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(1)
    loaded = ImageEncoder("test_resnet", weights_path=str(path))
    for key, value in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
    images = {"image": torch.randn(2, 3, 32, 32)}
    torch.testing.assert_close(loaded.eval()(images).pooled, source.eval()(images).pooled)

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises((ValueError, RuntimeError)):
        ImageEncoder("test_resnet", weights_path=str(tmp_path / "wrong.pt"))


def test_alignment_with_frozen_image_encoder_logs_retrieval(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AlignmentModule(
        encoder=TINY, pair="image", image_model="test_resnet", freeze_pair=True, retrieval_k=[1, 2]
    )
    image_before = {k: v.clone() for k, v in model.pair_encoder.state_dict().items()}

    def batch(n: int) -> dict[str, torch.Tensor]:
        return {**synthetic_signal_batch(n), "image": torch.randn(n, 3, 32, 32)}

    run = trainer(tmp_path, max_epochs=1)
    run.fit(model, loader(batch), loader(batch))
    assert {"val/top1_a2b", "val/top2_b2a", "train/temperature"} <= set(run.callback_metrics)
    # Frozen includes BatchNorm running statistics: the image encoder stays in eval mode.
    for key, value in model.pair_encoder.state_dict().items():
        torch.testing.assert_close(value, image_before[key], rtol=0, atol=0)


def test_module_config_defaults_are_the_encoder_defaults() -> None:
    model = PretrainModule()
    assert model.encoder.config == SignalEncoderConfig().resolved()
