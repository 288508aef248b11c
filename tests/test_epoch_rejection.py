"""Epochs mode leaves out epochs over ``bad*`` spans and epochs holding the next stimulus.

Pure functions on a hand-made segment (``windows.screen_events`` and friends), then the real
example EEG: the loader and ``labelled_events`` leave out the same epochs, and folds (selections)
cannot bring a rejected one back.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.selection import apply_rule, event_id
from neurotrain.datamodules.loading.tar_index import Segment
from neurotrain.datamodules.loading.windows import (
    WindowSpec,
    kept_events,
    rejection_counts,
    screen_events,
    segment_windows,
    window_count,
)

SFREQ, N_TIMES = 100.0, 1200  # a 12 s segment
TMIN, TMAX = -0.25, 0.5  # window [onset - 0.25, onset + 0.5): 75 samples
LABELS = {"a": 0, "b": 1}


def ev(onset: float, label: str, duration: float = 0.0) -> dict:
    return {"onset": onset, "duration": duration, "label": label}


# Onsets are exact binary fractions, so the boundary cases are exact. Comments: the epoch's fate.
EVENTS = [
    ev(0.5, "a"),  # 0 kept: a checker (not in the map) follows, not a "next stimulus"
    ev(0.75, "checker"),  # 1
    ev(2.0, "a"),  # 2 bad_span: [1.75, 2.5) overlaps BAD_x [2.25, 2.75)
    ev(2.25, "BAD_x", 0.5),  # 3
    ev(3.0, "b"),  # 4 kept: "boundary" is no bad span; a point at the window end is outside
    ev(3.25, "boundary"),  # 5
    ev(3.5, "bad_point"),  # 6
    ev(5.0, "a"),  # 7 next_event: b at 5.25 < 5.5
    ev(5.25, "b"),  # 8 kept
    ev(6.5, "Bad_Span", 0.25),  # 9 ends at 6.75, where the next window starts
    ev(7.0, "a"),  # 10 kept: [6.75, 7.5) does not overlap [6.5, 6.75)
    ev(8.0, "a"),  # 11 both (point 8.25 and b at 8.25): counts as bad_span
    ev(8.25, "BAD"),  # 12 a point
    ev(8.25, "b"),  # 13 bad_span: the point lies in [8.0, 8.75)
    ev(9.0, "a"),  # 14 kept: b at 9.5 = onset + tmax is outside the window
    ev(9.5, "b"),  # 15 kept: [9.25, 10.0)
    ev(10.25, "bad_onset"),  # 16 a point at the start of the next window
    ev(10.5, "a"),  # 17 bad_span: [10.25, 11.0) holds the point 10.25
    ev(11.25, "a"),  # 18 next_event: b at 11.625, although that one's epoch does not fit
    ev(11.625, "b"),  # 19 crosses the segment end: no epoch, not counted as rejected
]
ALL_FITTING = [0, 2, 4, 7, 8, 10, 11, 13, 14, 15, 17, 18]


def spec(reject_bad_spans: bool = True, include_next_event: bool = False) -> WindowSpec:
    T = int(round((TMAX - TMIN) * SFREQ))
    return WindowSpec("epochs", T, TMIN, LABELS, TMAX, reject_bad_spans, include_next_event)


@pytest.mark.parametrize(
    ("reject", "include", "kept", "counts"),
    [
        (True, False, [0, 4, 8, 10, 14, 15], {"bad_span": 4, "next_event": 2}),  # the defaults
        (False, False, [0, 2, 4, 8, 10, 13, 14, 15, 17], {"bad_span": 0, "next_event": 3}),
        (True, True, [0, 4, 7, 8, 10, 14, 15, 18], {"bad_span": 4, "next_event": 0}),
        (False, True, ALL_FITTING, {"bad_span": 0, "next_event": 0}),
    ],
)
def test_each_rule_drops_exactly_its_epochs(
    reject: bool, include: bool, kept: list[int], counts: dict
) -> None:
    s = spec(reject, include)
    idx, starts, labels = kept_events(N_TIMES, SFREQ, EVENTS, s)
    assert idx.tolist() == kept
    assert starts.tolist() == [int(round((EVENTS[i]["onset"] + TMIN) * SFREQ)) for i in kept]
    assert labels.tolist() == [LABELS[EVENTS[i]["label"]] for i in kept]
    assert rejection_counts(N_TIMES, SFREQ, EVENTS, s) == counts
    # every epoch that fits is either kept or counted once, under one reason
    all_idx, _, _, reasons = screen_events(N_TIMES, SFREQ, EVENTS, s)
    assert all_idx.tolist() == ALL_FITTING
    assert sorted(i for i, r in zip(all_idx.tolist(), reasons, strict=True) if r is None) == kept
    # the loader's cutting agrees with the event list
    assert window_count(N_TIMES, SFREQ, EVENTS, s) == len(kept)
    w_starts, w_labels = segment_windows(N_TIMES, SFREQ, EVENTS, s, rng=None)
    assert w_starts.tolist() == starts.tolist() and w_labels.tolist() == labels.tolist()


def test_the_spec_defaults_reject_and_tmax_defaults_to_the_window_end() -> None:
    T = int(round((TMAX - TMIN) * SFREQ))
    implicit = WindowSpec("epochs", T, TMIN, LABELS)  # tmax None: tmin + T / sfreq = 0.5
    assert kept_events(N_TIMES, SFREQ, EVENTS, implicit)[0].tolist() == [0, 4, 8, 10, 14, 15]


def test_a_selection_keeps_rejection_context() -> None:
    """Naming a rejected epoch in a fold does not cut it: the unselected events still count."""
    seg = Segment(0, "s.tar", "s.tar", "k", 0, "float32", (1, N_TIMES), {"sfreq": SFREQ}, EVENTS)
    names = [event_id(seg, i) for i in (2, 7, 10)]  # bad_span, next_event, kept
    (chosen,) = apply_rule([seg], {"events": names})
    assert len(chosen.events) == len(EVENTS)  # indices still point into the full list
    assert kept_events(N_TIMES, SFREQ, chosen.events, spec())[0].tolist() == [10]
    assert kept_events(N_TIMES, SFREQ, chosen.events, spec(False, True))[0].tolist() == [2, 7, 10]
    assert rejection_counts(N_TIMES, SFREQ, chosen.events, spec()) == {"bad_span": 1, "next_event": 1}
    assert apply_rule([seg], {"events": ["k#99"]}) == []


# ------------------------------------------------------------------------- the real example EEG
FACE_HOUSE = {"face-upright": 0, "face-inverted": 0, "house-upright": 1, "house-inverted": 1}
CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"


def example(eeg_shards: Path, **kw) -> ShardDataModule:
    # tmax 0.8: the face/house stimuli are 0.76-41 s apart, so both rules leave epochs out
    args = {"mode": "epochs", "tmin": 0.0, "tmax": 0.8, "label_map": FACE_HOUSE, "batch_size": 256}
    return ShardDataModule([str(eeg_shards)], train_split="all", normalize=False, **{**args, **kw})


def test_loader_and_labelled_events_leave_out_the_same_epochs(eeg_shards: Path) -> None:
    dm = example(eeg_shards)
    events = dm.labelled_events("all")
    rejected = dm.rejected_epochs("all")
    assert rejected["bad_span"] > 0 and rejected["next_event"] > 0
    dm.setup("fit")
    cut: Counter[str] = Counter()  # sample ids of epochs: "<sample key>@<start>:<class>"
    for batch in dm.eval_dataloader("train"):
        keep = (batch["labels"] >= 0).tolist()
        cut.update(s for s, k in zip(batch["sample_id"], keep, strict=True) if k)
    segments = {seg.key: seg for seg in dm._segments["train"]}
    expected = []
    for e in events:  # the same epochs, one by one: segment, start sample (tmin 0) and class
        key, i = e["event"].rsplit("#", 1)
        seg = segments[key]
        start = int(round(float(seg.events[int(i)]["onset"]) * float(seg.meta["sfreq"])))
        expected.append(f"{key}@{start}:{e['label']}")
    assert cut == Counter(expected) and max(cut.values()) == 1
    # switching both rules off restores exactly the rejected epochs
    everything = example(eeg_shards, reject_bad_spans=False, include_next_event=True)
    assert everything.rejected_epochs("all") == {"bad_span": 0, "next_event": 0}
    names = {e["event"] for e in events}
    all_names = {e["event"] for e in everything.labelled_events("all")}
    assert names < all_names and len(all_names - names) == sum(rejected.values())
    only_bad = example(eeg_shards, include_next_event=True)
    assert only_bad.rejected_epochs("all") == {"bad_span": rejected["bad_span"], "next_event": 0}
    assert len(only_bad.labelled_events("all")) == len(all_names) - rejected["bad_span"]


def test_a_fold_naming_rejected_epochs_does_not_cut_them(eeg_shards: Path) -> None:
    kept = {e["event"] for e in example(eeg_shards).labelled_events("all")}
    no_bad = {e["event"] for e in example(eeg_shards, reject_bad_spans=False).labelled_events("all")}
    no_next = {e["event"] for e in example(eeg_shards, include_next_event=True).labelled_events("all")}
    names = sorted([min(no_bad - kept), min(no_next - kept), min(kept)])
    dm = example(eeg_shards, selection={"train": {"events": names}})
    dm.setup("fit")
    n = sum(int((b["labels"] >= 0).sum()) for b in dm.eval_dataloader("train"))
    assert n == 1


def test_shipped_finetune_window_loses_no_epoch_to_the_next_stimulus(eeg_shards: Path) -> None:
    data = yaml.safe_load((CONFIGS / "eeg_finetune.yaml").read_text())["data"]
    dm = example(eeg_shards, tmin=data["tmin"], tmax=data["tmax"], label_map=data["label_map"])
    rejected = dm.rejected_epochs("all")
    assert rejected["next_event"] == 0 and rejected["bad_span"] > 0
    assert len(dm.labelled_events("all")) > 1500
