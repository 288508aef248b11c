"""Validation figures: reconstruction examples, error topomap, confusion matrix; fast and skip-safe."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures_datamodule import synthetic_shards
from fixtures_media import fake_reconstruction
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from neurotrain.datamodules.format.channel_types import TYPE_INDEX
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.train.run.media import (
    MIN_TOPO_CHANNELS,
    ValidationMedia,
    batch_channel_names,
    channel_label,
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


def test_reconstruction_draws_partly_masked_real_channels_by_name() -> None:
    f = fake_reconstruction(n=1, c=5, p=8)
    f["masked"][0] = False
    f["masked"][0, 0, :] = True  # fully masked: after the partly masked ones
    f["masked"][0, 2, :5] = True
    f["masked"][0, 3, :7] = True
    f["masked"][0, 4, :6] = True
    real = np.array([[True, True, True, True, False]])  # slot 4 is padding: never drawn
    names = [["Fz", "Cz", "Pz", "Oz", ""]]
    fig = reconstruction_figure(f["target"], f["recon"], f["masked"], real, 256.0, f["patch"], 1, 4, names)
    labels = [ax.get_ylabel() for ax in fig.axes]
    # Partly masked first, nearest half first (Pz 5 of 8, then Oz 7 of 8), then fully masked (Fz).
    assert labels == ["Pz", "Oz", "Fz"]  # slot 1 has no masked patch: nothing to judge there
    assert "5 of 8 patches masked" in fig.axes[0].get_title(loc="left")
    # One shaded rectangle per masked patch, each exactly one patch long: Pz's first 5 patches.
    (shading,) = [c for c in fig.axes[0].collections if len(c.get_paths()) == 5]
    starts = sorted(round(float(path.vertices[:, 0].min()), 6) for path in shading.get_paths())
    widths = {round(float(np.ptp(path.vertices[:, 0])), 6) for path in shading.get_paths()}
    patch_s = f["patch"] / 256.0
    assert starts == [round(k * patch_s, 6) for k in range(5)] and widths == {round(patch_s, 6)}
    assert channel_label(None, 0, 3) == "slot 3" and channel_label(names, 0, 4) == "slot 4"


def test_channel_names_come_from_the_manifest_as_the_loader_lays_them_out(tmp_path: Path) -> None:
    """Real shards and a real ShardDataModule batch: the names of the slots the loader filled."""
    names = ["Fz", "Cz", "Pz", "Oz", "C3", "C4"]
    shards = synthetic_shards(
        tmp_path, "named", ["s01", "s02"], names=names, seconds=12.0, segment_seconds=12.0
    )
    dm = ShardDataModule([str(shards)], window_seconds=1.0, batch_size=4, val_split="train")
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    got = batch_channel_names(dm, batch, 3)
    assert got == [names] * 3

    picked = ShardDataModule(
        [str(shards)], window_seconds=1.0, batch_size=4, val_split="train", channels=["Oz", "Fz", "T7"]
    )
    picked.setup("validate")
    batch = next(iter(picked.val_dataloader()))
    assert batch_channel_names(picked, batch, 2) == [["Oz", "Fz", "T7"]] * 2  # T7 absent: masked slot

    # A manifest that disagrees with the batch's channel mask gives no names rather than wrong ones.
    wrong = SimpleNamespace(hparams={}, manifests=[{"channel_sets": [], "recordings": []}])
    assert batch_channel_names(wrong, batch, 2) is None
    assert batch_channel_names(None, batch, 2) is None


def test_confusion_matrix_is_readable_at_its_size() -> None:
    """At 100 dpi a 2-class matrix is at least 320 px on a side and every label lies inside the canvas."""
    fig = confusion_figure(
        np.array([[5, 1], [2, 7]]), ["face-upright/face-inverted", "house-upright/house-inverted"]
    )
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(100)
    canvas.draw()
    width, height = canvas.get_width_height()
    assert min(width, height) >= 320
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]  # titles, labels, ticks
    assert len(texts) > 10
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, text.get_text()
    assert "15 epochs" in fig.get_suptitle()
    # Tick labels do not overlap one another (long pooled names are broken at the slash).
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
    assert not boxes[0].overlaps(boxes[1])
    assert min(ax.get_window_extent(renderer).width, ax.get_window_extent(renderer).height) >= 240


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

    assert class_names(DM(), 3) == ["face-upright/face-inverted", "house-upright", "2"]
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
