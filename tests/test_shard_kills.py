"""A killed `neurotrain shard` run: its workers end with it, and the next run removes what dead runs left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import synthetic

from neurotrain.datamodules.sharding import PARTS_DIR, shard_dataset
from neurotrain.datamodules.sharding.inspection import verify_shards
from neurotrain.datamodules.sharding.writer import TMP_DIR, host_name


def _alive(p: psutil.Process) -> bool:
    """Running, and not a zombie (an orphan that a non-reaping init has not collected is dead too)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _written(out: Path) -> dict[str, int]:
    files = list(out.glob("*.tar")) + list((out / PARTS_DIR).glob("*.json"))
    return {p.name: p.stat().st_mtime_ns for p in files}


def _kill_mid_run(
    proc: subprocess.Popen, main: psutil.Process, workers: list[psutil.Process], out: Path, n: int
) -> None:
    """SIGKILL the main process once it has two workers and a finished recording; check the aftermath."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        workers[:] = main.children()
        if len(workers) >= 2 and list((out / PARTS_DIR).glob("*.json")):
            break
        time.sleep(0.01)
    assert len(workers) == 2, "the run must have its two workers when it is killed"
    os.kill(proc.pid, signal.SIGKILL)  # the main process only, not its process group
    proc.wait()
    at_kill = _written(out)

    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "workers outlived the run that started them"
    gone = _written(out)
    # at most the recordings being renamed into place in the instant of the kill
    assert len(set(gone) - set(at_kill)) <= 2 * 2
    time.sleep(1.5)
    assert _written(out) == gone, "shards or parts appeared after the workers should have ended"
    assert len([k for k in gone if k.endswith(".json")]) < n, "the kill must land mid-run to mean anything"
    assert not (out / "manifest.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers end by PR_SET_PDEATHSIG (Linux)")
def test_sigkill_of_the_main_process_ends_its_workers_and_a_rerun_cleans_up(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    n = 8
    for i in range(n):  # each takes a noticeable fraction of a second, so the kill lands mid-run
        synthetic.write_fif(src / f"sub-{i:02d}_raw.fif", n_channels=12, sfreq=512, seconds=300, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "neurotrain.train.cli", "shard", str(src), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--no-progress", "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    main = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []
    try:
        _kill_mid_run(proc, main, workers, out, n)
    finally:  # a failing check must not leave orphans behind
        for w in workers:
            with contextlib.suppress(psutil.Error):
                w.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    rerun = subprocess.run([*cmd, "--no-progress", "--workers", "2"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list((out / TMP_DIR).iterdir()), "temporary folders were left behind"
    assert verify_shards(out) == []
    assert len(list((out / PARTS_DIR).glob("*.json"))) == n


def test_a_run_removes_only_the_temporary_folders_of_dead_runs_on_this_host(tmp_path: Path) -> None:
    src = synthetic.write_fif(tmp_path / "one_raw.fif", seconds=12)
    out = tmp_path / "out"
    tmp = out / TMP_DIR
    tmp.mkdir(parents=True)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # reaped: its pid no longer runs
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = host_name()
        folders = {
            "dead": tmp / f"sub-01_raw.{host}.{finished.pid}.abc12345",
            "live": tmp / f"sub-02_raw.{host}.{live.pid}.def12345",
            "other_host": tmp / f"sub-03_raw.some-other-node.{finished.pid}.ghi12345",
            "old_unnamed": tmp / "sub-04_raw.jkl12345",
            "new_unnamed": tmp / "sub-05_raw.mno12345",
        }
        for folder in folders.values():
            folder.mkdir()
            (folder / "sub-x-0000.tar").write_bytes(b"\0" * 4096)
        two_hours_ago = time.time() - 7200
        os.utime(folders["old_unnamed"], (two_hours_ago, two_hours_ago))

        shard_dataset([src], out, segment_seconds=10)

        left = {name for name, folder in folders.items() if folder.exists()}
        assert left == {"live", "other_host", "new_unnamed"}
        assert sorted(p.name for p in tmp.iterdir()) == sorted(folders[k].name for k in left)
    finally:
        live.kill()
        live.wait()
