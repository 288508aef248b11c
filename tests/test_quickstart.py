"""`neurotrain quickstart --fast` end to end (slow), and its resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CMD = [sys.executable, "-m", "neurotrain.train.cli", "quickstart", "--fast"]
METHODS = {
    "encoder, pretrained + fine-tuned",
    "encoder, fine-tuned from scratch",
    "logistic regression",
    "XDAWN + tangent space",
}


def test_quickstart_fast_runs_end_to_end_and_resumes_after_sigkill(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [*CMD, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pretrain_ckpt = out / "runs" / "pretrain" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not pretrain_ckpt.exists():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # mid-pretraining (or later): the re-run must continue
    proc.wait()
    assert (out / "shards" / "eeg" / "manifest.json").exists()

    done = subprocess.run([*CMD, "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == METHODS
    for scores in results["methods"].values():
        assert 0.0 <= scores["balanced_accuracy"] <= 1.0 and 0.0 <= scores["auroc"] <= 1.0
    # the classical baselines on the same epochs land where the reference figures say (0.50-0.66)
    assert 0.45 < results["methods"]["logistic regression"]["balanced_accuracy"] < 0.75
    report = (out / "report.html").read_text()
    assert 'id="quickstart-results"' in report and all(m in report for m in ("pretrain", "finetune-scratch"))
    for run in ("pretrain", "finetune-pretrained", "finetune-scratch"):
        summary = json.loads((out / "runs" / run / "summary.json").read_text())
        assert summary["status"] == "finished"
    assert "resuming" in done.stderr or "finished earlier" in done.stderr

    again = subprocess.run([*CMD, "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stderr.count("finished earlier, kept") == 3
