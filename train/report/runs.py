"""Reading run folders for ``neurotrain compare``: discovery, status, config diff, filters, metric curves.

Only the local files are read (``summary.json``, ``config.yaml``, ``metrics.csv``, ``media/``), so runs
logged with W&B online, offline or disabled compare alike. Config keys are flattened as everywhere
else (`neurotrain.train.tracking.config_keys.flatten`), so sweep parameters and config columns match.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import json
import math
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neurotrain.datamodules.io.processes import pid_alive
from neurotrain.train.tracking.config_keys import flatten
from neurotrain.train.tracking.run_folder import (
    CONFIG_FILE,
    MEDIA_DIR,
    MEDIA_SUFFIXES,
    METRICS_FILE,
    SUMMARY_FILE,
)

# Config keys that differ between runs without being a choice worth a table column.
DEFAULT_IGNORED_KEYS = (
    "config",
    "trainer.logger*",
    "trainer.default_root_dir",
    "run_name",
    "ckpt_path",
    "sweep_id",
    "sweep_params*",  # the swept values already show as their own config keys
)
# A run still "running" whose heartbeat is older than this many heartbeat intervals was killed.
STALE_HEARTBEATS = 10
MIN_STALE_S = 600.0
CRASHED_STATUSES = ("crashed", "crashed/killed", "interrupted", "failed")
# What a sweep trial ended as, as the sweep recorded it in ``summary.json`` (``sweep.state``).
TRIAL_STATES = ("running", "finished", "pruned", "failed")
_NEVER_RUNS = ("wandb", MEDIA_DIR, "__pycache__", "node_modules")


class CompareError(ValueError):
    """Bad input to ``neurotrain compare``: the message says what and how to fix it."""


@dataclass
class Curve:
    """One metric of one run: the logged rows where it has a value."""

    step: list[int] = field(default_factory=list)
    epoch: list[int | None] = field(default_factory=list)
    value: list[float] = field(default_factory=list)


@dataclass
class Run:
    """Everything ``compare`` knows about one run folder."""

    path: Path
    name: str
    summary: dict[str, Any]
    config: dict[str, Any]  # flattened: {"model.lr": 0.001, ...}
    curves: dict[str, Curve]
    status: str
    status_detail: str
    duration_s: float | None
    media: list[Path]

    @property
    def job_type(self) -> str:
        """The run record's ``job_type`` (pretrain, finetune, eval, evaluate), "run" when it has none."""
        return str(self.summary.get("job_type") or "run")

    @property
    def sweep_id(self) -> str | None:
        return (self.summary.get("sweep") or {}).get("sweep_id")

    @property
    def kind(self) -> str:
        """What the runs table groups by: ``sweep trial · <id>`` for a sweep's trials, else the job type."""
        return f"sweep trial · {self.sweep_id}" if self.sweep_id else self.job_type

    def get(self, key: str) -> Any:
        """A value by key for filters and grouping: ``config.``/``summary.`` prefixed, or bare (config first)."""
        if key.startswith("config."):
            return self.config.get(key[len("config.") :])
        if key.startswith("summary."):
            return _dig(self.summary, key[len("summary.") :])
        if key in self.config:
            return self.config[key]
        if key == "status":
            return self.status
        if key == "sweep_id":
            return self.sweep_id
        return _dig(self.summary, key)


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders named by ``paths``: each is a run folder or is searched for them (sorted, unique)."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CompareError(f"{path}: no such file or folder")
        if path.is_file():
            path = path.parent
        if _is_run_dir(path):
            found[path.resolve()] = None
            continue
        for dirpath, dirnames, _ in os.walk(path):
            # W&B's folders, media and hidden folders (.git, .venv) never hold run records; skipping
            # them keeps a search from the repository root fast.
            dirnames[:] = sorted(d for d in dirnames if d not in _NEVER_RUNS and not d.startswith("."))
            if _is_run_dir(Path(dirpath)):
                found[Path(dirpath).resolve()] = None
                dirnames[:] = []
    if not found:
        raise CompareError(
            f"no run folders under {', '.join(map(str, paths))} (a run folder holds {SUMMARY_FILE} or {METRICS_FILE})"
        )
    return list(found)


def load_run(path: Path, now: dt.datetime | None = None) -> Run:
    """Read one run folder; missing files give empty parts, never an exception."""
    summary = _read_json(path / SUMMARY_FILE) or {}
    config = flatten(_read_yaml(path / CONFIG_FILE))
    status, detail = resolve_status(summary, now)
    if (summary.get("sweep") or {}).get("sweep_id"):
        status, detail = trial_status(summary, status, detail)
    media_dir = path / MEDIA_DIR
    media = (
        sorted(p for p in media_dir.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES)
        if media_dir.is_dir()
        else []
    )
    duration = summary.get("duration_s")
    if status == "running" and summary.get("started"):
        duration = ((now or _utcnow()) - _parse_time(summary["started"])).total_seconds()
    return Run(
        path=path,
        name=summary.get("name") or path.name,
        summary=summary,
        config=config,
        curves=read_metrics(path / METRICS_FILE),
        status=status,
        status_detail=detail,
        duration_s=duration,
        media=media,
    )


def resolve_status(summary: dict[str, Any], now: dt.datetime | None = None) -> tuple[str, str]:
    """The status to show and a one-line detail; a dead ``running`` run becomes ``crashed/killed``."""
    status = summary.get("status")
    if not status:
        return "unknown", "no summary.json"
    error = summary.get("error") or {}
    if status in ("crashed", "interrupted"):
        return status, f"{error.get('type', '?')}: {error.get('message', '')}".strip()
    if status != "running":
        return status, ""
    pid, host = summary.get("pid"), summary.get("host")
    if pid and host == socket.gethostname() and not pid_alive(int(pid)):
        return "crashed/killed", f"process {pid} is gone; last heartbeat {summary.get('heartbeat')}"
    beat = summary.get("heartbeat")
    if beat:
        age = ((now or _utcnow()) - _parse_time(beat)).total_seconds()
        limit = max(MIN_STALE_S, STALE_HEARTBEATS * float(summary.get("heartbeat_interval_s") or 30.0))
        if age > limit:
            return "crashed/killed", f"no heartbeat for {age / 60:.0f} min (last {beat})"
    return "running", f"last heartbeat {beat}"


def trial_status(summary: dict[str, Any], status: str, detail: str) -> tuple[str, str]:
    """A sweep trial's status: the state the sweep recorded (``sweep.state``), else read from the run.

    A trial that crashed is ``failed``; one whose fit finished without a value of the monitored metric
    is ``failed`` too (the sweep cannot rank it); a pruned trial's fit ends as a normal finished fit,
    so only the sweep's record (``sweep.state: pruned``) tells it apart.
    """
    sweep = summary.get("sweep") or {}
    state = sweep.get("state")
    if state in TRIAL_STATES and not (state == "running" and status != "running"):
        return state, detail
    if status in CRASHED_STATUSES:
        return "failed", f"{status}: {detail}" if detail else status
    monitor = summary.get("monitor") or {}
    if status == "finished" and monitor.get("best") is None:
        return "failed", f"no value of {monitor.get('name') or 'the monitored metric'} was recorded"
    return status, detail


def read_metrics(path: Path) -> dict[str, Curve]:
    """``metrics.csv`` (CSVLogger: columns step, epoch, one per metric, sparse rows) as one curve per metric."""
    curves: dict[str, Curve] = {}
    if not path.is_file():
        return curves
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = _number(row.get("step"))
            epoch = _number(row.get("epoch"))
            for key, raw in row.items():
                if key in ("step", "epoch") or key is None:
                    continue
                value = _number(raw)
                if value is None:
                    continue
                curve = curves.setdefault(key, Curve())
                curve.step.append(int(step) if step is not None else len(curve.step))
                curve.epoch.append(int(epoch) if epoch is not None else None)
                curve.value.append(value)
    return curves


def best_and_final(curve: Curve | None, mode: str) -> tuple[float | None, int | None, float | None]:
    """Best value, its step, and the last value of a curve (non-finite values never count as best)."""
    if curve is None or not curve.value:
        return None, None, None
    finite = [(v, s) for v, s in zip(curve.value, curve.step, strict=True) if math.isfinite(v)]
    if not finite:
        return None, None, curve.value[-1]
    pick = min if mode == "min" else max
    best, step = pick(finite, key=lambda vs: vs[0])
    return best, step, curve.value[-1]


def differing_keys(runs: Sequence[Run], ignore: Iterable[str] = DEFAULT_IGNORED_KEYS) -> list[str]:
    """Config keys whose values are not the same in every run (a key missing in some runs differs)."""
    patterns = list(ignore)
    keys = sorted({k for run in runs for k in run.config})
    out = []
    for key in keys:
        if any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(key, p + ".*") for p in patterns):
            continue
        values = {_canonical(run.config.get(key, _MISSING)) for run in runs}
        if len(values) > 1:
            out.append(key)
    return out


def parse_filters(items: Sequence[str]) -> list[tuple[str, str]]:
    """``key=value`` strings as pairs; a malformed one is a CompareError."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CompareError(
                f"--filter {item!r}: expected key=value, e.g. model.lr=0.001 or status=crashed"
            )
        out.append((key.strip(), value.strip()))
    return out


def matches(run: Run, filters: Sequence[tuple[str, str]]) -> bool:
    """True when every filter holds: numbers compare as numbers (1e-3 == 0.001), lists by membership."""
    for key, wanted in filters:
        value = run.get(key)
        candidates = value if isinstance(value, list) else [value]
        if not any(_equal(v, wanted) for v in candidates):
            return False
    return True


def format_value(value: Any) -> str:
    """A config or summary value as table text."""
    if value is None or value is _MISSING:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _canonical(value: Any) -> str:
    if value is _MISSING:
        return "\0missing"
    return json.dumps(value, sort_keys=True, default=str)


def _equal(value: Any, wanted: str) -> bool:
    if value is None:
        return wanted.lower() in ("", "none", "null")
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    number = _number(wanted)
    if isinstance(value, int | float) and number is not None:
        return math.isclose(float(value), number, rel_tol=1e-9, abs_tol=0.0)
    return str(value) == wanted


def _dig(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _is_run_dir(path: Path) -> bool:
    return (path / SUMMARY_FILE).is_file() or (path / METRICS_FILE).is_file()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _parse_time(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
