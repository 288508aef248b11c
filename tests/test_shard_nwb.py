"""NWB (DANDI-style) ECoG shards like BIDS: samples, electrodes table, trials, through pynwb.

The NWB files are written here with pynwb itself (tiny synthetic fixtures)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError

RATE, SECONDS, N_CH = 500.0, 24.0, 6


def _nwb(path: Path, *, positions_m: bool = True, electrodes: bool = True) -> tuple[Path, np.ndarray]:
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.ecephys import ElectricalSeries

    nwb = NWBFile("synthetic ECoG", "nt-test-1", datetime(2024, 1, 1, tzinfo=timezone.utc), subject=None)
    rng = np.random.default_rng(0)
    raw = rng.integers(-2000, 2000, size=(int(RATE * SECONDS), N_CH)).astype(np.int16)  # ADC counts
    if electrodes:
        device = nwb.create_device("grid amplifier")
        group = nwb.create_electrode_group("ecog_grid", "8x8 subdural grid", "left temporal", device)
        nwb.add_electrode_column("label", "channel name")
        scale = 1.0 if positions_m else 1000.0  # mm in a file that does not say so
        for i in range(N_CH):
            x, y, z = (-0.05 + 0.01 * i) * scale, 0.02 * scale, 0.03 * scale
            nwb.add_electrode(
                x=x, y=y, z=z, location="superior temporal gyrus", group=group, label=f"G{i + 1}"
            )
        region = nwb.create_electrode_table_region(list(range(N_CH)), "all grid contacts")
        series = ElectricalSeries(
            name="ECoG", data=raw, electrodes=region, rate=RATE, starting_time=2.0, conversion=0.25e-6
        )
    else:
        series = TimeSeries(name="ECoG", data=raw, unit="volts", rate=RATE)
    nwb.add_acquisition(series)
    nwb.add_trial_column("condition", "what was heard")
    for k in range(10):
        nwb.add_trial(
            start_time=4.0 + 2.0 * k, stop_time=4.5 + 2.0 * k, condition="speech" if k % 2 else "tone"
        )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path, raw


def test_nwb_ecog_shards_with_names_types_positions_and_trials(tmp_path: Path) -> None:
    src, counts = _nwb(tmp_path / "sub-01_ecephys.nwb")
    out = tmp_path / "out"
    m = shard_dataset([src], out, segment_seconds=12.0, split_ratios=(1.0, 0.0, 0.0), dtype="float32")
    (rec,) = m["recordings"]
    assert (
        rec["modality"] == "ieeg"
        and rec["position_source"] == "nwb:electrodes"
        and rec["n_positions"] == N_CH
    )
    assert m["labels"]["counts"] == {"speech": 5, "tone": 5}
    dm = ShardDataModule([str(out)], normalize=False, window_seconds=12.0, train_split="all", batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.eval_dataloader("train")))
    # µV = counts * conversion (0.25 µV per count)
    assert np.allclose(batch["signal"][0].numpy(), counts[: int(12 * RATE)].T * 0.25, atol=1e-3)
    assert np.allclose(batch["positions"][0, :, 0].numpy(), -0.05 + 0.01 * np.arange(N_CH), atol=1e-6)
    from neurotrain.datamodules.loading.tar_index import index_shard

    seg = index_shard(out / m["shards"][0]["name"], 0, m["shards"][0], False)[0]
    assert seg.meta["ch_names"] == [f"G{i + 1}" for i in range(N_CH)] and set(seg.meta["ch_types"]) == {
        "ecog"
    }
    nwb = seg.meta["preprocessing"]["nwb"]
    assert nwb["series"] == "ECoG" and nwb["locations"]["G1"] == "superior temporal gyrus"
    assert nwb["groups"]["G3"] == "ecog_grid"
    # trials are relative to the series start (starting_time 2 s): the first at 2 s into the data
    assert seg.events[0]["onset"] == pytest.approx(2.0) and seg.events[0]["label"] == "tone"


def test_nwb_positions_of_unknown_unit_are_not_guessed(tmp_path: Path) -> None:
    src, _ = _nwb(tmp_path / "mm.nwb", positions_m=False)
    m = shard_dataset([src], tmp_path / "out", segment_seconds=12.0, split_ratios=(1.0, 0.0, 0.0))
    (rec,) = m["recordings"]
    assert rec["n_positions"] == 0 and rec["position_source"] == "none"
    assert any("not plausible metres" in w for w in rec["warnings"])


def test_an_nwb_file_without_an_electrodes_table_is_named(tmp_path: Path) -> None:
    src, _ = _nwb(tmp_path / "bare.nwb", electrodes=False)
    out = tmp_path / "out"
    with pytest.raises(ShardError, match=r"bare\.nwb.*no electrodes table"):
        shard_dataset([src], out, segment_seconds=12.0)
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tar"))  # nothing half-written
    bad = tmp_path / "broken.nwb"
    bad.write_bytes(b"not an HDF5 file")
    with pytest.raises(ShardError, match=r"broken\.nwb.*cannot be read as NWB"):
        shard_dataset([bad], tmp_path / "out2")
