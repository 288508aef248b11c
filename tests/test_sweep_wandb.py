"""The W&B backend refuses fast and clearly when W&B cannot run the sweep; ``auto`` then goes local.

No test here reaches the internet: the server is a closed port or a silent socket on loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import neurotrain.train.sweeps.local as sweep_local
from neurotrain.train.cli import main as cli_main
from neurotrain.train.sweeps.wandb_backend import WandbUnavailable, agent_values, check_wandb

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "eeg_finetune.yaml"
DUMMY_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (a hung proxy)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    srv.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=os.environ.get("HOME", "/tmp"), NETRC="/nonexistent-netrc", WANDB_SILENT="true", **extra)
    return env


def _run(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "neurotrain.train.cli", "sweep", str(SWEEP), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return proc, time.monotonic() - t0


def test_no_key_fails_at_once_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(WandbUnavailable, match="no W&B API key"):
        check_wandb(env=_env())
    proc, _ = _run(["--backend", "wandb", "--root", str(tmp_path)], _env())
    assert proc.returncode == 1 and "no W&B API key" in proc.stderr
    assert not any(p.name != "sweeps" for p in tmp_path.iterdir())


def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    env = _env(WANDB_API_KEY=DUMMY_KEY, WANDB_BASE_URL=f"http://127.0.0.1:{_closed_port()}")
    proc, took = _run(["--backend", "wandb", "--root", str(tmp_path)], env)
    assert proc.returncode == 1 and "cannot reach the W&B server" in proc.stderr, proc.stderr[-2000:]
    assert took < 60  # parsing the config plus a refused connection; no retries against the server


def test_silent_server_fails_within_the_configured_timeout(silent_server: str, tmp_path: Path) -> None:
    env = _env(WANDB_API_KEY=DUMMY_KEY, WANDB_BASE_URL=silent_server)
    with pytest.raises(WandbUnavailable, match="cannot reach|no answer|failed"):
        from neurotrain.train.sweeps.schema import load_sweep
        from neurotrain.train.sweeps.wandb_backend import run_wandb

        t0 = time.monotonic()
        old = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            run_wandb(load_sweep(SWEEP), root=tmp_path, timeout_s=3)
        finally:
            os.environ.clear()
            os.environ.update(old)
    assert time.monotonic() - t0 < 20


def test_auto_falls_back_to_local_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(sweep_local, "run_local", lambda spec, **kw: calls.append(kw) or 0)
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", "/nonexistent-netrc")
    monkeypatch.setenv("WANDB_API_KEY", DUMMY_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    assert cli_main(["sweep", str(SWEEP), "--root", str(tmp_path), "--wandb-timeout", "5"]) == 0
    out = capsys.readouterr().out
    assert "W&B is unreachable" in out and "running the sweep locally with Optuna instead" in out
    assert len(calls) == 1

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert cli_main(["sweep", str(SWEEP), "--root", str(tmp_path)]) == 0
    assert (
        "W&B is offline (WANDB_MODE=offline): running the sweep locally with Optuna"
        in capsys.readouterr().out
    )


def test_agent_values_become_flat_cli_keys(tmp_path: Path) -> None:
    path = tmp_path / "config-run.yaml"
    path.write_text(
        "model.init_args.lr: {value: 0.001}\nmodel: {value: {linear_probe: true}}\nwandb_version: 1\n"
    )
    values = agent_values({"WANDB_SWEEP_PARAM_PATH": str(path)})
    assert values == {"model.lr": 0.001, "model.linear_probe": True}
