"""`neurotrain shard` and `inspect` on the real example EEG (pylossless BIDS, 2 subjects)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from neurotrain.datamodules.format.manifest import load_manifest
from neurotrain.datamodules.sharding.inspection import verify_shards
from neurotrain.train.cli import main


def test_manifest_lists_subjects_channels_labels_split(eeg_shards: Path) -> None:
    m = load_manifest(eeg_shards)
    assert sorted(m["subjects"]) == ["s01", "s02"]
    assert m["modalities"] == ["eeg"]
    (cs,) = m["channel_sets"]
    assert len(cs["ch_names"]) == 128 and set(cs["ch_types"]) == {"eeg"}
    for rec in m["recordings"]:
        assert rec["n_positions"] == 128 and rec["position_source"] == "bids:electrodes.tsv"
        assert rec["sfreq"] == 256.0
    assert {"face-upright", "face-inverted", "house-upright", "house-inverted"} <= set(m["labels"]["names"])
    assert m["labels"]["counts"]["face-upright"] > 300
    # bad-span markers are annotations, not labels
    assert "BAD_break" in m["annotations"]["names"] and "BAD_break" not in m["labels"]["names"]
    # subject-level split: each subject in exactly one split, shards carry their subject's split
    assert sorted(m["splits"]["train"] + m["splits"]["val"] + m["splits"]["test"]) == ["s01", "s02"]
    for shard in m["shards"]:
        assert shard["split"] == m["subjects"][shard["subject"]]["split"]
    assert m["totals"]["samples"] == sum(s["samples"] for s in m["shards"]) == 39
    assert m["created_by"]["versions"]["mne"]


def test_samples_hold_signal_meta_and_segment_events(eeg_shards: Path, example_eeg: Path) -> None:
    import mne

    m = load_manifest(eeg_shards)
    shard = next(s for s in m["shards"] if s["subject"] == "s01")
    samples = list(wds.WebDataset(str(eeg_shards / shard["name"]), shardshuffle=False).decode())
    assert len(samples) == shard["samples"] == 19
    first, second = samples[0], samples[1]
    x = first["signal.npy"]
    meta = first["meta.json"]
    assert x.shape == (128, 60 * 256) and x.dtype == np.float16
    assert meta["units"][0] == "µV" and meta["position_frame"] == "head"
    assert all(p is not None and abs(np.linalg.norm(p) - 0.1) < 0.06 for p in meta["positions"])
    assert (meta["subject"], meta["task"], meta["segment_index"]) == ("s01", "faceO", 0)
    assert second["meta.json"]["onset_s"] == 60.0
    # the stored values are the recording in µV (float16 precision)
    edf = example_eeg / "sub-s01/eeg/sub-s01_task-faceO_eeg.edf"
    raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    ref = raw.get_data(picks=[meta["ch_names"][5]], start=15360, stop=2 * 15360)[0] * 1e6
    np.testing.assert_allclose(second["signal.npy"][5].astype(np.float64), ref, atol=0.05, rtol=2e-3)
    # events fall inside their segment, onsets relative to the segment start
    events = second["events.json"]
    assert events and all(0 <= e["onset"] < 60 for e in events)
    faces_in_edf = [
        o
        for o, d in zip(raw.annotations.onset, raw.annotations.description, strict=True)
        if d == "face-upright"
    ]
    expected = sum(60 <= o < 120 for o in faces_in_edf)
    assert sum(e["label"] == "face-upright" for e in events) == expected


def test_statistics_come_from_the_train_split_only(eeg_shards: Path) -> None:
    m = load_manifest(eeg_shards)
    train_shards = [s["name"] for s in m["shards"] if s["split"] == "train"]
    xs = []
    for s in wds.WebDataset([str(eeg_shards / n) for n in train_shards], shardshuffle=False).decode():
        good = [
            i for i, n in enumerate(s["meta.json"]["ch_names"]) if n not in s["meta.json"]["bad_channels"]
        ]
        xs.append(s["signal.npy"][good].astype(np.float64))  # bad (noisy) channels are left out
    data = np.concatenate(xs, axis=1)
    st = m["statistics"]["per_type"]["eeg"]
    assert m["statistics"]["method"] == "robust" and m["statistics"]["split"] == "train"
    assert st["count"] == data.size
    # statistics are computed before float16 storage, so they agree to float16 precision
    assert st["mean"] == pytest.approx(data.mean(), abs=0.02)
    assert st["std"] == pytest.approx(data.std(), rel=1e-3)
    assert st["iqr"] == pytest.approx(np.subtract(*np.percentile(data, [75, 25])), rel=0.05)
    assert st["median"] == pytest.approx(np.median(data), abs=0.1)


def test_noisy_channels_are_marked_bad_and_left_out_of_the_statistics(eeg_shards: Path) -> None:
    m = load_manifest(eeg_shards)
    for rec in m["recordings"]:
        assert rec["noisy_channels"] and set(rec["noisy_channels"]) <= set(rec["bad_channels"])
    # a few noisy channels would triple the scale: s01's std over all channels is ~37.5 µV
    assert m["statistics"]["per_type"]["eeg"]["std"] < 20


def test_inspect_verify_passes_then_names_a_corrupted_shard(
    eeg_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(eeg_shards), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "s01" in out and "128 channels" in out and "face-upright" in out and "verified" in out

    copy = tmp_path / "copy"
    shutil.copytree(eeg_shards, copy)
    victim = json.loads((copy / "manifest.json").read_text())["shards"][1]["name"]
    with open(copy / victim, "r+b") as f:  # change exactly one byte
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert verify_shards(copy) == [f"{victim}: sha256 differs from the manifest (corrupted)"]
    assert main(["inspect", str(copy), "--verify"]) == 1
    assert victim in capsys.readouterr().out

    (copy / victim).unlink()
    assert verify_shards(copy) == [f"{victim}: missing"]
