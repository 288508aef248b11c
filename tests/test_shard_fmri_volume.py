"""Volume fMRI through nilearn: confounds, filtering, a resampled atlas, TR checks, events as epochs.

The synthetic BIDS dataset (`synthetic_bids_fmri`) plants a motion confound in every voxel, task
blocks in parcels 0-1 labelled by ``events.tsv``, and a sidecar TR; each test checks that the
shards show (or no longer show) what was planted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from synthetic_bids_fmri import write_atlas, write_bids_fmri

from neurotrain.datamodules import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError


def _samples(out: Path) -> list[dict]:
    return list(wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False).decode())


def _trans_x(root: Path, sub: str) -> np.ndarray:
    table = (root / f"sub-{sub}/func/sub-{sub}_task-blocks_desc-confounds_timeseries.tsv").read_text()
    return np.array([float(line.split("\t")[0]) for line in table.splitlines()[1:]])


def _confound_r(sample: dict, trans_x: np.ndarray) -> float:
    x = sample["signal.npy"].astype(np.float64)  # [P, T]
    return float(max(abs(np.corrcoef(row, trans_x)[0, 1]) for row in x[2:]))  # parcels without blocks


def test_confounds_beside_the_run_are_regressed_out_and_recorded(tmp_path: Path) -> None:
    ds = write_bids_fmri(tmp_path / "ds", ["01"], trs=2.0)
    plain = tmp_path / "plain"
    shutil.copytree(ds.root, plain)
    (plain / "sub-01/func/sub-01_task-blocks_desc-confounds_timeseries.tsv").unlink()
    shard_dataset([plain], tmp_path / "raw", atlas=str(ds.atlas), fmri_normalize="none")
    shard_dataset([ds.root], tmp_path / "clean", atlas=str(ds.atlas), fmri_normalize="none")
    trans_x = _trans_x(ds.root, "01")
    (raw,), (clean,) = _samples(tmp_path / "raw"), _samples(tmp_path / "clean")
    assert _confound_r(raw, trans_x) > 0.8  # the planted confound dominates the uncleaned series
    assert _confound_r(clean, trans_x) < 0.1
    prep = clean["meta.json"]["preprocessing"]
    assert prep["confounds"]["columns"][:6] == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    assert "trans_x_derivative1" in prep["confounds"]["columns"]
    assert prep["parcellation_method"].startswith("nilearn")
    assert raw["meta.json"]["preprocessing"]["confounds"] is None


def test_detrend_and_filters_are_applied_and_recorded(tmp_path: Path) -> None:
    ds = write_bids_fmri(tmp_path / "ds", ["01"], trs=2.0, confound_weight=0.0)
    shard_dataset(
        [ds.root], tmp_path / "out", atlas=str(ds.atlas), detrend="linear", high_pass=0.01, low_pass=0.2
    )
    (s,) = _samples(tmp_path / "out")
    prep = s["meta.json"]["preprocessing"]
    assert (prep["detrend"], prep["high_pass_hz"], prep["low_pass_hz"]) == ("linear", 0.01, 0.2)
    x = s["signal.npy"].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x, axis=1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], d=2.0)
    assert spectrum[:, freqs > 0.22].sum() < 0.05 * spectrum.sum()  # low-passed at 0.2 Hz


def test_an_atlas_on_another_grid_is_resampled_and_said(tmp_path: Path, caplog) -> None:
    ds = write_bids_fmri(tmp_path / "ds", ["01"], trs=2.0)
    fine = write_atlas(tmp_path / "fine.nii.gz", ds.n_parcels, grid=(16, 16, 12), voxel=1.5)
    m = shard_dataset([ds.root], tmp_path / "out", atlas=str(fine))
    (rec,) = m["recordings"]
    assert rec["n_channels"] == ds.n_parcels
    assert any("another grid" in w and "resampled" in w for w in rec["warnings"])
    assert "another grid" in caplog.text
    (s,) = _samples(tmp_path / "out")
    assert s["meta.json"]["preprocessing"]["atlas_resampled"] is True


def test_a_header_tr_that_disagrees_with_the_sidecar_is_reported(tmp_path: Path) -> None:
    ds = write_bids_fmri(tmp_path / "ds", ["01"], trs=1.5, header_tr=2.0)
    m = shard_dataset([ds.root], tmp_path / "out", atlas=str(ds.atlas))
    (rec,) = m["recordings"]
    assert rec["tr"] == 1.5  # the sidecar wins
    assert any("header's TR 2 s disagrees" in w for w in rec["warnings"])


def test_a_run_without_tr_needs_tr_and_says_so(tmp_path: Path) -> None:
    ds = write_bids_fmri(tmp_path / "ds", ["01"], trs=2.0, header_tr=0.0)
    (ds.root / "sub-01/func/sub-01_task-blocks_bold.json").unlink()
    with pytest.raises(ShardError, match=r"sub-01_task-blocks_bold.nii.gz.*no repetition time.*--tr"):
        shard_dataset([ds.root], tmp_path / "out", atlas=str(ds.atlas))
    m = shard_dataset([ds.root], tmp_path / "out2", atlas=str(ds.atlas), tr=2.0)
    assert m["recordings"][0]["tr"] == 2.0


def test_confounds_of_the_wrong_length_name_the_table_and_write_nothing(tmp_path: Path) -> None:
    ds = write_bids_fmri(tmp_path / "ds", ["01"], trs=2.0)
    short = tmp_path / "short.txt"
    short.write_text("\n".join("0.1 0.2" for _ in range(10)) + "\n")
    with pytest.raises(ShardError, match=r"short.txt has 10 rows for the run's 60 volumes"):
        shard_dataset([ds.root], tmp_path / "out", atlas=str(ds.atlas), confounds=str(short))
    assert not (tmp_path / "out" / "manifest.json").exists() and not list((tmp_path / "out").glob("*.tar"))


def test_events_tsv_blocks_become_labelled_epochs(tmp_path: Path) -> None:
    ds = write_bids_fmri(tmp_path / "ds", ["01", "02"], trs=2.0)
    m = shard_dataset([ds.root], tmp_path / "out", atlas=str(ds.atlas), split_ratios=(1.0, 0.0, 0.0))
    assert m["labels"]["names"] == ["rest", "task"]
    dm = ShardDataModule(
        [str(tmp_path / "out")],
        mode="epochs",
        tmin=4.0,
        tmax=20.0,
        label_map={"rest": 0, "task": 1},
        batch_size=64,
        test_split="train",
        normalize=False,
    )
    dm.setup("test")
    batches = list(dm.test_dataloader())
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    signal = np.concatenate([b["signal"].numpy() for b in batches])  # [N, P, T]
    assert sorted(set(labels.tolist())) == [0, 1] and len(labels) >= 8
    block = signal[:, :2].mean(axis=(1, 2))  # parcels 0-1 carry the blocks
    assert block[labels == 1].mean() - block[labels == 0].mean() > 1.0  # z-scored units
    json.dumps(m)  # the manifest stays plain JSON
