"""A small synthetic BIDS dataset of T1 images with known subject-level effects, written with nibabel.

``write_bids_t1(root, n_subjects)`` makes ``sub-XX/anat/sub-XX_T1w.nii.gz`` per subject: a head
(a bright ellipsoid "brain" with grey/white contrast and scanner-like noise and bias field) on a
36 x 40 x 36 grid of 2 mm voxels in LAS orientation (so reorientation is exercised), and
``participants.tsv`` with ``age`` and ``group``. Known effects:

- ``age`` (uniform 20-80): the dark ventricles at the centre grow with age (radius
  ``3 + 0.08 * (age - 20)`` voxels), as atrophy does;
- ``group == "patient"``: a bright lesion-like blob in the left hemisphere.

Subjects also differ in head size, position (a few voxels) and intensity scale, so nothing but
the planted effects carries the labels. ``score`` per subject (``participants.tsv`` column
``score``) is the standardised ventricle radius, for tasks that combine modalities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRID = (36, 40, 36)
VOXEL_MM = 2.0


def ventricle_radius(age: float) -> float:
    """Voxels (2 mm) of the ventricle ellipsoid's semi-axis at ``age``."""
    return 3.0 + 0.08 * (age - 20.0)


def t1_image(age: float, patient: bool, rng: np.random.Generator) -> np.ndarray:
    """One head on ``GRID`` float32 (x, y, z), before the LAS flip of the affine."""
    idx = np.indices(GRID).astype(np.float32)  # [3, X, Y, Z]
    centre = (np.array(GRID, np.float32) - 1) / 2 + rng.uniform(-1.5, 1.5, 3)
    axes = np.array([14.0, 16.0, 13.0], np.float32) * rng.uniform(0.92, 1.08)
    d = idx - centre[:, None, None, None]
    r = np.sqrt(((d / axes[:, None, None, None]) ** 2).sum(0))  # brain radius, 1 at the surface
    img = np.where(r < 1.0, 600.0, 0.0) + np.where(r < 0.75, 200.0, 0.0)  # grey shell, white core
    vr = ventricle_radius(age)
    rv = np.sqrt(((d / np.array([vr * 0.8, vr * 1.3, vr * 0.9])[:, None, None, None]) ** 2).sum(0))
    img = np.where(rv < 1.0, 150.0, img)  # ventricles: dark (CSF)
    if patient:
        lesion = np.sqrt(((idx - (centre + [-7.0, 2.0, 1.0])[:, None, None, None]) ** 2).sum(0))
        img = np.where((lesion < 2.5) & (r < 1.0), 1400.0, img)
    bias = 1.0 + 0.1 * d[2] / GRID[2]  # a smooth intensity bias along z
    img = img * bias * rng.uniform(0.8, 1.25)
    img = img + np.where(r < 1.05, rng.normal(0.0, 25.0, GRID), 0.0)
    return np.clip(img, 0.0, None).astype(np.float32)


def write_bids_t1(root: Path, n_subjects: int = 24, seed: int = 0, shuffle_column: str | None = None) -> Path:
    """Write the dataset (module docstring) and return ``root``; the i-th subject is ``sub-<i+1:02d>``.

    ``shuffle_column``: that ``participants.tsv`` column is permuted across subjects (the images
    unchanged), for a shuffled-label control sharded from the same volumes. Of 500 seeded
    permutations the one least correlated with the true values is used: a single random
    permutation of 40 values keeps a chance correlation (|r| ~ 0.15) that a model fits through
    the images, and the control would then score far from 0 in either direction.
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ages = rng.uniform(20.0, 80.0, n_subjects)
    groups = ["patient" if i % 2 else "control" for i in range(n_subjects)]
    radii = np.array([ventricle_radius(a) for a in ages])
    scores = (radii - radii.mean()) / radii.std()
    affine = np.diag([-VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])  # LAS
    for i in range(n_subjects):
        anat = root / f"sub-{i + 1:02d}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        data = t1_image(float(ages[i]), groups[i] == "patient", rng)[::-1]  # stored LAS: x flipped
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), anat / f"sub-{i + 1:02d}_T1w.nii.gz")
    columns = {"age": [f"{a:.1f}" for a in ages], "group": groups, "score": [f"{s:.4f}" for s in scores]}
    if shuffle_column is not None:
        columns[shuffle_column] = _decorrelated_permutation(columns[shuffle_column], seed)
    rows = ["participant_id\tage\tgroup\tscore"] + [
        f"sub-{i + 1:02d}\t{columns['age'][i]}\t{columns['group'][i]}\t{columns['score'][i]}"
        for i in range(n_subjects)
    ]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t1", "BIDSVersion": "1.9.0"}))
    return root


def _decorrelated_permutation(values: list[str], seed: int) -> list[str]:
    """The permutation of ``values`` (numbers as text) with the smallest |Pearson r| to them."""
    x = np.array([float(v) for v in values])
    rng = np.random.default_rng(seed + 1)
    best = min((rng.permutation(len(x)) for _ in range(500)), key=lambda p: abs(np.corrcoef(x, x[p])[0, 1]))
    return [values[i] for i in best]
