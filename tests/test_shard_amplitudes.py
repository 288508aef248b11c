"""Amplitudes implausible for their unit: detected, recorded (``unit: unknown``), said once, sharded
with the default options, and normalised apart from recordings in µV."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest
import synthetic

from neurotrain.datamodules.format.channel_types import stats_key
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch
from neurotrain.datamodules.sharding.readers.units import check_units
from neurotrain.datamodules.sharding.writer import TMP_DIR
from neurotrain.train.cli import main


def _first_meta(out: Path) -> dict:
    from neurotrain.datamodules.loading.tar_index import index_shard

    m = json.loads((out / "manifest.json").read_text())
    return index_shard(out / m["shards"][0]["name"], 0, m["shards"][0], False)[0].meta


def test_check_units_keeps_plausible_types_and_labels_the_rest() -> None:
    rng = np.random.default_rng(0)
    eeg = 20.0 * rng.standard_normal((4, 1000))  # µV: plausible
    huge = 3e7 * rng.standard_normal((2, 1000))  # "µV" from a file read as volts without a unit
    data = np.concatenate([eeg, huge]).astype(np.float32)
    types, units = ["eeg"] * 4 + ["ecog"] * 2, ["µV"] * 6
    out, new_units, record, warnings = check_units(data.copy(), types, units)
    assert np.array_equal(out[:4], data[:4]) and new_units[:4] == ["µV"] * 4
    assert new_units[4:] == ["unknown"] * 2 and np.allclose(out[4:], data[4:] / 1e6, rtol=1e-6)
    assert record["eeg"]["decision"] == "plausible" and record["ecog"]["decision"] == "unknown"
    assert len(warnings) == 1 and "ecog" in warnings[0] and "--assume-unit" in warnings[0]
    # --assume-unit: the reader's values (here 30 "V") are µV; converted and labelled µV
    assumed, assumed_units, record, _ = check_units(data.copy(), types, units, assume_unit="uV")
    assert assumed_units == ["µV"] * 6 and record["ecog"]["decision"] == "assumed uV"
    assert np.allclose(assumed[4:], data[4:] / 1e6, rtol=1e-6)
    assert stats_key("ecog", "unknown") == "ecog@unknown" and stats_key("ecog", "µV") == "ecog"
    assert stats_key("misc", "SI") == "misc"
    with pytest.raises(ValueError, match="assume-unit"):
        check_units(data.copy(), types, units, assume_unit="furlong")


def test_real_ieeg_with_a_wrong_unit_shards_with_the_defaults(tmp_path: Path) -> None:
    """py-neuromodulation's BIDS ECoG + DBS: its BrainVision header says µV for values MNE reads
    as tens of volts. Default options: ECOG/DBS types and MNI positions from the sidecars, the
    values stored as read with unit 'unknown', statistics of their own, and a warning."""
    root = fetch("ieeg")
    out = tmp_path / "ieeg"
    m = shard_dataset([root], out)
    (rec,) = m["recordings"]
    assert rec["modality"] == "ieeg" and rec["n_positions"] == 9
    assert rec["position_source"] == "bids:electrodes.tsv"
    assert len(rec["warnings"]) == 2 and all("unknown" in w for w in rec["warnings"])
    assert set(m["statistics"]["per_type"]) == {"ecog@unknown", "dbs@unknown"}
    meta = _first_meta(out)
    assert sorted(set(meta["ch_types"])) == ["dbs", "ecog"] and set(meta["units"]) == {"unknown"}
    assert meta["preprocessing"]["units"]["ecog"]["decision"] == "unknown"
    assert meta["dtype"] == "float16"  # as read, the values fit float16
    # MNI positions in metres from space-mni_electrodes.tsv, with the coordinate system recorded
    assert rec["position_frame"] == meta["position_frame"] == "mni"
    assert meta["coordinate_system"]["space"] == "mni" and meta["coordinate_system"]["units"] == "m"
    assert meta["coordinate_system"]["system"] == "Other"  # what its coordsystem.json says
    table = next(root.rglob("*_space-mni_electrodes.tsv")).read_text(encoding="utf-8-sig").splitlines()
    rows = {
        r.split("\t")[0]: [float(v) for v in r.split("\t")[1:4]]
        for r in table[1:]
        if "n/a" not in r.split("\t")[1:4]
    }
    for name, pos in zip(meta["ch_names"], meta["positions"], strict=True):
        assert np.allclose(pos, rows[name], atol=1e-6)
    raw = mne.io.read_raw_brainvision(next(root.rglob("*_ieeg.vhdr")), verbose="error")
    assert np.abs(raw.get_data()).max() > 100  # the reason: "V" values of hundreds
    # the loader normalises them by their own statistics: unit-scale batches
    dm = ShardDataModule([str(out)], window_seconds=2.0, batch_size=8, train_split="all")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x = batch["signal"][batch["channel_mask"]]
    assert 0.3 < float(x.std()) < 3.0
    assert not list((out / TMP_DIR).iterdir()), "temporary folders were left behind"

    # inspect says it again, per recording
    from neurotrain.datamodules.sharding.inspection import summarize

    said = summarize(m)["warnings"]
    assert list(said) == [rec["id"]] and len(said[rec["id"]]) == 2

    # with the unit named, they are converted to µV and normalised with µV statistics
    named = shard_dataset([root], tmp_path / "named", assume_unit="uV")
    assert set(named["statistics"]["per_type"]) == {"ecog", "dbs"}
    assert set(_first_meta(tmp_path / "named")["units"]) == {"µV"}
    assert 10 < named["statistics"]["per_type"]["ecog"]["std"] < 200  # tens of µV, as ECoG is


def test_values_float16_cannot_hold_store_that_recording_in_float32(tmp_path: Path) -> None:
    # A plausible recording with a large DC offset (DC-coupled amplifier): 80 mV, beyond float16.
    raw = synthetic.make_raw(seconds=20.0)
    offset = mne.io.RawArray(raw.get_data() + 0.08, raw.info, verbose="error")
    offset.save(tmp_path / "dc_raw.fif", verbose="error")
    plain = synthetic.write_fif(tmp_path / "plain_raw.fif", seconds=20.0, seed=1)
    m = shard_dataset([tmp_path / "dc_raw.fif", plain], tmp_path / "out", segment_seconds=10.0)
    by_id = {r["recording"]: r for r in m["recordings"]}
    dc = next(r for k, r in by_id.items() if k.startswith("dc"))
    other = next(r for k, r in by_id.items() if k.startswith("plain"))
    assert dc["dtype"] == "float32" and "float32" in dc["warnings"][0]
    assert other["dtype"] == "float16" and other["warnings"] == []
    dm = ShardDataModule([str(tmp_path / "out")], window_seconds=2.0, batch_size=4, train_split="all")
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["signal"].isfinite().all()


def test_mixed_units_in_one_dataset_are_normalised_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = synthetic.write_fif(tmp_path / "good_raw.fif", seconds=20.0)
    raw = synthetic.make_raw(seconds=20.0, seed=2)
    # a lab's file whose numbers are µV but are declared volts: ~20 "V"
    wrong = mne.io.RawArray(raw.get_data() * 1e6, raw.info, verbose="error")
    wrong.save(tmp_path / "wrong_raw.fif", verbose="error")
    out = tmp_path / "mixed"
    assert (
        main(
            ["shard", str(good), str(tmp_path / "wrong_raw.fif"), "--out", str(out), "--split", "1", "0", "0"]
        )
        == 0
    )
    said = capsys.readouterr()
    err = said.out + said.err
    joined = "".join(err.split())  # the console may wrap a long path across lines
    assert err.count("unknown") == 1 and "wrong_raw.fif" in joined  # said once, naming the file
    m = json.loads((out / "manifest.json").read_text())
    per_type = m["statistics"]["per_type"]
    assert set(per_type) == {"eeg", "eeg@unknown"}
    assert 10 < per_type["eeg"]["std"] < 40 and 10 < per_type["eeg@unknown"]["std"] < 40
    dm = ShardDataModule([str(out)], window_seconds=2.0, batch_size=64, train_split="all", shuffle_buffer=64)
    dm.setup("fit")
    stds = {}
    for batch in dm.eval_dataloader("train"):
        for rec, x in zip(batch["recording"], batch["signal"], strict=True):
            stds.setdefault(rec, []).append(float(x.std()))
    assert len(stds) == 2
    for values in stds.values():  # each recording near unit scale: neither is 10^6 off
        assert 0.3 < float(np.median(values)) < 3.0
