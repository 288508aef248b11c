"""Every reader path of `neurotrain shard`: file formats, BIDS, folders, fMRI parcels, T1 volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synthetic
import webdataset as wds

from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch
from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.datamodules.sharding.readers.signals import default_montage


def read_samples(directory: Path) -> list[dict]:
    return list(wds.WebDataset(sorted(str(p) for p in directory.glob("*.tar")), shardshuffle=False).decode())


@pytest.mark.parametrize(
    ("writer", "suffix"),
    [
        (synthetic.write_edf, ".edf"),
        (synthetic.write_bdf, ".bdf"),
        (synthetic.write_fif, "_raw.fif"),
        (synthetic.write_brainvision, ".vhdr"),
        (synthetic.write_eeglab, ".set"),
    ],
)
def test_signal_formats_keep_values_positions_and_events(writer, suffix: str, tmp_path: Path) -> None:
    events = [(3.0, "face"), (12.5, "house"), (25.0, "face")]
    src = writer(tmp_path / f"rec{suffix}", seconds=30.0, events=events)
    raw = synthetic.make_raw(seconds=30.0, events=events)
    m = shard_dataset([src], tmp_path / "out", segment_seconds=10, dtype="float32")
    (rec,) = m["recordings"]
    assert rec["n_channels"] == 8 and rec["sfreq"] == 128.0 and rec["n_segments"] == 3
    # these files carry no positions: they come from the standard 10-05 montage, matched by name
    assert rec["n_positions"] == 8
    assert rec["position_source"] == f"montage:{default_montage()}"
    samples = read_samples(tmp_path / "out")
    x = np.concatenate([s["signal.npy"] for s in samples], axis=1)
    np.testing.assert_allclose(x, raw.get_data() * 1e6, atol=0.05)  # µV; EDF/BDF quantise
    labels = [(s["meta.json"]["onset_s"] + e["onset"], e["label"]) for s in samples for e in s["events.json"]]
    prefix = "Comment/" if suffix == ".vhdr" else ""  # MNE names BrainVision markers "<type>/<description>"
    assert [lab for _, lab in labels] == [f"{prefix}face", f"{prefix}house", f"{prefix}face"]
    assert [t for t, _ in labels] == pytest.approx([3.0, 12.5, 25.0], abs=1 / 128)
    assert m["labels"]["counts"] == {f"{prefix}face": 2, f"{prefix}house": 1}


def test_bids_root_gives_subjects_splits_and_positions(tmp_path: Path) -> None:
    root = synthetic.write_bids_eeg(tmp_path / "bids", ["01", "02", "03"])
    m = shard_dataset([root], tmp_path / "out", segment_seconds=10)
    assert sorted(m["subjects"]) == ["01", "02", "03"]
    assert sorted(len(m["splits"][s]) for s in ("train", "val", "test")) == [1, 1, 1]
    for rec in m["recordings"]:
        assert rec["task"] == "demo" and rec["modality"] == "eeg"
        assert rec["n_positions"] == 8 and rec["position_source"] == "bids:electrodes.tsv"
    assert m["labels"]["names"] == ["face", "house"] and m["annotations"]["names"] == ["BAD_x"]


def test_folder_source_finds_supported_files_and_ignores_others(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    (folder / "a").mkdir(parents=True)
    synthetic.write_fif(folder / "a" / "sub-01_raw.fif", seconds=20)
    synthetic.write_edf(folder / "sub-02.edf", seconds=20, seed=1)
    (folder / "notes.txt").write_text("not a recording")
    (folder / "a" / "sub-01-ica.fif").write_text("an ICA file, not a recording")
    m = shard_dataset([folder], tmp_path / "out", segment_seconds=10)
    assert [r["source"] for r in m["recordings"]] == ["a/sub-01_raw.fif", "sub-02.edf"]
    assert sorted(m["subjects"]) == ["01", "02"]


def test_fmri_parcels_from_the_nitime_runs_with_an_atlas(tmp_path: Path) -> None:
    import nibabel as nib

    fmri = fetch("fmri")
    img = nib.load(fmri / "fmri1.nii.gz")
    atlas = tmp_path / "atlas.nii.gz"
    lab = np.zeros(img.shape[:3], dtype=np.int16)
    lab[:5, :, :9], lab[5:, :, :9], lab[:, :, 9:] = 1, 2, 3  # three slabs on the fMRI grid
    nib.save(nib.Nifti1Image(lab, img.affine), atlas)
    m = shard_dataset([fmri], tmp_path / "out", atlas=str(atlas), fmri_normalize="none", dtype="float32")
    assert [r["modality"] for r in m["recordings"]] == ["fmri", "fmri"]
    assert m["recordings"][0]["tr"] == pytest.approx(1.35)
    s = read_samples(tmp_path / "out")[0]
    meta, x = s["meta.json"], s["signal.npy"]
    assert (
        x.shape == (3, 40) and meta["sfreq"] == pytest.approx(1 / 1.35) and meta["ch_types"] == ["bold"] * 3
    )
    vox = np.asarray(img.dataobj, dtype=np.float64)
    np.testing.assert_allclose(x[2], vox[:, :, 9:].reshape(-1, 40).mean(axis=0), rtol=1e-5)
    centroid = img.affine[:3, :3] @ np.argwhere(lab == 3).mean(axis=0) + img.affine[:3, 3]
    np.testing.assert_allclose(meta["positions"][2], centroid / 1000, rtol=1e-5)


def test_fmri_resting_state_with_its_atlas_and_labels(tmp_path: Path) -> None:
    d = fetch("fmri_rest")
    m = shard_dataset(
        [d / "sub-test_task-rs_bold.nii"],
        tmp_path / "out",
        atlas=str(d / "Atlas/indexed_mask-Atlas.nii"),
        atlas_labels=str(d / "Atlas/ROI_labels-Atlas.txt"),
        atlas_background=-1,
    )
    (rec,) = m["recordings"]
    assert rec["tr"] == 2.5 and rec["n_channels"] == 184 and rec["subject"] == "test"
    s = read_samples(tmp_path / "out")[0]
    x = s["signal.npy"].astype(np.float32)
    assert x.shape == (184, 88)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-2)  # z-scored per parcel
    assert m["statistics"]["per_type"]["bold"]["std"] == pytest.approx(
        1.0, abs=0.02
    )  # nilearn: sample std (n - 1)


def test_fmri_without_atlas_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match=r"fmri1\.nii\.gz: fMRI needs a parcellation: pass --atlas"):
        shard_dataset([fetch("fmri") / "fmri1.nii.gz"], tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_t1_colin27_is_reoriented_resampled_and_normalised(tmp_path: Path) -> None:
    m = shard_dataset([fetch("t1") / "ch2.nii.gz"], tmp_path / "out", dtype="float32")
    assert m["modalities"] == ["anat"]
    s = read_samples(tmp_path / "out")[0]
    vol, meta = s["volume.npy"], s["meta.json"]
    assert vol.shape == (96, 112, 96) and meta["orientation"] == "RAS" and meta["voxel_size"] == 2.0
    affine = np.array(meta["affine"])
    np.testing.assert_allclose(np.diag(affine)[:3], [2.0, 2.0, 2.0])
    fg = vol > vol.min() + 0.5
    assert vol[fg].mean() == pytest.approx(0.0, abs=0.6) and fg.mean() > 0.2  # head fills the grid


def test_mgz_in_las_orientation_is_flipped_to_ras(tmp_path: Path) -> None:
    src = synthetic.write_t1(tmp_path / "head.mgz")
    m = shard_dataset([src], tmp_path / "out", volume_shape=(48, 48, 48), voxel_size=2.0)
    assert m["recordings"][0]["modality"] == "anat"
    meta = read_samples(tmp_path / "out")[0]["meta.json"]
    assert np.array(meta["affine"])[0, 0] > 0  # x now increases to the right
