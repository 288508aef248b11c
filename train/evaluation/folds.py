"""Evaluation protocols as folds: which epochs train and which are scored, from the manifest and a seed.

Three protocols over the labelled epochs of a dataset (``ShardDataModule.labelled_events``):

- ``within-subject``: each subject alone; its epochs are dealt into ``folds`` stratified folds;
  a fold trains on the subject's other folds and scores the held-out one. ``subjects × folds``
  folds; no epoch is in the training and the scored part of one fold.
- ``cross-subject``: subjects are dealt into ``folds`` groups; a fold scores one group and trains
  on every other subject. No subject is in both parts.
- ``leave-one-subject-out``: ``cross-subject`` with one group per subject (``folds`` ignored).

Nested selection: `inner_fold` carves an inner validation split out of a fold's training part,
so anything tuned (epochs, lr, a baseline's regularisation) is chosen without reading the fold's
scored epochs. Cross-subject folds hold out whole training subjects; within-subject folds (and a
cross-subject fold with a single training subject, which has no subject to spare) hold out a
stratified share of each class of the training epochs, and the fold records which (``inner_by``).

Assignment uses sha256 orderings of ``"<seed>:<name>"`` only (no library RNG), so the folds are
a pure function of the event names, labels and seed: identical on any machine and with any
scikit-learn version, and recorded with the results (the selection file of each fold).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("within-subject", "cross-subject", "leave-one-subject-out")


@dataclass
class Fold:
    """One train/score division: ``selection`` is what the datamodule takes (train and val rules)."""

    name: str
    train_subjects: list[str]
    test_subjects: list[str]
    selection: dict[str, dict[str, list[str]]]
    n_train: int
    n_test: int
    class_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    inner_by: str | None = None  # an inner fold: "subjects" or "epochs" held out of the outer training part

    def record(self) -> dict[str, Any]:
        """What ``results.json`` keeps of the fold (the full selection is in its own file)."""
        return {
            "name": self.name,
            "train_subjects": self.train_subjects,
            "test_subjects": self.test_subjects,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "class_counts": {k: {str(c): n for c, n in v.items()} for k, v in self.class_counts.items()},
            **({"inner_by": self.inner_by} if self.inner_by else {}),
        }

    def progress(self) -> str:
        """The fold's progress line: its name, who it trains on and who is held out, epoch counts.

        ``fold sub-s01 (train: sub-s02; held out: sub-s01): 793 train / 779 held-out epochs``; a
        within-subject fold trains and scores on one subject, so its line says whose epochs are split.
        """
        train = ", ".join(f"sub-{s}" for s in self.train_subjects)
        held = ", ".join(f"sub-{s}" for s in self.test_subjects)
        who = (
            f"epochs of {held} split"
            if self.train_subjects == self.test_subjects
            else f"train: {train}; held out: {held}"
        )
        return f"fold {self.name} ({who}): {self.n_train} train / {self.n_test} held-out epochs"


class FoldError(ValueError):
    """The protocol cannot be applied to this data (too few subjects or epochs for the folds)."""


def plan_folds(events: list[dict[str, Any]], protocol: str, folds: int, seed: int) -> list[Fold]:
    """The folds of ``protocol`` over ``events`` (dicts with ``subject``, ``event``, ``label``)."""
    if protocol not in PROTOCOLS:
        raise FoldError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if not events:
        raise FoldError("no labelled epochs: check the config's label_map and tmin/tmax")
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        by_subject[ev["subject"]].append(ev)
    subjects = sorted(by_subject)
    if protocol == "within-subject":
        return [f for s in subjects for f in _within(s, by_subject[s], folds, seed)]
    if len(subjects) < 2:
        raise FoldError(f"{protocol} needs at least 2 subjects with labelled epochs; found {subjects}")
    if protocol == "leave-one-subject-out":
        groups = [[s] for s in subjects]
    else:
        if folds < 2 or folds > len(subjects):
            raise FoldError(
                f"cross-subject with {folds} folds needs 2 <= folds <= subjects ({len(subjects)})"
            )
        order = sorted(subjects, key=lambda s: rank(seed, s))
        groups = [sorted(order[k::folds]) for k in range(folds)]
    out = []
    for k, test in enumerate(groups):
        train = [s for s in subjects if s not in test]
        name = f"sub-{test[0]}" if protocol == "leave-one-subject-out" else f"fold{k}"
        out.append(
            Fold(
                name=name,
                train_subjects=train,
                test_subjects=test,
                selection={"train": {"subjects": train}, "val": {"subjects": test}},
                n_train=sum(len(by_subject[s]) for s in train),
                n_test=sum(len(by_subject[s]) for s in test),
                class_counts={
                    "train": _counts(e for s in train for e in by_subject[s]),
                    "test": _counts(e for s in test for e in by_subject[s]),
                },
            )
        )
    return out


def _within(subject: str, events: list[dict[str, Any]], folds: int, seed: int) -> list[Fold]:
    """Stratified folds of one subject: each class's epochs, in seeded order, dealt round-robin."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for ev in events:
        by_class[int(ev["label"])].append(ev["event"])
    smallest = min(len(v) for v in by_class.values())
    if folds < 2 or smallest < folds:
        raise FoldError(
            f"within-subject {folds} folds: subject {subject} has {smallest} epochs in its smallest "
            "class (need at least one per fold, and folds >= 2)"
        )
    assign: dict[str, int] = {}
    offset = 0
    for label in sorted(by_class):
        names = sorted(by_class[label], key=lambda n: rank(seed, n))
        for j, n in enumerate(names):
            assign[n] = (offset + j) % folds  # continuing the deal keeps fold sizes within 1
        offset += len(names)
    label_of = {ev["event"]: int(ev["label"]) for ev in events}
    out = []
    for k in range(folds):
        test = sorted(n for n, f in assign.items() if f == k)
        train = sorted(n for n, f in assign.items() if f != k)
        out.append(
            Fold(
                name=f"sub-{subject}/fold{k}",
                train_subjects=[subject],
                test_subjects=[subject],
                selection={
                    "train": {"subjects": [subject], "events": train},
                    "val": {"subjects": [subject], "events": test},
                },
                n_train=len(train),
                n_test=len(test),
                class_counts={
                    "train": _counts({"label": label_of[n]} for n in train),
                    "test": _counts({"label": label_of[n]} for n in test),
                },
            )
        )
    return out


def inner_fold(fold: Fold, events: list[dict[str, Any]], seed: int, share: float = 0.2) -> Fold:
    """The inner split of ``fold``: its training part divided into inner-train and inner-validation.

    ``events`` are the same labelled epochs ``plan_folds`` was given. With two or more training
    subjects and a cross-subject fold (its scored subjects are not its training subjects), about
    ``share`` of the training subjects (at least one, never all) are held out whole; otherwise
    ``share`` of each class of the training epochs, per subject (at least one epoch per class and
    subject, never all). The scored epochs of ``fold`` are in neither part. The ordering uses
    ``"inner:<seed>:<name>"`` so it is independent of the outer deal.
    """
    if not 0 < share < 1:
        raise FoldError(f"inner share must be in (0, 1), got {share}")
    train_events = _training_events(fold, events)
    cross = not set(fold.train_subjects) & set(fold.test_subjects)
    if cross and len(fold.train_subjects) >= 2:
        order = sorted(fold.train_subjects, key=lambda s: rank(seed, f"inner:{s}"))
        held = sorted(order[: min(len(order) - 1, max(1, round(share * len(order))))])
        kept = [s for s in fold.train_subjects if s not in held]
        return _inner(fold, train_events, kept, held, {"subjects": kept}, {"subjects": held}, "subjects")
    held_events: list[str] = []
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    for ev in train_events:
        groups[(ev["subject"], int(ev["label"]))].append(ev["event"])
    for (subject, label), names in sorted(groups.items()):
        if len(names) < 2:
            raise FoldError(
                f"fold {fold.name}: subject {subject} has {len(names)} training epoch(s) of class {label}; "
                "an inner split needs at least 2"
            )
        names = sorted(names, key=lambda n: rank(seed, f"inner:{n}"))
        held_events += names[: min(len(names) - 1, max(1, round(share * len(names))))]
    held_set = set(held_events)
    kept_events = sorted(ev["event"] for ev in train_events if ev["event"] not in held_set)
    subjects = fold.train_subjects
    return _inner(
        fold,
        train_events,
        subjects,
        subjects,
        {"subjects": subjects, "events": kept_events},
        {"subjects": subjects, "events": sorted(held_set)},
        "epochs",
    )


def _training_events(fold: Fold, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs of ``fold``'s training part (its selection's train rule)."""
    rule = fold.selection["train"]
    subjects = set(rule["subjects"])
    names = set(rule["events"]) if "events" in rule else None
    return [ev for ev in events if ev["subject"] in subjects and (names is None or ev["event"] in names)]


def _inner(
    fold: Fold,
    train_events: list[dict[str, Any]],
    kept: list[str],
    held: list[str],
    train_rule: dict[str, list[str]],
    val_rule: dict[str, list[str]],
    by: str,
) -> Fold:
    def chosen(rule: dict[str, list[str]]) -> list[dict[str, Any]]:
        names = set(rule.get("events", ()))
        return [
            ev
            for ev in train_events
            if ev["subject"] in rule["subjects"] and ("events" not in rule or ev["event"] in names)
        ]

    inner_train, inner_val = chosen(train_rule), chosen(val_rule)
    return Fold(
        name=f"{fold.name}/inner",
        train_subjects=list(kept),
        test_subjects=list(held),
        selection={"train": train_rule, "val": val_rule},
        n_train=len(inner_train),
        n_test=len(inner_val),
        class_counts={"train": _counts(inner_train), "test": _counts(inner_val)},
        inner_by=by,
    )


def rank(seed: int, name: str) -> str:
    """The sort key of ``name`` in the deal of ``seed``: sha256 of ``"<seed>:<name>"`` (no library RNG)."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def _counts(events) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for ev in events:
        out[int(ev["label"])] += 1
    return dict(sorted(out.items()))
