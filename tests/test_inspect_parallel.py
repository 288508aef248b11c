"""`neurotrain inspect --verify --workers N`: shards hashed at once, problems listed in manifest order.

The example EEG (pylossless BIDS, 2 subjects) sharded into small shards (~12 MB, 3 samples each),
then a copy with a corrupted, a truncated and a missing shard: whatever the number of threads
and whichever shard finishes first, the same problem lines come back in the same order.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from neurotrain.datamodules.format.manifest import ManifestError, load_manifest
from neurotrain.datamodules.sharding import inspection
from neurotrain.datamodules.sharding.inspection import default_verify_workers, verify_shards
from neurotrain.train.cli import main


@pytest.fixture(scope="module")
def small_shards(example_eeg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from neurotrain.datamodules.sharding import shard_dataset

    out = tmp_path_factory.mktemp("eeg_small_shards")
    shard_dataset([example_eeg], out, workers=2, shard_size_mb=12.0)
    return out


@pytest.fixture
def damaged(small_shards: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy whose shards 0, 2 and 4 are corrupted, truncated and missing; the expected lines."""
    copy = tmp_path / "copy"
    shutil.copytree(small_shards, copy)
    shards = load_manifest(copy)["shards"]
    assert len(shards) >= 6
    corrupted, truncated, missing = (shards[i]["name"] for i in (0, 2, 4))
    with open(copy / corrupted, "r+b") as f:  # change exactly one byte
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    size = shards[2]["bytes"]
    os.truncate(copy / truncated, size - 512)
    (copy / missing).unlink()
    return copy, [
        f"{corrupted}: sha256 differs from the manifest (corrupted)",
        f"{truncated}: {size - 512} bytes, manifest says {size} (truncated?)",
        f"{missing}: missing",
    ]


def test_the_same_problems_in_manifest_order_with_1_and_4_workers(damaged: tuple[Path, list[str]]) -> None:
    copy, expected = damaged
    # With 4 threads the missing and truncated shards are done long before the corrupted one is
    # hashed: the lines still come in manifest order.
    assert verify_shards(copy, workers=1) == expected
    assert verify_shards(copy, workers=4) == expected
    assert verify_shards(copy) == expected  # the default: min(8, cpus)
    assert default_verify_workers() == min(8, os.cpu_count() or 1)


def test_inspect_verify_workers_on_the_command_line(
    small_shards: Path, damaged: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(small_shards), "--verify", "--workers", "4"]) == 0
    assert "verified: all" in capsys.readouterr().out
    copy, expected = damaged
    assert main(["inspect", str(copy), "--verify", "--workers", "4"]) == 1
    out = capsys.readouterr().out
    at = [out.index(f"FAILED {line.split(':')[0]}: ") for line in expected]  # rich wraps long lines
    assert at == sorted(at) and out.count("FAILED ") == 3
    assert f"3 of {len(load_manifest(copy)['shards'])} shards failed verification" in out
    assert main(["inspect", str(copy), "--workers", "2"]) == 2  # --workers without --verify
    assert "add --verify" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", str(copy), "--verify", "--workers", "0"])
    assert exit_.value.code == 2
    assert "'0' is not a positive integer" in capsys.readouterr().err


def test_shards_are_hashed_at_once_by_at_most_workers_threads(
    small_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    running, peak = 0, 0
    real = inspection.sha256_file

    def slow(path, *args, **kwargs) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        try:
            return real(path, *args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(inspection, "sha256_file", slow)
    n = len(load_manifest(small_shards)["shards"])
    assert verify_shards(small_shards, workers=3) == []
    assert peak == 3
    peak = 0
    assert verify_shards(small_shards, workers=1) == []
    assert peak == 1
    with pytest.raises(ValueError, match="positive integer"):
        verify_shards(small_shards, workers=0)
    assert n >= 6


def test_a_name_leaving_the_folder_is_refused_before_anything_is_hashed(
    small_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(small_shards, copy)
    last = load_manifest(copy)["shards"][-1]["name"]
    outside = tmp_path / "outside.tar"
    shutil.move(copy / last, outside)
    (copy / last).symlink_to(outside)  # the last shard is a symlink out of the folder
    hashed: list[str] = []
    monkeypatch.setattr(inspection, "sha256_file", lambda path, *a, **k: hashed.append(str(path)))
    with pytest.raises(ManifestError, match="outside the dataset folder"):
        verify_shards(copy, workers=4)
    assert hashed == []
