"""One live run per run folder: a second ``fit`` with the same root and run name is refused while the
first runs (naming it) and after it (it holds checkpoints: ``--ckpt_path last`` or another name); a
killed owner frees the folder; a folder whose run left no checkpoint is started over."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_probes import probe_env
from test_fit import CLI, fit_args
from test_fit_resume import shards  # noqa: F401  (the module fixture of tiny train/val shards)

from neurotrain.train.cli import main
from neurotrain.train.run import fit_once as fit_once_module
from neurotrain.train.tracking.run_folder import (
    OWNER_FILE,
    RunFolderError,
    read_summary,
    write_summary,
)
from neurotrain.train.tracking.run_lock import RunFolderBusy, RunLock, claim_run_folder


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the first run ended before the test got to it"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_second_fit_of_a_run_folder_is_refused_while_and_after_the_first_runs(
    shards: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "go"
    args = fit_args("eeg_pretrain", shards, tmp_path, "r", "--trainer.max_epochs=1", "--data.batch_size=10")
    held = [
        *args,
        "--trainer.callbacks+=run_probes.WaitFor",
        f"--trainer.callbacks.path={marker}",
    ]
    first = subprocess.Popen(
        CLI + held, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=probe_env()
    )
    try:
        run = tmp_path / "r"
        wait_for(marker.with_name("go.waiting"), first)  # set up and holding at the start of training
        config = (run / "config.yaml").read_text()
        second = subprocess.run(CLI + args, capture_output=True, text=True, env=probe_env(), timeout=400)
        assert main([*args, "--ckpt_path=last"]) == 2  # a live run is never continued by another process
        for rc, err in ((second.returncode, second.stderr), (2, capsys.readouterr().err)):
            assert rc == 2, err[-3000:]
            (message,) = [line for line in err.splitlines() if line.startswith("error:")]
            assert message.startswith(f"error: run folder {run} is in use by a running process: ")
            assert f"pid {first.pid} on host {socket.gethostname()}, started 20" in message
            assert message.endswith("; wait for it to end or choose another --run_name")
            assert "Traceback" not in err
        marker.touch()
        _, err = first.communicate(timeout=400)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    # the first run's folder, untouched by the refused ones
    assert (run / "config.yaml").read_text() == config and "run_probes.WaitFor" in config
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best-epoch=0-step=4.ckpt",
        "last.ckpt",
    ]
    lines = (run / "metrics.csv").read_text().splitlines()
    assert sum(line.startswith("epoch,") for line in lines) == 1
    steps = [(r["epoch"], r["step"]) for r in csv.DictReader(lines) if r.get("train/loss")]
    assert len(steps) == len(set(steps))
    assert read_summary(run)["status"] == "finished" and not (run / OWNER_FILE).exists()

    # finished: starting it again without --ckpt_path would overwrite it
    before = file_times(run)
    assert main(args) == 2
    assert one_line_error(capsys) == (
        f"error: run folder {run} already holds a run (finished, step 4, 2 checkpoint(s)); "
        "continue it with --ckpt_path last, or choose another --run_name"
    )
    assert file_times(run) == before


def file_times(run: Path) -> dict[Path, int]:
    """Modification time of every file of a run folder, except W&B's own debug logs: its service
    process (``wandb-core``) outlives the run it served and appends to them as it shuts down."""
    return {
        p: p.stat().st_mtime_ns
        for p in run.rglob("*")
        if p.is_file() and not ("wandb" in p.relative_to(run).parts and p.name.startswith("debug"))
    }


HOLDER = """
import sys, time
from neurotrain.train.tracking.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire("holder")  # held while the process lives
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_owner_frees_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=rf"pid {holder.pid} on host .*, started .* \(holder\)"):
            RunLock(run).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
    lock = RunLock(run).acquire()  # the kernel released the dead owner's lock
    assert lock.held and (run / OWNER_FILE).exists()
    lock.release()
    assert not lock.held and not (run / OWNER_FILE).exists()


def test_a_run_that_left_no_checkpoint_is_started_over(tmp_path: Path) -> None:
    run = tmp_path / "r"
    (run / "media").mkdir(parents=True)
    (run / "media" / "old.png").write_bytes(b"png")
    (run / "metrics.csv").write_text("epoch,step\n0,0\n")
    (run / "wandb").mkdir()
    write_summary(run, {"status": "crashed", "started": "2026-01-01T00:00:00+00:00"})
    with pytest.warns(UserWarning, match="without any checkpoint .*crashed.* started over"):
        lock, resume = claim_run_folder(run, fit=True, ckpt_path=None)
    try:
        assert not resume and lock.held
        assert not (run / "metrics.csv").exists() and read_summary(run) is None
        assert not (run / "media").exists() and (run / "wandb").is_dir()  # W&B's runs stay
    finally:
        lock.release()


def test_which_runs_continue_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    best = run / "checkpoints" / "best-epoch=0-step=4.ckpt"
    best.write_bytes(b"x")
    write_summary(run, {"status": "running", "global_step": 4})  # its process is gone: lock free
    for ckpt_path in (None, "last"):  # no last.ckpt: nothing `last` continues
        with pytest.raises(
            RunFolderError,
            match=rf"\(killed, step 4, 1 checkpoint\(s\)\); continue it with --ckpt_path {best}",
        ):
            claim_run_folder(run, fit=True, ckpt_path=ckpt_path)
    assert RunLock(run).acquire().held  # a refusal gave the lock back
    for fit, ckpt_path in ((True, str(best)), (False, str(best))):
        lock, resume = claim_run_folder(run, fit=fit, ckpt_path=ckpt_path)
        lock.release()
        assert resume
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    lock, resume = claim_run_folder(run, fit=True, ckpt_path="last")
    lock.release()
    assert resume
    lock, resume = claim_run_folder(run, fit=False, ckpt_path=None)  # validate/test keep the folder
    lock.release()
    assert not resume


def test_fit_once_continues_from_the_newest_checkpoint_without_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jsonargparse import Namespace

    seen: list[Namespace] = []
    monkeypatch.setattr("neurotrain.train.run.lightning_cli.build_cli", seen.append)
    run = tmp_path / "f"
    (run / "checkpoints").mkdir(parents=True)
    old, new = (run / "checkpoints" / f"best-epoch={e}-step={4 * e + 4}.ckpt" for e in (0, 1))
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    os.utime(old, (1, 1))
    fit_once_module.fit_once(tmp_path, "f", Namespace())
    assert seen[-1]["ckpt_path"] == str(new)
    fit_once_module.fit_once(tmp_path, "fresh", Namespace())
    assert seen[-1].get("ckpt_path") is None
