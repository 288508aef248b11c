"""Two `neurotrain sweep` agents share one study through a real PostgreSQL server on loopback.

The server is Debian's ``postgresql`` package (``initdb``/``pg_ctl``), started by the test in a temporary
folder on a free port, as the ``postgres`` user when the tests run as root. Skipped, with the reason,
where no server can be started or no PostgreSQL driver is installed; with ``CI=true`` (CI installs
PostgreSQL and the driver) each of these is a failure instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import optuna
import pytest
from test_sweep_local import SWEEP_CMD, grid_file, study_of, tiny

from neurotrain.train.tracking.run_folder import read_summary


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_ci() -> bool:
    """``CI=true`` (or 1/yes): the server and driver are installed, so their absence is a failure."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``; fail instead in CI, where PostgreSQL must be there."""
    if in_ci():
        pytest.fail(f"CI=true, but {reason}", pytrace=False)
    pytest.skip(reason)


def start_postgres(base: Path) -> tuple[str, Callable[[], None]]:
    """A PostgreSQL server with a ``sweeps`` database, its data in ``base``: (URL, stop)."""
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2")):
        unavailable("no PostgreSQL driver for SQLAlchemy: pip install 'psycopg[binary]'")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        unavailable("PostgreSQL server binaries not found (apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if not shutil.which("runuser"):
            unavailable("running as root without runuser: cannot start PostgreSQL as another user")
        try:
            shutil.chown(base, "postgres")
        except (LookupError, OSError) as exc:
            unavailable(f"no postgres user to run the server as ({exc})")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    init = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], capture_output=True, text=True
    )
    if init.returncode != 0:
        unavailable(f"initdb failed: {init.stderr[-500:]}")
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    start = subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        unavailable(f"PostgreSQL did not start: {start.stderr[-500:]}")

    def stop() -> None:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)

    made = subprocess.run(
        [_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "sweeps"],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        stop()
        pytest.fail(f"createdb failed on a running server: {made.stderr[-500:]}")
    return f"postgresql://postgres@127.0.0.1:{port}/sweeps", stop


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    # Not under pytest's root-only (0700) temp folder: the server user must reach its data folder.
    base = Path(tempfile.mkdtemp(prefix="neurotrain-pg-"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    url, stop = start_postgres(base)
    try:
        yield url
    finally:
        stop()


@pytest.mark.parametrize(
    ("failing", "reason"), [("initdb", "initdb failed"), ("pg_ctl", "PostgreSQL did not start")]
)
def test_a_server_that_cannot_start_is_a_skip_here_and_a_failure_in_ci(
    failing: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Path(tempfile.mkdtemp(prefix="neurotrain-pg-"))  # reachable by the postgres user
    fake = base / "bin"
    fake.mkdir()
    for name in ("initdb", "pg_ctl"):
        rc = 1 if name == failing else 0
        (fake / name).write_text(f"#!/bin/sh\necho {name} cannot run here >&2\nexit {rc}\n")
        (fake / name).chmod(0o755)
    monkeypatch.setattr(sys.modules[__name__], "_pg_bin", lambda name: str(fake / name))
    try:
        monkeypatch.setenv("CI", "false")
        with pytest.raises(pytest.skip.Exception, match=f"{reason}: {failing} cannot run here"):
            start_postgres(base)
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match=f"CI=true, but {reason}: {failing} cannot run here"):
            start_postgres(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_two_agents_share_one_study_through_postgres(
    postgres_url: str, eeg_shards: Path, tmp_path: Path
) -> None:
    file = grid_file(tmp_path, "shared", "[0.001, 0.002, 0.003]")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    agents = []
    for i in range(2):
        time.sleep(3 * i)  # the second agent joins a sweep that is already running
        agents.append(
            subprocess.Popen(
                [
                    *SWEEP_CMD,
                    str(file),
                    "--backend",
                    "local",
                    "--storage",
                    postgres_url,
                    "--root",
                    str(tmp_path / f"m{i}"),
                    *tiny(eeg_shards),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
        )
    outs = [a.communicate(timeout=500)[0] for a in agents]
    assert all(a.returncode == 0 for a in agents), "\n".join(o[-2000:] for o in outs)
    study = study_of(file, tmp_path, storage=postgres_url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3  # the grid once, not twice
    assert sorted(t.params["model.optimizer.lr"] for t in trials) == [0.001, 0.002, 0.003]
    assert len({t.user_attrs["sweep_pid"] for t in trials}) == 2  # both agents ran trials of the one study
    runs = [p for m in ("m0", "m1") for p in (tmp_path / m).iterdir() if p.name != "sweeps"]
    assert len(runs) == 3 and all(read_summary(r)["status"] == "finished" for r in runs)
