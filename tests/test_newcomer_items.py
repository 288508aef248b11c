"""Small things a newcomer meets (issue 18): ``inspect`` shows sampling rates and bad channels, an
exported ``.safetensors`` (and every atomic write) gets the mode of a new file under the umask, and
``evaluate``'s progress line names the held-out subject.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from neurotrain.datamodules.io.files import atomic_path, atomic_write_json
from neurotrain.datamodules.sharding.inspection import bad_channel_summary, sampling_rates, summarize
from neurotrain.train.cli import main
from neurotrain.train.evaluation.folds import plan_folds
from neurotrain.train.run.export import export_checkpoint


def test_inspect_prints_sampling_rates_and_each_recordings_bad_channels(
    eeg_shards: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per item, whatever the terminal
    manifest = json.loads((eeg_shards / "manifest.json").read_text())
    recs = manifest["recordings"]
    assert main(["inspect", str(eeg_shards)]) == 0
    out = capsys.readouterr().out
    assert f"sampling rates: 256 Hz × {len(recs)} recording(s)" in out
    with_bads = [r for r in recs if r["bad_channels"]]
    assert with_bads  # the example EEG has noisy channels in both recordings
    for r in with_bads:
        line = next(ln for ln in out.splitlines() if f"bad channels {r['id']}:" in ln)
        assert f"{len(r['bad_channels'])} of {r['n_channels']}: {', '.join(r['bad_channels'])}" in line
        assert f"noisy: {len(r['noisy_channels'])}" in line
    assert "no bad channels" not in out  # every recording has some


def test_bad_channels_say_why_and_rates_count_recordings() -> None:
    rec = {
        "bad_channels": ["Fz", "O1", "T7"],
        "noisy_channels": ["O1"],
        "flat_channels": ["T7"],
        "n_channels": 32,
    }
    assert bad_channel_summary(rec) == "3 of 32: Fz, O1, T7 (noisy: 1; flat: 1; marked in the file: 1)"
    recs = [
        {"sfreq": 256.0},
        {"sfreq": 512.0},
        {"sfreq": 256.0},
        {"sfreq": 0.4, "tr": 2.5},
        {"sfreq": None},  # a structural image has no rate
    ]
    assert sampling_rates(recs) == {"256 Hz": 2, "512 Hz": 1, "0.4 Hz (TR 2.5 s)": 1}


def test_summary_of_a_dataset_without_bad_channels_lists_none(eeg_shards: Path) -> None:
    manifest = json.loads((eeg_shards / "manifest.json").read_text())
    for r in manifest["recordings"]:
        r["bad_channels"] = []
    assert summarize(manifest)["bad_channels"] == {}


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test sets its own."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_exported_safetensors_get_the_mode_of_a_new_file(
    mask: int, expected: int, umask: None, tmp_path: Path
) -> None:
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.ones(2, 3)}, "global_step": 3}, ckpt)
    os.umask(mask)
    out = export_checkpoint(ckpt, tmp_path / "model.safetensors")
    assert mode(out) == expected  # not tempfile's 0600
    atomic_write_json(tmp_path / "manifest.json", {"a": 1})  # manifests, summaries, reports alike
    assert mode(tmp_path / "manifest.json") == expected
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_library_that_writes_0600_still_gives_the_umask_mode(umask: None, tmp_path: Path) -> None:
    with atomic_path(tmp_path / "figure.png") as tmp:
        tmp.write_bytes(b"png")
        os.chmod(tmp, 0o600)  # what a library writing through its own mkstemp leaves
    assert mode(tmp_path / "figure.png") == 0o644


def events(subject: str, n: int) -> list[dict]:
    return [{"subject": subject, "event": f"{subject}-{i}", "label": i % 2} for i in range(n)]


def test_the_evaluate_progress_line_names_the_held_out_subject() -> None:
    evs = events("s01", 4) + events("s02", 6)
    first, second = plan_folds(evs, "leave-one-subject-out", 5, 0)
    assert first.progress() == "fold sub-s01 (train: sub-s02; held out: sub-s01): 6 train / 4 held-out epochs"
    assert (
        second.progress() == "fold sub-s02 (train: sub-s01; held out: sub-s02): 4 train / 6 held-out epochs"
    )
    within = plan_folds(evs, "within-subject", 2, 0)[0]
    assert within.progress() == "fold sub-s01/fold0 (epochs of sub-s01 split): 2 train / 2 held-out epochs"
