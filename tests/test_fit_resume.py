"""`neurotrain fit` killed between an epoch's last training step and its validation, then resumed
(``--ckpt_path last``): the validation is run, the record and best checkpoints are complete, the
W&B run keeps its id (offline: two parts that `neurotrain sync` and `wandb sync` upload as one);
and a fit stopped by ``max_steps`` inside an epoch validates before it ends."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_datamodule import synthetic_shards
from run_probes import probe_env
from test_fit import CLI, fit_args

from neurotrain.train.run.lightning_cli import build_cli
from neurotrain.train.tracking.run_folder import read_summary

WANDB = Path(sys.executable).with_name("wandb")
STEPS_PER_EPOCH = 4  # 2 train subjects x 40 s = 40 windows of 2 s, batches of 10


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 8-channel subjects, two for training and two for validation (tiny and fast)."""
    root = tmp_path_factory.mktemp("resume_shards")
    return synthetic_shards(root, "rv", ["a", "b", "c", "d"], seconds=40.0, split_ratios=(0.5, 0.5, 0.0))


def fit_cmd(data: Path, root: Path, run: str, *extra: str) -> list[str]:
    return CLI + fit_args(
        "eeg_pretrain",
        data,
        root,
        run,
        "--trainer.max_epochs=2",
        "--data.batch_size=10",
        "--checkpoint_every_n_steps=2",
        "--trainer.log_every_n_steps=1",
        *extra,
    )


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def val_losses(run: Path) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r["val/loss"])) for r in rows(run) if r.get("val/loss")]


@pytest.fixture(scope="module")
def killed(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``k`` SIGKILLed as epoch 0's validation starts, then resumed; ``whole`` never stopped."""
    root = tmp_path_factory.mktemp("killed")
    # W&B writes its offline log every 15 s; every second here, so the killed part holds records
    env = probe_env(WANDB__TRANSACTION_LOG_FLUSH_INTERVAL="1")
    kill = (
        "--trainer.callbacks+=run_probes.KillAt",
        "--trainer.callbacks.hook=on_validation_start",
        "--trainer.callbacks.epoch=0",
    )
    first = subprocess.run(
        fit_cmd(shards, root, "k", *kill), capture_output=True, text=True, env=env, timeout=400
    )
    assert first.returncode == -9, first.stderr[-3000:]
    # epoch 0 trained to its end; the checkpoint Lightning would restore as "epoch done" must not exist
    assert not list((root / "k" / "checkpoints").glob("best-*.ckpt")) and not val_losses(root / "k")
    resumed = subprocess.run(
        fit_cmd(shards, root, "k", "--ckpt_path=last"), capture_output=True, text=True, env=env, timeout=400
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = subprocess.run(
        fit_cmd(shards, root, "whole"), capture_output=True, text=True, env=env, timeout=400
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    return root


def test_resume_runs_the_validation_the_kill_interrupted(killed: Path) -> None:
    run, whole = killed / "k", killed / "whole"
    losses = val_losses(run)
    assert [epoch for epoch, _ in losses] == [0, 1]  # one validation per epoch, none lost
    reference = val_losses(whole)  # of the same weights as a whole run
    assert [epoch for epoch, _ in reference] == [0, 1]
    assert [loss for _, loss in losses] == pytest.approx([loss for _, loss in reference], rel=1e-5)
    steps = [(r["epoch"], r["step"]) for r in rows(run) if r.get("train/loss")]
    assert len(steps) == len(set(steps)) == 2 * STEPS_PER_EPOCH  # every step logged once
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best-epoch=0-step=4.ckpt", "best-epoch=1-step=8.ckpt", "last.ckpt"]
    summary = read_summary(run)
    assert summary["status"] == "finished" and summary["resumes"] == 1
    assert summary["checkpoint"]["last"] == str(run / "checkpoints" / "last.ckpt")
    best_epoch, best = min(losses, key=lambda e: e[1])
    mon = summary["monitor"]
    assert mon["best"] == pytest.approx(best) and mon["best_epoch"] == best_epoch
    assert summary["checkpoint"]["best"].endswith(f"best-epoch={best_epoch}-step={4 * (best_epoch + 1)}.ckpt")
    a = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], msg=key)


def leet(path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(WANDB), "leet", "inspect", *flags, "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_resume_continues_the_same_wandb_run(killed: Path) -> None:
    run = killed / "k"
    run_id = read_summary(run)["wandb"]["id"]
    parts = sorted((run / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 1)[-1] for p in parts] == [run_id, run_id]  # W&B 0.31: one folder a process
    first, last = (json.loads(leet(p, "--summary").stdout) for p in parts)
    assert first["run_id"] == last["run_id"] == run_id and last["state"] == "finished"
    assert last["summary"]["best/val/loss"] == pytest.approx(read_summary(run)["monitor"]["best"])
    records = [json.loads(line) for line in leet(parts[1]).stdout.splitlines() if line.strip()]
    assert next(r for r in records if r["type"] == "run")["run"]["resume"] is True  # sync resumes into it
    # both parts go to one `wandb sync`, which uploads the parts of one id in order into one run
    ours = subprocess.run(
        [*CLI, "sync", str(run), "--dry-run"], capture_output=True, text=True, timeout=120, env=probe_env()
    )
    assert ours.returncode == 0, ours.stderr
    assert f"(run {run_id}, part 1 of 2: resumed)" in ours.stdout
    assert f"(run {run_id}, part 2 of 2: resumed)" in ours.stdout
    command = next(line for line in ours.stdout.splitlines() if line.startswith("would run:"))
    assert all(str(p) in command for p in parts)
    theirs = subprocess.run(
        [str(WANDB), "sync", "--dry-run", str(run / "wandb")], capture_output=True, text=True, timeout=120
    )
    assert theirs.returncode == 0 and "Would sync 2 run(s)" in theirs.stdout + theirs.stderr


def test_fit_stopped_by_max_steps_mid_epoch_validates_at_the_end(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = fit_args(
        "eeg_pretrain",
        shards,
        tmp_path,
        "short",
        "--trainer.max_steps=3",  # an epoch has 4 steps
        "--data.batch_size=10",
        "--trainer.num_sanity_val_steps=0",
    )
    cli = build_cli(args)
    run = tmp_path / "short"
    assert cli.trainer.global_step == 3
    assert [(int(r["epoch"]), int(r["step"])) for r in rows(run) if r.get("val/loss")] == [(0, 2)]
    summary = read_summary(run)
    assert summary["monitor"]["final_step"] == 2 and summary["monitor"]["best"] is not None
    assert summary["checkpoint"]["best"] == str(run / "checkpoints" / "best-epoch=0-step=3.ckpt")
    assert Path(summary["checkpoint"]["best"]).is_file()
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
