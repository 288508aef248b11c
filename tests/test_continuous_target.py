"""A continuous regression target read from a channel (grip force in the real iEEG example), and
contiguous time blocks of one recording as training and scoring parts."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.selection import load_selection
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch

BLOCKS = {"train": {"time": [[0.0, 12.0]]}, "val": {"time": [[14.0, 19.0]]}}  # a 2 s gap between


@pytest.fixture(scope="module")
def ieeg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = fetch("ieeg")
    out = tmp_path_factory.mktemp("ieeg") / "shards"
    shard_dataset(
        [root], out, channel_types=["ecog", "dbs", "misc"], segment_seconds=2.0, min_segment_seconds=1.0
    )
    return root, out


def _dm(out: Path, **kw) -> ShardDataModule:
    args = {
        "datasets": [str(out)],
        "window_seconds": 1.0,
        "batch_size": 4,
        "target_channel": "MOV_RIGHT",
        "train_split": "all",
        "val_split": "all",
        "selection": BLOCKS,
        **kw,
    }
    dm = ShardDataModule(**args)
    dm.setup("fit")
    return dm


def test_windows_carry_the_target_value_and_never_the_target_channel(ieeg: tuple[Path, Path]) -> None:
    root, out = ieeg
    raw = mne.io.read_raw_brainvision(next(root.rglob("*_ieeg.vhdr")), verbose="error")
    force = raw.get_data(picks=["MOV_RIGHT"])[0]  # misc: stored as read
    dm = _dm(out)
    assert dm.c_max == 9  # 6 ECoG + 3 DBS; MOV_RIGHT is the target, not an input
    n = 0
    for batch in dm.eval_dataloader("val"):
        assert batch["labels"].dtype.is_floating_point
        end = np.rint(batch["onset_s"].double().numpy() * 1000).astype(int) + 1000 - 1
        assert np.allclose(batch["labels"].numpy(), force[end], atol=5e-3)  # float16 storage
        assert (batch["onset_s"] >= 14.0).all()
        n += len(end)
    assert n == 4  # 14-16, 16-18 s: two 2 s segments of 1 s windows (18-19 s is a dropped tail)
    train = [b for b in dm.eval_dataloader("train")]
    assert all((b["onset_s"] + 1.0 <= 12.0 + 1e-6).all() for b in train)
    assert sum(len(b["labels"]) for b in train) == 12
    mean = _dm(out, target_reduce="mean")
    batch = next(iter(mean.eval_dataloader("val")))
    start = np.rint(batch["onset_s"].double().numpy() * 1000).astype(int)
    expected = [force[s : s + 1000].mean() for s in start]
    assert np.allclose(batch["labels"].numpy(), expected, atol=5e-3)
    assert next(iter(dm.train_dataloader()))["labels"].shape == (4,)


def test_a_missing_target_channel_and_bad_time_blocks_are_named(ieeg: tuple[Path, Path]) -> None:
    _, out = ieeg
    with pytest.raises(ValueError, match=r"target_channel 'GRIP'.*sample .*_seg000.*MOV_RIGHT"):
        _dm(out, target_channel="GRIP").eval_dataloader("val")
    with pytest.raises(ValueError, match="mode='windows'"):
        ShardDataModule([str(out)], mode="epochs", target_channel="MOV_RIGHT")
    with pytest.raises(ValueError, match="also in channels"):
        ShardDataModule([str(out)], target_channel="MOV_RIGHT", channels=["MOV_RIGHT", "ECOG_RIGHT_0"])
    with pytest.raises(ValueError, match="start < end"):
        load_selection({"train": {"time": [[5.0, 1.0]]}})
    manifest = json.loads((out / "manifest.json").read_text())
    assert "misc" in manifest["channel_sets"][0]["ch_types"]


def test_the_regressor_trains_on_the_target_of_a_time_block(ieeg: tuple[Path, Path], tmp_path: Path) -> None:
    import pytorch_lightning as pl

    from neurotrain.models.modules import RegressorModule

    dm = _dm(ieeg[1], batch_size=4)
    model = RegressorModule(num_outputs=1, encoder={"size": "tiny", "patch_size": 50})
    run = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    run.fit(model, datamodule=dm)
    metrics = run.callback_metrics
    assert {"val/pearson_r", "val/r2", "val/loss"} <= set(metrics)
    # MSE against the grip force of the held-out block, in its stored unit: finite and logged
    assert torch.isfinite(metrics["val/loss"])


def test_ieeg_finetune_config_and_the_band_power_baseline_score_the_same_windows(tmp_path: Path) -> None:
    """The shipped `ieeg_finetune` on the shards its header asks for, and log band power + ridge
    fitted on the same training block and scored on the same held-out windows."""
    from neurotrain.train.cli import main
    from neurotrain.train.evaluation.bandpower import band_power, bandpower_ridge, regression_scores
    from neurotrain.train.run.predictions import read_predictions

    shards = tmp_path / "shards"
    argv = ["shard", "example:ieeg", "--out", str(shards), "--channel-types", "ecog", "dbs", "misc"]
    assert main([*argv, "--segment-seconds", "1", "--min-segment-seconds", "1"]) == 0
    configs = Path(__file__).resolve().parents[1] / "train" / "configs"
    fit = ["fit", "--config", str(configs / "ieeg_finetune.yaml"), f"--data.datasets=[{shards}]"]
    fit += ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.max_epochs=2"]
    fit += [f"--trainer.default_root_dir={tmp_path}", "--run_name=ieeg"]
    assert main(fit) == 0
    model = read_predictions(tmp_path / "ieeg")
    assert model is not None and len(model["sample_ids"]) == 12  # 13-19 s in 0.5 s windows

    import yaml

    data = yaml.safe_load((configs / "ieeg_finetune.yaml").read_text())["data"]
    dm = ShardDataModule(**{**data, "datasets": [str(shards)]})
    dm.setup("fit")
    parts = {}
    for stage in ("train", "val"):
        batches = list(dm.eval_dataloader(stage))
        parts[stage] = (
            np.concatenate([b["signal"].numpy() for b in batches]),
            np.concatenate([b["labels"].numpy() for b in batches]),
            [s for b in batches for s in b["sample_id"]],
        )
    assert sorted(parts["val"][2]) == sorted(model["sample_ids"])  # identical held-out windows
    by_id = dict(zip(model["sample_ids"], model["y_true"], strict=True))
    assert np.allclose([by_id[s] for s in parts["val"][2]], parts["val"][1], atol=1e-6)
    (x_tr, y_tr, _), (x_te, y_te, _) = parts["train"], parts["val"]
    assert band_power(x_tr, dm.sfreq).shape == (24, 9 * 5)
    pred, alpha = bandpower_ridge(x_tr, y_tr, x_te, dm.sfreq)
    scores = regression_scores(y_te, pred)
    assert pred.shape == (12,) and alpha > 0 and np.isfinite(scores["r2"])
    # a constant predictor has R² <= 0 on these windows; the scorer says so
    assert regression_scores(y_te, np.full(12, y_tr.mean()))["r2"] <= 0
