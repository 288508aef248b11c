"""The signal encoder's contract: any montage, padding ignored, channel order irrelevant, sizes as named."""

from __future__ import annotations

import pytest
import torch

from neurotrain.models.signal_encoder import SIZES, SignalEncoder, SignalEncoderConfig, masked_mean
from neurotrain.models.synthetic import synthetic_signal_batch
from neurotrain.models.volume_encoder import VolumeEncoder


@pytest.fixture
def encoder() -> SignalEncoder:
    torch.manual_seed(0)
    return SignalEncoder(size="tiny", patch_size=16).eval()


def test_shapes_and_remainder_dropped(encoder: SignalEncoder) -> None:
    batch = synthetic_signal_batch(batch_size=3, channels=5, samples=16 * 7 + 5)
    out = encoder(batch)
    assert out.tokens.shape == (3, 5, 7, 64)
    assert out.pooled.shape == (3, 64)
    assert torch.isfinite(out.tokens).all()


def test_too_short_signal_is_a_clear_error(encoder: SignalEncoder) -> None:
    with pytest.raises(ValueError, match="fewer than one patch"):
        encoder(synthetic_signal_batch(samples=8))


def test_padding_channels_do_not_change_real_outputs(encoder: SignalEncoder) -> None:
    batch = synthetic_signal_batch(batch_size=2, channels=6)  # sample 1: channels 4, 5 are padding
    out = encoder(batch)
    garbage = {key: value.clone() for key, value in batch.items()}
    garbage["signal"][1, 4:] = float("nan")
    garbage["positions"][1, 4:] = 5.0
    garbage["channel_types"][1, 4:] = 3
    garbage["position_mask"][1, 4:] = True
    out_garbage = encoder(garbage)
    torch.testing.assert_close(out_garbage.tokens[1, :4], out.tokens[1, :4])
    torch.testing.assert_close(out_garbage.pooled, out.pooled)

    # The same sample with the padding cut off entirely gives the same real tokens.
    trimmed = {key: value[1:2, :4] if value.ndim > 1 else value[1:2] for key, value in batch.items()}
    out_trimmed = encoder(trimmed)
    torch.testing.assert_close(out_trimmed.tokens[0], out.tokens[1, :4], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_trimmed.pooled[0], out.pooled[1], atol=1e-5, rtol=1e-4)


def test_permuted_channels_give_permuted_tokens(encoder: SignalEncoder) -> None:
    batch = synthetic_signal_batch(batch_size=2, channels=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = {key: value[:, perm] if value.ndim > 1 else value for key, value in batch.items()}
    out, out_perm = encoder(batch), encoder(permuted)
    torch.testing.assert_close(out_perm.tokens, out.tokens[:, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_perm.pooled, out.pooled, atol=1e-5, rtol=1e-4)


def test_one_model_takes_any_channel_count_and_rate(encoder: SignalEncoder) -> None:
    eeg = encoder(synthetic_signal_batch(channels=19, samples=256, sfreq=256.0))
    meg = encoder(synthetic_signal_batch(channels=128, samples=160, sfreq=1000.0))
    fmri = encoder(synthetic_signal_batch(channels=7, samples=32, sfreq=1 / 0.8))
    assert eeg.tokens.shape[1:3] == (19, 16)
    assert meg.tokens.shape[1:3] == (128, 10)
    assert fmri.tokens.shape[1:3] == (7, 2)
    assert eeg.pooled.shape == meg.pooled.shape == fmri.pooled.shape


def test_time_encoding_is_in_seconds(encoder: SignalEncoder) -> None:
    # 16-sample patches: at 64 Hz the centres are 0.125, 0.375, 0.625, 0.875 s; at 192 Hz the
    # centres are (i + 0.5) / 12 s, which hit the same seconds at i = 1, 4, 7, 10.
    slow = encoder.time_encoding(torch.tensor([64.0]), 4)  # [1, 4, D]
    fast = encoder.time_encoding(torch.tensor([192.0]), 12)  # [1, 12, D]
    torch.testing.assert_close(fast[0, [1, 4, 7, 10]], slow[0])
    assert not torch.allclose(encoder.time_encoding(torch.tensor([128.0]), 4), slow)


def test_unknown_position_uses_the_learned_embedding(encoder: SignalEncoder) -> None:
    batch = synthetic_signal_batch(batch_size=2, channels=6)  # sample 1, channel 0: position unknown
    unknown = encoder(batch).tokens[1, 0]
    moved = {key: value.clone() for key, value in batch.items()}
    moved["positions"][1, 0] = torch.tensor([0.3, -0.2, 0.1])  # ignored while unknown
    torch.testing.assert_close(encoder(moved).tokens[1, 0], unknown)
    moved["position_mask"][1, 0] = True
    assert not torch.allclose(encoder(moved).tokens[1, 0], unknown)
    sensor = encoder.sensor_encoding(batch)
    expected = encoder.unknown_position + encoder.channel_type(batch["channel_types"][1, 0])
    torch.testing.assert_close(sensor[1, 0], expected)


def test_channel_type_changes_the_encoding(encoder: SignalEncoder) -> None:
    batch = synthetic_signal_batch()
    other = {key: value.clone() for key, value in batch.items()}
    other["channel_types"][0, 0] = 2
    assert not torch.allclose(encoder(other).tokens[0, 0], encoder(batch).tokens[0, 0])


def test_masked_mean_ignores_padding() -> None:
    tokens = torch.ones(1, 3, 2, 4)
    tokens[0, 2] = 100.0
    torch.testing.assert_close(masked_mean(tokens, torch.tensor([[True, True, False]])), torch.ones(1, 4))


@pytest.mark.parametrize(("size", "target"), [("small", 10e6), ("base", 100e6), ("large", 300e6)])
def test_size_presets_hit_their_parameter_targets(size: str, target: float) -> None:
    # Built on the meta device: the real module and its real parameter count, without the memory.
    with torch.device("meta"):
        model = SignalEncoder(size=size)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.7 * target <= n_params <= 1.3 * target, f"{size}: {n_params / 1e6:.1f}M"


def test_tiny_is_tiny_and_overrides_win() -> None:
    assert sum(p.numel() for p in SignalEncoder(size="tiny").parameters()) < 500_000
    config = SignalEncoderConfig(size="small", depth=3).resolved()
    assert (config.dim, config.depth, config.heads) == (SIZES["small"]["dim"], 3, SIZES["small"]["heads"])
    with pytest.raises(ValueError, match="unknown encoder size"):
        SignalEncoder(size="huge")
    with pytest.raises(ValueError, match="not divisible"):
        SignalEncoder(dim=30, heads=4)


def test_layer_ids_cover_embeddings_blocks_and_norm(encoder: SignalEncoder) -> None:
    ids = {name: encoder.layer_id(name) for name, _ in encoder.named_parameters()}
    assert ids["patch_embed.weight"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1
    assert ids["blocks.1.mlp.0.weight"] == 2
    assert ids["norm.weight"] == encoder.num_layers + 1


def test_volume_encoder_takes_both_layouts_and_sizes() -> None:
    torch.manual_seed(0)
    model = VolumeEncoder(size="tiny", patch_size=8).eval()
    volume = torch.randn(2, 16, 16, 24)
    out = model({"volume": volume})
    assert out.tokens.shape == (2, 2 * 2 * 3, 64)
    torch.testing.assert_close(model({"volume": volume[:, None]}).pooled, out.pooled)
    # Position encodings distinguish patches: swapping two patches changes their tokens.
    swapped = volume.clone()
    swapped[:, :8, :8, :8], swapped[:, 8:, :8, :8] = volume[:, 8:, :8, :8], volume[:, :8, :8, :8]
    assert not torch.allclose(model({"volume": swapped}).tokens[:, 0], out.tokens[:, 6])
    with pytest.raises(ValueError, match="divisible"):
        model({"volume": torch.randn(1, 1, 10, 16, 16)})
