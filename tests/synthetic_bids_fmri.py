"""A small synthetic BIDS fMRI dataset with known effects, written with nibabel.

``write_bids_fmri(root, subjects, trs)`` makes, per subject, one 4-D run on an 8 x 8 x 6 grid of
3 mm voxels (TR from ``trs``), its sidecar (``RepetitionTime``), an ``events.tsv`` of alternating
``task``/``rest`` blocks, and an fMRIPrep-style ``*_desc-confounds_timeseries.tsv``; the dataset
root gets ``participants.tsv`` (``age``, ``group``) and, beside the root, a label atlas of
``n_parcels`` slabs along x (``atlas.nii.gz``, same grid). Known effects, per volume:

- every voxel carries ``confound_weight x trans_x`` (a random walk in the confounds table), so
  regressing the confounds must remove it;
- during ``task`` blocks parcels 0 and 1 rise by ``block_amplitude`` (the events label it);
- ``group == "patient"`` subjects get a ``group_amplitude`` sine of period 20 s in parcel 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRID = (8, 8, 6)
VOXEL_MM = 3.0


@dataclass(frozen=True)
class FmriDataset:
    """What ``write_bids_fmri`` wrote: the BIDS ``root`` and the ``atlas`` beside it."""

    root: Path
    atlas: Path
    n_parcels: int


def write_atlas(
    path: Path, n_parcels: int = 4, grid: tuple[int, int, int] = GRID, voxel: float = VOXEL_MM
) -> Path:
    """Label image of ``n_parcels`` slabs along x (labels 1..n, 0 = background at the edges)."""
    import nibabel as nib

    lab = np.zeros(grid, np.int16)
    edges = np.linspace(0, grid[0], n_parcels + 1).round().astype(int)
    for k in range(n_parcels):
        lab[edges[k] : edges[k + 1], 1:-1, 1:-1] = k + 1
    nib.save(nib.Nifti1Image(lab, np.diag([voxel, voxel, voxel, 1.0])), path)
    return path


def write_bids_fmri(
    root: Path,
    subjects: list[str],
    trs: list[float] | float = 2.0,
    seconds: float = 120.0,
    n_parcels: int = 4,
    block_s: float = 20.0,
    block_amplitude: float = 3.0,
    group_amplitude: float = 2.0,
    confound_weight: float = 5.0,
    header_tr: float | None = None,
    seed: int = 0,
) -> FmriDataset:
    """Write the dataset (see the module docstring); ``header_tr`` stores another TR in the NIfTI
    header than the sidecar's (a disagreement), None the same."""
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    trs = [trs] * len(subjects) if isinstance(trs, int | float) else list(trs)
    atlas = write_atlas(root.parent / "atlas.nii.gz", n_parcels)
    labels = np.asarray(nib.load(atlas).dataobj)
    rng = np.random.default_rng(seed)
    rows = ["participant_id\tage\tgroup"]
    for i, (sub, tr) in enumerate(zip(subjects, trs, strict=True)):
        group = "patient" if i % 2 else "control"
        rows.append(f"sub-{sub}\t{20 + 3 * i}\t{group}")
        n = int(round(seconds / tr))
        t = np.arange(n) * tr  # [T] seconds
        task = (t // block_s).astype(int) % 2 == 1  # [T] rest, task, rest, ...
        trans_x = np.cumsum(rng.standard_normal(n)) * 0.1  # [T] a drifting motion trace
        data = 100 + rng.standard_normal((*GRID, n)).astype(np.float32)
        data += confound_weight * trans_x
        for parcel in (1, 2):  # labels of parcels 0 and 1
            data[labels == parcel] += block_amplitude * task
        if group == "patient":
            data[labels == 3] += group_amplitude * np.sin(2 * np.pi * t / 20.0)
        func = root / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{sub}_task-blocks"
        img = nib.Nifti1Image(data.astype(np.float32), np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0]))
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = header_tr if header_tr is not None else tr
        nib.save(img, func / f"{stem}_bold.nii.gz")
        (func / f"{stem}_bold.json").write_text(json.dumps({"RepetitionTime": tr, "TaskName": "blocks"}))
        onsets = np.arange(0.0, n * tr, block_s)
        ev = ["onset\tduration\ttrial_type"] + [
            f"{o:g}\t{block_s:g}\t{'task' if k % 2 else 'rest'}" for k, o in enumerate(onsets)
        ]
        (func / f"{stem}_events.tsv").write_text("\n".join(ev) + "\n")
        motion = rng.standard_normal((n, 5)) * 0.05
        conf = ["trans_x\ttrans_y\ttrans_z\trot_x\trot_y\trot_z\ttrans_x_derivative1"]
        deriv = np.r_[np.nan, np.diff(trans_x)]
        for k in range(n):
            d = "n/a" if np.isnan(deriv[k]) else f"{deriv[k]:.6f}"
            conf.append("\t".join([f"{trans_x[k]:.6f}", *(f"{v:.6f}" for v in motion[k]), d]))
        (func / f"{stem}_desc-confounds_timeseries.tsv").write_text("\n".join(conf) + "\n")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "blocks", "BIDSVersion": "1.9.0"}))
    return FmriDataset(root, atlas, n_parcels)
