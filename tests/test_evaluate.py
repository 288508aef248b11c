"""``neurotrain evaluate``: protocol folds, fold selection in the datamodule, and the command end to end.

Synthetic shards: three subjects, 40 s each, a face or house event every second. The signals are
noise (nothing to decode); these tests check which epochs go where, not the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fixtures_datamodule import synthetic_shards

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.selection import load_selection
from neurotrain.train.cli import main
from neurotrain.train.evaluation.folds import FoldError, plan_folds
from neurotrain.train.evaluation.statistics import Interval, verdict

SUBJECTS = ["s01", "s02", "s03"]
EVENTS = [(0.7 + i, "face" if i % 2 else "house") for i in range(38)]
LABELS = {"face": 0, "house": 1}
CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_shards(tmp_path_factory.mktemp("evaluate"), "fh", SUBJECTS, events=EVENTS)


def datamodule(shards: Path, **kw) -> ShardDataModule:
    args = {"mode": "epochs", "tmin": 0.0, "tmax": 0.5, "label_map": LABELS, "batch_size": 16}
    return ShardDataModule(datasets=[str(shards)], **{**args, **kw})


@pytest.fixture(scope="module")
def events(shards: Path) -> list[dict]:
    return datamodule(shards).labelled_events("all")


def test_labelled_events_are_the_epochs_the_loader_cuts(shards: Path, events: list[dict]) -> None:
    dm = datamodule(shards, train_split="all")
    dm.setup("fit")
    cut = sum(int((b["labels"] >= 0).sum()) for b in dm.eval_dataloader("train"))
    assert len(events) == cut
    # An event 0.5 s before a segment's end has no room for a 0.5 s epoch: the loader and the
    # event list leave the same ones out (the one at 19.7 s in each subject: segments are 20 s).
    assert 30 * len(SUBJECTS) <= len(events) < 38 * len(SUBJECTS)
    assert {e["subject"] for e in events} == set(SUBJECTS)


def test_within_subject_folds_are_stratified_disjoint_and_seeded(events: list[dict]) -> None:
    folds = plan_folds(events, "within-subject", 3, seed=0)
    assert len(folds) == 3 * len(SUBJECTS)
    label = {e["event"]: e["label"] for e in events}
    for subject in SUBJECTS:
        mine = [f for f in folds if f.test_subjects == [subject]]
        assert len(mine) == 3
        tested: list[str] = []
        for f in mine:
            train, test = set(f.selection["train"]["events"]), set(f.selection["val"]["events"])
            assert not train & test  # no epoch both trains and is scored
            assert f.selection["train"]["subjects"] == f.selection["val"]["subjects"] == [subject]
            per_class = [sum(label[n] == c for n in test) for c in (0, 1)]
            assert max(per_class) - min(per_class) <= 1  # stratified: both classes in every fold
            tested += test
        all_of_subject = {e["event"] for e in events if e["subject"] == subject}
        assert sorted(tested) == sorted(all_of_subject)  # every epoch scored exactly once
        sizes = [f.n_test for f in mine]
        assert max(sizes) - min(sizes) <= 1
    again = plan_folds(events, "within-subject", 3, seed=0)
    assert [f.selection for f in again] == [f.selection for f in folds]
    other = plan_folds(events, "within-subject", 3, seed=1)
    assert [f.selection for f in other] != [f.selection for f in folds]


@pytest.mark.parametrize(
    "protocol,folds,expected", [("cross-subject", 2, 2), ("leave-one-subject-out", 5, 3)]
)
def test_subject_folds_never_share_a_subject(
    events: list[dict], protocol: str, folds: int, expected: int
) -> None:
    planned = plan_folds(events, protocol, folds, seed=0)
    assert len(planned) == expected
    tested = []
    for f in planned:
        assert not set(f.train_subjects) & set(f.test_subjects)
        assert sorted(f.train_subjects + f.test_subjects) == SUBJECTS
        assert f.selection == {"train": {"subjects": f.train_subjects}, "val": {"subjects": f.test_subjects}}
        tested += f.test_subjects
    assert sorted(tested) == SUBJECTS  # each subject held out exactly once
    assert [f.selection for f in plan_folds(events, protocol, folds, seed=0)] == [
        f.selection for f in planned
    ]


def test_cross_subject_seed_changes_the_grouping(events: list[dict]) -> None:
    groupings = {
        tuple(tuple(f.test_subjects) for f in plan_folds(events, "cross-subject", 2, s)) for s in range(6)
    }
    assert len(groupings) > 1


def test_impossible_protocols_are_refused(events: list[dict]) -> None:
    with pytest.raises(FoldError, match="2 <= folds <= subjects"):
        plan_folds(events, "cross-subject", 4, seed=0)
    with pytest.raises(FoldError, match="smallest class"):
        plan_folds(events, "within-subject", 40, seed=0)
    one_subject = [e for e in events if e["subject"] == "s01"]
    with pytest.raises(FoldError, match="at least 2 subjects"):
        plan_folds(one_subject, "leave-one-subject-out", 2, seed=0)


def test_selection_restricts_each_stage(shards: Path, events: list[dict], tmp_path: Path) -> None:
    fold = plan_folds(events, "within-subject", 3, seed=0)[4]  # s02, fold 1
    path = tmp_path / "fold.json"
    path.write_text(json.dumps(fold.selection))
    dm = datamodule(shards, train_split="all", val_split="all", selection=str(path))
    dm.setup("fit")
    seen_train = [sid for b in dm.eval_dataloader("train") for sid in b["sample_id"]]
    seen_val = [
        (sid, s) for b in dm.val_dataloader() for sid, s in zip(b["sample_id"], b["subject"], strict=True)
    ]
    assert len(seen_train) == fold.n_train and len(seen_val) == fold.n_test
    assert {s for _, s in seen_val} == {"s02"}
    assert not set(seen_train) & {sid for sid, _ in seen_val}
    with pytest.raises(ValueError, match="unknown stage"):
        load_selection({"training": {"subjects": ["s01"]}})


def _tiny_config(tmp_path: Path, shards: Path) -> Path:
    cfg = yaml.safe_load((CONFIGS / "eeg_finetune.yaml").read_text())
    cfg["model"]["init_args"]["encoder"] = {
        "size": "tiny",
        "dim": 32,
        "depth": 1,
        "heads": 2,
        "patch_size": 32,
    }
    cfg["data"].update(
        datasets=[str(shards)], tmin=0.0, tmax=0.5, label_map=LABELS, num_workers=0, batch_size=16
    )
    cfg["trainer"].update(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    path = tmp_path / "tiny_finetune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_evaluate_command_end_to_end(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _tiny_config(tmp_path, shards)
    out = tmp_path / "eval"
    argv = ["evaluate", "--config", str(config), "--protocol", "cross-subject", "--folds", "2"]
    argv += ["--seeds", "0", "--out", str(out), "--trainer.limit_train_batches=3"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "cross-subject" and results["seeds"] == [0]
    assert len(results["folds_detail"]) == 2
    methods = {"encoder", "logistic regression", "XDAWN + tangent space"}
    for rec in results["folds_detail"]:
        assert set(rec["scores"]) == methods
        for scores in rec["scores"].values():
            assert 0.0 <= scores["balanced_accuracy"] <= 1.0 and 0.0 <= scores["auroc"] <= 1.0
        sel = Path(rec["selection_file"])
        assert json.loads(sel.read_text())["val"]["subjects"] == rec["test_subjects"]
        run = json.loads((Path(rec["run"]) / "summary.json").read_text())
        assert run["status"] == "finished"
    for method in methods:
        stats = results["summary"][method]["balanced_accuracy"]
        assert stats["n"] == 2
        values = [r["scores"][method]["balanced_accuracy"] for r in results["folds_detail"]]
        assert stats["mean"] == pytest.approx(sum(values) / 2)
    assert results["datasets"][0]["manifest_sha256"]
    table = (out / "results.md").read_text()
    assert "| encoder |" in table and "±" in table
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))  # the summary run, offline

    # Every method scored on the same held-out epochs, each epoch's prediction kept, and the
    # intervals computed from them: the model's point estimate is the mean of its logged scores.
    for rec in results["folds_detail"]:
        tag = Path(rec["run"]).name
        kept = json.loads((out / "predictions" / f"{tag}.json").read_text())
        assert set(kept) == methods
        ids = {m: tuple(p["sample_ids"]) for m, p in kept.items()}
        assert len(set(ids.values())) == 1 and len(ids["encoder"]) == rec["n_test"]
    iv = results["intervals"]
    assert iv["chance"] == 0.5 and iv["n_epochs"] == sum(r["n_test"] for r in results["folds_detail"])
    model = iv["methods"]["encoder"]["score"]
    logged = results["summary"]["encoder"]["balanced_accuracy"]["mean"]
    assert model["estimate"] == pytest.approx(logged, abs=1e-6)
    assert model["low"] <= model["estimate"] <= model["high"]  # (one class for every epoch: 0.5, 0.5, 0.5)
    for title in ("logistic regression", "XDAWN + tangent space"):
        entry = iv["methods"][title]
        assert entry["score"]["estimate"] == pytest.approx(
            results["summary"][title]["balanced_accuracy"]["mean"], abs=1e-9
        )
        score = entry["score"]
        assert score["low"] < score["estimate"] < score["high"]  # a real interval around a real score
        diff = entry["model_minus_method"]
        assert diff["estimate"] == pytest.approx(model["estimate"] - entry["score"]["estimate"], abs=1e-9)
        assert entry["verdict"] in {"beats", "below", "matches", "inconclusive"}
        assert entry["verdict"] == verdict(Interval(**diff), iv["margin"])
    assert "bootstrap intervals" in table and "| encoder − method [95% CI] |" in table

    # Same command again: every fold is kept, the results are identical.
    mtimes = [(Path(r["run"]) / "metrics.csv").stat().st_mtime for r in results["folds_detail"]]
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["folds_detail"] == results["folds_detail"]
    assert [(Path(r["run"]) / "metrics.csv").stat().st_mtime for r in results["folds_detail"]] == mtimes

    # Other settings in the same folder are refused, naming what changed.
    capsys.readouterr()
    other = ["evaluate", "--config", str(config), "--protocol", "cross-subject", "--folds", "3"]
    assert main([*other, "--out", str(out)]) == 2
    assert "folds" in capsys.readouterr().err
