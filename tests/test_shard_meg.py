"""Simulated MEG (MNE's Neuromag-306 sensors, sphere head model) with simultaneous EEG: sharded
with the default units and dtype; sensor positions, orientations and coil types as MNE's info has them,
per-type units and statistics, and EEG <-> MEG views of the same windows."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest
import synthetic

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.tar_index import SegmentReader, index_shard
from neurotrain.datamodules.sharding import shard_dataset


@pytest.fixture(scope="module")
def meg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("meg")
    src = synthetic.write_meg_fif(root / "sim_meg_raw.fif", seconds=20.0, sfreq=200.0)
    out = root / "shards"
    # no sensor is noisy in a simulation; the sensors near the dipoles carry 5x the median signal
    shard_dataset([src], out, segment_seconds=10.0, split_ratios=(1.0, 0.0, 0.0), noisy_threshold=0.0)
    return src, out


def test_meg_sensor_geometry_is_stored_as_mne_has_it(meg: tuple[Path, Path]) -> None:
    src, out = meg
    info = mne.io.read_info(src, verbose="error")
    m = json.loads((out / "manifest.json").read_text())
    (rec,) = m["recordings"]
    assert rec["modality"] == "meg" and rec["warnings"] == [] and rec["dtype"] == "float16"
    seg = index_shard(out / m["shards"][0]["name"], 0, m["shards"][0], False)[0]
    meta = seg.meta
    assert meta["ch_names"] == info.ch_names
    types = meta["ch_types"]
    assert (types.count("mag"), types.count("grad"), types.count("eeg")) == (102, 204, 12)
    assert {u for u, t in zip(meta["units"], types, strict=True) if t == "mag"} == {"fT"}
    assert {u for u, t in zip(meta["units"], types, strict=True) if t == "grad"} == {"fT/cm"}
    assert set(m["statistics"]["per_type"]) == {"mag", "grad", "eeg"}
    for i, ch in enumerate(info["chs"]):
        assert np.allclose(meta["positions"][i], ch["loc"][:3], atol=1e-6)  # device = head frame here
        assert meta["coil_types"][i] == int(ch["coil_type"])
        if types[i] in ("mag", "grad"):
            ez = ch["loc"][9:12] / np.linalg.norm(ch["loc"][9:12])
            assert np.allclose(meta["orientations"][i], ez, atol=1e-6)
        else:
            assert meta["orientations"][i] is None
    # magnetometers point outwards from the helmet centre, roughly radially
    mags = [i for i, t in enumerate(types) if t == "mag"]
    radial = np.asarray([meta["positions"][i] for i in mags]) - [0.0, 0.0, 0.04]
    normals = np.asarray([meta["orientations"][i] for i in mags])
    cosine = np.sum(radial * normals, axis=1) / np.linalg.norm(radial, axis=1)
    assert np.median(cosine) > 0.8
    # stored values: fT and fT/cm of MNE's tesla and tesla/metre
    data = SegmentReader().read(seg).astype(np.float64)
    raw = mne.io.read_raw_fif(src, verbose="error").get_data()[:, : data.shape[1]]
    scale = np.where(np.array(types) == "mag", 1e15, np.where(np.array(types) == "grad", 1e13, 1e6))
    assert np.allclose(data, raw * scale[:, None], rtol=2e-3, atol=1e-2 * np.abs(data).max())


def test_eeg_and_meg_views_of_the_same_windows(meg: tuple[Path, Path]) -> None:
    _, out = meg
    dm = ShardDataModule(
        [str(out)],
        window_seconds=2.0,
        batch_size=4,
        train_split="all",
        channel_types=["eeg"],
        pair_channel_types=["mag", "grad"],
    )
    dm.setup("fit")
    batch = next(iter(dm.eval_dataloader("train")))
    assert batch["signal"].shape == (4, 12, 400) and batch["pair_signal"].shape == (4, 306, 400)
    assert batch["pair_channel_mask"].all() and batch["channel_mask"].all()
    # the dipoles drive both views: within a window, EEG and MEG share the 7 Hz and 11 Hz rhythms
    spectrum = np.abs(np.fft.rfft(batch["pair_signal"][0].numpy(), axis=-1)).mean(axis=0)
    freqs = np.fft.rfftfreq(400, 1 / 200.0)
    assert spectrum[np.argmin(np.abs(freqs - 7))] > 3 * np.median(spectrum)
    spectrum = np.abs(np.fft.rfft(batch["signal"][0].numpy(), axis=-1)).mean(axis=0)
    assert spectrum[np.argmin(np.abs(freqs - 11))] > 3 * np.median(spectrum)
