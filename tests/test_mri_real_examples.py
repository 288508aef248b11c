"""The real MRI examples shard and pretrain: volume fMRI at two TRs in one run, and two real T1s.

- fMRI: nitime's run (10 x 10 x 18 voxels, 40 TRs at 1.35 s; it ships no atlas, so the test
  writes one on its grid: 4 slabs of the voxels brighter than the run's median) and
  neuropycon's resting-state run (88 TRs at 2.5 s) with its own 184-parcel atlas, each its own
  shard dataset, pretrained together by ``fmri_pretrain`` (16-TR windows at each run's TR).
- T1: the MNI152 2009a template (nilearn's wheel) and Colin27 (neurora's wheel), one dataset,
  pretrained by ``t1_pretrain``.

The surface example (a run on nilearn's real fsaverage5 mesh) is pretrained in
``tests/test_shard_fmri_surface.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from neurotrain.datamodules import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch
from neurotrain.train.run.lightning_cli import build_cli


def slab_atlas(run: Path, out: Path, n: int = 4) -> Path:
    """Labels 1..n: slabs along z of the voxels whose mean is above the run's median (0 elsewhere)."""
    img = nib.load(run)
    mean = np.asarray(img.dataobj, dtype=np.float32).mean(axis=3)
    inside = mean > np.median(mean)
    z = np.indices(mean.shape)[2]
    labels = np.where(inside, 1 + (z * n) // mean.shape[2], 0).astype(np.int16)
    nib.save(nib.Nifti1Image(labels, img.affine), out)
    return out


def metrics(run: Path) -> list[dict[str, str]]:
    import csv

    with (run / "metrics.csv").open() as f:
        return [row for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.mark.slow
def test_two_real_fmri_runs_at_different_trs_pretrain_in_one_batch(tmp_path: Path) -> None:
    nitime, rest = fetch("fmri"), fetch("fmri_rest")
    run = nitime / "fmri1.nii.gz"
    shard_dataset([run], tmp_path / "nitime", atlas=str(slab_atlas(run, tmp_path / "slabs.nii.gz")))
    shard_dataset(
        [rest / "sub-test_task-rs_bold.nii"],
        tmp_path / "rest",
        atlas=str(rest / "Atlas/indexed_mask-Atlas.nii"),
        atlas_background=-1,
    )
    datasets = [str(tmp_path / "nitime"), str(tmp_path / "rest")]
    dm = ShardDataModule(datasets, window_samples=16, batch_size=7, train_split="all")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert sorted({round(1 / float(s), 2) for s in batch["sfreq"]}) == [1.35, 2.5]  # both in one batch
    assert batch["signal"].shape[1:] == (184, 16)  # the wider atlas sets the slots; nitime's 4 padded
    torch.manual_seed(0)
    args = ["fit", "--config", "fmri_pretrain", f"--data.datasets=[{','.join(datasets)}]"]
    args += [
        "--data.train_split=all",
        "--data.val_split=all",
        "--data.batch_size=7",
        "--trainer.max_steps=40",
    ]
    args += [
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
    ]
    args += [f"--trainer.default_root_dir={tmp_path}", "--run_name=mixed"]
    build_cli(args)
    rows = metrics(tmp_path / "mixed")
    first = np.mean([float(r["train/loss"]) for r in rows[:5]])
    last = np.mean([float(r["train/loss"]) for r in rows[-5:]])
    print(f"fMRI mixed-TR train/loss: first 5 steps {first:.3f}, last 5 {last:.3f}")
    assert np.isfinite(last) and last < first, (first, last)
    losses = {k for r in rows for k in r if k.startswith("train/loss/") and r[k]}
    assert losses == {"train/loss/nitime", "train/loss/rest"}  # each corpus' loss logged on its own
    manifest = json.loads((tmp_path / "rest" / "manifest.json").read_text())
    prep = manifest["recordings"][0]["preprocessing"]
    assert prep["parcellation_method"].startswith("nilearn") and manifest["recordings"][0]["tr"] == 2.5


@pytest.mark.slow
def test_the_mni152_template_and_colin27_shard_and_pretrain(tmp_path: Path) -> None:
    mni = fetch("mni152") / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    colin = fetch("t1") / "ch2.nii.gz"
    shard_dataset([mni, colin], tmp_path / "t1", split_ratios=(1.0, 0.0, 0.0))
    manifest = json.loads((tmp_path / "t1" / "manifest.json").read_text())
    assert len(manifest["recordings"]) == 2
    assert {tuple(r["shape"]) for r in manifest["recordings"]} == {(96, 112, 96)}
    dm = ShardDataModule([str(tmp_path / "t1")], batch_size=2)
    dm.setup("fit")
    volume = next(iter(dm.train_dataloader()))["volume"]  # [2, 96, 112, 96], z-scored foreground
    assert volume.shape == (2, 96, 112, 96) and torch.isfinite(volume).all()
    torch.manual_seed(0)
    args = ["fit", "--config", "t1_pretrain", f"--data.datasets=[{tmp_path / 't1'}]", "--data.batch_size=2"]
    args += ["--trainer.max_steps=30", "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1"]
    args += ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--model.optimizer.lr=3e-3"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--run_name=t1"]
    build_cli(args)
    rows = metrics(tmp_path / "t1")
    first = np.mean([float(r["train/loss"]) for r in rows[:5]])
    last = np.mean([float(r["train/loss"]) for r in rows[-5:]])
    print(f"T1 train/loss: first 5 steps {first:.3f}, last 5 {last:.3f}")
    assert last < 0.8 * first, (first, last)  # two real heads: the masked-patch loss falls
