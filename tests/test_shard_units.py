"""Split assignment, statistics merging, example-data fetching and the CLI surface."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from neurotrain.datamodules.sharding import examples as example_data
from neurotrain.datamodules.sharding import statistics as stats
from neurotrain.datamodules.sharding.splits import assign_splits
from neurotrain.train.cli import build_parser, main


def test_split_is_by_subject_deterministic_and_order_free() -> None:
    subjects = [f"s{i:02d}" for i in range(20)]
    a = assign_splits(subjects, (0.7, 0.15, 0.15), seed=3)
    b = assign_splits(list(reversed(subjects)) + subjects, (0.7, 0.15, 0.15), seed=3)
    assert a == b and set(a) == set(subjects)
    counts = {s: list(a.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 3, "test": 3}
    assert assign_splits(subjects, (0.7, 0.15, 0.15), seed=4) != a
    # every split with a ratio gets a subject while train keeps one
    assert sorted(assign_splits(["x", "y"], (0.8, 0.1, 0.1)).values()) == ["train", "val"]
    assert sorted(assign_splits(["x", "y", "z"], (0.8, 0.1, 0.1)).values()) == ["test", "train", "val"]
    assert assign_splits(["only"], (0.8, 0.1, 0.1)) == {"only": "train"}


def test_merged_statistics_equal_statistics_of_the_whole() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, (4, 5000))
    b = rng.normal(-1.0, 5.0, (4, 7000))
    types = ["eeg", "eeg", "eeg", "eog"]
    excl = np.array([False, False, True, False])
    merged = stats.merge([stats.accumulate(a, types, excl), stats.accumulate(b, types, excl)])
    whole = np.concatenate([a[:2].ravel(), b[:2].ravel()])
    assert merged["eeg"]["count"] == whole.size
    assert merged["eeg"]["mean"] == pytest.approx(whole.mean(), rel=1e-9)
    assert merged["eeg"]["std"] == pytest.approx(whole.std(), rel=1e-9)
    assert merged["eeg"]["median"] == pytest.approx(np.median(whole), abs=0.1)
    assert merged["eeg"]["iqr"] == pytest.approx(np.subtract(*np.percentile(whole, [75, 25])), rel=0.03)
    assert set(merged) == {"eeg", "eog"}


def test_fetch_checks_sha256_and_leaves_nothing_half_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = example_data.fetch("fmri")
    assert (good / "fmri1.nii.gz").exists() and (good / ".complete").exists()
    wheels = example_data.cache_root() / "wheels"
    (tmp_path / "wheels").mkdir()
    for w in wheels.glob("nitime-*.whl"):
        shutil.copy(w, tmp_path / "wheels")
    spec = example_data.DATASETS["fmri"]
    bad = example_data.ExampleDataset(
        spec.package, spec.version, spec.prefix, spec.description, {"fmri1.nii.gz": "0" * 64}
    )
    monkeypatch.setitem(example_data.DATASETS, "fmri", bad)
    with pytest.raises(example_data.FetchError, match="fmri1.nii.gz has sha256"):
        example_data.fetch("fmri", cache_dir=tmp_path)
    assert not list((tmp_path / "examples").iterdir())  # no partial dataset left


def test_help_lists_every_subcommand_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("shard", "inspect", "fetch"):
        assert f"    {cmd} " in out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert all(choice.help for choice in sub._choices_actions)


def test_inspect_without_manifest_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_one_pass_edf_decode_equals_mne_reading_whole(tmp_path: Path) -> None:
    """The fast EDF path gives exactly MNE's values (scaled to µV, float32) over the whole file."""
    import mne
    import synthetic

    from neurotrain.datamodules.sharding.readers.signals import _read_edf_scaled, _scales

    path = synthetic.write_edf(tmp_path / "x.edf", seconds=37.3, sfreq=128.0, events=[(1.0, "a")])
    raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
    scales = _scales(raw.get_channel_types())
    fast = _read_edf_scaled(raw, scales)
    assert fast is not None, "the plain-EDF path was not taken"
    ref = np.empty_like(fast)
    np.multiply(raw.get_data(), scales[:, None], out=ref, casting="unsafe")
    assert np.array_equal(fast.view(np.int32), ref.view(np.int32))  # bit for bit
    raw.pick(raw.ch_names[2:5])  # a contiguous subset still takes the fast path
    sub = _read_edf_scaled(raw, scales[2:5])
    assert sub is not None and np.array_equal(sub, ref[2:5])
