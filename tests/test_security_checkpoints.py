"""Hostile checkpoints: nothing in them runs, whichever command is handed them.

A malicious checkpoint here is a file whose unpickling creates a marker file (a pickled object
whose ``__reduce__`` is ``open(marker, "w")`` in torch's zip format, or ``os.system("touch
marker")`` in a legacy pickle). ``test_the_payloads_are_live`` shows that full unpickling (and
DeepSpeed's own reader) would run them; every other test hands one to a command (``export`` of a
file and of a real DeepSpeed directory, ``--model.init_from``, ``--ckpt_path`` given as a path or
as ``last``) and checks it is refused with a one-line message naming the file, and that the marker
never exists. Real checkpoints (plain; DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU processes) pass the
same check, export and resume.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import test_fit
import torch

from neurotrain.models.checkpoint_io import (
    ALLOWED_GLOBALS,
    UnsafeCheckpointError,
    check_checkpoint,
    safe_load,
)
from neurotrain.train.cli import main

CLI = [sys.executable, "-m", "neurotrain.train.cli"]
KINDS = ["zip", "legacy"]


class _OpenMarker:
    """Unpickling this creates ``path`` (``open(path, "w")``)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


class _ShellMarker(_OpenMarker):
    """Unpickling this runs a shell command that creates ``path``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(self.path)}",))


def write_malicious(path: Path, marker: Path, kind: str) -> Path:
    """A checkpoint-looking file at ``path`` whose unpickling creates ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"state_dict": {"encoder.weight": torch.zeros(2)}, "global_step": 1}
    if kind == "zip":  # torch.save's format, as every real checkpoint
        torch.save({**content, "callbacks": _OpenMarker(marker)}, path)
    else:  # a plain pickle, as an attacker might write it
        with open(path, "wb") as f:
            pickle.dump({**content, "callbacks": _ShellMarker(marker)}, f)
    return path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The last stderr line, which must be the command's ``error: ...`` message."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "no message"
    assert lines[-1].startswith("error: "), lines[-10:]
    assert not any(line.startswith("Traceback") for line in lines)
    return lines[-1]


def fit_args(config: str, data: Path, root: Path, run: str, *extra: str, command: str = "fit") -> list[str]:
    """``test_fit``'s arguments of a shipped config, for ``command`` (fit, validate, ...)."""
    return [command, *test_fit.fit_args(config, data, root, run, *extra)[1:]]


def deepspeed_args(stage: int, data: Path, root: Path, run: str, *extra: str) -> list[str]:
    config = "eeg_pretrain_deepspeed" if stage == 2 else "eeg_pretrain_deepspeed_stage3"
    return CLI + fit_args(
        config,
        data,
        root,
        run,
        "--trainer.devices=2",
        f"--trainer.strategy=deepspeed_stage_{stage}_cpu",
        "--trainer.precision=32-true",
        "--trainer.limit_val_batches=1",
        "--model.encoder.size=tiny",
        "--data.batch_size=4",
        "--data.window_seconds=2.0",
        *extra,
    )


class DeepSpeedRun(NamedTuple):
    stage: int
    root: Path  # the runs' root folder
    ckpt: Path  # the checkpoint directory (``<root>/ds/checkpoints/last.ckpt``)


# ZeRO-3 (its own partitioned files) runs with the slow tests; ZeRO-2 in the fast suite.
@pytest.fixture(
    scope="module", params=[pytest.param(2, id="zero2"), pytest.param(3, id="zero3", marks=pytest.mark.slow)]
)
def deepspeed_run(
    request: pytest.FixtureRequest, eeg_shards: Path, tmp_path_factory: pytest.TempPathFactory
) -> DeepSpeedRun:
    """A real DeepSpeed checkpoint directory (ZeRO-2 or -3, 2 CPU processes, 2 steps)."""
    root = tmp_path_factory.mktemp(f"ds{request.param}")
    cmd = deepspeed_args(request.param, eeg_shards, root, "ds", "--trainer.max_steps=2")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = root / "ds" / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir()
    return DeepSpeedRun(request.param, root, ckpt)


def optim_file(directory: Path) -> Path:
    return sorted((directory / "checkpoint").glob("*_optim_states.pt"))[0]


def model_file(directory: Path) -> Path:
    return sorted((directory / "checkpoint").glob("*model_states.pt"))[0]


# ----------------------------------------------------------------------------- the payloads
@pytest.mark.parametrize("kind", KINDS)
def test_the_payloads_are_live(kind: str, tmp_path: Path) -> None:
    """Full unpickling runs them: what every test below checks never happens."""
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "evil.ckpt", marker, kind)
    with pytest.raises(UnsafeCheckpointError, match=rf"^refused checkpoint {path}: it holds "):
        safe_load(path)
    assert not marker.exists()
    with contextlib.suppress(RuntimeError):  # a bare pickle: torch fails, after unpickling it
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_deepspeed_reader_would_run_a_malicious_optimizer_file(
    deepspeed_run: DeepSpeedRun, tmp_path: Path
) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt = shutil.copytree(deepspeed_run.ckpt, tmp_path / "last.ckpt")
    marker = tmp_path / "marker"
    write_malicious(optim_file(ckpt), marker, "zip")
    with pytest.raises(Exception):  # noqa: B017 - it fails after running the payload
        get_fp32_state_dict_from_zero_checkpoint(str(ckpt))
    assert marker.exists()


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("kind", KINDS)
def test_export_refuses_a_malicious_file(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "evil.ckpt", marker, kind)
    out = tmp_path / "model.safetensors"
    assert main(["export", str(path), "--out", str(out)]) == 1
    assert one_line_error(capsys).startswith(f"error: refused checkpoint {path}: it holds ")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("which", ["optimizer state", "client state", "extra file"])
def test_export_refuses_a_deepspeed_directory_holding_a_malicious_file(
    which: str, deepspeed_run: DeepSpeedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = shutil.copytree(deepspeed_run.ckpt, tmp_path / "last.ckpt")
    victim = {
        "optimizer state": optim_file(ckpt),
        "client state": model_file(ckpt),
        "extra file": ckpt / "checkpoint" / "zz_extra.pt",
    }[which]
    marker = tmp_path / "marker"
    write_malicious(victim, marker, "zip")
    out = tmp_path / "model.safetensors"
    assert main(["export", str(ckpt), "--out", str(out)]) == 1
    assert one_line_error(capsys).startswith(f"error: refused checkpoint {victim}: it holds io.open")
    assert not marker.exists() and not out.exists()


def test_a_latest_tag_leaving_the_directory_is_refused(
    deepspeed_run: DeepSpeedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = shutil.copytree(deepspeed_run.ckpt, tmp_path / "ckpt" / "last.ckpt")
    elsewhere = shutil.copytree(ckpt / "checkpoint", tmp_path / "elsewhere")
    marker = tmp_path / "marker"
    write_malicious(sorted(elsewhere.glob("*_optim_states.pt"))[0], marker, "zip")
    (ckpt / "latest").write_text("../../elsewhere")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.safetensors")]) == 1
    assert one_line_error(capsys).startswith(
        f"error: refused checkpoint {ckpt / 'latest'}: it names the folder"
    )
    assert not marker.exists()


# ----------------------------------------------------------------------------- real checkpoints
def test_real_deepspeed_checkpoint_passes_exports_and_resumes(
    deepspeed_run: DeepSpeedRun, eeg_shards: Path, tmp_path: Path
) -> None:
    ckpt = deepspeed_run.ckpt
    checked = check_checkpoint(ckpt)  # the allow-list covers what DeepSpeed writes
    assert {p.name for p in checked} >= {optim_file(ckpt).name, model_file(ckpt).name}
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.safetensors")]) == 0
    cmd = deepspeed_args(deepspeed_run.stage, eeg_shards, tmp_path, "resumed", "--trainer.max_steps=3")
    proc = subprocess.run([*cmd, f"--ckpt_path={ckpt}"], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Restored all states from the checkpoint" in proc.stderr + proc.stdout
    client = safe_load(model_file(tmp_path / "resumed" / "checkpoints" / "last.ckpt"))
    assert client["global_step"] == 3  # went on from step 2


def test_the_allow_list_is_what_real_checkpoints_need(deepspeed_run: DeepSpeedRun) -> None:
    """A real checkpoint needs no global beyond the allow-list, and the allow-list's are found."""
    found = {
        name
        for path in deepspeed_run.ckpt.rglob("*.pt")
        for name in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    }
    assert found <= set(ALLOWED_GLOBALS)
    needed = {"deepspeed.runtime.zero.config.ZeroStageEnum", "deepspeed.runtime.fp16.loss_scaler.LossScaler"}
    if deepspeed_run.stage == 2:
        needed.add("deepspeed.utils.tensor_fragment.fragment_address")
    assert needed <= found  # (DynamicLossScaler only appears in fp16 runs, which need a GPU)


# ----------------------------------------------------------------------------- fit and friends
@pytest.mark.parametrize("kind", KINDS)
def test_init_from_refuses_a_malicious_file(
    kind: str, eeg_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neurotrain.models.modules import ClassifierModule

    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "evil.ckpt", marker, kind)
    args = fit_args("eeg_finetune", eeg_shards, tmp_path / "runs", "ft", f"--model.init_from={path}")
    assert main(args) == 2
    assert one_line_error(capsys).startswith(f"error: refused checkpoint {path}: it holds ")
    with pytest.raises(UnsafeCheckpointError, match=f"refused checkpoint {path}"):  # from Python too
        ClassifierModule(num_classes=2, encoder={"size": "tiny", "patch_size": 64}, init_from=str(path))
    assert not marker.exists() and not (tmp_path / "runs" / "ft").exists()


@pytest.mark.parametrize("command", ["fit", "validate"])
@pytest.mark.parametrize("kind", KINDS)
def test_ckpt_path_refuses_a_malicious_file(
    kind: str, command: str, eeg_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "evil.ckpt", marker, kind)
    args = fit_args(
        "eeg_pretrain", eeg_shards, tmp_path / "runs", "r", f"--ckpt_path={path}", command=command
    )
    assert main(args) == 2
    assert one_line_error(capsys).startswith(f"error: refused checkpoint {path}: it holds ")
    assert not marker.exists() and not (tmp_path / "runs").exists()  # refused before anything started


def test_ckpt_path_refuses_a_deepspeed_directory_holding_a_malicious_file(
    deepspeed_run: DeepSpeedRun, eeg_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = shutil.copytree(deepspeed_run.ckpt, tmp_path / "last.ckpt")
    marker = tmp_path / "marker"
    victim = write_malicious(optim_file(ckpt), marker, "zip")
    args = fit_args("eeg_pretrain_deepspeed", eeg_shards, tmp_path / "runs", "r", f"--ckpt_path={ckpt}")
    assert main([*args, "--trainer.strategy=deepspeed_stage_2_cpu", "--trainer.precision=32-true"]) == 2
    assert one_line_error(capsys).startswith(f"error: refused checkpoint {victim}: it holds io.open")
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_ckpt_path_last_refuses_a_malicious_last_checkpoint(
    eeg_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "runs" / "r" / "checkpoints" / "last.ckpt", marker, "zip")
    args = fit_args(
        "eeg_pretrain", eeg_shards, tmp_path / "runs", "r", "--ckpt_path=last", "--trainer.max_steps=1"
    )
    assert main(args) == 2
    assert one_line_error(capsys).startswith(f"error: refused checkpoint {path}: it holds io.open")
    assert not marker.exists()


def test_weights_only_false_is_refused(
    eeg_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = fit_args("eeg_pretrain", eeg_shards, tmp_path / "runs", "r", "--weights_only=false")
    assert main(args) == 2
    assert one_line_error(capsys).startswith(
        "error: --weights_only false: neurotrain loads checkpoints weights-only"
    )
    assert not (tmp_path / "runs").exists()


def test_a_missing_ckpt_path_is_one_line(
    eeg_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = fit_args(
        "eeg_pretrain", eeg_shards, tmp_path / "runs", "r", f"--ckpt_path={tmp_path / 'none.ckpt'}"
    )
    assert main(args) == 2
    assert (
        one_line_error(capsys)
        == f"error: --ckpt_path {tmp_path / 'none.ckpt'}: checkpoint not found: {tmp_path / 'none.ckpt'}"
    )
