"""Controls beside every score: what a method reaches when there is nothing it should find.

Two controls, run for the best method of an evaluation on every fold run it was scored on:

- ``shuffled labels``: the fold's training labels are permuted within each training subject
  (class balance kept), the held-out labels are left as they are; several permutations per
  fold run (5 for the classical pipelines, 1 for a trained network, whose fits cost minutes:
  more seeds give it more), their scores averaged per fold as the seeds of a fold are. A method that learns the
  stimulus scores at chance; one above chance is exploiting something else (a leak between
  the parts, a class-balance artefact of the scoring).
- ``pre-stimulus``: the same method on a window of the same length ending at the stimulus
  onset (``[-(tmax - tmin), 0)`` s). Nothing of the current stimulus is in it; a score above
  chance there says the labels are predictable from what came before (the order of the
  stimuli, the previous trial's response), and the main scores carry that too.

The permutation is seeded (``"<seed>:<event>"`` sha256 orderings, as the folds) and goes to the
datamodule through the selection's ``labels`` rule, so every method reads the same shuffled
labels. A control's verdict: "at chance" when its 95% interval contains the chance level.

    sel = shuffled_selection(fold.selection, events, seed=0)
    tmin, tmax = prestimulus_window(0.0, 0.75)      # (-0.75, 0.0)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from neurotrain.train.evaluation.folds import rank
from neurotrain.train.evaluation.statistics import Interval

CONTROLS = ("shuffled labels", "pre-stimulus")


def shuffled_selection(
    selection: dict[str, dict[str, Any]], events: list[dict[str, Any]], seed: int
) -> dict[str, dict[str, Any]]:
    """``selection`` with its training labels permuted within each training subject.

    ``events`` are the labelled epochs the folds were planned from (``subject``, ``event``,
    ``label``). The train rule gains ``labels``: event name -> class for every training epoch;
    the held-out rule is unchanged. One permutation of a few hundred epochs keeps a residual
    correlation with the true labels (of either sign) that a decoder of a strong response learns,
    so one control fit can land off chance by more than its epoch-resampling interval says; the
    controls therefore average several permutations (`permutation_seeds`).
    """
    rule = selection["train"]
    subjects = set(rule.get("subjects", []))
    names = set(rule["events"]) if "events" in rule else None
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        if (not subjects or ev["subject"] in subjects) and (names is None or ev["event"] in names):
            by_subject[ev["subject"]].append(ev)
    labels: dict[str, int] = {}
    for subject in sorted(by_subject):
        mine = sorted(by_subject[subject], key=lambda e: e["event"])
        order = sorted(mine, key=lambda e: rank(seed, f"shuffle:{e['event']}"))
        labels.update({e["event"]: int(o["label"]) for e, o in zip(mine, order, strict=True)})
    return {**selection, "train": {**rule, "labels": labels}}


def permutation_seeds(seed: int, n: int) -> list[int]:
    """The permutation seeds of the ``n`` shuffled-label fits of a fold run of training ``seed``."""
    return [seed * 1000 + k for k in range(n)]


def prestimulus_window(tmin: float, tmax: float) -> tuple[float, float]:
    """The window of the same length as ``[tmin, tmax)`` that ends at the stimulus onset."""
    return -(float(tmax) - float(tmin)), 0.0


def control_verdict(score: Interval, chance: float) -> str:
    """``at chance`` when the interval contains ``chance``, else ``above chance``/``below chance``."""
    if score.low <= chance <= score.high:
        return "at chance"
    return "above chance" if score.low > chance else "below chance"
