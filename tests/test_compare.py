"""``neurotrain compare`` and ``neurotrain sync`` on run folders made by real tiny trainings.

The browser test opens the report from disk in Debian's headless chromium (skipped only when no
chromium is installed; with ``NEUROTRAIN_REQUIRE_BROWSER=1``, as in CI, it fails instead) and saves a
screenshot to ``tests/artifacts/compare_report.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
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


HELD_OUT = [1] * 18 + [0] * 12  # the fine-tunes' last validation: 30 epochs, 60% of them class 1


@pytest.fixture(scope="module")
def kinds_root(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickstart-like set, made from the trained runs: one pretraining, two fine-tunes that differ
    only in ``model.init_from`` (with held-out predictions), and a sweep with a finished, a pruned and
    a failed (crashed) trial. Copies keep the real metrics.csv; only the record and config are edited."""
    root = tmp_path_factory.mktemp("kinds")
    pre = _copy_run(runs_root / "lr-0.1", root / "pretrain", job_type="pretrain", sweep=None)
    _add_column(pre, "train/device/samples_per_sec", lambda step: 900.0 + step)  # a system metric
    for name, init in (("ft-pretrained", str(pre / "checkpoints" / "last.ckpt")), ("ft-random", None)):
        run = _copy_run(
            runs_root / "lr-0.03",
            root / name,
            job_type="finetune",
            sweep=None,
            monitor={"name": "val/acc", "mode": "max"},
        )
        _edit_config(
            run, {"model": {"init_from": init, "class_path": "neurotrain.models.modules.ClassifierModule"}}
        )
        _edit_config(run, {"data": {"label_map": {}}})  # empty in every run: never a column
        (run / "predictions").mkdir()
        (run / "predictions" / "val-rank0.json").write_text(
            json.dumps(
                {
                    "epoch": 3,
                    "step": 32,
                    "sample_ids": [f"e{i}" for i in range(30)],
                    "y_true": HELD_OUT,
                    "y_pred": [1] * 30,
                }
            )
        )
    trials = {
        "trial-finished": ("lr-0.3", {}),
        "trial-pruned": ("lr-0.1", {"state": "pruned"}),
        "trial-failed": ("crashed", {}),
    }
    for name, (src, state) in trials.items():
        lr = float(src.split("-")[1]) if src != "crashed" else 0.05
        _copy_run(
            runs_root / src,
            root / name,
            job_type="finetune",
            sweep={"sweep_id": "sw2", "params": {"model.lr": lr}, **state},
        )
    return root


def _copy_run(src: Path, dst: Path, **summary: object) -> Path:
    shutil.copytree(src, dst)
    write_summary(dst, {**read_summary(dst), "name": dst.name, **summary})
    return dst


def _edit_config(run: Path, update: dict) -> None:
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    for section, values in update.items():
        config.setdefault(section, {}).update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def _add_column(run: Path, name: str, value) -> None:
    """Add metric ``name`` to the rows of metrics.csv that log train/loss (``value(step)``)."""
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = [*rows[0].keys(), name]
    for row in rows:
        row[name] = value(int(row["step"])) if row.get("train/loss") else ""
    with open(run / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def run_cli(add_parser, argv: list[str]) -> int:
    """Parse ``argv`` with the subcommand's own parser registration, as ``neurotrain`` would."""
    parser = argparse.ArgumentParser(prog="neurotrain")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@dataclass
class RunsTable:
    """One runs table of the page as the DOM has it: header texts, cell texts, which are hidden."""

    kind: str
    header: list[str] = field(default_factory=list)
    header_hidden: list[bool] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    hidden: list[list[bool]] = field(default_factory=list)
    run_names: list[str] = field(default_factory=list)  # data-run of each body row

    def shown(self) -> list[str]:
        """The header texts of the columns a reader sees (not ``hidden``)."""
        return [h for h, off in zip(self.header, self.header_hidden, strict=True) if not off]

    def by_name(self) -> dict[str, dict[str, str]]:
        return {
            n: dict(zip(self.header, r, strict=True)) for n, r in zip(self.run_names, self.rows, strict=True)
        }


class _PageReader(HTMLParser):
    """The runs tables (``table.runs``), the order of ids, and the classes of every plotly svg."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[RunsTable] = []
        self.ids: list[str] = []  # every element id, in document order
        self.svg_in: dict[str, int] = {}
        self.plot_sections: dict[str, str] = {}  # plot id -> the curves container it is in
        self._table: RunsTable | None = None
        self._in_cell = self._in_head = False
        self._open_ids: list[str] = []
        self._curves: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "table" and "runs" in (a.get("class") or "").split():
            self._table = RunsTable(kind=a.get("data-kind") or "")
            self.tables.append(self._table)
        elif self._table is not None and tag == "thead":
            self._in_head = True
        elif self._table is not None and tag == "tr" and not self._in_head:
            self._table.rows.append([])
            self._table.hidden.append([])
            self._table.run_names.append(a.get("data-run") or "")
        elif self._table is not None and tag in ("td", "th"):
            self._in_cell = True
            if self._in_head:
                self._table.header.append("")
                self._table.header_hidden.append("hidden" in a)
            else:
                self._table.rows[-1].append("")
                self._table.hidden[-1].append("hidden" in a)
        if tag == "div" and a.get("id", "").startswith("curves-"):
            self._curves = a["id"]
        if tag == "div" and a.get("id", "").startswith(("plot-", "parcoords-")):
            self._open_ids.append(a["id"])
            if a["id"].startswith("plot-") and self._curves:
                self.plot_sections[a["id"]] = self._curves
        if tag == "svg" and "main-svg" in (a.get("class") or "") and self._open_ids:
            self.svg_in[self._open_ids[-1]] = self.svg_in.get(self._open_ids[-1], 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._table is None or not self._in_cell:
            return
        target = self._table.header if self._in_head else (self._table.rows[-1] if self._table.rows else None)
        if target:
            target[-1] += data


def read_page(html: str) -> _PageReader:
    reader = _PageReader()
    reader.feed(html)
    return reader


def report_data(html: str) -> dict:
    return json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))


def test_report_has_runs_diff_keys_status_and_sweep(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert (
        run_cli(add_compare_parser, ["compare", str(runs_root), "--out", str(out), "--smoothing", "0.5"]) == 0
    )
    html = out.read_text()
    page = read_page(html)
    tables = {t.kind: t for t in page.tables}
    assert list(tables) == ["sweep trial · sweep-lr", "run"]  # grouped by kind: the sweep's trials apart
    sweep, other = tables["sweep trial · sweep-lr"], tables["run"]
    assert sorted(sweep.run_names) == [f"lr-{lr}" for lr in sorted(LRS)] and other.run_names == ["crashed"]
    assert all(row[0].startswith(name) for name, row in zip(sweep.run_names, sweep.rows, strict=True))
    # Only the swept setting differs: it is the one setting shown; the rest are in the page, hidden.
    identity = ["best", "best step", "final", "duration", "started"]
    assert sweep.shown() == ["run", "status", "model.lr", *identity]
    assert {"model.hidden", "data.batch_size", "trainer.max_epochs", "group"} <= set(sweep.header)
    assert other.shown() == ["run", "status", *identity]  # one run: nothing differs
    crashed = other.by_name()["crashed"]
    assert crashed["status"].startswith("crashed") and "RuntimeError: synthetic failure" in crashed["status"]
    for lr in LRS:
        row = sweep.by_name()[f"lr-{lr}"]
        assert row["status"] == "finished" and float(row["model.lr"]) == lr
        val = [v for _, v in csv_column(runs_root / f"lr-{lr}", "val/loss")]
        assert float(row["best"]) == pytest.approx(min(val), rel=1e-5)
        assert float(row["final"]) == pytest.approx(val[-1], rel=1e-5)
        assert float(row["best"]) == pytest.approx(read_summary(runs_root / f"lr-{lr}")["monitor"]["best"])

    data = report_data(html)
    metrics = [p["metric"] for p in data["panels"]]
    assert metrics[0] == "val/loss" and {"train/loss", "val/acc"} <= set(metrics)
    assert all(p["section"] == "science" and p["job_type"] is None for p in data["panels"])
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
    assert report_data(html)["parcoords"]

    with pytest.raises(CompareError, match="none of the 4 runs"):
        build_report([runs_root], out, filters=["model.lr=42"])
    with pytest.raises(CompareError, match="expected key=value"):
        build_report([runs_root], out, filters=["model.lr"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no run folders"):
        build_report([tmp_path / "empty"], out)
    assert run_cli(add_compare_parser, ["compare", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_runs_tables_show_what_differs_by_kind_with_scores_and_trial_states(
    kinds_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "kinds.html"
    build_report([kinds_root], out)
    html = out.read_text()
    page = read_page(html)
    tables = {t.kind: t for t in page.tables}
    assert list(tables) == ["pretrain", "finetune", "sweep trial · sw2"]
    pre, ft, sweep = tables.values()
    # The fine-tunes differ in init_from only: that setting and the identity columns are shown,
    # scored by the metric they monitor, with the chance level and the held-out set's size.
    assert ft.shown() == [
        "run", "status", "model.init_from", "best", "best step", "final",
        "chance", "held-out epochs", "duration", "started",
    ]  # fmt: skip
    rows = ft.by_name()
    assert rows["ft-random"]["model.init_from"] == "" and rows["ft-pretrained"]["model.init_from"].endswith(
        "checkpoints/last.ckpt"
    )
    assert {r["chance"] for r in rows.values()} == {"0.6"}  # majority share of HELD_OUT (accuracy)
    assert {r["held-out epochs"] for r in rows.values()} == {"30"}
    # Never shown, not even with "show all settings": empty values and class_path noise.
    every_header = [h for t in page.tables for h in t.header]
    assert not any("label_map" in h or "class_path" in h for h in every_header)
    assert "model.hidden" in ft.header and "model.hidden" not in ft.shown()
    assert pre.shown() == ["run", "status", "best", "best step", "final", "duration", "started"]
    # Each table names the metric its scores are of: the one its runs monitor.
    assert 'finetune <span class="meta">· 2 runs · scored by <b>val/acc</b> (max)' in html
    assert 'pretrain <span class="meta">· 1 run · scored by <b>val/loss</b> (min)' in html
    # Sweep trials: the state the sweep recorded, or read from the run; never "finished" for a failure.
    states = {n: r["status"] for n, r in sweep.by_name().items()}
    assert states["trial-finished"] == "finished" and states["trial-pruned"] == "pruned"
    assert states["trial-failed"].startswith("failed") and "synthetic failure" in states["trial-failed"]
    assert sweep.shown()[:3] == ["run", "status", "model.lr"]

    # Curves: val/loss of the pretraining and of the fine-tunes on separate axes; science first.
    panels = report_data(html)["panels"]
    titles = [p["title"] for p in panels]
    assert "val/loss · pretrain" in titles and "val/loss · finetune" in titles and "val/loss" not in titles
    sections = [p["section"] for p in panels]
    assert sections == sorted(sections, key=["science", "system"].index) and sections[-1] == "system"
    assert [p["metric"] for p in panels if p["section"] == "system"] == ["train/device/samples_per_sec"]
    assert all(p["yaxis"] == {"type": "log"} for p in panels if p["metric"].endswith("loss"))
    assert html.index('id="section-science"') < html.index('id="section-system"')


def test_trial_status_and_robust_axes() -> None:
    from neurotrain.train.report.panels import y_axis
    from neurotrain.train.report.runs import trial_status

    finished = {
        "status": "finished",
        "monitor": {"name": "val/loss", "best": 0.3},
        "sweep": {"sweep_id": "s"},
    }
    assert trial_status(finished, "finished", "") == ("finished", "")
    novalue = {**finished, "monitor": {"name": "val/loss", "best": None}}
    assert trial_status(novalue, "finished", "")[0] == "failed"
    assert "val/loss" in trial_status(novalue, "finished", "")[1]
    pruned = {**finished, "sweep": {"sweep_id": "s", "state": "pruned"}}
    assert trial_status(pruned, "finished", "") == ("pruned", "")
    assert trial_status(finished, "crashed", "OOM")[0] == "failed"

    # One spike does not flatten a curve: losses get a log axis, other metrics their 1st-99th percentile.
    curve = [1.0 - 0.001 * i for i in range(200)]
    assert y_axis("train/loss", [*curve, 80.0]) == {"type": "log"}
    lo, hi = y_axis("val/score", [*curve, 80.0])["range"]
    assert 0.7 < lo < 0.8 and 1.0 < hi < 2.0
    assert y_axis("val/score", curve) == {} and y_axis("val/centred_loss", [*curve, -5.0]) != {"type": "log"}


def test_chance_level_agrees_with_the_evaluation() -> None:
    import numpy as np

    from neurotrain.train.evaluation.statistics import chance_level as evaluation_chance
    from neurotrain.train.report.scores import HeldOut, chance_level

    held = HeldOut(30, {"0": 12, "1": 18})
    y = np.array(HELD_OUT)
    assert chance_level("val/balanced_accuracy", held) == evaluation_chance(y, "balanced_accuracy")
    assert chance_level("val/bal_acc", held) == 0.5
    assert chance_level("val/acc", held) == pytest.approx(evaluation_chance(y, "accuracy"))
    assert chance_level("val/auroc", held) == 0.5 and chance_level("val/f1_weighted", held) is None
    assert chance_level("val/loss", held) == pytest.approx(-(0.4 * math.log(0.4) + 0.6 * math.log(0.6)))
    assert chance_level("val/acc", None) is None


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
    (table,) = read_page(out.read_text()).tables
    # A copy of a sweep trial: a trial whose process died is a failed trial, the detail says how.
    status = table.by_name()["killed"]["status"]
    assert table.run_names == ["killed"] and status.startswith("failed") and "crashed/killed" in status


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
def test_report_renders_in_headless_chromium(kinds_root: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.fail(
            "NEUROTRAIN_REQUIRE_BROWSER is set but no chromium is installed (apt-get install -y chromium)"
        )
    out = tmp_path / "report.html"
    build_report([kinds_root], out, smoothing=0.3)
    page = read_page(_chromium(out, tmp_path, "--dump-dom"))
    tables = {t.kind: t for t in page.tables}
    assert {n for t in page.tables for n in t.run_names} == {
        "pretrain", "ft-pretrained", "ft-random", "trial-finished", "trial-pruned", "trial-failed",
    }  # fmt: skip
    ft = tables["finetune"]
    assert [h for h in ft.shown() if h not in IDENTITY] == ["model.init_from"]
    # Every chart holds plotly's rendered SVG, in its section: science before system.
    panels = report_data(out.read_text())["panels"]
    for i, panel in enumerate(panels):
        assert page.svg_in.get(f"plot-{i}", 0) >= 1, f"plot-{i} ({panel['title']}) did not render"
        assert page.plot_sections[f"plot-{i}"] == f"curves-{panel['section']}"
    assert page.ids.index("section-science") < page.ids.index("section-system")
    assert page.svg_in.get("parcoords-0", 0) >= 1
    statuses = [r["status"] for r in tables["sweep trial · sw2"].by_name().values()]
    assert {re.match(r"finished|pruned|failed", st).group() for st in statuses} == {
        "finished", "pruned", "failed",
    }  # fmt: skip

    # "show all settings" (here: the page opened at #all-settings) reveals every column.
    shown_all = read_page(_chromium(out, tmp_path, "--dump-dom", fragment="all-settings"))
    ft_all = {t.kind: t for t in shown_all.tables}["finetune"]
    assert not any(ft_all.header_hidden) and not any(any(row) for row in ft_all.hidden)
    assert ft_all.shown() == ft.header and {"model.hidden", "trainer.max_epochs"} <= set(ft_all.shown())

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "compare_report.png"
    shot.unlink(missing_ok=True)
    _chromium(out, tmp_path, f"--screenshot={shot}", "--window-size=1400,2000")
    assert shot.stat().st_size > 20_000


IDENTITY = {
    "run", "status", "best", "best step", "final", "chance", "held-out epochs",
    "duration", "started",
}  # fmt: skip


def _chromium(page: Path, tmp_path: Path, *args: str, fragment: str = "") -> str:
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    profile.mkdir()
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args,
        page.resolve().as_uri() + (f"#{fragment}" if fragment else ""),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_config_keys_flatten_like_the_lightning_cli() -> None:
    from neurotrain.train.tracking.config_keys import flatten

    config = {"model": {"class_path": "a.B", "init_args": {"lr": 0.1, "enc": {"init_args": {"depth": 4}}}}}
    assert flatten(config) == {"model.class_path": "a.B", "model.lr": 0.1, "model.enc.depth": 4}
