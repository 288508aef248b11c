"""The controls' building blocks: shuffled training labels, the pre-stimulus window, the verdict."""

from __future__ import annotations

from collections import Counter

from neurotrain.train.evaluation.controls import control_verdict, prestimulus_window, shuffled_selection
from neurotrain.train.evaluation.folds import plan_folds
from neurotrain.train.evaluation.statistics import Interval

EVENTS = [
    {"subject": s, "event": f"{s}_seg00000#{i}", "label": (i * 7 + len(s)) % 3 % 2}
    for s in ("s01", "s02", "s03")
    for i in range(30)
]


def test_shuffled_labels_permute_training_labels_within_subject_only() -> None:
    fold = plan_folds(EVENTS, "cross-subject", 3, seed=0)[0]
    sel = shuffled_selection(fold.selection, EVENTS, seed=0)
    assert sel["val"] == fold.selection["val"]  # the scored labels are untouched
    labels = sel["train"]["labels"]
    train = [e for e in EVENTS if e["subject"] in fold.train_subjects]
    assert set(labels) == {e["event"] for e in train}
    for subject in fold.train_subjects:
        mine = [e for e in train if e["subject"] == subject]
        # a permutation within the subject: same class counts, different assignment
        assert Counter(labels[e["event"]] for e in mine) == Counter(e["label"] for e in mine)
        assert [labels[e["event"]] for e in mine] != [e["label"] for e in mine]
    assert shuffled_selection(fold.selection, EVENTS, seed=0) == sel
    assert shuffled_selection(fold.selection, EVENTS, seed=1) != sel


def test_a_shuffled_subject_agrees_with_its_truth_as_often_as_chance_would() -> None:
    """12 balanced epochs: a plain permutation agrees on 5.45 of them on average (correlation
    -1/11, which a good decoder turns into below-chance scores); the control's agrees on 6."""
    from neurotrain.train.evaluation.controls import decorrelated_permutation

    events = [{"subject": "s01", "event": f"e{i:02d}", "label": i % 2} for i in range(12)]
    truth = [e["label"] for e in events]
    for seed in range(50):
        shuffled = decorrelated_permutation(events, seed)
        assert sorted(shuffled) == sorted(truth)  # a permutation: the class counts kept
        assert sum(a == b for a, b in zip(shuffled, truth, strict=True)) == 6
    three = [{"subject": "s", "event": f"e{i:02d}", "label": i % 3} for i in range(30)]  # 10 each
    assert sum(a == b["label"] for a, b in zip(decorrelated_permutation(three, 0), three, strict=True)) == 10


def test_shuffled_labels_of_a_within_subject_fold_cover_its_training_events() -> None:
    fold = plan_folds(EVENTS, "within-subject", 3, seed=0)[0]
    sel = shuffled_selection(fold.selection, EVENTS, seed=0)
    assert set(sel["train"]["labels"]) == set(fold.selection["train"]["events"])
    assert not set(sel["train"]["labels"]) & set(fold.selection["val"]["events"])


def test_prestimulus_window_has_the_same_length_and_ends_at_onset() -> None:
    assert prestimulus_window(0.0, 0.75) == (-0.75, 0.0)
    assert prestimulus_window(-0.2, 0.8) == (-1.0, 0.0)


def test_control_verdict_reads_the_interval_against_chance() -> None:
    def iv(lo: float, hi: float) -> Interval:
        return Interval((lo + hi) / 2, lo, hi, 0.95, 2, 1)

    assert control_verdict(iv(0.45, 0.56), 0.5) == "at chance"
    assert control_verdict(iv(0.58, 0.66), 0.5) == "above chance"
    assert control_verdict(iv(0.30, 0.42), 0.5) == "below chance"
