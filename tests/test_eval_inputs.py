"""One channel set per fold for every method, and the results as MOABB rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from neurotrain.train.evaluation.inputs import FoldInputError, fold_channels, fold_data
from neurotrain.train.evaluation.moabb_rows import COLUMNS, moabb_protocol, rows, subject_sessions, to_csv


def _manifest(eeg_shards: Path) -> dict:
    return json.loads((eeg_shards / "manifest.json").read_text())


def test_fold_channels_leave_out_every_recordings_bad_channels(eeg_shards: Path) -> None:
    m = _manifest(eeg_shards)
    bads = {r["subject"]: set(r["bad_channels"]) for r in m["recordings"]}
    assert bads["s01"] and bads["s02"] and bads["s01"] != bads["s02"]
    all_names = m["channel_sets"][0]["ch_names"]
    both = fold_channels([m], ["s01", "s02"], {})
    assert not set(both) & (bads["s01"] | bads["s02"])
    assert len(both) == len(all_names) - len(bads["s01"] | bads["s02"])
    assert both == [n for n in all_names if n in set(both)]  # the recordings' order
    only_s01 = fold_channels([m], ["s01"], {})
    assert len(only_s01) == len(all_names) - len(bads["s01"])
    # keeping bad channels, as the datamodule option says: every channel
    assert fold_channels([m], ["s01", "s02"], {"drop_bad_channels": False}) == all_names
    # a user's list keeps its order, minus what is bad somewhere
    user = ["C10", "A1", "B27", "A2"]
    assert fold_channels([m], ["s01", "s02"], {"channels": user}) == ["A1", "A2"]
    with pytest.raises(FoldInputError, match="share no channel"):
        fold_channels([m], ["s01", "s02"], {"channels": ["C10"]})
    with pytest.raises(FoldInputError, match="no recording"):
        fold_channels([m], ["s99"], {})
    data = fold_data({"mode": "epochs", "tmin": 0.0}, "sel.json", both)
    assert data["channels"] == both and data["selection"] == "sel.json"
    assert data["train_split"] == data["val_split"] == "all"


def test_results_rows_carry_moabbs_columns() -> None:
    scores = {"balanced_accuracy": 0.7, "kappa": 0.4, "f1_weighted": 0.69, "auroc": 0.75}
    results = {
        "protocol": "leave-one-subject-out",
        "folds_detail": [
            {
                "seed": 0,
                "name": "sub-s02",
                "test_subjects": ["s02"],
                "n_train": 700,
                "n_test": 690,
                "n_channels": 118,
                "scores": {"encoder": scores},
                "times": {"encoder": 12.5},
            }
        ],
    }
    sessions = subject_sessions([{"recordings": [{"subject": "s01"}, {"subject": "s02", "session": None}]}])
    assert sessions == {"s01": ["0"], "s02": ["0"]}
    table = rows(results, "eeg-example", sessions)
    assert table == [
        {
            "dataset": "eeg-example",
            "protocol": "cross-subject",
            "pipeline": "encoder",
            "subject": "s02",
            "session": "0",
            "score": 0.7,
            "time": 12.5,
            "samples": 700,
            "channels": 118,
            "n_sessions": 1,
            "n_test": 690,
            "seed": 0,
            "fold": "sub-s02",
            "metric": "balanced_accuracy",
            **scores,
            "neurotrain_protocol": "leave-one-subject-out",
        }
    ]
    parsed = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert tuple(parsed[0]) == COLUMNS and parsed[0]["score"] == "0.7"
    assert moabb_protocol("within-subject", {"s01": ["0"]}) == "within-session"
    assert moabb_protocol("within-subject", {"s01": ["a", "b"]}) == "within-subject"
    assert moabb_protocol("cross-subject", {"s01": ["0"]}) == "cross-subject"
