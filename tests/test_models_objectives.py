"""Objectives, optimizer groups and metrics: masking, losses, layer decay, InfoNCE, retrieval."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neurotrain.models.metrics import classification_metrics, regression_metrics
from neurotrain.models.objectives import (
    ContrastiveAlignment,
    MaskedReconstruction,
    classification_loss,
    info_nce,
    random_token_mask,
    regression_loss,
    topk_retrieval_accuracy,
)
from neurotrain.models.optim import param_groups, warmup_cosine
from neurotrain.models.signal_encoder import SignalEncoder
from neurotrain.models.synthetic import synthetic_signal_batch


@pytest.fixture
def encoder() -> SignalEncoder:
    torch.manual_seed(0)
    return SignalEncoder(size="tiny", patch_size=16)


def test_token_mask_only_covers_real_channels_at_the_ratio() -> None:
    channel_mask = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    mask = random_token_mask(
        channel_mask, n_patches=10, ratio=0.3, generator=torch.Generator().manual_seed(0)
    )
    assert mask.shape == (2, 8, 10)
    assert not mask[1, 5:].any()
    assert mask[0].sum() == round(0.3 * 80)
    assert mask[1].sum() == round(0.3 * 50)
    # A sample with a single real token still has one masked token (and the loss stays defined).
    single = random_token_mask(torch.tensor([[True, False]]), n_patches=1, ratio=0.5)
    assert single.tolist() == [[[True], [False]]]


def test_reconstruction_loss_ignores_padding_and_visible_tokens(encoder: SignalEncoder) -> None:
    objective = MaskedReconstruction(encoder.dim, 4, encoder.patch_size, mask_ratio=0.5)
    batch = synthetic_signal_batch(batch_size=2, channels=6)  # sample 1: channels 4, 5 padding
    out = objective(encoder, batch, torch.Generator().manual_seed(0))
    assert out.prediction.shape == out.target.shape == (2, 6, 8, 16)
    assert out.reconstruction.shape == (2, 6, 128)
    assert not out.token_mask[1, 4:].any()
    assert (out.per_channel_error[1, 4:] == 0).all()
    assert (out.per_channel_error[0] > 0).all()

    squared = (out.prediction - out.target).pow(2).mean(-1)
    torch.testing.assert_close(out.loss, squared[out.token_mask].mean())
    # Visible patches are passed through unchanged in the plotted reconstruction.
    visible = ~out.token_mask
    torch.testing.assert_close(out.reconstruction.reshape(2, 6, 8, 16)[visible], out.target[visible])

    garbage = {key: value.clone() for key, value in batch.items()}
    garbage["signal"][1, 4:] = 1e6
    out_garbage = objective(encoder, garbage, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out_garbage.loss, out.loss)


def test_masked_reconstruction_learns_a_sinusoidal_signal(encoder: SignalEncoder) -> None:
    """A fixed sum of sinusoids plus noise: a masked patch is a function of its time in seconds, so
    this checks the masking, time encoding, decoder and loss train end to end. (A signal whose
    phase varies per sample, which forces the model to read its context, needs ~800 steps.)
    """
    objective = MaskedReconstruction(encoder.dim, 4, encoder.patch_size, mask_ratio=0.5)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *objective.parameters()], lr=2e-3)
    g = torch.Generator().manual_seed(0)

    def sinusoids(seed: int) -> dict[str, torch.Tensor]:
        batch = synthetic_signal_batch(batch_size=4, channels=4, samples=128, sfreq=128.0, seed=seed)
        t = torch.arange(128) / 128.0
        clean = torch.sin(2 * math.pi * 3 * t) + 0.5 * torch.sin(2 * math.pi * 7 * t + 1.0)
        noise = 0.05 * torch.randn(4, 4, 128, generator=torch.Generator().manual_seed(seed))
        batch["signal"] = (clean + noise) * batch["channel_mask"][..., None]
        return batch

    held_out = sinusoids(seed=1000)

    def held_out_loss() -> float:
        with torch.no_grad():
            return objective(encoder, held_out, torch.Generator().manual_seed(0)).loss.item()

    before = held_out_loss()
    for step in range(40):
        loss = objective(encoder, sinusoids(step), g).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    # The signal's variance is ~0.62: predicting zeros would sit there; learning goes far below.
    assert after < 0.1 * before and after < 0.1, (before, after)


def test_supervised_losses_skip_missing_labels() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    labels = torch.tensor([0, 1, -1])
    expected = torch.nn.functional.cross_entropy(logits[:2], labels[:2])
    torch.testing.assert_close(classification_loss(logits, labels), expected)
    assert classification_loss(logits, torch.full((3,), -1)).item() == 0.0
    prediction = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([[1.0], [float("nan")], [5.0]])
    torch.testing.assert_close(regression_loss(prediction, target), torch.tensor(2.0))


def test_info_nce_is_low_for_aligned_pairs_and_high_for_shuffled() -> None:
    z = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    aligned = info_nce(z, z, logit_scale=20.0)
    shuffled = info_nce(z, z[torch.roll(torch.arange(16), 1)], logit_scale=20.0)
    assert aligned < 0.1
    assert shuffled > math.log(16)
    # Symmetric: swapping the views gives the same loss.
    other = torch.nn.functional.normalize(torch.randn(16, 32), dim=-1)
    torch.testing.assert_close(info_nce(z, other, 5.0), info_nce(other, z, 5.0))


def test_contrastive_temperature_is_learnable() -> None:
    alignment = ContrastiveAlignment(dim_a=8, dim_b=6, embed_dim=4, temperature=0.1)
    assert alignment.logit_scale.exp().item() == pytest.approx(10.0)
    loss, z_a, z_b = alignment(torch.randn(5, 8), torch.randn(5, 6))
    assert z_a.shape == z_b.shape == (5, 4)
    torch.testing.assert_close(z_a.norm(dim=-1), torch.ones(5))
    loss.backward()
    assert alignment.logit_scale.grad is not None and alignment.logit_scale.grad != 0


def test_topk_retrieval_accuracy_known_values() -> None:
    z_a = torch.eye(4)
    z_b = torch.eye(4)[[0, 1, 3, 2]]  # rows 2 and 3 point at each other's partner
    assert topk_retrieval_accuracy(z_a, z_b, k=1).item() == pytest.approx(0.5)
    z_b_soft = z_b + 0.5 * torch.eye(4)  # the true partner is now second best for rows 2, 3
    assert topk_retrieval_accuracy(z_a, z_b_soft, k=2).item() == pytest.approx(1.0)
    assert topk_retrieval_accuracy(z_a, z_b, k=10).item() == pytest.approx(1.0)


def test_layer_decay_groups_have_the_expected_lrs(encoder: SignalEncoder) -> None:
    model = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(64, 2)})
    depth = encoder.num_layers  # 2

    def layer_id(name: str) -> int:
        if name.startswith("encoder."):
            return encoder.layer_id(name.removeprefix("encoder."))
        return depth + 1

    groups = param_groups(
        model, lr=1.0, weight_decay=0.1, layer_decay=0.5, num_layers=depth, layer_id=layer_id
    )
    lr_of = {name: group["lr"] for group in groups for name in group["names"]}
    wd_of = {name: group["weight_decay"] for group in groups for name in group["names"]}
    assert lr_of["encoder.patch_embed.weight"] == pytest.approx(0.5**3)
    assert lr_of["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.5**2)
    assert lr_of["encoder.blocks.1.attn.qkv.weight"] == pytest.approx(0.5)
    assert lr_of["encoder.norm.weight"] == lr_of["head.weight"] == pytest.approx(1.0)
    assert wd_of["head.weight"] == 0.1 and wd_of["head.bias"] == 0.0 and wd_of["encoder.norm.weight"] == 0.0
    n_grouped = sum(len(group["params"]) for group in groups)
    assert n_grouped == len(list(model.parameters()))


def test_warmup_cosine_schedule() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[14] == lrs[15] == pytest.approx(0.1)
    constant = warmup_cosine(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 0, None)
    assert constant.lr_lambdas[0](1000) == 1.0


def test_classification_metrics_known_values() -> None:
    metrics = classification_metrics(num_classes=2)
    labels = torch.tensor([0, 0, 0, 1])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])  # predicts 0, 0, 1, 1
    values = metrics(probs, labels)
    assert values["balanced_accuracy"].item() == pytest.approx((2 / 3 + 1) / 2)
    # Cohen's kappa: p_o = 3/4, p_e = (3/4 * 2/4 + 1/4 * 2/4) = 1/2 -> kappa = 0.5
    assert values["kappa"].item() == pytest.approx(0.5)
    # F1 class 0: 2 * 1 * (2/3) / (5/3) = 0.8; class 1: 2 * 0.5 * 1 / 1.5 = 2/3; weights 3:1
    assert values["f1_weighted"].item() == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
    assert values["auroc"].item() == pytest.approx(1.0)  # each class scores its positives above its negatives


def test_regression_metrics_known_values() -> None:
    metrics = regression_metrics(num_outputs=1)
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    values = metrics(2 * target + 1, target)
    assert values["pearson_r"].item() == pytest.approx(1.0)
    assert values["r2"].item() == pytest.approx(1 - ((target + 1) ** 2).sum().item() / 5.0)
    multi = regression_metrics(num_outputs=2)
    both = torch.stack([target, -target], dim=1)
    assert multi(both, both)["r2"].item() == pytest.approx(1.0)
