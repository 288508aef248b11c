"""The intervals of an evaluation's results table, from every method's per-epoch predictions.

``evaluate`` keeps, per fold run (fold × training seed), each method's held-out predictions; this
turns them into each method's balanced accuracy with its bootstrap interval and the model's paired
difference to every other method with its interval and verdict (`statistics`), and into the
Markdown table ``results.md`` shows.

    iv = intervals([{"fold": 0, "seed": 0, "methods": {"encoder": {...}, "logistic regression": {...}}}, ...],
                   model="encoder")
    lines = interval_lines(iv)
"""

from __future__ import annotations

from typing import Any

from neurotrain.train.evaluation.statistics import (
    FoldPredictions,
    chance_level,
    paired_difference,
    score_interval,
    verdict,
)


def intervals(predictions: list[dict[str, Any]], model: str, margin: float = 0.02) -> dict[str, Any] | None:
    """Balanced accuracy of each method with its bootstrap 95% interval, and the model's paired
    difference to each other method with its interval and verdict (`train.evaluation.statistics`).

    None when the model's per-epoch predictions are missing (a fold run from an older version).
    """
    if not predictions or any(model not in p["methods"] for p in predictions):
        return None
    by_method: dict[str, list[FoldPredictions]] = {}
    for p in predictions:
        for title, m in p["methods"].items():
            by_method.setdefault(title, []).append(
                FoldPredictions(p["fold"], p["seed"], tuple(m["sample_ids"]), m["y_true"], m["y_pred"])
            )
    first_seed = min(p["seed"] for p in predictions)
    labels = [y for p in predictions if p["seed"] == first_seed for y in p["methods"][model]["y_true"]]
    out: dict[str, Any] = {
        "metric": "balanced_accuracy",
        "confidence": 0.95,
        "resampling": "epochs within fold and class; seeds averaged per fold",
        "margin": margin,
        "chance": chance_level(labels),
        "n_epochs": len(labels),
        "methods": {},
    }
    for title, preds in by_method.items():
        entry: dict[str, Any] = {"score": score_interval(preds).as_dict()}
        if title != model:
            diff = paired_difference(by_method[model], preds)
            entry["model_minus_method"] = diff.as_dict()
            entry["verdict"] = verdict(diff, margin)
        out["methods"][title] = entry
    out["model"] = model
    return out


def interval_lines(iv: dict[str, Any] | None) -> list[str]:
    """The Markdown table of `intervals` (empty without them)."""
    if not iv:
        return []
    model = iv["model"]
    lines = [
        "",
        f"Balanced accuracy with {iv['confidence']:.0%} bootstrap intervals ({iv['resampling']}); "
        f"chance {iv['chance']:.3f}; {iv['n_epochs']} held-out epochs. The verdict reads {model} − method: "
        f"beats / below when the interval excludes 0, matches only when it lies within ±{iv['margin']}.",
        "",
        f"| method | balanced accuracy [95% CI] | {model} − method [95% CI] | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for title, entry in iv["methods"].items():
        s = entry["score"]
        cell = f"{s['estimate']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"
        if "model_minus_method" in entry:
            d = entry["model_minus_method"]
            diff = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
            lines.append(f"| {title} | {cell} | {diff} | {entry['verdict']} |")
        else:
            lines.append(f"| {title} | {cell} | | |")
    return lines


def control_lines(controls: dict[str, Any] | None) -> list[str]:
    """The Markdown table of an evaluation's controls (`train.evaluation.controls`; empty without)."""
    if not controls:
        return []
    lo, hi = controls["window"]
    lines = [
        "",
        f"Controls of {controls['method']} (the best method): training labels shuffled within subject, "
        f"and the window {lo:g} to {hi:g} s before the stimulus. Near chance is what they should score.",
        "",
        "| control | balanced accuracy [95% CI] | chance | held-out epochs | verdict |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, c in controls["controls"].items():
        s = c["score"]
        lines.append(
            f"| {name} | {s['estimate']:.3f} [{s['low']:.3f}, {s['high']:.3f}] | {c['chance']:.3f} | "
            f"{c['n_epochs']} | {c['verdict']} |"
        )
    return lines
