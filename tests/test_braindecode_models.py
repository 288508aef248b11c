"""braindecode's EEGNet and ShallowFBCSPNet as modules of this platform: the shipped configs train
on the example EEG's epochs with the input size taken from the data, log the classifier metrics,
save checkpoints that rebuild the same network, and learn a separable synthetic task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_fit import fit_args
from torch.utils.data import DataLoader

from neurotrain.models.checkpoint_io import safe_load
from neurotrain.models.modules import BraindecodeClassifierModule
from neurotrain.train.run.lightning_cli import build_cli


@pytest.mark.parametrize(
    ("config", "network"), [("eeg_eegnet", "EEGNet"), ("eeg_shallow", "ShallowFBCSPNet")]
)
def test_shipped_config_trains_on_the_example_epochs(
    config: str, network: str, eeg_shards: Path, tmp_path: Path
) -> None:
    cli = build_cli(
        fit_args(
            config,
            eeg_shards,
            tmp_path,
            "run",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_model_summary=false",
            "--media_every_n_val=0",
        )
    )
    model, dm = cli.model, cli.datamodule
    assert isinstance(model, BraindecodeClassifierModule) and model.hparams.network == network
    assert cli.trainer.global_step == 3
    # the input size came from the data: its channel slots and the 0-0.75 s epoch
    assert (model.hparams.n_chans, model.hparams.n_times) == (dm.c_max, round(0.75 * dm.sfreq))
    batch = next(iter(dm.val_dataloader()))
    assert tuple(batch["signal"].shape[1:]) == (model.hparams.n_chans, model.hparams.n_times)
    for metric in ("val/balanced_accuracy", "val/auroc", "val/loss"):
        assert torch.isfinite(cli.trainer.callback_metrics[metric]), metric
    # the checkpoint rebuilds the network without a datamodule, weights-only
    ckpt = safe_load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    again = BraindecodeClassifierModule(**ckpt["hyper_parameters"])
    again.load_state_dict(ckpt["state_dict"])
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(batch), model(batch))


def separable_batches(n: int, seed: int, chans: int = 8, times: int = 128) -> DataLoader:
    """Batches of noise where class 1 adds a 10 Hz burst on channels 0-3 (class 0: none)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(times) / 128.0
    out = []
    for _ in range(n):
        labels = torch.randint(0, 2, (16,), generator=g)
        x = torch.randn(16, chans, times, generator=g)
        x[:, :4] += 2.0 * labels[:, None, None] * torch.sin(2 * torch.pi * 10 * t)
        out.append({"signal": x, "labels": labels})
    return DataLoader(out, batch_size=None)  # the batches as they are


def test_eegnet_learns_a_separable_task() -> None:
    pl.seed_everything(0)
    model = BraindecodeClassifierModule(
        "EEGNet", num_classes=2, n_chans=8, n_times=128, sfreq=128.0, optimizer={"lr": 1e-2}
    )
    trainer = pl.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, separable_batches(20, 0), separable_batches(4, 1))
    assert float(trainer.callback_metrics["val/balanced_accuracy"]) > 0.9


def test_a_wrong_input_size_and_an_unknown_network_are_named() -> None:
    model = BraindecodeClassifierModule("ShallowFBCSPNet", n_chans=4, n_times=100, sfreq=100.0)
    with pytest.raises(
        ValueError, match="built for epochs of 4 channels x 100 samples; this batch has 5 x 100"
    ):
        model({"signal": torch.zeros(2, 5, 100), "labels": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match="unknown braindecode network 'EEGNeX'"):
        BraindecodeClassifierModule("EEGNeX", n_chans=4, n_times=100)  # type: ignore[arg-type]


@pytest.mark.slow  # two fold fits of EEGNet and their four control fits (~2 min)
def test_evaluate_scores_a_braindecode_config_on_the_same_folds(eeg_shards: Path, tmp_path: Path) -> None:
    from test_fit import CONFIGS

    from neurotrain.train.cli import main

    out = tmp_path / "eval"
    config = str(CONFIGS / "eeg_eegnet.yaml")
    common = ["evaluate", "--config", config, "--protocol", "leave-one-subject-out", "--out", str(out)]
    extra = [
        f"--data.datasets=[{eeg_shards}]",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
    ]
    assert main([*common, "--baselines", *extra]) == 0  # no classical baselines: the network alone
    results = json.loads((out / "results.json").read_text())
    assert [r["test_subjects"] for r in results["folds_detail"]] == [["s01"], ["s02"]]
    for rec in results["folds_detail"]:
        assert set(rec["scores"]) == {"EEGNet"}
        run_config = (Path(rec["run"]) / "config.yaml").read_text()
        assert "BraindecodeClassifierModule" in run_config and "network: EEGNet" in run_config
    assert "| EEGNet |" in (out / "results.md").read_text()
    # the controls of the one (so best) method are trained networks too, on the same folds
    controls = results["controls"]
    assert controls["method"] == "EEGNet" and set(controls["controls"]) == {"shuffled labels", "pre-stimulus"}
    for name, c in controls["controls"].items():
        assert [r["fold"] for r in c["per_fold"]] == ["sub-s01", "sub-s02"], name
        for r in c["per_fold"]:
            assert (out / "runs" / r["run"] / "summary.json").exists()
    assert "| pre-stimulus |" in (out / "results.md").read_text()
    # a network trained from scratch has no pretrained encoder to start from
    assert main([*common[:-1], str(tmp_path / "other"), "--init_from", "x.ckpt", *extra]) == 2
