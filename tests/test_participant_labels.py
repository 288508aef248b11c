"""Subject-level labels: ``participants.tsv`` recorded at shard time, read as window labels.

A BIDS EEG dataset (mne-bids) and a plain folder of T1 images each get a participants table with
a number and a text column; sharding must store each subject's row, and
``label_source: participants`` must label every window / volume of that subject with it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import synthetic

from neurotrain.datamodules import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError

AGES = {"01": 31, "02": 67, "03": None}
GROUPS = {"01": "control", "02": "patient", "03": "patient"}


def _table(root: Path, ages=AGES, groups=GROUPS) -> None:
    lines = ["participant_id\tage\tgroup"]
    for sub in ages:
        age = "n/a" if ages[sub] is None else str(ages[sub])
        lines.append(f"sub-{sub}\t{age}\t{groups[sub]}")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def bids_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = synthetic.write_bids_eeg(tmp_path_factory.mktemp("bids") / "ds", list(AGES), seconds=12.0)
    _table(root)
    out = tmp_path_factory.mktemp("shards")
    shard_dataset([root], out, segment_seconds=6.0, min_segment_seconds=2.0)
    return out


def _batches(folder: Path, **kwargs) -> list[dict]:
    dm = ShardDataModule(
        [str(folder)], batch_size=4, window_seconds=2.0, label_source="participants", **kwargs
    )
    dm.setup("fit")
    dm.setup("test")  # the subjects are dealt to train/val/test: read all three
    return [*dm.train_dataloader(), *dm.val_dataloader(), *dm.test_dataloader()]


def test_the_participants_row_is_stored_with_each_recording(bids_shards: Path) -> None:
    manifest = json.loads((bids_shards / "manifest.json").read_text())
    rows = {r["subject"]: r.get("participant") for r in manifest["recordings"]}
    assert rows["01"] == {"age": 31, "group": "control"}
    assert rows["03"] == {"age": None, "group": "patient"}  # n/a -> None


def test_windows_carry_their_subjects_value_as_a_regression_target(bids_shards: Path) -> None:
    seen: dict[str, set] = {}
    for batch in _batches(bids_shards, label_column="age"):
        assert batch["labels"].dtype.is_floating_point
        for sub, value in zip(batch["subject"], batch["labels"].tolist(), strict=True):
            seen.setdefault(sub, set()).add("nan" if math.isnan(value) else value)
    assert seen == {"01": {31.0}, "02": {67.0}, "03": {"nan"}}


def test_text_values_are_classes_through_the_label_map(bids_shards: Path) -> None:
    labels = {}
    for batch in _batches(bids_shards, label_column="group", label_map={"control": 0, "patient": 1}):
        assert batch["labels"].dtype == np.int64 or str(batch["labels"].dtype) == "torch.int64"
        labels.update(zip(batch["subject"], batch["labels"].tolist(), strict=True))
    assert labels == {"01": 0, "02": 1, "03": 1}


def test_text_without_a_label_map_and_an_unknown_column_say_what_to_do(bids_shards: Path) -> None:
    with pytest.raises(ValueError, match="give label_map"):
        _batches(bids_shards, label_column="group")
    with pytest.raises(ValueError, match="columns: age, group"):
        _batches(bids_shards, label_column="sex")


def _t1_folder(src: Path, subjects: tuple[str, ...]) -> Path:
    import nibabel as nib

    src.mkdir()
    rng = np.random.default_rng(0)
    for sub in subjects:
        data = np.zeros((20, 20, 20), np.float32)
        data[5:15, 5:15, 5:15] = 100 + rng.standard_normal((10, 10, 10))
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), src / f"sub-{sub}_T1w.nii.gz")
    return src


def test_volumes_in_a_plain_folder_are_labelled_too(tmp_path: Path) -> None:
    src = _t1_folder(tmp_path / "t1", ("01", "02"))
    _table(src, {"01": 20, "02": 80}, {"01": "a", "02": "b"})
    out = tmp_path / "shards"
    shard_dataset([src], out, volume_shape=(16, 16, 16))
    dm = ShardDataModule([str(out)], batch_size=1, label_source="participants", label_column="age")
    dm.setup("fit")
    dm.setup("test")
    labels = {}
    for batch in [*dm.train_dataloader(), *dm.val_dataloader(), *dm.test_dataloader()]:
        assert batch["volume"].shape[1:] == (16, 16, 16)
        labels.update(zip(batch["subject"], batch["labels"].tolist(), strict=True))
    assert labels == {"01": 20.0, "02": 80.0}


def test_a_participants_file_without_ids_is_refused_naming_it(tmp_path: Path) -> None:
    src = _t1_folder(tmp_path / "t1", ("01",))
    (src / "participants.tsv").write_text("name\tage\nx\t3\n")
    with pytest.raises(ShardError, match="participants.tsv.*no participant_id column"):
        shard_dataset([src], tmp_path / "out", volume_shape=(16, 16, 16))
    assert not (tmp_path / "out" / "manifest.json").exists()
