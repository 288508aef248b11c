"""Progress lines where stderr is a file (nohup, SLURM, CI), and the Lightning noise gone from a fit."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from neurotrain.train.run.lightning_cli import build_cli
from neurotrain.train.run.progress import LogProgress

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
CLI = [sys.executable, "-m", "neurotrain.train.cli"]
TINY = [
    "--data.num_workers=0",
    "--data.batch_size=2",
    "--trainer.accelerator=cpu",
    "--trainer.enable_model_summary=false",
    "--model.init_args.encoder.dim=32",
    "--model.init_args.encoder.depth=1",
    "--model.init_args.encoder.heads=2",
    "--media_every_n_val=0",
]
# Each message Lightning printed on every run (tests the silencing in train/run/quiet.py and the
# fix in train/run/callbacks.py's BestCheckpoint).
NOISE = (
    "litlogger",
    "LeafSpec",
    "has `__len__` defined",
    "could not find the monitored key",
)
TRAIN_LINE = re.compile(
    r"^train step (\d+)/5 \(epoch 0, batch \d+/\d+\)  train/loss [\d.e+-]+ .*"
    r"elapsed \d+:\d\d:\d\d  ETA \d+:\d\d:\d\d$"
)


def test_a_fit_logged_to_a_file_prints_progress_lines_without_noise(eeg_shards: Path, tmp_path: Path) -> None:
    log = tmp_path / "fit.log"
    with open(log, "w") as out:  # stdout and stderr: a file, as under nohup or SLURM
        proc = subprocess.run(
            [
                *CLI,
                "fit",
                "--config",
                "eeg_pretrain",
                f"--data.datasets=[{eeg_shards}]",
                f"--trainer.default_root_dir={tmp_path}",
                "--run_name=logged",
                "--trainer.max_steps=5",
                "--trainer.limit_val_batches=1",
                "--trainer.log_every_n_steps=1",
                "--throughput_window=2",
                "--progress_every_s=0.0001",
                *TINY,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "WANDB_MODE": "disabled"},
            timeout=600,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = text.splitlines()
    train = [m for m in map(TRAIN_LINE.match, lines) if m]
    assert [int(m.group(1)) for m in train] == [1, 2, 3, 4, 5], text
    assert any("samples/s" in m.group(0) for m in train), text  # from the ThroughputMonitor's metrics
    assert train[-1].group(0).endswith("ETA 0:00:00")
    assert any(re.match(r"^val step 5: val/loss [\d.]+  \(batches 1, \d+:\d\d:\d\d\)$", x) for x in lines), (
        text
    )
    assert "\r" not in text and "━" not in text  # no bar redrawn into the file
    for message in NOISE:
        assert message not in text


def test_a_fit_without_validation_keeps_no_best_checkpoint_and_warns_nothing(
    eeg_shards: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # Lightning's INFO lines (the litlogger tip among them)
    args = [
        "fit",
        "--config",
        str(CONFIGS / "eeg_pretrain.yaml"),
        f"--data.datasets=[{eeg_shards}]",
        f"--trainer.default_root_dir={tmp_path}",
        "--run_name=noval",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        *TINY,
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_cli(args)
    said = capfd.readouterr()
    logged = [r.getMessage() for r in caplog.records]
    assert any("GPU available" in m for m in logged)  # Lightning's other INFO lines stay
    text = "\n".join([said.out, said.err, *logged, *(str(w.message) for w in caught)])
    for message in NOISE:
        assert message not in text
    ckpts = tmp_path / "noval" / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    assert not list(ckpts.glob("best-*"))  # nothing to rank without validation


def test_log_progress_is_lightnings_progress_bar() -> None:
    import pytorch_lightning as pl

    bar = LogProgress(every_s=5)
    trainer = pl.Trainer(callbacks=[bar], logger=False, enable_checkpointing=False)
    assert trainer.progress_bar_callback is bar  # no default Rich/TQDM bar beside it
    bar.disable()
    assert bar.is_disabled
    with pytest.raises(ValueError, match="every_s"):
        LogProgress(every_s=0)
