"""Virtual-channel pooling: montage-agnostic weights, padding ignored, and the layout a mean loses is kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurotrain.models.modules import ClassifierModule
from neurotrain.models.pooling import VirtualChannelPool, hemisphere
from neurotrain.models.synthetic import synthetic_signal_batch

TINY = {"size": "tiny", "patch_size": 16}


def sensors(
    xyz: list[list[float]], located: list[bool] | None = None, real: list[bool] | None = None
) -> dict:
    """A one-sample batch of channel geometry: positions [1, C, 3] and the two masks."""
    n = len(xyz)
    return {
        "positions": torch.tensor([xyz], dtype=torch.float32),
        "position_mask": torch.tensor([located or [True] * n]),
        "channel_mask": torch.tensor([real or [True] * n]),
    }


def test_anchors_start_on_the_upper_hemisphere() -> None:
    points = hemisphere(32, 0.1)
    assert points.shape == (32, 3)
    torch.testing.assert_close(points.norm(dim=1), torch.full((32,), 0.1))
    assert bool((points[:, 2] > 0).all())
    assert torch.cdist(points, points).add(torch.eye(32)).min() > 0.02  # spread out, no two together


def test_a_virtual_channel_follows_the_sensors_near_it() -> None:
    pool = VirtualChannelPool(dim=8, channels=1, sigma=0.02)
    with torch.no_grad():
        pool.anchor_offset.copy_(torch.tensor([[0.07, 0.0, 0.05]]) - pool.anchors_init)
    # Right temporal sensor near the anchor, a left one far away, a padding slot, a sensor with
    # no known position.
    batch = sensors(
        [[0.07, 0.0, 0.05], [-0.07, 0.0, 0.05], [0.07, 0.0, 0.05], [0.07, 0.0, 0.05]],
        located=[True, True, True, False],
        real=[True, True, False, True],
    )
    w = pool.weights(batch)[0, :, 0]  # [C]
    assert w[0] > 0.999 and w[1] < 1e-3
    assert w[2] == 0 and w[3] == 0  # padding and unknown positions get no weight
    # A sample with no known position averages its real channels.
    w = pool.weights({**batch, "position_mask": torch.zeros(1, 4, dtype=torch.bool)})[0, :, 0]
    torch.testing.assert_close(w, torch.tensor([1 / 3, 1 / 3, 0.0, 1 / 3]))


def test_output_ignores_channel_order_and_padding() -> None:
    torch.manual_seed(0)
    pool = VirtualChannelPool(dim=8, channels=6, features=4, max_patches=3)
    C, P = 5, 2
    xyz = (torch.randn(C, 3) * 0.05).tolist()
    batch = sensors(xyz)
    tokens = torch.randn(1, C, P, 8)
    out = pool(tokens, batch)
    assert out.shape == (1, 6 * 3 * 4) == (1, pool.out_dim)
    assert bool((out.reshape(6, 3, 4)[:, P:] == 0).all())  # patch slots past the window stay empty
    perm = torch.randperm(C)
    torch.testing.assert_close(pool(tokens[:, perm], sensors([xyz[i] for i in perm])), out)
    padded = sensors(xyz + [[0.0, 0.0, 0.1]] * 2, real=[True] * C + [False] * 2)
    filler = torch.full((1, 2, P, 8), 1e3)
    torch.testing.assert_close(pool(torch.cat([tokens, filler], dim=1), padded), out)
    with pytest.raises(ValueError, match="patch slots"):
        pool(torch.randn(1, C, 4, 8), batch)


def test_it_separates_a_dipole_that_a_mean_cancels() -> None:
    """Class ±1 puts +y on a left sensor and -y on a right one: every channel mean is 0.

    A head on mean-pooled tokens sees identical input for both classes; a head on virtual
    channels reads the left-right layout and separates them.
    """
    torch.manual_seed(0)
    n = 64
    y = torch.arange(n) % 2
    sign = (2 * y - 1).float()[:, None]  # [N, 1]
    pattern = torch.randn(4)
    tokens = torch.stack([sign * pattern, -sign * pattern], dim=1)[:, :, None, :]  # [N, C=2, P=1, D=4]
    batch = {
        "positions": torch.tensor([[-0.07, 0.0, 0.05], [0.07, 0.0, 0.05]]).expand(n, 2, 3),
        "position_mask": torch.ones(n, 2, dtype=torch.bool),
        "channel_mask": torch.ones(n, 2, dtype=torch.bool),
    }
    assert torch.allclose(tokens.mean(dim=(1, 2)), torch.zeros(n, 4))  # nothing left for a mean head
    pool = VirtualChannelPool(dim=4, channels=8, features=4, max_patches=1)
    head = nn.Linear(pool.out_dim, 2)
    optimizer = torch.optim.Adam([*pool.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(head(pool(tokens, batch)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (head(pool(tokens, batch)).argmax(dim=1) == y).float().mean()
    assert accuracy == 1.0


def test_classifier_with_virtual_pooling_trains_its_head_at_head_lr() -> None:
    torch.manual_seed(0)
    model = ClassifierModule(
        num_classes=2,
        encoder=TINY,
        pooling="virtual",
        pooling_options={"channels": 8, "features": 4},
        head_lr=0.5,
        optimizer={"lr": 1e-3},
        layer_decay=0.5,
    )
    assert model.head.net[-1].in_features == model.pool.out_dim == 8 * 16 * 4
    pool_before = {k: v.clone() for k, v in model.pool.state_dict().items()}
    optimizer = model.configure_optimizers()["optimizer"]
    lr_of = {name: group["lr"] for group in optimizer.param_groups for name in group["names"]}
    model.compute_loss(synthetic_signal_batch(4, labels="class"))["loss"].backward()
    optimizer.step()
    assert lr_of["pool.anchor_offset"] == lr_of["head.net.2.weight"] == pytest.approx(0.5)
    assert isinstance(model.head.net[0], nn.Identity)  # no LayerNorm over the grid
    assert lr_of["encoder.norm.weight"] == pytest.approx(1e-3)  # the encoder keeps lr with layer decay
    assert lr_of["encoder.patch_embed.weight"] == pytest.approx(1e-3 * 0.5**3)
    assert set(lr_of) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(not torch.equal(v, pool_before[k]) for k, v in model.pool.state_dict().items())
    with pytest.raises(ValueError, match="no pooling_options"):
        ClassifierModule(num_classes=2, encoder=TINY, pooling_options={"channels": 8})


def test_a_linear_probe_encodes_each_window_once() -> None:
    torch.manual_seed(0)
    probe = ClassifierModule(num_classes=2, encoder=TINY, pooling="virtual", linear_probe=True)
    batch = synthetic_signal_batch(4, labels="class")
    batch["sample_id"] = [f"rec@{i}:0" for i in range(4)]
    calls = []
    probe.encoder.register_forward_hook(lambda *_: calls.append(1))
    first = probe(batch)
    second = probe(batch)  # from the cache: the encoder does not run, the output is identical
    assert len(calls) == 1 and probe.token_cache.hits == 4
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # A window with another channel count is encoded again, not served a stale shape.
    wider = synthetic_signal_batch(4, labels="class", channels=batch["signal"].shape[1] + 2)
    wider["sample_id"] = batch["sample_id"]
    probe(wider)
    assert len(calls) == 2
    # The bound holds: with room for one window only one is kept.
    small = ClassifierModule(num_classes=2, encoder=TINY, linear_probe=True, probe_cache_gb=1e-9)
    small.token_cache.max_bytes = next(iter(small.encoder(batch).tokens[0:1])).numel() * 4
    small(batch)
    assert len(small.token_cache.store) == 1 and small.token_cache.bytes <= small.token_cache.max_bytes
    # Fine-tuning never caches: the encoder changes every step.
    assert ClassifierModule(num_classes=2, encoder=TINY).token_cache is None
