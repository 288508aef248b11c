"""Nested selection: the inner split of every outer fold never touches the fold's scored epochs
(within-subject) or subjects (cross-subject), and does not depend on their labels."""

from __future__ import annotations

import random

import pytest

from neurotrain.train.evaluation.folds import FoldError, inner_fold, plan_folds


def synthetic_events(subjects: int, per_class: int, seed: int = 0) -> list[dict]:
    """Labelled epochs of ``subjects`` subjects, two classes of ``per_class`` epochs each."""
    rng = random.Random(seed)
    events = []
    for s in range(subjects):
        for i in range(2 * per_class):
            events.append({"subject": f"{s + 1:02d}", "event": f"s{s}_run-1#{i}", "label": i % 2})
    rng.shuffle(events)
    return events


def chosen(rule: dict, events: list[dict]) -> set[str]:
    names = set(rule.get("events", ()))
    return {
        ev["event"]
        for ev in events
        if ev["subject"] in rule["subjects"] and ("events" not in rule or ev["event"] in names)
    }


@pytest.mark.parametrize("seed", [0, 3])
def test_within_subject_inner_splits_never_share_an_epoch_with_the_scored_fold(seed: int) -> None:
    events = synthetic_events(2, 40)
    for outer in plan_folds(events, "within-subject", 5, seed):
        inner = inner_fold(outer, events, seed)
        outer_train = chosen(outer.selection["train"], events)
        outer_test = chosen(outer.selection["val"], events)
        inner_train = chosen(inner.selection["train"], events)
        inner_val = chosen(inner.selection["val"], events)
        assert inner.inner_by == "epochs" and inner.record()["inner_by"] == "epochs"
        assert inner_train.isdisjoint(inner_val)
        assert inner_train | inner_val == outer_train  # the outer training part, divided
        assert (inner_train | inner_val).isdisjoint(outer_test)
        assert (inner.n_train, inner.n_test) == (len(inner_train), len(inner_val))
        # stratified: each class ~20 % of its training epochs, both classes in the inner validation
        assert set(inner.class_counts["test"]) == {0, 1}
        for label, n in inner.class_counts["test"].items():
            assert n == round(0.2 * outer.class_counts["train"][label])


def test_cross_subject_inner_splits_hold_out_whole_training_subjects() -> None:
    events = synthetic_events(7, 6)
    for protocol, folds in (("cross-subject", 3), ("leave-one-subject-out", 0)):
        for outer in plan_folds(events, protocol, folds, seed=1):
            inner = inner_fold(outer, events, seed=1)
            assert inner.inner_by == "subjects"
            assert set(inner.train_subjects).isdisjoint(inner.test_subjects)
            assert set(inner.train_subjects) | set(inner.test_subjects) == set(outer.train_subjects)
            assert set(inner.test_subjects).isdisjoint(outer.test_subjects)
            assert 1 <= len(inner.test_subjects) < len(outer.train_subjects)
            held = chosen(inner.selection["val"], events)
            assert {e["subject"] for e in events if e["event"] in held} == set(inner.test_subjects)


def test_one_training_subject_falls_back_to_epochs_and_says_so() -> None:
    events = synthetic_events(2, 20)  # the example EEG's shape: two subjects
    for outer in plan_folds(events, "leave-one-subject-out", 0, seed=0):
        inner = inner_fold(outer, events, seed=0)
        assert inner.inner_by == "epochs"
        assert inner.train_subjects == inner.test_subjects == outer.train_subjects
        scored = {e["event"] for e in events if e["subject"] in outer.test_subjects}
        assert chosen(inner.selection["train"], events).isdisjoint(scored)
        assert chosen(inner.selection["val"], events).isdisjoint(scored)


def test_the_inner_split_does_not_depend_on_the_scored_epochs_labels() -> None:
    events = synthetic_events(3, 30)
    for protocol, folds in (("within-subject", 4), ("cross-subject", 3)):
        for outer in plan_folds(events, protocol, folds, seed=2):
            scored = chosen(outer.selection["val"], events)
            poisoned = [{**e, "label": 1 - e["label"]} if e["event"] in scored else e for e in events]
            assert inner_fold(outer, poisoned, seed=2) == inner_fold(outer, events, seed=2)


def test_inner_splits_are_deterministic_and_seeded() -> None:
    events = synthetic_events(2, 30)
    outer = plan_folds(events, "within-subject", 3, seed=0)[0]
    assert inner_fold(outer, events, seed=0) == inner_fold(outer, list(reversed(events)), seed=0)
    assert inner_fold(outer, events, seed=0).selection != inner_fold(outer, events, seed=1).selection


def test_too_few_epochs_for_an_inner_split_is_named() -> None:
    events = [
        {"subject": "01", "event": f"e#{i}", "label": label}
        for i, label in enumerate([0, 0, 1, 1, 0, 0, 1, 1])
    ]
    outer = plan_folds(events, "within-subject", 2, seed=0)[0]  # 2 epochs per class in training
    assert inner_fold(outer, events, seed=0).n_test == 2
    with pytest.raises(FoldError, match="subject 01 has 1 training epoch"):
        inner_fold(plan_folds(events[:6], "within-subject", 2, seed=0)[0], events[:6], seed=0)
    with pytest.raises(FoldError, match="share"):
        inner_fold(outer, events, seed=0, share=1.0)
