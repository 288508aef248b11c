"""W&B tracking: offline runs of the shipped configs read back by W&B's own CLI, disabled mode, one run
under 2-process DDP, and the mode/parent-run helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.demos.boring_classes import BoringModel
from test_fit import CLI, fit_args

from neurotrain.train.cli import main
from neurotrain.train.run.lightning_cli import build_cli
from neurotrain.train.tracking.run_folder import read_summary
from neurotrain.train.tracking.sync import find_offline_runs, offline_run_id
from neurotrain.train.tracking.wandb_run import (
    TrackingError,
    WandbRunTracker,
    parent_run_info,
    resolve_init_from,
    wandb_logger,
)
from neurotrain.train.tracking.wandb_server import is_logged_in, resolve_mode

WANDB = Path(sys.executable).with_name("wandb")


def wandb_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def leet_summary(run_dir: Path) -> dict:
    """What ``wandb leet inspect --summary --json`` (W&B's own reader) makes of the run's .wandb log."""
    (run,) = wandb_runs(run_dir)
    (log,) = run.glob("run-*.wandb")
    proc = subprocess.run(
        [str(WANDB), "leet", "inspect", "--summary", "--json", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def leet_records(run_dir: Path) -> list[dict]:
    (run,) = wandb_runs(run_dir)
    proc = subprocess.run(
        [str(WANDB), "leet", "inspect", "--json", str(run)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def offline_runs(eeg_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretraining run and a fine-tune from its checkpoint, both with W&B offline."""
    root = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    try:
        build_cli(
            fit_args(
                "eeg_pretrain",
                eeg_shards,
                root,
                "pre",
                "--trainer.max_steps=4",
                "--trainer.val_check_interval=2",
                "--trainer.limit_val_batches=2",
                "--trainer.log_every_n_steps=2",
                "--data.batch_size=8",
                "--model.optimizer.lr=0.0007",
                "--throughput_window=2",
                "--group=g1",
                "--tags=[a,b]",
            )
        )
        build_cli(
            fit_args(
                "eeg_finetune",
                eeg_shards,
                root,
                "ft",
                "--trainer.max_steps=2",
                "--trainer.val_check_interval=2",
                "--trainer.limit_val_batches=2",
                "--trainer.log_every_n_steps=1",
                f"--model.init_from={root / 'pre' / 'checkpoints' / 'last.ckpt'}",
            )
        )
    finally:
        mp.undo()
    return root


def test_pretrain_offline_run_reads_back_with_wandb_cli(offline_runs: Path) -> None:
    run_dir = offline_runs / "pre"
    assert len(wandb_runs(run_dir)) == 1
    wb = leet_summary(run_dir)
    local = read_summary(run_dir)
    assert wb["state"] == "finished" and wb["name"] == "pre" and wb["run_id"] == local["wandb"]["id"]
    assert local["wandb"]["mode"] == "offline"
    # the resolved CLI config, overrides included, not just the module's hparams
    cfg = wb["config"]
    assert cfg["model"]["init_args"]["optimizer"]["lr"] == pytest.approx(7e-4)
    assert cfg["data"]["window_seconds"] == 2.0
    assert cfg["trainer"]["max_steps"] == 4 and cfg["group"] == "g1" and cfg["tags"] == ["a", "b"]
    prov = cfg["neurotrain"]
    assert prov["job_type"] == "pretrain"
    assert len(prov["data"]["manifest_sha256"][0]) == 64 and prov["data"]["datasets"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    assert prov["versions"]["wandb"] and prov["versions"]["torch"]
    # the best monitored value, as RunRecord saw it
    assert wb["summary"]["best/val/loss"] == pytest.approx(local["monitor"]["best"])
    assert {"train/loss", "val/loss", "train/device/samples_per_sec", "epoch"} <= set(wb["summary"])
    assert {"media/reconstruction", "media/topomap"} <= set(wb["summary"])


def test_pretrain_run_logs_best_checkpoint_as_reference_artifact(offline_runs: Path) -> None:
    records = leet_records(offline_runs / "pre")
    text = json.dumps([r for r in records if "artifact" in json.dumps(r).lower()])
    assert "file://" in text and "best-epoch" in text


def test_local_run_folder_is_complete(offline_runs: Path) -> None:
    run_dir = offline_runs / "pre"
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]["optimizer"][
        "lr"
    ] == pytest.approx(7e-4)
    media = {p.name for p in (run_dir / "media").glob("*.png")}
    assert {
        "reconstruction_step000002.png",
        "topomap_step000002.png",
        "reconstruction_step000004.png",
    } <= media
    assert "media/topomap_step000004.png" in read_summary(run_dir)["media"]


def test_finetune_links_to_its_pretraining_run(offline_runs: Path) -> None:
    pre, ft = read_summary(offline_runs / "pre"), read_summary(offline_runs / "ft")
    wb = leet_summary(offline_runs / "ft")
    prov = wb["config"]["neurotrain"]
    assert prov["job_type"] == "finetune" and prov["parent_wandb_id"] == pre["wandb"]["id"]
    assert prov["parent_run"].endswith("last.ckpt") and ft["extra"]["parent_wandb_id"] == pre["wandb"]["id"]
    assert "best/val/balanced_accuracy" in wb["summary"]
    assert list((offline_runs / "ft" / "media").glob("confusion_step*.png"))


def test_validate_is_tracked_as_an_eval_run(offline_runs: Path, eeg_shards: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = fit_args("eeg_pretrain", eeg_shards, offline_runs, "val", "--trainer.limit_val_batches=1")
    args[0] = "validate"
    build_cli([*args, f"--ckpt_path={offline_runs / 'pre' / 'checkpoints' / 'last.ckpt'}"])
    wb = leet_summary(offline_runs / "val")
    assert wb["config"]["neurotrain"]["job_type"] == "eval" and wb["state"] == "finished"
    assert wb["summary"]["best/val/loss"] == pytest.approx(
        read_summary(offline_runs / "val")["monitor"]["best"]
    )


@pytest.mark.slow  # W&B retries the dead server for 5-20 s (90 s seen on a loaded machine)
def test_online_start_failure_falls_back_to_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Logged in but the server is unreachable: the run goes on offline instead of crashing."""
    monkeypatch.setenv("WANDB_API_KEY", "x" * 86)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode() == "online"
    with pytest.warns(UserWarning, match="logging offline instead"):
        logger = wandb_logger(tmp_path, mode="online", name="flaky")
    run = logger.experiment
    assert run.offline and logger.mode == "offline"
    logger.log_metrics({"val/loss": 1.0}, step=0)
    logger.finalize("success")
    assert len(wandb_runs(tmp_path)) == 1 and "neurotrain sync" in capsys.readouterr().err


def test_disabled_wandb_still_records_the_run_locally(
    eeg_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = fit_args(
        "eeg_pretrain",
        eeg_shards,
        tmp_path,
        "off",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1",
    )
    cli = build_cli(args)
    assert cli.trainer.global_step == 2
    run_dir = tmp_path / "off"
    assert not (run_dir / "wandb").exists()
    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["wandb"] is None
    assert (run_dir / "metrics.csv").is_file() and list((run_dir / "media").glob("*.png"))


@pytest.mark.slow  # two DDP processes (~27 s)
def test_two_process_ddp_creates_exactly_one_wandb_run(eeg_shards: Path, tmp_path: Path) -> None:
    cmd = CLI + fit_args(
        "eeg_pretrain",
        eeg_shards,
        tmp_path,
        "ddp",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--data.batch_size=4",
    )
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(wandb_runs(tmp_path / "ddp")) == 1
    assert list(tmp_path.rglob("offline-run-*")) == wandb_runs(tmp_path / "ddp")  # none elsewhere either
    assert proc.stderr.count("neurotrain sync") == 1  # the offline hint, from rank zero only


def test_mode_env_wins_then_login_decides(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    assert resolve_mode({"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}) == "disabled"
    assert resolve_mode({"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}) == "offline"
    assert resolve_mode({"WANDB_MODE": "dryrun"}) == "offline"
    assert resolve_mode({"WANDB_API_KEY": "k"}) == "online"
    assert resolve_mode({"NETRC": str(netrc)}) == "offline"  # no such file
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert is_logged_in({"NETRC": str(netrc)})
    assert not is_logged_in({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"})
    netrc.write_text("this is not a netrc file \x00")
    assert resolve_mode({"NETRC": str(netrc)}) == "offline"


def test_artifact_init_from_needs_online(tmp_path: Path) -> None:
    assert resolve_init_from("ckpt/last.ckpt", tmp_path, "offline") == "ckpt/last.ckpt"
    with pytest.raises(TrackingError, match="W&B is offline.*local path"):
        resolve_init_from("wandb:me/neurotrain/model-abc:best", tmp_path, "offline")


def test_parent_run_info_finds_the_wandb_id(tmp_path: Path) -> None:
    run = tmp_path / "pre"
    (run / "checkpoints").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"name": "pre", "wandb": {"id": "abc123"}}))
    info = parent_run_info(str(run / "checkpoints" / "last.ckpt"))
    assert info["parent_wandb_id"] == "abc123" and info["parent_run_name"] == "pre"
    assert parent_run_info(str(tmp_path / "elsewhere.ckpt")) == {
        "parent_run": str(tmp_path / "elsewhere.ckpt")
    }
    assert parent_run_info(None) == {}


def test_artifact_named_while_offline_is_a_clear_error(
    eeg_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = fit_args(
        "eeg_finetune", eeg_shards, tmp_path, "ft", "--model.init_from=wandb:me/neurotrain/model-x:best"
    )
    assert main(args) == 2
    assert "W&B is offline" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()  # nothing was started


class _Boring(BoringModel):
    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        out = super().validation_step(batch, batch_idx)
        self.log("valid_loss", out["x"])
        return out


class _Crashing(_Boring):
    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        if batch_idx == 2:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def _boring_trainer(run_dir: Path, tracker: WandbRunTracker | None = None) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=run_dir,
        logger=[wandb_logger(run_dir, mode="offline", name="boring")],
        callbacks=[
            ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="valid_loss"),
            *([tracker] if tracker else []),
        ],
        max_steps=4,
        limit_val_batches=2,
        val_check_interval=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


def test_a_crashed_run_is_closed_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(RuntimeError, match="boom"):
        _boring_trainer(tmp_path).fit(_Crashing())
    wb = leet_summary(tmp_path)
    assert wb["exit_code"] == 1 and wb["state"] != "finished"


def test_file_artifact_copies_the_best_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # W&B stages artifact files here
    tracker = WandbRunTracker(config={"a": 1}, provenance={}, monitor="valid_loss", artifact="file")
    trainer = _boring_trainer(tmp_path / "run", tracker)
    trainer.fit(_Boring())
    text = json.dumps([r for r in leet_records(tmp_path / "run") if "artifact" in json.dumps(r).lower()])
    assert "model-" in text and "file://" not in text
    assert leet_summary(tmp_path / "run")["summary"]["best/valid_loss"] == pytest.approx(
        float(trainer.checkpoint_callback.best_model_score)
    )


def test_wandb_logger_continues_a_recorded_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    for value in (1.0, 2.0):  # a run and its resume, as two W&B runs of one id
        logger = wandb_logger(tmp_path, mode="offline", name="again", run_id="fixedid123")
        assert logger.experiment.id == "fixedid123"
        logger.log_metrics({"x": value}, step=int(value))
        logger.finalize("success")
    parts = wandb_runs(tmp_path)
    assert len(parts) == 2 and {offline_run_id(p) for p in parts} == {"fixedid123"}


def test_sync_lists_the_parts_of_a_resumed_run_and_skips_empty_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wandb = tmp_path / "run" / "wandb"
    folders = {
        "offline-run-20260101_000000-abc": ("abc", 7),  # killed before W&B's first write: header only
        "offline-run-20260101_000100-abc": ("abc", 100),
        "offline-run-20260101_000200-abc": ("abc", 100),
        "offline-run-20260101_000200-abc-1": ("abc", 100),  # a second start within the same second
        "offline-run-20260101_000300-xyz": ("xyz", 100),
    }
    for name, (run_id, size) in folders.items():
        (wandb / name).mkdir(parents=True)
        (wandb / name / f"run-{run_id}.wandb").write_bytes(b"x" * size)
    runs = find_offline_runs(tmp_path)
    assert [r.name for r in runs] == sorted(folders)[1:]
    assert main(["sync", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for i, name in enumerate(sorted(folders)[1:4]):
        assert f"{wandb / name}  (run abc, part {i + 1} of 3: resumed)" in out
    assert f"{wandb / 'offline-run-20260101_000300-xyz'}\n" in out
    assert "offline-run-20260101_000000-abc " not in out and "000000-abc\n" not in out
