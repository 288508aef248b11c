"""``neurotrain evaluate``: protocol folds, fold selection in the datamodule, and the command end to end.

Synthetic shards: three subjects, 40 s each, a face or house event every second. The signals are
noise (nothing to decode); these tests check which epochs go where, not the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures_datamodule import synthetic_shards

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.selection import load_selection
from neurotrain.train.cli import main
from neurotrain.train.evaluation.controls import shuffled_selection
from neurotrain.train.evaluation.folds import FoldError, plan_folds
from neurotrain.train.evaluation.statistics import Interval, balanced_accuracy, verdict

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
    argv += ["--seeds", "0", "--out", str(out), "--controls", "none", "--baselines", "logreg", "xdawn_ts"]
    argv += ["--trainer.limit_train_batches=3"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "cross-subject" and results["seeds"] == [0]
    assert len(results["folds_detail"]) == 2 and "controls" not in results
    methods = {"encoder", "logistic regression", "XDAWN + tangent space"}
    for rec in results["folds_detail"]:
        assert set(rec["scores"]) == methods
        # Every logged score is the one its kept per-epoch predictions give.
        kept = json.loads((out / "predictions" / f"{Path(rec['run']).name}.json").read_text())
        for method, scores in rec["scores"].items():
            p = kept[method]
            assert scores["balanced_accuracy"] == pytest.approx(
                balanced_accuracy(np.asarray(p["y_true"]), np.asarray(p["y_pred"])), abs=1e-6
            )
        # Identical inputs: the model's fit and the baselines read one channel list.
        run_cfg = yaml.safe_load((Path(rec["run"]) / "config.yaml").read_text())
        cached = json.loads((out / "baselines" / f"{Path(rec['run']).name}.json").read_text())
        assert run_cfg["data"]["channels"] == rec["channels"]
        assert all(c["channels"] == rec["channels"] for c in cached.values())
        assert rec["n_channels"] == len(rec["channels"]) > 0
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
    # MOABB's columns, one row per fold and method, in results.json and results.csv
    assert len(results["rows"]) == 2 * len(methods)
    assert {r["protocol"] for r in results["rows"]} == {"cross-subject"}
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == ["dataset", "protocol", "pipeline", "subject", "session", "score"]
    assert len(lines) == 1 + len(results["rows"])

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


def test_a_selections_labels_rule_relabels_what_the_loader_yields(shards: Path, events: list[dict]) -> None:
    fold = plan_folds(events, "cross-subject", 3, seed=0)[0]
    sel = shuffled_selection(fold.selection, events, seed=0)
    dm = datamodule(shards, train_split="all", val_split="all", selection=sel)
    dm.setup("fit")
    shuffled = {}
    for b in dm.eval_dataloader("train"):
        for sid, y in zip(b["sample_id"], b["labels"].tolist(), strict=True):
            shuffled[sid] = y
    plain = datamodule(shards, train_split="all", val_split="all", selection=fold.selection)
    plain.setup("fit")
    original = {}
    for b in plain.eval_dataloader("train"):
        for sid, y in zip(b["sample_id"], b["labels"].tolist(), strict=True):
            original[sid.rsplit(":", 1)[0]] = y
    assert len(shuffled) == len(original) == fold.n_train
    relabelled = {sid.rsplit(":", 1)[0]: y for sid, y in shuffled.items()}
    assert set(relabelled) == set(original)  # the same epochs, other labels
    assert sorted(relabelled.values()) == sorted(original.values())
    assert sum(relabelled[k] != original[k] for k in original) > fold.n_train // 4
    # the held-out part keeps its labels
    val = [y for b in dm.val_dataloader() for y in b["labels"].tolist()]
    assert val == [y for b in plain.val_dataloader() for y in b["labels"].tolist()]
    with pytest.raises(ValueError, match="integer classes"):
        load_selection({"train": {"subjects": ["s01"], "labels": {"x#0": "face"}}})


def _evoked_shards(root: Path, name: str, alternating: bool) -> Path:
    """Three subjects with a strong class response 0-0.4 s after each event, events every 0.7 s.

    In alternating order the pre-stimulus window holds the previous (opposite) response. The
    other order, face face house house ..., makes the previous stimulus as often the same class
    as the other (the window reaches back to the previous response only), so it carries nothing.
    """
    pattern = ["house", "face"] if alternating else ["face", "face", "house", "house"]
    labels = [pattern[i % len(pattern)] for i in range(55)]
    events = [(0.7 + 0.7 * i, lb) for i, lb in enumerate(labels)]
    return synthetic_shards(root, name, SUBJECTS, events=events, evoked={"face": 2.5, "house": -2.5})


def _run_with_controls(shards: Path, tmp_path: Path, name: str) -> dict:
    config = _tiny_config(tmp_path, shards)
    out = tmp_path / name
    argv = ["evaluate", "--config", str(config), "--protocol", "cross-subject", "--folds", "2"]
    argv += ["--out", str(out), "--baselines", "logreg", "--trainer.limit_train_batches=2"]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow  # two evaluate runs with controls (~15 s); the control logic is in test_eval_controls.py
def test_controls_sit_at_chance_without_a_leak_and_flag_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("controls")
    random_order = _run_with_controls(_evoked_shards(root, "pairs", False), root, "eval-pairs")
    # the response decodes: the best method (logistic regression here) is near perfect ...
    controls = random_order["controls"]
    assert controls["method"] == "logistic regression"
    assert random_order["summary"]["logistic regression"]["balanced_accuracy"]["mean"] > 0.8
    # ... and both controls sit near chance: nothing but the response carries the label. (Their
    # verdicts read "at chance" here, but a 95% interval of a score at chance excludes it 5% of the
    # time, so the test asks for the estimate, far from the main score, and no "above chance".)
    for name in ("shuffled labels", "pre-stimulus"):
        c = controls["controls"][name]
        assert abs(c["score"]["estimate"] - c["chance"]) < 0.1, (name, c)
        assert c["verdict"] != "above chance" or c["score"]["low"] - c["chance"] < 0.02, (name, c)
    assert controls["window"] == [-0.5, 0.0]
    assert "| pre-stimulus |" in (root / "eval-pairs" / "results.md").read_text()

    # Alternating order: the window before a stimulus holds the previous, opposite, response,
    # so the pre-stimulus control is far above chance, flagging what the main score also uses.
    leak = _run_with_controls(_evoked_shards(root, "alternating", True), root, "eval-alternating")
    pre = leak["controls"]["controls"]["pre-stimulus"]
    assert pre["verdict"] == "above chance" and pre["score"]["estimate"] > 0.8
    shuffled = leak["controls"]["controls"]["shuffled labels"]
    assert abs(shuffled["score"]["estimate"] - shuffled["chance"]) < 0.06


@pytest.mark.slow  # two tuned evaluate runs (~35 s); the choice rule is in test_eval_tuning.py
def test_tuning_never_reads_the_scored_labels(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Selection on the inner split only: flipping every outer held-out label changes the scores
    but not one chosen setting, of the model or of the baseline."""
    import neurotrain.train.evaluation.evaluate as ev

    root = tmp_path_factory.mktemp("tune")
    shards = _evoked_shards(root, "pairs", False)
    config = _tiny_config(root, shards)
    argv = ["evaluate", "--config", str(config), "--protocol", "cross-subject", "--folds", "2", "--tune"]
    argv += ["--baselines", "logreg", "--controls", "none", "--trainer.max_epochs=2"]
    argv += ["--trainer.limit_train_batches=2"]
    assert main([*argv, "--out", str(root / "clean")]) == 0
    clean = json.loads((root / "clean" / "results.json").read_text())

    plan = ev.plan_folds
    label_of = {e["event"]: e["label"] for e in datamodule(shards).labelled_events("all")}

    def poisoned(events, protocol, folds, seed):
        out = plan(events, protocol, folds, seed)
        for fold in out:
            held = [e["event"] for e in events if e["subject"] in fold.test_subjects]
            fold.selection["val"]["labels"] = {n: 1 - label_of[n] for n in held}
        return out

    monkeypatch.setattr(ev, "plan_folds", poisoned)
    assert main([*argv, "--out", str(root / "poisoned")]) == 0
    dirty = json.loads((root / "poisoned" / "results.json").read_text())
    for a, b in zip(clean["folds_detail"], dirty["folds_detail"], strict=True):
        assert a["inner"] == b["inner"] and a["inner"]["inner_by"] in ("subjects", "epochs")
        assert a["tuning"] == b["tuning"]  # every inner score and every choice identical
        assert set(a["tuning"]) == {"encoder", "logistic regression"}
        assert len(a["tuning"]["encoder"]["table"]) == 3 * 2  # lr x 3, epochs 1..2
        # the held-out labels were flipped: the scores are mirrored
        lr_a = a["scores"]["logistic regression"]["balanced_accuracy"]
        lr_b = b["scores"]["logistic regression"]["balanced_accuracy"]
        assert lr_b == pytest.approx(1 - lr_a, abs=1e-9) and lr_a > 0.7
        # no inner epoch is an outer held-out epoch
        inner = json.loads(
            Path(a["selection_file"]).with_name(Path(a["selection_file"]).stem + "-inner.json").read_text()
        )
        assert not set(inner["train"]["subjects"] + inner["val"]["subjects"]) & set(a["test_subjects"])
    assert "chosen on each fold's inner split" in (root / "clean" / "results.md").read_text()


def test_braindecode_networks_train_on_the_same_folds(shards: Path, tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, shards)
    out = tmp_path / "nets"
    argv = ["evaluate", "--config", str(config), "--protocol", "cross-subject", "--folds", "2"]
    argv += ["--out", str(out), "--baselines", "--controls", "none", "--networks", "EEGNet"]
    argv += ["--trainer.limit_train_batches=2"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    for rec in results["folds_detail"]:
        assert set(rec["scores"]) == {"encoder", "EEGNet"}
        net = yaml.safe_load((Path(rec["run"] + "-eegnet") / "config.yaml").read_text())
        enc = yaml.safe_load((Path(rec["run"]) / "config.yaml").read_text())
        assert net["model"]["init_args"]["network"] == "EEGNet"
        assert net["data"] == enc["data"] and net["trainer"]["max_epochs"] == enc["trainer"]["max_epochs"]
        kept = json.loads((out / "predictions" / f"{Path(rec['run']).name}.json").read_text())
        assert kept["EEGNet"]["sample_ids"] == kept["encoder"]["sample_ids"]
    assert "EEGNet" in results["intervals"]["methods"]
    argv[argv.index("EEGNet")] = "NoSuchNet"
    assert main([*argv[:-1], "--out", str(tmp_path / "x")]) == 2


def test_aligned_variant_joins_a_finished_evaluation(shards: Path, tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, shards)
    out = tmp_path / "aligned"
    argv = ["evaluate", "--config", str(config), "--protocol", "cross-subject", "--folds", "2"]
    argv += ["--out", str(out), "--baselines", "logreg_ea", "--controls", "none"]
    argv += ["--trainer.limit_train_batches=2"]
    assert main(argv) == 0
    first = json.loads((out / "results.json").read_text())
    mtimes = {r["run"]: (Path(r["run"]) / "metrics.csv").stat().st_mtime for r in first["folds_detail"]}
    # Adding a method (or seeds, or networks) to a finished folder keeps its runs and adds the new.
    assert main([*argv, "--compare_aligned"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert json.loads((out / "evaluate.json").read_text())["compare_aligned"] is True
    for rec in results["folds_detail"]:
        assert (Path(rec["run"]) / "metrics.csv").stat().st_mtime == mtimes[rec["run"]]
        assert set(rec["scores"]) == {"encoder", "encoder, aligned", "logistic regression, aligned"}
        aligned = yaml.safe_load((Path(rec["run"] + "-aligned") / "config.yaml").read_text())
        plain = yaml.safe_load((Path(rec["run"]) / "config.yaml").read_text())
        assert aligned["data"]["recenter"] == "euclidean" and plain["data"]["recenter"] == "none"
        assert {k: v for k, v in aligned["data"].items() if k != "recenter"} == {
            k: v for k, v in plain["data"].items() if k != "recenter"
        }
        kept = json.loads((out / "predictions" / f"{Path(rec['run']).name}.json").read_text())
        assert kept["encoder, aligned"]["sample_ids"] == kept["logistic regression, aligned"]["sample_ids"]
    assert "encoder, aligned" in results["intervals"]["methods"]
    # a config that re-centres already has nothing to compare against
    assert (
        main(
            [
                *argv[:-1],
                "--trainer.limit_train_batches=2",
                "--data.recenter=euclidean",
                "--compare_aligned",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
