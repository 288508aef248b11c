"""Two `neurotrain sweep` agents share one study through a real PostgreSQL server on loopback.

The server is Debian's ``postgresql`` package (``initdb``/``pg_ctl``), started by the test in a temporary
folder on a free port, as the ``postgres`` user when the tests run as root. Skipped, with the reason,
where no server can be started or ``psycopg2`` is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2")):
        pytest.skip("no PostgreSQL driver for SQLAlchemy: pip install 'psycopg[binary]'")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    as_user: list[str] = []
    # Not under pytest's root-only (0700) temp folder: the server user must reach its data folder.
    base = Path(tempfile.mkdtemp(prefix="neurotrain-pg-"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    if os.geteuid() == 0:  # the server refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        try:
            shutil.chown(base, "postgres")
        except (LookupError, OSError) as exc:
            pytest.skip(f"no postgres user to run the server as ({exc})")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    init = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], capture_output=True, text=True
    )
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr[-500:]}")
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    start = subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {start.stderr[-500:]}")
    try:
        made = subprocess.run(
            [
                _pg_bin("createdb") or "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "sweeps",
            ],
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        yield f"postgresql://postgres@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)


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
