"""The results as MOABB's rows, so an evaluation concatenates with MOABB's results tables.

MOABB's evaluations return one row per (subject, session, pipeline) with ``score``, ``time``
(fit seconds), ``samples`` (training epochs), ``subject``, ``session``, ``channels``,
``n_sessions``, ``dataset`` and ``pipeline``; its protocols are within-session, cross-session
and cross-subject. The rows here carry those columns for every fold run and method, with
neurotrain's own next to them (``seed``, ``fold``, ``n_test``, ``metric``, the other metrics,
``neurotrain_protocol``). The protocol names map as:

- ``within-subject`` → ``within-session`` when every subject has one session (the epochs of a
  session are what is split), else ``within-subject`` (sessions pooled, not a MOABB protocol);
- ``cross-subject`` and ``leave-one-subject-out`` → ``cross-subject`` (MOABB's cross-subject
  evaluation is leave-one-subject-out by default; a k-group deal is its ``n_splits`` variant).

``score`` is the balanced accuracy (MOABB scores two-class problems by ROC AUC, which is
``auroc`` here).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from neurotrain.models.metric_names import CLASSIFICATION_METRICS as METRICS

COLUMNS = (
    "dataset",
    "protocol",
    "pipeline",
    "subject",
    "session",
    "score",
    "time",
    "samples",
    "channels",
    "n_sessions",
    "n_test",
    "seed",
    "fold",
    "metric",
    *METRICS,
    "neurotrain_protocol",
)


def moabb_protocol(protocol: str, sessions: dict[str, list[str]]) -> str:
    """MOABB's name for ``protocol`` given each subject's sessions."""
    if protocol == "within-subject":
        return "within-session" if all(len(v) <= 1 for v in sessions.values()) else "within-subject"
    return "cross-subject"


def subject_sessions(manifests: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each subject's session names in the manifests (``"0"`` for recordings without one, as MOABB)."""
    out: dict[str, set[str]] = {}
    for m in manifests:
        for rec in m.get("recordings", []):
            session = rec.get("session")
            out.setdefault(str(rec.get("subject")), set()).add("0" if session in (None, "") else str(session))
    return {s: sorted(v) for s, v in sorted(out.items())}


def rows(results: dict[str, Any], dataset: str, sessions: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One row per fold run and method of an evaluation's ``folds_detail``."""
    protocol = moabb_protocol(results["protocol"], sessions)
    out = []
    for rec in results["folds_detail"]:
        tested = rec["test_subjects"]
        session = "+".join(sorted({s for sub in tested for s in sessions.get(sub, ["0"])}))
        for method, scores in rec["scores"].items():
            out.append(
                {
                    "dataset": dataset,
                    "protocol": protocol,
                    "pipeline": method,
                    "subject": "+".join(tested),
                    "session": session,
                    "score": scores["balanced_accuracy"],
                    "time": rec.get("times", {}).get(method),
                    "samples": rec["n_train"],
                    "channels": rec.get("n_channels"),
                    "n_sessions": len({s for sub in tested for s in sessions.get(sub, ["0"])}),
                    "n_test": rec["n_test"],
                    "seed": rec["seed"],
                    "fold": rec["name"],
                    "metric": "balanced_accuracy",
                    **{m: scores[m] for m in METRICS},
                    "neurotrain_protocol": results["protocol"],
                }
            )
    return out


def to_csv(table: list[dict[str, Any]]) -> str:
    """The rows as CSV text with `COLUMNS` as header (what ``results.csv`` holds)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()
