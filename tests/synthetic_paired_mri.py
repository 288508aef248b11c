"""A small synthetic BIDS dataset of paired structural (T1) and functional (BOLD) MRI per subject.

``write_paired_mri(root, n_subjects)`` writes, for the same subjects ``sub-01 .. sub-NN``, an
``anat/sub-XX_T1w.nii.gz`` (the head of `synthetic_bids_t1.t1_image`: 36 x 40 x 36 voxels of 2 mm,
stored LAS) and a ``func/sub-XX_task-rest_bold.nii.gz`` run (8 x 8 x 6 voxels of 3 mm, TR 2 s, with
its ``RepetitionTime`` sidecar), a label atlas of ``n_parcels`` slabs beside the root
(``atlas.nii.gz``, `synthetic_bids_fmri.write_atlas`) and a ``participants.tsv`` with the planted
subject-level values. Two independent effects, each in one modality only:

- ``a``: the standardised ventricle radius of the T1 (the radius grows with ``age``, uniform 20-80,
  as in `synthetic_bids_t1`); the BOLD run knows nothing of it;
- ``b``: the standardised amplitude of a 20 s sine in parcel 2 of the BOLD run (a random phase per
  subject; the amplitude is drawn uniformly in ``sine_range``, percent of the 100 baseline); the
  T1 knows nothing of it.

``target = a + b`` needs both modalities: one modality alone explains half its variance at best.
Every run also holds voxel noise (std 1 on a baseline of 100, so a parcel mean of ~48 voxels has
noise std ~0.14), ``block_amplitude`` task blocks (``block_s`` on, ``block_s`` off, scaled by
``block_weights``) shared by parcels 0, 1 and 3, and ``parcel_offsets`` added to each parcel's
baseline: structure the same in every subject (no label), for masked reconstruction to learn
(each parcel's level, the blocks from the other parcels at the same time). Shard the BOLD with
``fmri_normalize="none"`` to keep the offsets and the sine's amplitude (``"psc"`` keeps the
amplitude but removes each parcel's mean; z-scoring each parcel series divides both out).

``kinds`` leaves a modality out for some subjects (``{"05": ("anat",)}``: T1 only), for pairing
tests; ``subjects`` renames the subjects (default ``01 .. NN``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from synthetic_bids_fmri import GRID as BOLD_GRID
from synthetic_bids_fmri import VOXEL_MM as BOLD_VOXEL_MM
from synthetic_bids_fmri import write_atlas
from synthetic_bids_t1 import VOXEL_MM as T1_VOXEL_MM
from synthetic_bids_t1 import t1_image, ventricle_radius

TR = 2.0
SINE_PERIOD_S = 20.0
SINE_PARCEL = 2  # 0-based parcel index (atlas label 3)
BLOCK_PARCELS = (0, 1, 3)  # the parcels sharing the task blocks


@dataclass(frozen=True)
class PairedMri:
    """What `write_paired_mri` wrote: the BIDS ``root``, the ``atlas`` beside it, and per subject
    (``subjects[i]``, without ``sub-``) the planted ``a`` (T1), ``b`` (BOLD) and ``target``."""

    root: Path
    atlas: Path
    subjects: list[str]
    a: np.ndarray  # [N] standardised ventricle radius
    b: np.ndarray  # [N] standardised sine amplitude
    target: np.ndarray  # [N] a + b

    def value(self, column: str) -> dict[str, float]:
        """``{subject: value}`` of ``a``, ``b`` or ``target``."""
        return dict(zip(self.subjects, getattr(self, column).tolist(), strict=True))


def write_paired_mri(
    root: Path,
    n_subjects: int = 48,
    seconds: float = 240.0,
    n_parcels: int = 4,
    sine_range: tuple[float, float] = (0.2, 1.0),
    block_amplitude: float = 1.0,
    block_s: float = 20.0,
    block_weights: tuple[float, ...] = (1.0, 1.0, 1.0),
    parcel_offsets: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
    kinds: dict[str, tuple[str, ...]] | None = None,
    subjects: list[str] | None = None,
    seed: int = 0,
) -> PairedMri:
    """Write the dataset (module docstring) and return what it planted.

    ``kinds``: per subject id, the modalities written (``"anat"``, ``"func"``); default both.
    """
    import nibabel as nib

    subjects = subjects or [f"{i + 1:02d}" for i in range(n_subjects)]
    n = len(subjects)
    kinds = kinds or {}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    atlas = write_atlas(root.parent / "atlas.nii.gz", n_parcels)
    labels = np.asarray(nib.load(atlas).dataobj)
    ages = rng.uniform(20.0, 80.0, n)
    amplitudes = rng.uniform(*sine_range, n)
    radii = np.array([ventricle_radius(float(x)) for x in ages])
    a = (radii - radii.mean()) / radii.std()
    b = (amplitudes - amplitudes.mean()) / amplitudes.std()
    t1_affine = np.diag([-T1_VOXEL_MM, T1_VOXEL_MM, T1_VOXEL_MM, 1.0])  # LAS
    bold_affine = np.diag([BOLD_VOXEL_MM, BOLD_VOXEL_MM, BOLD_VOXEL_MM, 1.0])
    n_times = int(round(seconds / TR))
    t = np.arange(n_times) * TR  # [T] seconds
    task = (t // block_s).astype(int) % 2 == 1  # [T] rest, task, rest, ...
    for i, sub in enumerate(subjects):
        wanted = kinds.get(sub, ("anat", "func"))
        head = t1_image(float(ages[i]), False, rng)[::-1]  # drawn for every subject: same values
        phase = rng.uniform(0.0, 2 * np.pi)
        noise = rng.standard_normal((*BOLD_GRID, n_times)).astype(np.float32)
        if "anat" in wanted:
            anat = root / f"sub-{sub}" / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            img = nib.Nifti1Image(np.ascontiguousarray(head), t1_affine)
            nib.save(img, anat / f"sub-{sub}_T1w.nii.gz")
        if "func" in wanted:
            data = 100.0 + noise  # [X, Y, Z, T]
            for parcel, offset in enumerate(parcel_offsets):
                data[labels == parcel + 1] += offset
            for parcel, weight in zip(BLOCK_PARCELS, block_weights, strict=True):
                data[labels == parcel + 1] += weight * block_amplitude * task
            sine = amplitudes[i] * np.sin(2 * np.pi * t / SINE_PERIOD_S + phase)  # [T]
            data[labels == SINE_PARCEL + 1] += sine.astype(np.float32)
            func = root / f"sub-{sub}" / "func"
            func.mkdir(parents=True, exist_ok=True)
            img = nib.Nifti1Image(data.astype(np.float32), bold_affine)
            img.header.set_xyzt_units("mm", "sec")
            img.header["pixdim"][4] = TR
            nib.save(img, func / f"sub-{sub}_task-rest_bold.nii.gz")
            sidecar = {"RepetitionTime": TR, "TaskName": "rest"}
            (func / f"sub-{sub}_task-rest_bold.json").write_text(json.dumps(sidecar))
    target = a + b
    rows = ["participant_id\tage\ta\tb\ttarget"] + [
        f"sub-{sub}\t{ages[i]:.1f}\t{a[i]:.4f}\t{b[i]:.4f}\t{target[i]:.4f}" for i, sub in enumerate(subjects)
    ]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    description = {"Name": "paired", "BIDSVersion": "1.9.0"}
    (root / "dataset_description.json").write_text(json.dumps(description))
    rounded = [np.round(x, 4) for x in (a, b, target)]
    return PairedMri(root, atlas, list(subjects), *rounded)
