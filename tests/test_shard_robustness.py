"""Determinism, resume, atomicity and bad input of `neurotrain shard`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mne
import numpy as np
import pytest
import synthetic

from neurotrain.datamodules.sharding import PARTS_DIR, shard_dataset
from neurotrain.datamodules.sharding.inspection import verify_shards
from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.datamodules.sharding.writer import TMP_DIR
from neurotrain.train.cli import main


def shard_hashes(directory: Path) -> dict[str, str]:
    m = json.loads((directory / "manifest.json").read_text())
    return {s["name"]: s["sha256"] for s in m["shards"]}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    for i in range(3):
        synthetic.write_fif(d / f"sub-{i:02d}_raw.fif", seconds=40, seed=i, events=[(5.0 + i, "face")])
    return d


def test_same_input_same_bytes_whatever_the_workers(folder: Path, tmp_path: Path) -> None:
    a = shard_dataset([folder], tmp_path / "a", segment_seconds=15, workers=1)
    b = shard_dataset([folder], tmp_path / "b", segment_seconds=15, workers=2)
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
    assert len(a["shards"]) == 3
    drop = ("created_by",)
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_rerun_redoes_nothing_and_option_change_redoes_everything(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shard_dataset([folder], out, segment_seconds=15)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    shard_dataset([folder], out, segment_seconds=15)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == first
    # a split change only rewrites the manifest; a segment change rewrites shards
    shard_dataset([folder], out, segment_seconds=15, split_ratios=(0.5, 0.5, 0.0))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == first
    m = shard_dataset([folder], out, segment_seconds=40, shard_size_mb=1000)
    assert all(s["samples"] == 1 for s in m["shards"])
    assert verify_shards(out) == []


def test_killed_run_resumes_without_redoing_finished_recordings(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    for i in range(6):  # large enough that one recording takes a noticeable fraction of a second
        synthetic.write_fif(src / f"sub-{i:02d}_raw.fif", n_channels=12, sfreq=512, seconds=400, seed=i)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "neurotrain.train.cli",
        "shard",
        str(src),
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / PARTS_DIR
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(parts.glob("*.json")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in parts.glob("*.json"))
    assert 1 <= len(finished) < 6, "the run must be killed mid-way for this test to mean anything"
    assert not (out / "manifest.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert sorted(n.rsplit("-", 1)[0] for n in kept) == finished  # no partial shard under a final name

    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # finished shards were not redone
    assert not list((out / TMP_DIR).iterdir())  # the killed run's temporary folder is gone
    assert verify_shards(out) == []
    shard_dataset([src], tmp_path / "clean")
    assert shard_hashes(out) == shard_hashes(tmp_path / "clean")


def test_interrupted_rerun_never_leaves_a_manifest_naming_rewritten_shards(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shard_dataset([folder], out, segment_seconds=15)
    bad = folder / "sub-zz_raw.fif"
    bad.write_bytes(b"definitely not a FIF file")
    with pytest.raises(ShardError):
        shard_dataset([folder], out, segment_seconds=20)  # other options: shards get rewritten, then it fails
    manifest = out / "manifest.json"
    assert not manifest.exists() or verify_shards(out) == []
    assert (out / "manifest.json.previous").exists()


def test_truncated_edf_is_refused_by_name_and_no_manifest(example_eeg: Path, tmp_path: Path) -> None:
    src = example_eeg / "sub-s01/eeg/sub-s01_task-faceO_eeg.edf"
    bad = tmp_path / "in" / "truncated.edf"
    bad.parent.mkdir()
    with open(src, "rb") as f:
        bad.write_bytes(f.read(5_000_000))
    with pytest.raises(ShardError, match=r"truncated\.edf: damaged or truncated file"):
        shard_dataset([bad], tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob("*.tar"))


def test_non_neural_file_gets_a_clear_error_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "holiday.edf"
    fake.write_text("Dear diary, today I went to the beach.\n" * 20)
    assert main(["shard", str(fake), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "holiday.edf: cannot be read as EDF" in err and "no manifest was written" in err
    assert not (tmp_path / "out" / "manifest.json").exists()

    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ShardError, match=r"photo\.png: unsupported file type"):
        shard_dataset([png], tmp_path / "out")


def test_on_error_skip_records_the_file_and_goes_on(folder: Path, tmp_path: Path) -> None:
    (folder / "sub-99_raw.fif").write_bytes(b"garbage")
    with pytest.raises(ShardError, match="sub-99_raw.fif"):
        shard_dataset([folder], tmp_path / "fail")
    assert not (tmp_path / "fail" / "manifest.json").exists()
    m = shard_dataset([folder], tmp_path / "skip", on_error="skip")
    assert [Path(s["source"]).name for s in m["skipped"]] == ["sub-99_raw.fif"]
    assert "cannot be read as FIF" in m["skipped"][0]["error"]
    assert m["totals"]["recordings"] == 3 and "99" not in m["subjects"]


def _raw_with_nan(path: Path) -> Path:
    raw = synthetic.make_raw(seconds=30)
    raw._data[2, 1500:1510] = np.nan  # inside the second 10 s segment
    raw.save(path, overwrite=True, verbose="error")
    return path


def test_nonfinite_values_fail_drop_or_zero(tmp_path: Path) -> None:
    src = _raw_with_nan(tmp_path / "nan_raw.fif")
    with pytest.raises(ShardError, match=r"nan_raw\.fif: NaN or infinite values in segment 1 .* F3"):
        shard_dataset([src], tmp_path / "a", segment_seconds=10)
    m = shard_dataset([src], tmp_path / "b", segment_seconds=10, nonfinite="drop")
    assert m["recordings"][0]["n_segments"] == 2 and m["recordings"][0]["dropped_segments"][0]["segment"] == 1
    m = shard_dataset([src], tmp_path / "c", segment_seconds=10, nonfinite="zero")
    assert m["recordings"][0]["zeroed_values"] == 10 and m["totals"]["samples"] == 3


def test_flat_channels_are_marked_dropped_or_refused(tmp_path: Path) -> None:
    raw = synthetic.make_raw(seconds=20)
    raw._data[4] = 0.0
    src = tmp_path / "flat_raw.fif"
    raw.save(src, verbose="error")
    m = shard_dataset([src], tmp_path / "mark")
    rec = m["recordings"][0]
    assert rec["flat_channels"] == ["C3"] and "C3" in rec["bad_channels"] and rec["n_channels"] == 8
    # a flat channel does not pull the statistics toward zero
    # 20 µV noise + a 10 µV sine: std sqrt(20² + 10²/2) = 21.2 (19.8 if the flat channel counted)
    assert m["statistics"]["per_type"]["eeg"]["std"] == pytest.approx(21.21, rel=0.03)
    assert shard_dataset([src], tmp_path / "drop", flat="drop")["recordings"][0]["n_channels"] == 7
    with pytest.raises(ShardError, match="flat channels: C3"):
        shard_dataset([src], tmp_path / "fail", flat="fail")


def test_bad_channels_from_bids_channels_tsv_are_marked(tmp_path: Path) -> None:
    root = synthetic.write_bids_eeg(tmp_path / "bids", ["01"])
    tsv = root / "sub-01/eeg/sub-01_task-demo_channels.tsv"
    lines = tsv.read_text().splitlines()
    header = lines[0].split("\t")
    col = header.index("status")
    row = lines[3].split("\t")
    row[col] = "bad"
    tsv.write_text("\n".join([lines[0], lines[1], lines[2], "\t".join(row), *lines[4:]]) + "\n")
    m = shard_dataset([root], tmp_path / "out")
    assert m["recordings"][0]["bad_channels"] == [row[0]]


def test_preprocessing_resample_filter_reference_are_applied_and_recorded(tmp_path: Path) -> None:
    src = synthetic.write_fif(tmp_path / "r_raw.fif", seconds=20, events=[(4.0, "face")])
    m = shard_dataset(
        [src],
        tmp_path / "out",
        sfreq=64,
        l_freq=1.0,
        h_freq=20.0,
        notch=[50.0],
        reference="average",
        dtype="float32",
    )
    rec = m["recordings"][0]
    assert rec["sfreq"] == 64 and rec["duration_s"] == pytest.approx(20.0)
    import webdataset as wds

    s = next(iter(wds.WebDataset(str(next((tmp_path / "out").glob("*.tar"))), shardshuffle=False).decode()))
    assert s["signal.npy"].shape == (8, 20 * 64)
    np.testing.assert_allclose(s["signal.npy"].mean(axis=0), 0, atol=1e-3)  # average reference
    pre = s["meta.json"]["preprocessing"]
    assert pre["resample"] == {"from": 128.0, "to": 64.0} and pre["filter"] == [1.0, 20.0]
    assert pre["reference"] == "average" and pre["notch"] == [50.0]
    assert s["events.json"][0]["onset"] == pytest.approx(4.0, abs=1 / 64)


def test_missing_source_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="nowhere: no such file or folder"):
        shard_dataset([tmp_path / "nowhere"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="no supported recordings found"):
        shard_dataset([tmp_path / "empty"], tmp_path / "out")


def test_meg_positions_are_transformed_to_the_head_frame(tmp_path: Path) -> None:
    info = mne.create_info(["MEG 0111", "MEG 0112"], 100.0, ["mag", "grad"])
    for i, ch in enumerate(info["chs"]):
        ch["loc"][:3] = [0.01 * (i + 1), 0.02, 0.05]
        ch["coord_frame"] = 1  # device
    info["dev_head_t"] = mne.transforms.Transform("meg", "head", mne.transforms.translation(0.0, 0.0, 0.1))
    rng = np.random.default_rng(0)
    raw = mne.io.RawArray(
        rng.standard_normal((2, 2000)) * np.array([[1e-13], [1e-11]]), info, verbose="error"
    )
    src = tmp_path / "meg_raw.fif"
    raw.save(src, verbose="error")
    m = shard_dataset([src], tmp_path / "out", segment_seconds=10)
    rec = m["recordings"][0]
    assert rec["modality"] == "meg" and rec["n_positions"] == 2
    import webdataset as wds

    s = next(iter(wds.WebDataset(str(next((tmp_path / "out").glob("*.tar"))), shardshuffle=False).decode()))
    meta = s["meta.json"]
    assert meta["position_frame"] == "head" and meta["units"] == ["fT", "fT/cm"]
    np.testing.assert_allclose(meta["positions"][0], [0.01, 0.02, 0.15], atol=1e-6)
    assert set(m["statistics"]["per_type"]) == {"mag", "grad"}
