"""Bipolar and Laplacian re-referencing along each electrode, on the real iEEG example."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest

from neurotrain.datamodules.loading.tar_index import index_shard
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch
from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.datamodules.sharding.readers.rereference import bipolar_pairs, shafts


def _shard(tmp_path: Path, reference: str, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    root = fetch("ieeg")
    m = shard_dataset(
        [root], tmp_path / name, reference=reference, assume_unit="uV", dtype="float32", segment_seconds=19.0
    )
    seg = index_shard(tmp_path / name / m["shards"][0]["name"], 0, m["shards"][0], False)[0]
    from neurotrain.datamodules.loading.tar_index import SegmentReader

    return seg.meta, SegmentReader().read(seg).astype(np.float64), seg


def _mne(root: Path) -> mne.io.BaseRaw:
    return mne.io.read_raw_brainvision(next(root.rglob("*_ieeg.vhdr")), preload=True, verbose="error")


def test_contacts_group_by_electrode() -> None:
    names = ["LA1", "LA2", "LA3", "LA5", "RB10", "RB11", "Cz", "LA4x"]
    types = ["seeg"] * 6 + ["eeg", "seeg"]
    assert shafts(names, types) == {"LA": ["LA1", "LA2", "LA3", "LA5"], "RB": ["RB10", "RB11"]}
    assert bipolar_pairs(names, types) == [("LA1", "LA2"), ("LA2", "LA3"), ("RB10", "RB11")]


def test_bipolar_and_laplacian_on_the_real_ieeg(tmp_path: Path) -> None:
    root = fetch("ieeg")
    raw = _mne(root)
    x = {n: raw.get_data(picks=[n])[0] for n in raw.ch_names}  # "V" = µV numbers (assume_unit uV)
    meta, data, _ = _shard(tmp_path, "bipolar", "bip")
    pairs = [f"LFP_RIGHT_{i}-LFP_RIGHT_{i + 1}" for i in range(2)]
    pairs += [f"ECOG_RIGHT_{i}-ECOG_RIGHT_{i + 1}" for i in range(5)]
    assert (
        sorted(meta["ch_names"]) == sorted(pairs)
        and meta["preprocessing"]["reference"]["scheme"] == "bipolar"
    )
    first = data[meta["ch_names"].index("ECOG_RIGHT_0-ECOG_RIGHT_1")]
    assert np.allclose(first, (x["ECOG_RIGHT_0"] - x["ECOG_RIGHT_1"])[: first.size], rtol=1e-5, atol=1e-3)
    table = next(root.rglob("*_space-mni_electrodes.tsv")).read_text(encoding="utf-8-sig").splitlines()
    xyz = {
        r.split("\t")[0]: np.array(r.split("\t")[1:4], dtype=float)
        for r in table[1:]
        if "n/a" not in r.split("\t")[1:4]
    }
    mid = np.asarray(meta["positions"][meta["ch_names"].index("LFP_RIGHT_0-LFP_RIGHT_1")])
    assert np.allclose(mid, (xyz["LFP_RIGHT_0"] + xyz["LFP_RIGHT_1"]) / 2, atol=1e-6)  # midway

    meta, data, _ = _shard(tmp_path, "laplacian", "lap")
    assert len(meta["ch_names"]) == 9 and meta["preprocessing"]["reference"]["left_out"] == []
    mid = data[meta["ch_names"].index("ECOG_RIGHT_2")]
    expected = x["ECOG_RIGHT_2"] - (x["ECOG_RIGHT_1"] + x["ECOG_RIGHT_3"]) / 2
    assert np.allclose(mid, expected[: mid.size], rtol=1e-5, atol=1e-3)
    end = data[meta["ch_names"].index("LFP_RIGHT_0")]
    assert np.allclose(end, (x["LFP_RIGHT_0"] - x["LFP_RIGHT_1"])[: end.size], rtol=1e-5, atol=1e-3)


def test_bipolar_without_contacts_is_a_named_error(tmp_path: Path) -> None:
    import synthetic

    src = synthetic.write_fif(tmp_path / "scalp_raw.fif", seconds=20.0)
    with pytest.raises(ShardError, match=r"scalp_raw\.fif.*cannot re-reference to bipolar"):
        shard_dataset([src], tmp_path / "out", reference="bipolar", segment_seconds=10.0)
