"""Split assignment, statistics merging, example-data fetching and the CLI surface."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pooch
import pytest

from neurotrain.datamodules.io.cache import cache_root
from neurotrain.datamodules.sharding import examples as example_data
from neurotrain.datamodules.sharding import statistics as stats
from neurotrain.datamodules.sharding.options import ShardOptions
from neurotrain.datamodules.sharding.splits import assign_splits
from neurotrain.train.cli import build_parser, main
from neurotrain.train.data_commands import option_flag, parse_shard_args


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
    wheels = cache_root() / "wheels"
    (tmp_path / "wheels").mkdir()
    for w in wheels.glob("nitime-*.whl"):
        shutil.copy(w, tmp_path / "wheels")
    spec = example_data.DATASETS["fmri"]
    bad = dataclasses.replace(spec, checksums={"fmri1.nii.gz": "0" * 64})
    monkeypatch.setitem(example_data.DATASETS, "fmri", bad)
    monkeypatch.setattr(example_data._Transport, "__call__", _no_download)  # the cached wheel is reused
    with pytest.raises(example_data.FetchError, match="fmri1.nii.gz has sha256"):
        example_data.fetch("fmri", cache_dir=tmp_path)
    assert not list((tmp_path / "examples").iterdir())  # no partial dataset left


def _no_download(*args: object) -> None:
    raise AssertionError("a download was attempted")


def _tiny_wheel(spec: example_data.ExampleDataset) -> tuple[bytes, example_data.ExampleDataset]:
    """A small wheel with the layout of ``spec``'s, and ``spec`` pinned to it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(spec.prefix + "ch2.nii.gz", b"a tiny volume")
        zf.writestr(spec.prefix + "other.txt", b"not part of the dataset")
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    checksums = {"ch2.nii.gz": hashlib.sha256(b"a tiny volume").hexdigest()}
    return buf.getvalue(), dataclasses.replace(spec, wheel_sha256=sha, checksums=checksums)


def test_fetch_falls_back_to_pip_and_pooch_checks_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No HTTPS: the pip transport (a mirror) brings the wheel; a wrong one is refused, nothing is kept."""
    wheel, spec = _tiny_wheel(example_data.DATASETS["t1"])
    monkeypatch.setitem(example_data.DATASETS, "t1", spec)

    def offline(self: object, url: str, output_file: str, pooch_: object) -> None:
        raise OSError("network unreachable")

    mirror = {"served": wheel}

    def pip_download(spec_: object, output_file: str, quiet: bool) -> None:
        if mirror["served"] is None:
            raise example_data.FetchError("no mirror either")
        Path(output_file).write_bytes(mirror["served"])

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", offline)
    monkeypatch.setattr(example_data, "_pip_download", pip_download)
    got = example_data.fetch("t1", cache_dir=tmp_path / "ok")
    assert sorted(p.name for p in got.iterdir()) == [".complete", "ch2.nii.gz"]
    assert (tmp_path / "ok" / "wheels" / spec.wheel_name).read_bytes() == wheel
    for served, message in ((b"not the wheel", "neurora==2.0.1: .*hash"), (None, "neurora==2.0.1.*mirror")):
        mirror["served"] = served
        with pytest.raises(example_data.FetchError, match=message):
            example_data.fetch("t1", cache_dir=tmp_path / "bad")
        assert not list((tmp_path / "bad" / "examples").iterdir())
        assert not list((tmp_path / "bad" / "wheels").iterdir())


def test_help_lists_every_subcommand_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("shard", "inspect", "fetch"):
        assert f"    {cmd} " in out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert all(choice.help for choice in sub._choices_actions)


def test_every_shard_option_is_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["shard", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(ShardOptions):
        assert f.metadata.get("help"), f"ShardOptions.{f.name} has no help"
        assert f" {option_flag(f)} " in out, f"ShardOptions.{f.name} has no option in `neurotrain shard`"
    for arg in ("--out", "--no-progress", "SOURCE"):
        assert arg in out


def test_shard_command_line_parses_into_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = (
        "--l-freq 0.5 --h-freq 45 --notch 50 60 --segment-seconds 30 --split 0.7 0.2 0.1 "
        f"--volume-shape 64 80 64 --modality fmri --on-error skip --workers 4 --stimuli {tmp_path} "
        "--atlas A --atlas-labels L --channel-types eeg eog --fmri-normalize psc --no-progress "
        "--out OUT a.edf b.edf"
    ).split()
    cmd = parse_shard_args(argv)
    assert (cmd.sources, cmd.out, cmd.progress) == (["a.edf", "b.edf"], "OUT", False)
    assert cmd.options == ShardOptions(
        l_freq=0.5,
        h_freq=45.0,
        notch=[50.0, 60.0],
        segment_seconds=30.0,
        split_ratios=(0.7, 0.2, 0.1),
        volume_shape=(64, 80, 64),
        modality="fmri",
        on_error="skip",
        workers=4,
        stimuli=str(tmp_path),
        atlas="A",
        atlas_labels="L",
        channel_types=["eeg", "eog"],
        fmri_normalize="psc",
    )
    assert parse_shard_args(["--out", "O", "x"]).options == ShardOptions()
    for bad, option in (("--modality", "mri"), ("--workers", "many"), ("--split", "0.5")):
        with pytest.raises(SystemExit) as exc:
            parse_shard_args(["--out", "O", "x", bad, option])
        assert exc.value.code == 2
        assert bad.lstrip("-").replace("-", "_") in capsys.readouterr().err
    assert main(["shard", "x", "--out", str(tmp_path / "o"), "--l-freq", "40", "--h-freq", "1"]) == 1
    assert "error: l_freq must be < h_freq" in capsys.readouterr().err


def test_inspect_without_manifest_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_one_pass_edf_decode_equals_mne_reading_whole(tmp_path: Path) -> None:
    """The fast EDF path gives exactly MNE's values (scaled to µV, float32) over the whole file."""
    import mne
    import synthetic

    from neurotrain.datamodules.sharding.readers.edf import read_edf_scaled
    from neurotrain.datamodules.sharding.readers.signals import _scales

    for sfreq, seconds in ((128.0, 37.3), (200.0, 11.0), (256.0, 4.0)):
        path = synthetic.write_edf(
            tmp_path / f"x{sfreq:.0f}.edf", seconds=seconds, sfreq=sfreq, events=[(1.0, "a")]
        )
        raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
        scales = _scales(raw.get_channel_types())
        fast = read_edf_scaled(path, raw, scales)
        assert fast is not None, "the plain-EDF path was not taken"
        ref = np.empty_like(fast)
        np.multiply(raw.get_data(), scales[:, None], out=ref, casting="unsafe")
        assert np.array_equal(fast.view(np.int32), ref.view(np.int32))  # bit for bit
    raw.pick(raw.ch_names[2:5])  # a contiguous subset still takes the fast path
    sub = read_edf_scaled(path, raw, scales[2:5])
    assert sub is not None and np.array_equal(sub, ref[2:5])
    raw.pick([raw.ch_names[0], raw.ch_names[2]])  # a gap between them: MNE reads it
    assert read_edf_scaled(path, raw, scales[[2, 4]]) is None


def test_one_pass_edf_decode_of_mv_and_mixed_rate_signals(tmp_path: Path) -> None:
    """mV signals are scaled as MNE scales them; a signal at another rate leaves the file to MNE."""
    import mne
    from edfio import Edf, EdfSignal

    from neurotrain.datamodules.sharding.readers.edf import read_edf_scaled
    from neurotrain.datamodules.sharding.readers.signals import _scales

    rng = np.random.default_rng(0)
    sigs = [
        EdfSignal(rng.normal(0, 0.05, 2560), 256, label=f"E{i}", physical_dimension="mV") for i in range(3)
    ]
    Edf(sigs).write(tmp_path / "mv.edf")
    raw = mne.io.read_raw_edf(tmp_path / "mv.edf", preload=False, verbose="error")
    scales = _scales(raw.get_channel_types())
    fast = read_edf_scaled(tmp_path / "mv.edf", raw, scales)
    ref = np.empty((3, 2560), np.float32)
    np.multiply(raw.get_data(), scales[:, None], out=ref, casting="unsafe")
    assert fast is not None and np.array_equal(fast.view(np.int32), ref.view(np.int32))
    Edf([*sigs, EdfSignal(rng.normal(0, 1, 1280), 128, label="slow")]).write(tmp_path / "mixed.edf")
    raw = mne.io.read_raw_edf(tmp_path / "mixed.edf", preload=False, verbose="error")
    assert read_edf_scaled(tmp_path / "mixed.edf", raw, _scales(raw.get_channel_types())) is None


def test_events_json_is_dumps_json_byte_for_byte() -> None:
    from neurotrain.datamodules.io.files import dumps_json
    from neurotrain.datamodules.sharding.samples import events_json

    rng = np.random.default_rng(0)
    cases: list[list[dict]] = [[], [{}], [{"onset": 0.0, "duration": 0.0, "label": "a"}]]
    labels = ["face", 'é"quoted"\n', "tab\there", "\u2028", "BAD_x", "日本", "", "\\back"]
    for _ in range(200):
        cases.append(
            [
                {
                    "onset": round(float(rng.uniform(-1, 70)), 6),
                    "duration": float(rng.choice([0.0, -0.0, 1e-7, 1e300, 5e-324, rng.uniform(0, 9)])),
                    "label": str(rng.choice(labels)),
                    **({"image": "image.0.png", "stim_file": "x y.png"} if rng.random() < 0.3 else {}),
                    **(
                        {"n": int(rng.integers(-5, 5)), "ok": bool(rng.random() < 0.5), "none": None}
                        if rng.random() < 0.2
                        else {}
                    ),
                }
                for _ in range(int(rng.integers(0, 6)))
            ]
        )
    for events in cases:
        assert events_json(events) == dumps_json(events).encode()
    for odd in ([{"x": np.int64(3)}], [{"x": [1, 2]}], [{"x": {"y": 1}}]):
        try:
            want = dumps_json(odd).encode()
        except TypeError:
            with pytest.raises(TypeError):
                events_json(odd)
        else:
            assert events_json(odd) == want
    with pytest.raises(ValueError):
        events_json([{"x": float("nan")}])


def test_float16_cast_gives_the_bits_of_numpy_astype() -> None:
    from neurotrain.datamodules.sharding.samples import _cast_float16

    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    halves = halves[np.isfinite(halves)].astype(np.float32)
    mid = (halves[:-1].astype(np.float64) + halves[1:]) / 2  # the ties, and one float32 ulp either side
    ties = mid.astype(np.float32)
    near = np.concatenate(
        [ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))]
    )
    rng = np.random.default_rng(0)
    wide = (rng.standard_normal(200_000) * np.exp(rng.uniform(-30, 11, 200_000))).astype(np.float32)
    values = np.concatenate([halves, near, wide])
    values = values[np.abs(values) < 65504]
    x = values[: (len(values) // 64) * 64].reshape(64, -1)[:, ::2]  # a strided view, as segments are
    out = np.empty(x.shape, np.float16)
    assert np.array_equal(_cast_float16(x, out).view(np.uint16), x.astype(np.float16).view(np.uint16))


def _cast_a_segment() -> None:
    from neurotrain.datamodules.sharding.samples import _cast_float16

    x = np.ones((128, 15360), np.float32)
    _cast_float16(x, np.empty(x.shape, np.float16))


def test_float16_cast_leaves_forked_workers_able_to_cast() -> None:
    """A cast in the main process must not start an OpenMP team: workers forked later would hang."""
    import multiprocessing as mp

    _cast_a_segment()  # a whole-segment torch copy here made the child below hang forever
    child = mp.get_context("fork").Process(target=_cast_a_segment)
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0
