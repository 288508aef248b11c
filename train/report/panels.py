"""The curve panels of the page: one per metric and meaning, science first, each with a readable y axis.

- One panel per metric *kind*: a science metric logged by runs of different job types (a
  pretraining ``val/loss`` is a reconstruction error, a fine-tune's a cross-entropy) gets one panel
  per job type, so two quantities never share an axis; a system metric (samples/s) means the same
  in every run and keeps one panel.
- Two sections: science metrics (losses, scores) first, then system metrics (throughput, samples,
  time, memory, learning rate: Lightning's ThroughputMonitor and LearningRateMonitor keys).
- A y axis one spike cannot flatten: a loss with only positive values is drawn on a log axis;
  anything else is limited to its 1st-99th percentile (padded) when values outside that range
  would stretch the axis several-fold. The page's "full y range" switch drops both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurotrain.train.report.runs import Run

SECTIONS = ("science", "system")
SECTION_TITLES = {
    "science": "Science metrics",
    "system": "System metrics (throughput, time, memory, learning rate)",
}
# ThroughputMonitor (train/ and validate/ ...: batches, samples, items, lengths, time, device/*),
# LearningRateMonitor (lr-AdamW, lr-AdamW/pg1), memory and timing keys.
_SYSTEM = re.compile(
    r"(^|/)(device/|lr(-|$)|.*_per_sec$|.*per_s$|time$|.*_time(_s)?$|batches$|samples$|items$|lengths$"
    r"|(.*_)?mem(ory)?(_.*)?$|mfu$|flops.*|gpu.*|cpu.*|epoch$|step$)",
    re.IGNORECASE,
)
LOW_PCT, HIGH_PCT = 1.0, 99.0
SPREAD = 3.0  # clip when the full range is this many times the 1st-99th percentile range
PAD = 0.08  # of the robust range, added on both sides


@dataclass
class Panel:
    """One chart: ``metric`` of the runs of ``job_type`` (None: every run), in ``section``."""

    metric: str
    job_type: str | None
    section: str
    yaxis: dict[str, Any] = field(
        default_factory=dict
    )  # plotly layout.yaxis: {"type": "log"} or {"range": [lo, hi]}

    @property
    def title(self) -> str:
        return f"{self.metric} · {self.job_type}" if self.job_type else self.metric

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "job_type": self.job_type,
            "section": self.section,
            "title": self.title,
            "yaxis": self.yaxis,
        }


def section_of(metric: str) -> str:
    """``system`` for throughput, time, memory and learning-rate metrics, else ``science``."""
    if metric.startswith("validate/"):  # ThroughputMonitor's validation counters
        return "system"
    return "system" if _SYSTEM.search(metric) else "science"


def make_panels(runs: Sequence[Run], first: str) -> list[Panel]:
    """Panels for every logged metric: science then system; ``first`` (the report's metric) leads."""
    job_types: dict[str, dict[str, None]] = {}
    for run in runs:
        for metric in run.curves:
            job_types.setdefault(metric, {})[run.job_type] = None
    panels = []
    for metric in sorted(job_types, key=lambda m: _order(m, first)):
        kinds = list(job_types[metric])
        # Throughput or time means the same in every kind of run; a loss or score may not.
        split = len(kinds) > 1 and section_of(metric) == "science"
        for job_type in kinds if split else [None]:
            members = [r for r in runs if metric in r.curves and (job_type is None or r.job_type == job_type)]
            values = [v for r in members for v in r.curves[metric].value if math.isfinite(v)]
            panels.append(Panel(metric, job_type, section_of(metric), y_axis(metric, values)))
    return panels


def _order(metric: str, first: str) -> tuple[int, bool, bool, str]:
    """Science before system; in each, ``first``, then held-out (val/, test/) before train/ metrics."""
    held_out = metric.startswith(("val/", "test/"))
    return SECTIONS.index(section_of(metric)), metric != first, not held_out, metric


def y_axis(metric: str, values: Sequence[float]) -> dict[str, Any]:
    """The y axis that keeps the bulk of ``values`` readable (see the module docstring)."""
    if len(values) < 3:
        return {}
    arr = np.asarray(values, dtype=float)
    if "loss" in metric.rsplit("/", 1)[-1] and arr.min() > 0:
        return {"type": "log"}
    lo, hi = np.percentile(arr, [LOW_PCT, HIGH_PCT])
    full = float(arr.max() - arr.min())
    if hi <= lo or full <= SPREAD * (hi - lo):
        return {}
    pad = PAD * (hi - lo)
    return {"range": [float(lo - pad), float(hi + pad)]}
