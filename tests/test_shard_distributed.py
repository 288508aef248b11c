"""`neurotrain shard --part K/N` jobs merged by `--merge` give the manifest of one run, byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import synthetic

from neurotrain.datamodules.sharding.distributed import deal, parse_part, partial_manifest_path
from neurotrain.datamodules.sharding.inspection import verify_shards
from neurotrain.train.cli import main


def _shard(*argv: str) -> None:
    assert main(["shard", *argv, "--no-progress"]) == 0


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.tar")}


def _one_run_then_parts(common: list[str], out: Path, n: int, order: list[int], extra: dict[int, list[str]]):
    """Manifest bytes and shards of one run, then of ``n`` parts (in ``order``) merged, in the same ``out``."""
    _shard(*common)
    single, shards = (out / "manifest.json").read_bytes(), _files(out)
    shutil.rmtree(out)
    for k in order:
        _shard(*common, "--part", f"{k}/{n}", *extra.get(k, []))
        assert not (out / "manifest.json").exists()
        assert partial_manifest_path(out, (k, n)).exists()
    assert main(["shard", "--merge", str(out)]) == 0
    return single, shards


def test_two_parts_of_the_example_eeg_merge_into_the_manifest_of_one_run(
    example_eeg: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    single, shards = _one_run_then_parts(["example:eeg", "--out", str(out)], out, 2, [2, 1], {})
    assert (out / "manifest.json").read_bytes() == single
    assert _files(out) == shards
    assert verify_shards(out) == []
    one = json.loads(partial_manifest_path(out, (1, 2)).read_text())
    two = json.loads(partial_manifest_path(out, (2, 2)).read_text())
    assert len(one["assigned"]) == len(two["assigned"]) == 1  # 2 recordings, dealt round robin
    assert one["command"] == json.loads(single)["created_by"]["command"]  # the command without --part


def test_parts_of_synthetic_recordings_merge_byte_identically(tmp_path: Path, capsys) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    for i in range(7):  # 4 subjects, so train, val and test all have subjects
        synthetic.write_fif(
            src / f"sub-{i % 4:02d}_run-{i}_raw.fif",
            seconds=25 + i,
            seed=i,
            events=[(3.0, "face"), (9.0, "house")],
        )
    (src / "sub-09_run-0_raw.fif").write_text("not a recording")  # skipped, in every part's view
    out = tmp_path / "out"
    common = [str(src), "--out", str(out), "--segment-seconds", "10", "--split", "0.5", "0.25", "0.25"]
    common += ["--on-error", "skip"]
    # parts out of order, one with several workers: neither changes a byte
    single, shards = _one_run_then_parts(common, out, 3, [3, 1, 2], {2: ["--workers", "2"]})
    assert "all 3 parts are done: run `neurotrain shard --merge" in capsys.readouterr().out
    merged = json.loads((out / "manifest.json").read_bytes())
    assert (out / "manifest.json").read_bytes() == single
    assert _files(out) == shards
    assert [Path(s["source"]).name for s in merged["skipped"]] == ["sub-09_run-0_raw.fif"]
    assert merged["totals"]["recordings"] == 7 and set(merged["splits"]) >= {"train", "val", "test"}
    # merging again gives the same bytes
    assert main(["shard", "--merge", str(out)]) == 0
    assert (out / "manifest.json").read_bytes() == single


def test_the_deal_is_round_robin_over_sorted_recording_ids() -> None:
    from types import SimpleNamespace

    items = [SimpleNamespace(recording_id=f"r{i}") for i in (4, 0, 3, 1, 2)]
    assert [it.recording_id for it in deal(items, (1, 2))] == ["r0", "r2", "r4"]
    assert [it.recording_id for it in deal(items, (2, 2))] == ["r1", "r3"]
    assert [it.recording_id for it in deal(items, (3, 3))] == ["r2"]
    assert parse_part(" 2/8 ") == (2, 8)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(ValueError, match="--part"):
            parse_part(bad)


def test_merge_refuses_an_incomplete_or_inconsistent_set(tmp_path: Path, capsys) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    for i in range(3):
        synthetic.write_fif(src / f"sub-{i:02d}_raw.fif", seconds=12, seed=i)
    out = tmp_path / "out"
    common = [str(src), "--out", str(out), "--segment-seconds", "10"]

    def merge_error() -> str:
        assert main(["shard", "--merge", str(out)]) == 1
        err = capsys.readouterr().err
        assert not (out / "manifest.json").exists()
        return err

    out.mkdir()
    assert "no partial manifests" in merge_error()
    _shard(*common, "--part", "1/3")
    capsys.readouterr()
    err = merge_error()
    assert "incomplete set of parts: missing part(s) 2/3, 3/3" in err
    assert "manifest.part-2-of-3.json, manifest.part-3-of-3.json" in err
    assert "--segment-seconds 10 --no-progress --part 2/3` and likewise for the others" in err

    _shard(str(src), "--out", str(out), "--segment-seconds", "12", "--part", "2/3")
    _shard(*common, "--part", "3/3")
    capsys.readouterr()
    err = merge_error()
    assert (
        "part 2/3 was made with other options than part 1/3: segment_seconds: 10.0 in part 1/3, 12.0 in part 2/3"
        in err
    )

    _shard(*common, "--part", "2/3")  # redone with the right options: now the set is whole
    _shard(*common, "--part", "1/2")
    capsys.readouterr()
    err = merge_error()
    assert "partial manifests of different part counts (N=2 and N=3)" in err
    partial_manifest_path(out, (1, 2)).unlink()
    assert main(["shard", "--merge", str(out)]) == 0

    _shard(*common, "--dtype", "float32")  # one run with other options rewrites every recording's part
    (out / "manifest.json").unlink()
    capsys.readouterr()
    err = merge_error()
    assert "was sharded again after part 1/3 finished" in err and "re-run `neurotrain shard" in err


def test_part_and_merge_command_lines_are_checked(tmp_path: Path, capsys) -> None:
    for argv, message in (
        (["x", "--out", "o", "--part", "3/2"], "--part 3/2: K must be between 1 and N"),
        (["x", "--out", "o", "--part", "two"], "--part two: expected K/N"),
        (["x", "--merge", str(tmp_path)], "--merge DIR takes no SOURCE"),
        (["--merge", str(tmp_path), "--out", "o"], "--merge DIR takes no --out"),
        (["--merge", str(tmp_path), "--segment-seconds", "30"], "leave out --segment-seconds"),
        (["--out", "o"], "required: SOURCE"),
        (["x"], "required: --out"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["shard", *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shard", "--help"])
    out = capsys.readouterr().out
    assert "--part K/N" in out and "--merge DIR" in out
