"""BIDS recordings read through the sidecars (``readers/bids.py``) give what ``read_raw_bids`` gives.

Each case reads one recording twice: through the fast path, and with it switched off (so through
``mne_bids.read_raw_bids``), and compares every field the shards take (data bit for bit, channel
names, types and units, positions, bads, events). The sidecars are edited to reach the corners
of mne-bids' semantics: events outside the recording, cut by its ends, unsorted, on microsecond
ties, with ambiguous values; channel types in other spellings, a status column, a channels.tsv
listing a channel the recording lacks; positions in mm, in an unknown frame, in a frame BIDS
does not allow. Recordings the fast path does not reproduce fall back, and are checked to.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import synthetic

from neurotrain.datamodules.sharding.options import ShardOptions
from neurotrain.datamodules.sharding.readers import bids as bids_reader
from neurotrain.datamodules.sharding.readers import signals
from neurotrain.datamodules.sharding.sources import discover

EVENTS_EXTRA = [  # onset, duration, trial_type, value: rows appended to the events.tsv mne-bids wrote
    ("1000.0", "0.0", "face", "1"),  # after the end: dropped
    ("-1.0", "1.5", "house", "2"),  # starts before the data: cut to [0, 0.5]
    ("29.5", "2.0", "face", "1"),  # runs past the end: cut
    ("3.0000005", "0.0", "face", "1"),  # a half-microsecond tie
    ("3.0000015", "0.25", "face", "1"),
    ("4.0", "0.5", "house", "2"),  # same onset, longer first: sorted by duration
    ("4.0", "0.25", "house", "2"),
    ("6.0", "0.0", "n/a", "3"),  # no trial type: dropped by mne-bids
    ("8.0", "0.0", "face", "9"),  # a second value for "face": names become "face/<value>"
    ("10.0", "2.0", "edge_x", "4"),  # filters skip spans named edge*
]


def _write_bids(root: Path, fmt: str = "EDF") -> Path:
    import mne
    import mne_bids

    raw = synthetic.make_raw(seconds=30.0, seed=3, events=[(2.0, "face"), (5.0, "house"), (7.5, "BAD_x")])
    raw.set_meas_date(datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    raw.set_montage(mne.channels.make_standard_montage("colin27_1005"), verbose="error")
    tmp = root.parent / f"_tmp_{fmt}_raw.fif"
    raw.save(tmp, overwrite=True, verbose="error")
    raw = mne.io.read_raw_fif(tmp, verbose="error")
    bp = mne_bids.BIDSPath(subject="01", task="demo", datatype="eeg", root=root)
    mne_bids.write_raw_bids(raw, bp, format=fmt, allow_preload=False, overwrite=True, verbose="error")
    tmp.unlink()
    return root


def _sidecar(root: Path, suffix: str) -> Path:
    (path,) = (root / "sub-01" / "eeg").glob(f"*_{suffix}")
    return path


def _edit_tsv(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    rows = edit(header, rows)
    path.write_text("\n".join(["\t".join(header), *("\t".join(r) for r in rows)]) + "\n", encoding="utf-8")


def _add_events(header: list[str], rows: list[list[str]]) -> list[list[str]]:
    for onset, duration, trial_type, value in EVENTS_EXTRA:
        row = ["n/a"] * len(header)
        for col, v in (
            ("onset", onset),
            ("duration", duration),
            ("trial_type", trial_type),
            ("value", value),
        ):
            row[header.index(col)] = v
        rows.insert(1, row)  # unsorted on purpose
    return rows


def _edit_channels(header: list[str], rows: list[list[str]]) -> list[list[str]]:
    t, s = header.index("type"), header.index("status")
    rows[0][t], rows[1][t], rows[2][t], rows[3][t] = "EOG", "misc", "FOO", "ECG"
    rows[4][s] = "bad"
    # (a row for a channel the recording lacks is refused: tests/test_shard_input_errors.py)
    return rows


def _read_both(root: Path, monkeypatch: pytest.MonkeyPatch, options: ShardOptions, fast: bool = True):
    (item,) = discover([root], options)
    taken = []

    def spy(*args, **kwargs):
        got = bids_reader.read_bids(*args, **kwargs)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(signals, "read_bids", spy)
    quick = signals.read_signal(item, options)
    assert taken == [fast], "the fast path was not taken" if fast else "the fast path should fall back"
    monkeypatch.setattr(signals, "read_bids", lambda *a, **k: None)
    slow = signals.read_signal(item, options)
    return quick, slow


def _assert_same(a, b) -> None:
    assert a.data.dtype == b.data.dtype and np.array_equal(a.data.view(np.int32), b.data.view(np.int32))
    assert np.array_equal(a.positions, b.positions, equal_nan=True)
    for name in (
        "sfreq",
        "ch_names",
        "ch_types",
        "units",
        "position_frame",
        "position_source",
        "bad_channels",
        "events",
        "modality",
        "preprocessing",
    ):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("fmt", ["EDF", "BrainVision", "EEGLAB"])
def test_sidecars_read_directly_match_read_raw_bids(fmt: str, tmp_path: Path, monkeypatch) -> None:
    root = _write_bids(tmp_path / "bids", fmt=fmt)
    _edit_tsv(_sidecar(root, "events.tsv"), _add_events)
    _edit_tsv(_sidecar(root, "channels.tsv"), _edit_channels)
    _edit_tsv(
        _sidecar(root, "electrodes.tsv"),
        lambda h, rows: [[*r[:1], "n/a", *r[2:]] if i == 5 else r for i, r in enumerate(rows)],
    )
    quick, slow = _read_both(root, monkeypatch, ShardOptions(channel_types=["eeg", "eog", "ecg", "misc"]))
    _assert_same(quick, slow)
    labels = {e[2] for e in quick.events}
    assert {"face/9", "edge_x"} <= labels and "n/a" not in labels  # "face" had two values: "face/<value>"
    assert quick.ch_types[:4] == ["eog", "misc", "misc", "ecg"] and quick.bad_channels == [quick.ch_names[4]]
    assert np.isnan(quick.positions[5]).all() and quick.position_frame == "head"
    cut = [e for e in quick.events if e[2].startswith("house") and e[0] == 0.0]
    assert cut and cut[0][1] == 0.5  # the event before the start, cut


@pytest.mark.parametrize(
    ("space", "unit", "scale"),
    [("CapTrak", "mm", 1000.0), ("Other", "cm", 100.0), ("NotAFrame", "m", 1.0), ("CapTrak", "inch", 1.0)],
)
def test_positions_units_and_frames_as_mne_bids_reads_them(
    space: str, unit: str, scale: float, tmp_path: Path, monkeypatch
) -> None:
    root = _write_bids(tmp_path / "bids")
    coords = _sidecar(root, "coordsystem.json")
    system = json.loads(coords.read_text())
    system["EEGCoordinateSystem"], system["EEGCoordinateUnits"] = space, unit
    coords.write_text(json.dumps(system))

    def scaled(header, rows):
        return [[r[0], *(f"{float(v) * scale!r}" for v in r[1:4]), *r[4:]] for r in rows]

    _edit_tsv(_sidecar(root, "electrodes.tsv"), scaled)
    for montage in ("auto", "none"):  # "auto" places channels without positions from the 10-05 montage
        quick, slow = _read_both(root, monkeypatch, ShardOptions(montage=montage))
        _assert_same(quick, slow)


def test_filters_see_the_bids_annotations_as_read_raw_bids_sets_them(tmp_path: Path, monkeypatch) -> None:
    root = _write_bids(tmp_path / "bids")
    _edit_tsv(_sidecar(root, "events.tsv"), _add_events)  # with an "edge_x" span: filters skip it
    quick, slow = _read_both(root, monkeypatch, ShardOptions(l_freq=1.0, h_freq=30.0, sfreq=64.0))
    _assert_same(quick, slow)


def test_without_events_tsv_the_files_annotations_stand(tmp_path: Path, monkeypatch) -> None:
    root = _write_bids(tmp_path / "bids")
    _sidecar(root, "events.tsv").unlink()
    _sidecar(root, "events.json").unlink(missing_ok=True)
    quick, slow = _read_both(root, monkeypatch, ShardOptions())
    _assert_same(quick, slow)


def _reorder_channels(root: Path) -> None:
    _edit_tsv(_sidecar(root, "channels.tsv"), lambda h, rows: [rows[1], rows[0], *rows[2:]])


def _ctf_frame(root: Path) -> None:
    coords = _sidecar(root, "coordsystem.json")
    coords.write_text(json.dumps({**json.loads(coords.read_text()), "EEGCoordinateSystem": "EEGLAB"}))


def _hed(root: Path) -> None:
    path = _sidecar(root, "events.tsv").with_suffix(".json")
    path.write_text(json.dumps({"trial_type": {"HED": {"face": "Sensory-event"}}}))


def _epoched(root: Path) -> None:
    path = _sidecar(root, "eeg.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "RecordingType": "epoched"}))


@pytest.mark.parametrize("edit", [_reorder_channels, _ctf_frame, _hed, _epoched])
def test_what_the_fast_path_does_not_reproduce_goes_to_read_raw_bids(edit, tmp_path: Path) -> None:
    root = _write_bids(tmp_path / "bids")
    edit(root)
    (item,) = discover([root], ShardOptions())
    assert bids_reader.read_bids(item.path, root, set_annotations=False) is None


def test_microseconds_are_those_of_timedelta() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.uniform(-100, 2000, 20_000),
            np.round(rng.uniform(0, 100, 5_000), 6) + 5e-7,  # near half-microsecond ties
            np.arange(-50, 50) * 5e-7,
            [0.0, -0.0, 0.48828125, 3.0000005, 1e-7, 1234.5678915, 2**40 + 0.5e-6],
        ]
    )
    got = bids_reader._microseconds(values)
    want = [timedelta(seconds=float(v)) // timedelta(microseconds=1) for v in values]
    assert got.tolist() == [float(w) for w in want]


def test_bids_events_equal_mne_crop_of_the_same_annotations() -> None:
    import mne

    rng = np.random.default_rng(1)
    for first_samp, n_times in ((0, 3840), (777, 3840), (0, 1001)):
        info = mne.create_info(2, 128.0, "eeg")
        raw = mne.io.RawArray(np.zeros((2, n_times)), info, first_samp=first_samp, verbose="error")
        raw.set_meas_date(datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
        end = n_times / 128.0
        onset = np.concatenate([rng.uniform(-5, end + 5, 300), np.round(rng.uniform(0, end, 50), 6) + 5e-7])
        onset[::7] = onset[1::7][: len(onset[::7])]  # equal onsets
        duration = np.where(rng.random(len(onset)) < 0.3, 0.0, rng.uniform(0, 4, len(onset)))
        description = np.array([f"e{i % 5}" for i in range(len(onset))])
        ann = mne.Annotations(onset, duration, description)
        raw.set_annotations(ann, verbose="error")
        got = bids_reader.bids_events(onset, duration, description, raw)
        want = raw.annotations
        assert np.array_equal(got[0], want.onset) and np.array_equal(got[1], want.duration)
        assert got[2].tolist() == [str(d) for d in want.description]


def _random_events_tsv(path: Path, rng: np.random.Generator) -> None:
    n = int(rng.integers(1, 40))
    columns = {"onset": [repr(float(v)) for v in np.round(rng.uniform(-2, 60, n), int(rng.integers(1, 9)))]}
    columns["duration"] = [str(rng.choice(["0.0", "n/a", "1.5", "0.25", "3"])) for _ in range(n)]
    for i in rng.choice(n, size=min(n, 3), replace=False):
        columns["onset"][i] = str(rng.choice(["n/a", "nan", "NaN", ""]))
    kind = rng.integers(0, 4)
    if kind in (0, 1, 2):
        types = ["face", "house", "n/a", "BAD_x", "scene"]
        columns["trial_type"] = [str(rng.choice(types if kind else ["n/a"])) for _ in range(n)]
    if kind in (0, 1, 3):
        columns["value"] = [str(rng.choice(["1", "2", "n/a", "7"])) for _ in range(n)]
    if rng.random() < 0.5:
        columns["sample"] = [str(int(v)) for v in rng.integers(0, 9000, n)]
        columns["response_time"] = [str(rng.choice(["0.5", "n/a", "fast"])) for _ in range(n)]
    lines = ["\t".join(columns), *("\t".join(col[i] for col in columns.values()) for i in range(n))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_events_tsv_read_directly_equals_events_file_to_annotation_kwargs(tmp_path: Path) -> None:
    import mne_bids

    rng = np.random.default_rng(2)
    compared = 0
    for k in range(300):
        path = tmp_path / f"e{k}_events.tsv"
        _random_events_tsv(path, rng)
        try:
            want = mne_bids.events_file_to_annotation_kwargs(path, verbose="error")
        except Exception:  # noqa: BLE001 - then the fast path must not succeed either
            with pytest.raises(Exception):  # noqa: B017
                got = bids_reader.events_tsv_annotations(path)
                assert got is not None
                bids_reader.bids_events(*got, _zeros_raw())
            continue
        got = bids_reader.events_tsv_annotations(path)
        if got is None:
            continue
        compared += 1
        assert np.array_equal(got[0], want["onset"]) and np.array_equal(got[1], want["duration"])
        assert got[2].tolist() == want["description"].tolist()
    assert compared > 200


def _zeros_raw():
    import mne

    return mne.io.RawArray(np.zeros((1, 128 * 70)), mne.create_info(1, 128.0, "eeg"), verbose="error")
