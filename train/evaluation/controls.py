"""Controls beside every score: what a method reaches when there is nothing it should find.

Two controls, run for the best method of an evaluation on every fold run it was scored on:

- ``shuffled labels``: the fold's training labels are permuted within each training subject
  (class balance kept; the permutation agrees with the truth as often as chance would, so it is
  uncorrelated with it), the held-out labels are left as they are; several permutations per
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
labels. A control's verdict: "at chance" when its 95% interval contains the chance level; the
shuffled-label interval resamples the permutations as well as the epochs
(``statistics.score_interval(resample_seeds=True)``).

    sel = shuffled_selection(fold.selection, events, seed=0)
    tmin, tmax = prestimulus_window(0.0, 0.75)      # (-0.75, 0.0)
"""

from __future__ import annotations

from collections import Counter, defaultdict
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
    the held-out rule is unchanged. Each subject's permutation agrees with its true labels on the
    number of epochs a random relabelling would on average (`decorrelated_permutation`): a plain
    permutation anti-correlates with the truth for few epochs per subject and keeps a residual
    correlation of either sign, which a decoder of a strong response turns into a score off
    chance. The classical pipelines still average several permutations (`permutation_seeds`).
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
        labels.update(zip([e["event"] for e in mine], decorrelated_permutation(mine, seed), strict=True))
    return {**selection, "train": {**rule, "labels": labels}}


def decorrelated_permutation(events: list[dict[str, Any]], seed: int) -> list[int]:
    """The labels of ``events`` permuted so that they agree with the true labels on as many
    epochs as a random relabelling with the same class counts would on average:
    ``round(sum_k n_k² / n)`` (6 of 12 balanced binary epochs).

    A plain permutation of ``n`` epochs agrees with the truth less often than that on average
    (it cannot put an epoch's own label back freely: for 12 balanced epochs the expected
    correlation with the truth is ``-1/11``), and any one permutation carries a residual
    correlation of either sign; a model that separates the classes well turns either into a
    score off chance. Among seeded candidate orderings (``CANDIDATES``, sha256 as the folds) the
    first with that agreement is taken (the closest one if none has it), so the shuffled labels
    are uncorrelated with the true ones by construction. Only the permuted (training) labels are
    read, never the scored ones."""
    truth = [int(e["label"]) for e in events]
    n = len(truth)
    target = round(sum(c * c for c in Counter(truth).values()) / max(n, 1))
    best: tuple[int, list[int]] | None = None
    for k in range(CANDIDATES):
        tag = "shuffle" if k == 0 else f"shuffle{k}"
        order = sorted(range(n), key=lambda i: rank(seed, f"{tag}:{events[i]['event']}"))
        candidate = [truth[i] for i in order]
        off = abs(sum(a == b for a, b in zip(candidate, truth, strict=True)) - target)
        if best is None or off < best[0]:
            best = (off, candidate)
        if off == 0:
            break
    return best[1] if best is not None else []


CANDIDATES = 200
"""Seeded orderings tried per subject for `decorrelated_permutation` (the exact agreement has a
probability of ~0.2–0.3 per ordering for a balanced subject, so 200 leave it missed ~1e-20)."""


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
