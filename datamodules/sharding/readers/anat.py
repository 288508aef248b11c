"""Read structural images (T1) through nibabel onto one grid.

A structural T1 is reoriented to RAS, resampled to an isotropic grid, cropped or padded to a
fixed shape around its foreground and z-scored over the foreground, so volumes of different
scanners stack into one batch.
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
    if len(img.shape) == 4:  # (x, y, z, 1): one volume
        img = img.slicer[..., 0]
    try:
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
    data, offset = _crop_or_pad(data, fg, options.volume_shape)
    fg = data > 0.1 * np.percentile(data, 99)
    mean, std = float(data[fg].mean()), float(data[fg].std()) or 1.0
    data = (data - mean) / std
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ offset + img.affine[:3, 3]
    return Volume(
        data=data.astype(np.float32),
        affine=affine,
        voxel_size=options.voxel_size,
        preprocessing={
            "reorient": "RAS",
            "resample_mm": options.voxel_size,
            "shape": list(options.volume_shape),
            "normalisation": "zscore_foreground",
        },
    )


def _crop_or_pad(data: np.ndarray, fg: np.ndarray, shape: tuple[int, int, int]):
    """Crop or zero-pad ``data`` to ``shape`` centred on the foreground's bounding box."""
    idx = np.argwhere(fg)
    centre = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
    out = np.zeros(shape, dtype=np.float32)
    start = np.floor(centre - np.array(shape) / 2.0).astype(int)  # in source voxels, may be < 0
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + np.array(shape), data.shape)
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True))] = data[
        tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
    ]
    return out, start.astype(float)
