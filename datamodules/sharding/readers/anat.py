"""Read structural images (T1) through nibabel and TorchIO onto one grid.

The conventional preprocessing, so volumes of different scanners stack into one batch:

1. the affine is checked (a singular or non-finite one is an error naming the file: nothing can
   be resampled from it);
2. a brain mask beside the image (BIDS derivatives: ``<stem>_desc-brain_mask.nii[.gz]`` for
   ``<stem>_T1w.nii[.gz]``, as fMRIPrep writes it) zeroes everything outside the brain;
3. nibabel reorients to RAS (``as_closest_canonical``) and resamples to an isotropic
   ``voxel_size`` grid (``resample_to_output``, trilinear);
4. TorchIO crops or pads to ``volume_shape`` centred on the foreground's bounding box
   (``CropOrPad(mask_name=...)``), clips intensities to the foreground's 0.5-99.5 percentiles
   (``RescaleIntensity(percentiles=...)``: robust to the few very bright voxels of vessels and
   fat) and z-scores over the foreground (``ZNormalization(masking_method=...)``).

TorchIO is the field's 3-D transform library; it replaces the hand-written crop/pad and
intensity normalisation this module had, and keeps the affine of each step right. Resampling
stays with nibabel, whose ``resample_to_output`` keeps the whole field of view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.volumes import _check_anat_shape, _data_error, _load
from neurotrain.datamodules.sharding.sources import SourceItem


@dataclass
class Volume:
    """Structural image on a fixed grid. ``data`` is ``[D, H, W]`` float32 (RAS)."""

    data: np.ndarray
    affine: np.ndarray  # 4x4 of the stored grid
    voxel_size: float
    preprocessing: dict[str, Any]


def read_anat(item: SourceItem, options: ShardOptions) -> Volume:
    """Reorient to RAS, resample to ``voxel_size`` mm, crop/pad to ``volume_shape``, z-score."""
    import nibabel as nib
    from nibabel.processing import resample_to_output

    img = raw = _load(item.path)
    _check_anat_shape(item.path, img.shape)
    check_affine(item.path, img.affine)
    if len(img.shape) == 4:  # (x, y, z, 1): one volume
        img = img.slicer[..., 0]
    mask_path = brain_mask_of(item.path)
    try:
        if mask_path is not None:
            img = _apply_mask(img, mask_path)
        img = nib.as_closest_canonical(img)
        img = resample_to_output(img, voxel_sizes=options.voxel_size, order=1)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise _data_error(item.path, raw, exc) from exc
    if not np.isfinite(data).all():
        raise ShardError(str(item.path), "image holds NaN or infinite voxels")
    fg = data > 0.1 * np.percentile(data, 99)
    if not fg.any():
        raise ShardError(str(item.path), "image is empty (no foreground voxels)")
    data, affine = _torchio_preprocess(data, fg, img.affine, options.volume_shape)
    return Volume(
        data=data,
        affine=affine,
        voxel_size=options.voxel_size,
        preprocessing={
            "reorient": "RAS",
            "resample_mm": options.voxel_size,
            "shape": list(options.volume_shape),
            "brain_mask": mask_path.name if mask_path is not None else None,
            "crop_or_pad": "torchio CropOrPad on the foreground bounding box",
            "clip_percentiles": list(CLIP_PERCENTILES),
            "normalisation": "zscore_foreground",
        },
    )


CLIP_PERCENTILES = (0.5, 99.5)


def check_affine(path, affine: np.ndarray) -> None:
    """A ``ShardError`` naming ``path`` when the voxel-to-world affine cannot be inverted."""
    rot = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.isfinite(rot).all() or abs(float(np.linalg.det(rot))) < 1e-8:
        raise ShardError(
            str(path),
            "the image's affine (voxel to world) is not invertible (zero or non-finite voxel axes): its "
            "orientation is broken, so it cannot be reoriented or resampled; fix the header's sform/qform "
            f"(affine rows {np.round(rot, 4).tolist()})",
        )


def brain_mask_of(path) -> Any:
    """``<stem>_desc-brain_mask.nii[.gz]`` beside ``<stem>_T1w.nii[.gz]`` (BIDS derivatives), or None."""
    from pathlib import Path

    path = Path(path)
    name = path.name
    for suffix in ("_T1w.nii.gz", "_T1w.nii"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            for ext in (".nii.gz", ".nii"):
                candidate = path.with_name(f"{stem}_desc-brain_mask{ext}")
                if candidate.is_file():
                    return candidate
    return None


def _apply_mask(img: Any, mask_path: Any) -> Any:
    """The image with voxels outside the mask set to 0; the mask must share the image's grid."""
    import nibabel as nib

    mask = _load(mask_path)
    if tuple(mask.shape[:3]) != tuple(img.shape[:3]) or not np.allclose(mask.affine, img.affine, atol=1e-3):
        raise ShardError(
            str(mask_path),
            f"brain mask grid {tuple(mask.shape[:3])} differs from the image's {tuple(img.shape[:3])}",
        )
    inside = np.asarray(mask.dataobj).reshape(img.shape[:3]) > 0
    data = np.asarray(img.dataobj, dtype=np.float32) * inside
    return nib.Nifti1Image(data, img.affine)


def _torchio_preprocess(
    data: np.ndarray, fg: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """TorchIO crop/pad to ``shape`` on the foreground, percentile clip, foreground z-score.

    ``data`` float32 [X, Y, Z] (RAS grid), ``fg`` bool of the same shape; returns the volume
    float32 ``shape`` and its affine.
    """
    import torch
    import torchio as tio

    subject = tio.Subject(
        t1=tio.ScalarImage(tensor=torch.from_numpy(data)[None], affine=affine),
        foreground=tio.LabelMap(tensor=torch.from_numpy(fg.astype(np.uint8))[None], affine=affine),
    )
    transform = tio.Compose(
        [
            tio.CropOrPad(tuple(int(v) for v in shape), mask_name="foreground"),
            tio.RescaleIntensity(
                out_min_max=(0.0, 1.0), percentiles=CLIP_PERCENTILES, masking_method="foreground"
            ),
            tio.ZNormalization(masking_method="foreground"),
        ]
    )
    out = transform(subject)
    return out["t1"].data[0].numpy().astype(np.float32), np.asarray(out["t1"].affine, dtype=np.float64)
