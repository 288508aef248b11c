"""Missing, truncated, sha256-mismatched shards and bad samples, under on_corrupt fail and skip."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_datamodule import ids, manifest, rewrite_shard, synthetic_shards

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.tar_index import CorruptShardError, index_shard

WINDOWS_PER_SHARD = 40  # 2 segments of 20 s, 1 s windows


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_shards(tmp_path_factory.mktemp("corrupt"), "cl", ["a", "b", "c"], seconds=40.0)


@pytest.fixture
def data(clean: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(clean, out)
    return out


def shard_names(folder: Path) -> list[str]:
    return [s["name"] for s in manifest(folder)["shards"]]


def loader(folder: Path, on_corrupt: str, verify: bool = False, num_workers: int = 0):
    dm = ShardDataModule(
        [str(folder)],
        window_seconds=1.0,
        batch_size=4,
        on_corrupt=on_corrupt,
        verify=verify,
        num_workers=num_workers,
    )
    return dm, dm.train_dataloader()


def write_at_signal(folder: Path, shard: str, sample: int, values: np.ndarray) -> str:
    """Overwrite the start of one sample's signal data in place (size unchanged); return its key."""
    entry = next(s for s in manifest(folder)["shards"] if s["name"] == shard)
    seg = index_shard(folder / shard, 0, entry, verify=False)[sample]
    with open(folder / shard, "r+b") as f:
        f.seek(seg.offset)
        f.write(values.astype(seg.dtype).tobytes())
    return seg.key


def test_missing_shard(data: Path) -> None:
    victim = shard_names(data)[1]
    (data / victim).unlink()
    with pytest.raises(CorruptShardError, match=f"{victim}: missing"):
        loader(data, "fail")
    dm, dl = loader(data, "skip")
    assert dm.skipped == {"shards": [victim], "samples": 2}
    assert len(ids(dl)) == 2 * WINDOWS_PER_SHARD and len(dl) == 2 * WINDOWS_PER_SHARD // 4


def test_truncated_shard(data: Path) -> None:
    victim = shard_names(data)[0]
    with open(data / victim, "r+b") as f:
        f.truncate((data / victim).stat().st_size // 2)
    with pytest.raises(CorruptShardError, match=f"{victim}: .* bytes on disk, manifest says"):
        loader(data, "fail")
    # Even with a manifest that agrees on the size, the tar structure gives it away.
    m = manifest(data)
    m["shards"][0]["bytes"] = (data / victim).stat().st_size
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptShardError, match=victim):
        loader(data, "fail")
    dm, dl = loader(data, "skip")
    assert dm.skipped["shards"] == [victim] and len(ids(dl)) == 2 * WINDOWS_PER_SHARD


def test_sha256_mismatch_only_with_verify(data: Path) -> None:
    victim = shard_names(data)[2]
    write_at_signal(data, victim, 1, np.full(16, 123.0))
    with pytest.raises(CorruptShardError, match=f"{victim}: sha256 mismatch"):
        loader(data, "fail", verify=True)
    dm, dl = loader(data, "skip", verify=True)
    assert dm.skipped["samples"] == 2 and len(ids(dl)) == 2 * WINDOWS_PER_SHARD
    _, dl = loader(data, "fail", verify=False)  # without verification the data are used as they are
    assert len(ids(dl)) == 3 * WINDOWS_PER_SHARD


def test_nan_sample_fails_or_is_skipped_and_counted(data: Path) -> None:
    victim = shard_names(data)[0]
    key = write_at_signal(data, victim, 1, np.full(8, np.nan))
    with pytest.raises(CorruptShardError, match=f"{victim}:{key}: non-finite"):
        ids(loader(data, "fail")[1])
    dm, dl = loader(data, "skip")
    seen = ids(dl)
    assert len(seen) == 3 * WINDOWS_PER_SHARD - 20 and not any(i.startswith(key) for i in seen)
    assert dl.skipped_samples == 20


def test_wrong_shape_sample(data: Path) -> None:
    victim = shard_names(data)[1]

    def drop_a_channel(name: str, payload: bytes) -> bytes:
        if name.endswith("seg00000.meta.json"):
            meta = json.loads(payload)
            meta["ch_names"] = meta["ch_names"][:-1]
            return json.dumps(meta).encode()
        return payload

    rewrite_shard(data, victim, drop_a_channel)
    with pytest.raises(CorruptShardError, match=f"{victim}:.*seg00000: signal shape"):
        loader(data, "fail")
    dm, dl = loader(data, "skip")
    assert dm.skipped["shards"] == [victim] and len(ids(dl)) == 2 * WINDOWS_PER_SHARD


SCRIPT = """
import sys
from neurotrain.datamodules.loading.datamodule import ShardDataModule
dm = ShardDataModule(
    [sys.argv[1]], window_seconds=1.0, batch_size=4, num_workers=2, on_corrupt=sys.argv[2], worker_mode=sys.argv[3]
)
n = sum(len(b["sample_id"]) for b in dm.train_dataloader())
print("windows", n)
"""


@pytest.mark.parametrize("mode", ["threads", "processes"])
@pytest.mark.parametrize("on_corrupt", ["fail", "skip"])
def test_bad_sample_in_a_worker_never_hangs(data: Path, on_corrupt: str, mode: str) -> None:
    victim = shard_names(data)[2]
    key = write_at_signal(data, victim, 0, np.full(8, np.inf))
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data), on_corrupt, mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if on_corrupt == "fail":
        assert run.returncode != 0 and f"{victim}:{key}: non-finite" in run.stderr
    else:
        assert run.returncode == 0, run.stderr
        assert f"skipping corrupt sample {victim}:{key}" in run.stderr
        assert "windows 100" in run.stdout
