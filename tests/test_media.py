"""Validation figures: reconstruction examples, error topomap, confusion matrix; fast and skip-safe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_media import fake_reconstruction

from neurotrain.datamodules.format.channel_types import TYPE_INDEX
from neurotrain.train.run.media import (
    MIN_TOPO_CHANNELS,
    ValidationMedia,
    class_names,
    confusion_figure,
    reconstruction_figure,
    topomap_figure,
    topomap_values,
)


def test_every_validation_figure_renders(tmp_path) -> None:
    """What one validation draws; its cost is measured in benchmarks/media_render.py, not here."""
    f = fake_reconstruction()
    real = f["batch"]["channel_mask"].numpy()
    topo = topomap_values(f["batch"], f["masked"], f["error"])
    assert topo is not None
    reconstruction_figure(f["target"], f["recon"], f["masked"], real, 256.0, f["patch"], 2, 3).savefig(
        tmp_path / "r.png", dpi=72
    )
    topomap_figure(*topo).savefig(tmp_path / "t.png", dpi=72)
    confusion_figure(np.array([[5, 1], [2, 7]]), ["face", "house"]).savefig(tmp_path / "c.png", dpi=72)
    assert all((tmp_path / n).stat().st_size > 1000 for n in ("r.png", "t.png", "c.png"))


def test_reconstruction_draws_the_most_masked_real_channels() -> None:
    f = fake_reconstruction(n=1, c=4)
    f["masked"][0] = False
    f["masked"][0, 2, :5] = True
    f["masked"][0, 3, :7] = True
    real = np.array([[True, True, True, False]])  # slot 3 is padding: never drawn
    fig = reconstruction_figure(f["target"], f["recon"], f["masked"], real, 256.0, f["patch"], 1, 2)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[0].endswith("ch 2") and not any(label.endswith("ch 3") for label in labels)


def test_topomap_needs_enough_positioned_eeg_channels() -> None:
    f = fake_reconstruction(c=MIN_TOPO_CHANNELS + 2)
    batch = f["batch"]
    batch["position_mask"][:, 3:] = False  # only 3 channels with positions
    assert topomap_values(batch, f["masked"], f["error"]) is None
    batch["position_mask"][:] = True
    batch["channel_types"][:, :3] = TYPE_INDEX["eog"]  # EOG is not on the scalp map
    assert topomap_values(batch, f["masked"], f["error"]) is None


def test_topomap_averages_error_over_examples_that_masked_the_channel() -> None:
    f = fake_reconstruction(n=2, c=6, p=2)
    f["masked"][:] = True
    f["masked"][1, 0] = False  # example 1 did not mask channel 0
    f["error"] = np.array([[1.0] * 6, [3.0] * 6], dtype=np.float32) * f["masked"].any(-1)
    pos, values = topomap_values(f["batch"], f["masked"], f["error"])
    assert pos.shape == (6, 3)
    np.testing.assert_allclose(values, [1.0, 2, 2, 2, 2, 2])


def test_class_names_join_pooled_labels() -> None:
    class DM:
        label_map = {"face-upright": 0, "face-inverted": 0, "house-upright": 1}

    assert class_names(DM(), 3) == ["face-upright/face-invert", "house-upright", "2"]
    assert class_names(None, 2) == ["0", "1"]


@pytest.mark.parametrize(("every", "drawn"), [(1, [0, 1, 2, 3]), (2, [0, 2]), (0, [])])
def test_media_are_due_every_n_validations(every: int, drawn: list[int]) -> None:
    class Trainer:
        sanity_checking = False

    media, due = ValidationMedia(every_n_validations=every), []
    sanity = Trainer()
    sanity.sanity_checking = True
    media.on_validation_epoch_start(sanity, None)  # a sanity check neither draws nor counts
    assert not media._due
    for i in range(4):
        media.on_validation_epoch_start(Trainer(), torch.nn.Module())
        if media._due:
            due.append(i)
    assert due == drawn
