"""Input mistakes get a message that names the real problem and the file, not a reader's side effect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synthetic

from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.train.cli import main


def _refused(sources: list[Path], out: Path, **options) -> str:
    with pytest.raises(ShardError) as exc:
        shard_dataset(sources, out, **options)
    assert not (out / "manifest.json").exists()
    return str(exc.value)


def test_a_3d_image_given_as_fmri_is_refused_not_written_as_anatomy(tmp_path: Path) -> None:
    t1 = synthetic.write_t1(tmp_path / "t1.nii.gz", shape=(20, 24, 20))
    msg = _refused([t1], tmp_path / "out", modality="fmri")
    assert msg.startswith(f"{t1}: 3-D image (20 x 24 x 20), fMRI needs 4-D (x, y, z, time)")
    assert not list((tmp_path / "out").glob("*.tar"))
    # the same image without --modality is anatomy, as before
    assert shard_dataset([t1], tmp_path / "ok")["recordings"][0]["modality"] == "anat"


def test_a_4d_image_given_as_anat_is_refused_with_its_shape(tmp_path: Path) -> None:
    bold = synthetic.write_fmri(tmp_path / "bold.nii.gz", shape=(6, 6, 5, 40))
    msg = _refused([bold], tmp_path / "out", modality="anat")
    assert msg.startswith(f"{bold}: 4-D image (6 x 6 x 5 x 40: 40 volumes), anatomy needs one 3-D volume")
    assert "needs a parcellation" not in msg
    # one volume stored as 4-D (x, y, z, 1) is still anatomy
    import nibabel as nib

    one = tmp_path / "one.nii.gz"
    data = np.asarray(nib.load(str(synthetic.write_t1(tmp_path / "t.nii.gz", shape=(20, 24, 20)))).dataobj)
    nib.save(nib.Nifti1Image(data[..., None], np.diag([2.0, 2.0, 2.0, 1.0])), str(one))
    assert shard_dataset([one], tmp_path / "ok", modality="anat")["recordings"][0]["modality"] == "anat"


def test_a_signal_modality_for_an_image_and_an_image_modality_for_a_recording_are_refused(
    tmp_path: Path,
) -> None:
    edf = synthetic.write_edf(tmp_path / "rec.edf", seconds=12)
    msg = _refused([edf], tmp_path / "a", modality="fmri")
    assert msg == (
        f"{edf}: --modality fmri is for NIfTI/MGZ images, and this is an EDF recording "
        "(use --modality eeg, meg or ieeg, or leave it out)"
    )
    t1 = synthetic.write_t1(tmp_path / "t1.nii.gz", shape=(20, 24, 20))
    assert "--modality eeg is for EEG/MEG/iEEG recordings" in _refused([t1], tmp_path / "b", modality="eeg")


def test_a_broken_bids_channels_tsv_is_named_not_reported_as_an_unreadable_edf(tmp_path: Path) -> None:
    root = synthetic.write_bids_eeg(tmp_path / "bids", ["01"], seconds=12)
    tsv = root / "sub-01/eeg/sub-01_task-demo_channels.tsv"
    edf = root / "sub-01/eeg/sub-01_task-demo_eeg.edf"
    good = tsv.read_text()
    lines = good.splitlines()

    tsv.write_text("\n".join([*lines[:3], lines[3] + "\textra\tmore", *lines[4:]]) + "\n")  # a ragged row
    msg = _refused([root], tmp_path / "ragged")
    assert (
        msg
        == f"{edf}: broken BIDS sidecar {tsv}: line 4 has 11 tab-separated fields where the header row has 9"
    )

    tsv.write_text(good.replace("\t", ","))
    msg = _refused([root], tmp_path / "commas")
    assert f"broken BIDS sidecar {tsv}: its header row has no 'name' or 'type' column" in msg
    assert "separated by commas, BIDS needs tabs" in msg

    tsv.write_text(good.replace("Fp1\t", "Fpz1\t", 1))  # well formed, but names a channel the EDF lacks
    msg = _refused([root], tmp_path / "renamed")
    assert f"broken BIDS sidecar {tsv}: its channel names do not match the recording's" in msg
    assert "it lists Fpz1, not in the recording; the recording has Fp1, not listed" in msg
    assert "cannot be read as EDF" not in msg

    tsv.write_text(good)
    assert shard_dataset([root], tmp_path / "ok")["totals"]["recordings"] == 1


def test_a_truncated_nifti_is_reported_as_truncated_before_the_missing_atlas(tmp_path: Path) -> None:
    bold = synthetic.write_fmri(tmp_path / "full.nii.gz", shape=(20, 20, 20, 40))
    cut = tmp_path / "cut.nii.gz"
    data = bold.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    msg = _refused([cut], tmp_path / "no_atlas")
    assert msg.startswith(f"{cut}: truncated file: its gzip stream ends after about ")
    assert "of the 1,280,352 bytes its header promises (20 x 20 x 20 x 40 float32 voxels)" in msg
    assert "parcellation" not in msg
    atlas = synthetic.write_atlas(tmp_path / "atlas.nii.gz", shape=(20, 20, 20))
    assert _refused([cut], tmp_path / "atlas", atlas=str(atlas)).startswith(f"{cut}: truncated file:")
    # whole, it only lacks its atlas
    assert "fMRI needs a parcellation" in _refused([bold], tmp_path / "whole")


def test_a_text_file_named_fif_is_not_a_fif_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "note_raw.fif"
    short.write_text("hi\n")  # MNE itself: 'NoneType' object has no attribute 'kind'
    msg = _refused([short], tmp_path / "a")
    assert msg == (
        f"{short}: cannot be read as FIF: not a FIF file (it holds text: 'hi\\n'...; "
        "a FIF file starts with a file-id tag)"
    )
    assert "NoneType" not in msg
    empty = tmp_path / "empty_raw.fif"
    empty.write_bytes(b"")
    assert "not a FIF file (the file is empty" in _refused([empty], tmp_path / "b")
    longer = tmp_path / "diary_raw.fif"
    longer.write_text("Dear diary, today I went to the beach.\n" * 5)
    assert main(["shard", str(longer), "--out", str(tmp_path / "c"), "--no-progress"]) == 1
    assert (
        "diary_raw.fif: cannot be read as FIF: not a FIF file (it holds text: 'Dear diary"
        in capsys.readouterr().err
    )


def test_a_bids_ieeg_channels_tsv_naming_a_missing_channel_is_named(tmp_path: Path) -> None:
    """The real iEEG example with one channels.tsv row for a contact the recording lacks."""
    import shutil

    from neurotrain.datamodules.sharding.examples import fetch

    root = tmp_path / "ieeg"
    shutil.copytree(fetch("ieeg"), root)
    tsv = next(root.rglob("*_channels.tsv"))
    rows = tsv.read_text(encoding="utf-8").splitlines()
    extra = rows[1].replace("LFP_RIGHT_0", "LFP_RIGHT_9", 1)
    tsv.write_text("\n".join([*rows, extra]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(ShardError, match=r"channels\.tsv.*LFP_RIGHT_9"):
        shard_dataset([root], out)
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.tar"))
