"""RunRecord + the CSV logger factory on real (tiny) Lightning trainings on CPU.

``train_run`` is shared with ``test_compare.py``: it trains a 2-layer MLP on synthetic data for a few
epochs, writes a PNG per validation into ``media/``, and optionally raises mid-training.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from neurotrain.train.tracking.csv_logger import csv_logger
from neurotrain.train.tracking.run_folder import read_summary
from neurotrain.train.tracking.run_record import RunRecord, find_run_record

matplotlib.use("Agg")
STEPS_PER_EPOCH = 8


class TinyMLP(pl.LightningModule):
    """A 2-layer MLP classifier; ``crash_at_step`` makes training raise there, like a real bug would."""

    def __init__(self, lr: float = 1e-2, hidden: int = 16, crash_at_step: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.crash_at_step is not None and self.global_step >= self.hparams.crash_at_step:
            raise RuntimeError(f"synthetic failure at step {self.global_step}")
        x, y = batch  # x: [B, 8], y: [B]
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)  # [B, 2]
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(-1) == y).float().mean())

    def on_validation_epoch_end(self) -> None:
        record = find_run_record(self.trainer)
        if self.trainer.sanity_checking or record is None or not self.trainer.is_global_zero:
            return
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(3, 2))
        weights = self.net[0].weight.detach().numpy()  # [hidden, 8]
        ax.imshow(weights, aspect="auto", cmap="RdBu_r")
        ax.set_title(f"layer 1, epoch {self.current_epoch}")
        fig.savefig(record.media_dir / f"weights_epoch{self.current_epoch:03d}.png", dpi=60)
        plt.close(fig)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def synthetic_loaders(seed: int = 0) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(320, 8, generator=g)  # [N, 8]
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()  # [N]
    train = TensorDataset(x[:256], y[:256])
    val = TensorDataset(x[256:], y[256:])
    return DataLoader(train, batch_size=32, shuffle=True, generator=g), DataLoader(val, batch_size=32)


def train_run(
    run_dir: Path,
    lr: float,
    *,
    epochs: int = 4,
    crash_at_step: int | None = None,
    wandb_mode: str | None = None,
    **record_kwargs: Any,
) -> RunRecord:
    """Train one run into ``run_dir``; a crash is swallowed here (the record is what is tested)."""
    pl.seed_everything(0, verbose=False)
    config = {
        "seed_everything": 0,
        "model": {"lr": lr, "hidden": 16},
        "data": {"n_train": 256, "batch_size": 32},
        "trainer": {"max_epochs": epochs, "accelerator": "cpu"},
    }
    record = RunRecord(
        run_dir, monitor="val/loss", mode="min", config=config, heartbeat_s=0.5, **record_kwargs
    )
    loggers: list[Any] = [csv_logger(run_dir, resume=record_kwargs.get("resume", False))]
    if wandb_mode:
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(project="neurotrain-tests", save_dir=str(run_dir), mode=wandb_mode))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=loggers,
        callbacks=[record],
        log_every_n_steps=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train, val = synthetic_loaders()
    try:
        trainer.fit(TinyMLP(lr=lr, crash_at_step=crash_at_step), train, val)
    except RuntimeError:
        if crash_at_step is None:
            raise
    finally:
        if wandb_mode:
            import wandb

            wandb.finish()
    return record


def csv_column(run_dir: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) of one metric in metrics.csv, in file order."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [(int(r["step"]), float(r[name])) for r in csv.DictReader(fh) if r.get(name)]


def test_finished_run_summary_matches_metrics_csv(tmp_path: Path) -> None:
    run_dir = tmp_path / "lr-0.1"
    train_run(run_dir, 0.1, group="mlp", tags=["tiny", "cpu"], job_type="pretrain")

    # (CSVLogger adds hparams.yaml: the LightningModule's hyperparameters.)
    assert {"config.yaml", "media", "metrics.csv", "summary.json"} <= {p.name for p in run_dir.iterdir()}
    s = read_summary(run_dir)
    assert s["status"] == "finished" and s["error"] is None
    assert (s["name"], s["group"], s["tags"], s["job_type"]) == ("lr-0.1", "mlp", ["tiny", "cpu"], "pretrain")
    assert s["started"] <= s["finished"] and s["duration_s"] > 0
    assert s["global_step"] == 4 * STEPS_PER_EPOCH and s["pid"] == os.getpid()

    val = csv_column(run_dir, "val/loss")
    assert len(val) == 4  # one row per validation epoch; the sanity check is not logged
    mon = s["monitor"]
    best_step, best = min(val, key=lambda sv: sv[1])
    assert (mon["name"], mon["mode"]) == ("val/loss", "min")
    assert mon["best"] == pytest.approx(best, rel=1e-6) and mon["best_step"] == best_step
    assert mon["final"] == pytest.approx(val[-1][1], rel=1e-6) and mon["final_step"] == val[-1][0]
    assert s["metrics"]["val/acc"] == pytest.approx(csv_column(run_dir, "val/acc")[-1][1], rel=1e-6)
    assert len(csv_column(run_dir, "train/loss")) == 4 * STEPS_PER_EPOCH // 2  # log_every_n_steps=2

    assert s["media"] == [f"media/weights_epoch{e:03d}.png" for e in range(4)]
    assert (run_dir / s["media"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s["git"] is None or (len(s["git"]["commit"]) == 40 and isinstance(s["git"]["dirty"], bool))
    assert s["versions"]["torch"] and s["wandb"] is None and s["sweep"] is None


def test_crash_mid_training_leaves_crashed_record_with_metrics(tmp_path: Path) -> None:
    run_dir = tmp_path / "crash"
    crash_step = STEPS_PER_EPOCH + 4  # after the first validation, in the middle of epoch 2
    train_run(run_dir, 0.05, crash_at_step=crash_step)

    s = read_summary(run_dir)
    assert s["status"] == "crashed"
    assert s["error"]["type"] == "RuntimeError" and "synthetic failure" in s["error"]["message"]
    assert "training_step" in s["error"]["traceback"] and s["finished"] is not None
    train_steps = [step for step, _ in csv_column(run_dir, "train/loss")]
    assert train_steps and max(train_steps) < crash_step and max(train_steps) >= crash_step - 2
    val = csv_column(run_dir, "val/loss")
    assert len(val) == 1 and s["monitor"]["best"] == pytest.approx(val[0][1], rel=1e-6)


def test_summary_is_written_before_the_end_and_atomically(tmp_path: Path) -> None:
    """What a killed process leaves: a valid summary with status running and a heartbeat."""
    run_dir = tmp_path / "killed"
    seen: list[dict] = []

    class Spy(pl.Callback):
        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if not trainer.sanity_checking:
                seen.append(json.loads((run_dir / "summary.json").read_text()))

    record = RunRecord(run_dir, heartbeat_s=0.0)
    trainer = pl.Trainer(
        max_epochs=2, logger=[csv_logger(run_dir)], callbacks=[record, Spy()], log_every_n_steps=2,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(TinyMLP(), *synthetic_loaders())
    assert [s["status"] for s in seen] == ["running", "running"]
    assert all(s["heartbeat"] and s["monitor"]["final"] is not None for s in seen)
    assert seen[0]["global_step"] == STEPS_PER_EPOCH
    assert not list(run_dir.glob(".*.tmp"))  # no temp file left behind


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_wandb_fields_recorded(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep-xyz")
    run_dir = tmp_path / f"wb-{mode}"
    train_run(run_dir, 0.1, epochs=1, wandb_mode=mode, sweep_params={"model.lr": 0.1})

    s = read_summary(run_dir)
    assert s["status"] == "finished"
    assert s["sweep"] == {"sweep_id": "sweep-xyz", "params": {"model.lr": 0.1}}
    assert s["wandb"]["mode"] == mode
    if mode == "offline":
        wb_dir = Path(s["wandb"]["dir"])
        assert wb_dir.name.startswith("offline-run-") and wb_dir.name.endswith(s["wandb"]["id"])
        assert list(wb_dir.glob("run-*.wandb"))
        assert wb_dir.is_relative_to(run_dir)
    else:
        assert s["wandb"]["dir"] is None
    assert math.isfinite(s["monitor"]["best"])


def test_bad_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be"):
        RunRecord(tmp_path, mode="lowest")


@pytest.mark.parametrize("resume", [True, False])
def test_csv_logger_writes_run_folder_and_keeps_rows_on_resume(tmp_path: Path, resume: bool) -> None:
    run_dir = tmp_path / "run"
    train_run(run_dir, 0.1, epochs=1)
    first = csv_column(run_dir, "train/loss")

    logger = csv_logger(run_dir, resume=resume)
    assert Path(logger.log_dir) == run_dir
    logger.log_metrics({"train/loss": 0.5, "val/new_metric": 1.0}, step=100)
    logger.save()
    rows = csv_column(run_dir, "train/loss")
    assert rows == ([*first, (100, 0.5)] if resume else [(100, 0.5)])
    assert csv_column(run_dir, "val/new_metric") == [(100, 1.0)]


def test_resumed_record_keeps_start_and_best(tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    train_run(run_dir, 0.1, epochs=2, crash_at_step=STEPS_PER_EPOCH + 2)
    before = read_summary(run_dir)
    assert before["status"] == "crashed"

    train_run(run_dir, 0.1, epochs=1, resume=True)
    after = read_summary(run_dir)
    assert after["status"] == "finished" and after["error"] is None and after["resumes"] == 1
    assert after["started"] == before["started"] and after["duration_s"] > before["duration_s"]
    assert after["monitor"]["best"] <= before["monitor"]["best"]
    assert len(csv_column(run_dir, "val/loss")) == 1 + 1  # the crashed process's row is kept


def test_csv_logger_drops_the_rows_a_resumed_fit_redoes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    logger = csv_logger(run_dir)
    for step in range(6):
        logger.log_metrics({"train/loss": float(step), "epoch": step // 3}, step=step)
    logger.log_metrics({"validate/batches": 1.0}, step=4)  # the throughput monitor's own counter
    logger.save()
    resumed = csv_logger(run_dir, resume=True)  # restored at global step 4: steps 4 and 5 are redone
    assert resumed.drop_rows_from(4) == 2
    assert csv_column(run_dir, "train/loss") == [(s, float(s)) for s in range(4)]
    assert csv_column(run_dir, "validate/batches") == [(4, 1.0)]
    resumed.log_metrics({"train/loss": 9.0, "epoch": 1}, step=4)
    resumed.save()
    assert csv_column(run_dir, "train/loss")[-1] == (4, 9.0)
    assert (run_dir / "metrics.csv").read_text().count("epoch,") == 1
