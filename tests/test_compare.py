"""``neurotrain compare`` and ``neurotrain sync`` on run folders made by real tiny trainings.

The browser test opens the report from disk in Debian's headless chromium (skipped only when no
chromium is installed; with ``NEUROTRAIN_REQUIRE_BROWSER=1``, as in CI, it fails instead) and saves a
screenshot to ``tests/artifacts/compare_report.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import wandb
from test_run_record import csv_column, train_run

from neurotrain.train.report.compare import add_compare_parser, build_report
from neurotrain.train.report.runs import CompareError, resolve_status
from neurotrain.train.tracking.run_folder import read_summary, write_summary
from neurotrain.train.tracking.sync import add_sync_parser, find_offline_runs, sync_runs

LRS = (0.3, 0.1, 0.03)
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three finished runs of one sweep over the learning rate, and one run that crashed mid-training."""
    root = tmp_path_factory.mktemp("checkpoints")
    for lr in LRS:
        train_run(root / f"lr-{lr}", lr, group="lr-sweep", sweep_id="sweep-lr", sweep_params={"model.lr": lr})
    train_run(root / "crashed", 0.05, group="lr-sweep", crash_at_step=12)
    return root


def run_cli(add_parser, argv: list[str]) -> int:
    """Parse ``argv`` with the subcommand's own parser registration, as ``neurotrain`` would."""
    parser = argparse.ArgumentParser(prog="neurotrain")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


class _TableReader(HTMLParser):
    """Rows (cell texts) of the table with id ``runs``, plus the classes of every svg element."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.header: list[str] = []
        self.run_names: list[str] = []  # data-run of each body row
        self.svg_in: dict[str, int] = {}
        self._in_table = self._in_cell = False
        self._cell_depth = 0
        self._open_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "runs":
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
            if a.get("data-run"):
                self.run_names.append(a["data-run"])
        elif self._in_table and tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1].append("")
        if tag == "div" and a.get("id", "").startswith(("plot-", "parcoords-")):
            self._open_ids.append(a["id"])
        if tag == "svg" and "main-svg" in (a.get("class") or "") and self._open_ids:
            self.svg_in[self._open_ids[-1]] = self.svg_in.get(self._open_ids[-1], 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._in_table:
            self._in_table = False
            self.header, self.rows = self.rows[0], self.rows[1:]
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_table and self._in_cell and self.rows:
            self.rows[-1][-1] += data


def read_table(html: str) -> _TableReader:
    reader = _TableReader()
    reader.feed(html)
    return reader


def test_report_has_runs_diff_keys_status_and_sweep(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert (
        run_cli(add_compare_parser, ["compare", str(runs_root), "--out", str(out), "--smoothing", "0.5"]) == 0
    )
    html = out.read_text()
    table = read_table(html)
    assert sorted(table.run_names) == sorted(["crashed", *(f"lr-{lr}" for lr in LRS)])
    assert all(row[0].startswith(name) for name, row in zip(table.run_names, table.rows, strict=True))
    header = table.header
    assert "model.lr" in header and "best val/loss" in header and "final val/loss" in header
    assert not any(h.startswith(("model.hidden", "trainer.", "data.")) for h in header)  # same in all runs
    by_name = {
        n: dict(zip(header, row, strict=True)) for n, row in zip(table.run_names, table.rows, strict=True)
    }
    assert by_name["crashed"]["status"].startswith("crashed")
    assert "RuntimeError: synthetic failure" in by_name["crashed"]["status"]
    for lr in LRS:
        row = by_name[f"lr-{lr}"]
        assert row["status"] == "finished" and float(row["model.lr"]) == lr
        val = [v for _, v in csv_column(runs_root / f"lr-{lr}", "val/loss")]
        assert float(row["best val/loss"]) == pytest.approx(min(val), rel=1e-5)
        assert float(row["final val/loss"]) == pytest.approx(val[-1], rel=1e-5)
        assert float(row["best val/loss"]) == pytest.approx(
            read_summary(runs_root / f"lr-{lr}")["monitor"]["best"]
        )

    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    assert data["metrics"][0] == "val/loss" and {"train/loss", "val/acc"} <= set(data["metrics"])
    assert data["smoothing"] == 0.5
    crashed = next(r for r in data["runs"] if r["name"] == "crashed")
    assert crashed["crashed"] and max(crashed["curves"]["train/loss"]["step"]) < 12
    (sweep,) = data["parcoords"]
    assert sweep["title"] == "sweep sweep-lr" and sorted(sweep["runs"]) == sorted(f"lr-{lr}" for lr in LRS)
    assert [d["label"] for d in sweep["dims"]] == ["model.lr", "best val/loss"]
    media = html.split('<div id="media">')[1]
    assert media.count('src="data:image/png;base64,') == 4  # the newest figure of each run
    assert (
        media.count("weights_epoch003.png") == 2 * 3 and "weights_epoch000.png" in media
    )  # crashed: epoch 0
    assert "plotly.js v" in html and "https://" not in html.split("<body>")[1].split("report-data")[0]


def test_filter_group_by_and_errors(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "filtered.html"
    runs = build_report([runs_root], out, filters=["model.lr=1e-1"])
    assert [r.name for r in runs] == ["lr-0.1"]
    assert [r.name for r in build_report([runs_root], out, filters=["status=crashed"])] == ["crashed"]
    assert len(build_report([runs_root], out, filters=["sweep_id=sweep-lr"])) == 3

    runs = build_report([runs_root], out, group_by="sweep_id", media="none")
    html = out.read_text()
    assert len(runs) == 4 and 'id="groups"' in html and '<div id="media">' not in html
    assert json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))["parcoords"]

    with pytest.raises(CompareError, match="none of the 4 runs"):
        build_report([runs_root], out, filters=["model.lr=42"])
    with pytest.raises(CompareError, match="expected key=value"):
        build_report([runs_root], out, filters=["model.lr"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no run folders"):
        build_report([tmp_path / "empty"], out)
    assert run_cli(add_compare_parser, ["compare", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_killed_run_shows_as_crashed_killed(runs_root: Path, tmp_path: Path) -> None:
    """A process killed outright leaves status running; a dead pid or stale heartbeat reveals it."""
    killed = tmp_path / "killed"
    shutil.copytree(runs_root / "lr-0.1", killed)
    summary = read_summary(killed)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    summary.update(status="running", finished=None, name="killed", pid=dead.pid)
    write_summary(killed, summary)
    assert resolve_status(summary)[0] == "crashed/killed"
    summary.update(host="another-host", heartbeat="2020-01-01T00:00:00+00:00")
    assert resolve_status(summary)[0] == "crashed/killed"
    summary.update(heartbeat=summary["started"], pid=None)
    live = dict(summary, heartbeat=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
    assert resolve_status(live)[0] == "running"

    out = tmp_path / "r.html"
    build_report([killed], out)
    table = read_table(out.read_text())
    assert table.run_names == ["killed"] and table.rows[0][table.header.index("status")].startswith(
        "crashed/killed"
    )


_KILLED_SCRIPT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import test_run_record as t

class KilledMLP(t.TinyMLP):
    def training_step(self, batch, batch_idx):
        if self.global_step >= 12:
            os.kill(os.getpid(), signal.SIGKILL)  # no exception, no hook: what the OOM killer does
        return super().training_step(batch, batch_idx)

t.TinyMLP = KilledMLP
t.train_run(t.Path(sys.argv[2]), 0.1)
"""


def test_process_killed_outright_shows_as_crashed_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "sigkilled"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_SCRIPT, str(Path(__file__).parent), str(run_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    summary = read_summary(run_dir)
    assert summary["status"] == "running" and summary["monitor"]["final"] is not None
    steps = [step for step, _ in csv_column(run_dir, "train/loss")]
    assert steps and 9 <= max(steps) < 12  # metrics up to the kill

    runs = build_report([run_dir], tmp_path / "r.html")
    assert runs[0].status == "crashed/killed" and "is gone" in runs[0].status_detail


def test_sync_finds_offline_runs_and_fails_fast_offline(tmp_path: Path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "wb-run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    train_run(run_dir, 0.1, epochs=1, wandb_mode="offline")
    # Lightning's plain WandbLogger leaves the run open until the process exits, and the W&B service
    # writes the transaction log asynchronously: under load it may still hold only its header here
    # (seen twice in CI, once after wandb.finish()). Wait for the first record, as a user would.
    wandb.finish()
    wb_dir = Path(read_summary(run_dir)["wandb"]["dir"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(f.stat().st_size > 7 for f in wb_dir.glob("run-*.wandb")):
        time.sleep(0.2)
    assert find_offline_runs(tmp_path) == [wb_dir]

    assert run_cli(add_sync_parser, ["sync", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "1 offline W&B run(s)" in printed and str(wb_dir) in printed and "wandb sync" in printed

    # A closed port stands in for "no network": the probe fails at once and nothing hangs.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    t0 = time.monotonic()
    assert sync_runs([wb_dir], probe_timeout_s=3) == 1
    assert time.monotonic() - t0 < 10
    assert "cannot reach the W&B server" in capsys.readouterr().err

    (wb_dir / f"run-{wb_dir.name.rsplit('-', 1)[1]}.wandb.synced").touch()
    assert find_offline_runs(tmp_path) == [] and find_offline_runs(tmp_path, include_synced=True) == [wb_dir]


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("NEUROTRAIN_REQUIRE_BROWSER"),
    reason="chromium is not installed (apt-get install -y chromium)",
)
def test_report_renders_in_headless_chromium(runs_root: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.fail(
            "NEUROTRAIN_REQUIRE_BROWSER is set but no chromium is installed (apt-get install -y chromium)"
        )
    out = tmp_path / "report.html"
    build_report([runs_root], out, smoothing=0.3)
    dom = _chromium(out, tmp_path, "--dump-dom")
    table = read_table(dom)
    assert len(table.rows) == 4
    assert set(table.run_names) == {"crashed", *(f"lr-{lr}" for lr in LRS)}
    metrics = json.loads(re.search(r'id="report-data">(.*?)</script>', out.read_text(), re.S).group(1))[
        "metrics"
    ]
    # Every metric chart and the sweep chart hold plotly's rendered SVG.
    for i in range(len(metrics)):
        assert table.svg_in.get(f"plot-{i}", 0) >= 1, f"plot-{i} ({metrics[i]}) did not render"
    assert table.svg_in.get("parcoords-0", 0) >= 1
    assert dom.count('class="scatterlayer') >= len(metrics)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "compare_report.png"
    shot.unlink(missing_ok=True)
    _chromium(out, tmp_path, f"--screenshot={shot}", "--window-size=1400,2000")
    assert shot.stat().st_size > 20_000


def _chromium(page: Path, tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    profile.mkdir()
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, page.resolve().as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_config_keys_flatten_like_the_lightning_cli() -> None:
    from neurotrain.train.tracking.config_keys import flatten

    config = {"model": {"class_path": "a.B", "init_args": {"lr": 0.1, "enc": {"init_args": {"depth": 4}}}}}
    assert flatten(config) == {"model.class_path": "a.B", "model.lr": 0.1, "model.enc.depth": 4}
