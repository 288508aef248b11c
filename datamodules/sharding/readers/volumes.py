"""Read fMRI runs through nibabel, and the checks every volume reader shares.

fMRI becomes parcel-mean time series ``[parcels, time]`` over a label atlas, with each
parcel's centroid (world coordinates of the atlas, in metres) as its position, so parcels
enter the same channel-agnostic batch layout as sensors. A structural T1 is reoriented to RAS,
resampled to an isotropic grid, cropped or padded to a fixed shape around its foreground and
z-scored over the foreground, so volumes of different scanners stack into one batch.

The image's shape is checked against what it is sharded as before anything else: fMRI needs a
4-D image (x, y, z, time) of at least two volumes, anatomy one 3-D volume — a 4-D run given as
``--modality anat`` is refused with its shape rather than reduced to one of its volumes or their
mean (an EPI average is no structural image, and nothing would say it had been made). A
truncated image is reported as truncated (`checks.volume_data_problem`), before "fMRI needs a
parcellation" and instead of a decoder's message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.checks import volume_data_problem
from neurotrain.datamodules.sharding.sources import SourceItem


@dataclass
class ParcelSeries:
    """fMRI run as parcel time series. ``data`` is ``[parcels, time]`` float32."""

    data: np.ndarray
    tr: float
    names: list[str]
    positions: np.ndarray  # [P, 3] metres
    position_frame: str
    preprocessing: dict[str, Any]


def read_fmri(item: SourceItem, options: ShardOptions) -> ParcelSeries:
    """Parcel means of one 4-D run; raises ``ShardError`` when there is no atlas or no TR."""
    from scipy import sparse

    img = _load(item.path)
    _check_fmri_shape(item.path, img.shape)
    if not options.atlas:
        if problem := volume_data_problem(item.path, img):  # the first thing to fix
            raise ShardError(str(item.path), problem)
        raise ShardError(
            str(item.path),
            "fMRI needs a parcellation: pass --atlas LABELS.nii.gz (a label image; 0 = background, "
            "or set --atlas-background) to shard parcel-mean time series",
        )
    tr = _repetition_time(item.path, img, options)
    labels, names, centroids, frame = _atlas(options.atlas, options.atlas_labels, options.atlas_background)
    labels = _on_grid(labels, options.atlas, img)
    flat = labels.reshape(-1)
    present = [k for k, v in enumerate(names) if np.any(flat == v[0])]
    if not present:
        raise ShardError(str(item.path), f"the atlas {options.atlas} has no parcel inside this image")
    values = np.array([names[k][0] for k in present])
    order = {v: i for i, v in enumerate(values)}
    rows = np.array([order.get(v, -1) for v in flat])
    keep = rows >= 0
    # [P, V] averaging matrix: each row holds 1/n over that parcel's voxels.
    counts = np.bincount(rows[keep], minlength=len(values)).astype(np.float64)
    avg = sparse.csr_matrix(
        (1.0 / counts[rows[keep]], (rows[keep], np.nonzero(keep)[0])), shape=(len(values), flat.size)
    )
    try:
        vox = np.asarray(img.dataobj, dtype=np.float32).reshape(flat.size, img.shape[3])  # [V, T]
    except (OSError, ValueError, EOFError) as exc:
        raise _data_error(item.path, img, exc) from exc
    series = np.asarray(avg @ vox, dtype=np.float32)  # [P, T]
    series, how = _normalise_fmri(series, options.fmri_normalize)
    return ParcelSeries(
        data=series,
        tr=tr,
        names=[names[k][1] for k in present],
        positions=centroids[present].astype(np.float32),
        position_frame=frame,
        preprocessing={"parcellation": Path(options.atlas).name, "normalisation": how},
    )


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(int(v)) for v in shape)


def _check_fmri_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        raise ShardError(
            str(path),
            f"3-D image ({_shape_text(shape)}), fMRI needs 4-D (x, y, z, time): this holds one volume; "
            "a structural image is sharded as anatomy (leave out --modality fmri, or --modality anat)",
        )
    if len(shape) != 4:
        raise ShardError(
            str(path), f"{len(shape)}-D image ({_shape_text(shape)}), fMRI needs 4-D (x, y, z, time)"
        )


def _check_anat_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) == 4 and shape[3] > 1:
        raise ShardError(
            str(path),
            f"4-D image ({_shape_text(shape)}: {shape[3]} volumes), anatomy needs one 3-D volume: this looks "
            "like an fMRI run; shard it as fMRI (--modality fmri with --atlas), or save the one volume "
            "you mean (say, a T1, or an average you made on purpose) as a 3-D image first",
        )
    if len(shape) not in (3, 4):
        raise ShardError(
            str(path), f"{len(shape)}-D image ({_shape_text(shape)}), anatomy needs one 3-D volume"
        )


def _data_error(path: Path, img, exc: Exception) -> ShardError:
    """The error for image data that could not be read: truncation when it is that, else the decoder's."""
    problem = volume_data_problem(path, img)
    return ShardError(str(path), problem or f"cannot read the image data: {type(exc).__name__}: {exc}")


def _load(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, ValueError, OSError ...
        raise ShardError(str(path), f"cannot be read as a NIfTI/MGZ image: {exc}") from exc


def _repetition_time(path: Path, img, options: ShardOptions) -> float:
    if options.tr is not None:
        return float(options.tr)
    sidecar = Path(str(path).replace(".nii.gz", ".json").replace(".nii", ".json"))
    if sidecar.exists():
        try:
            return float(json.loads(sidecar.read_text())["RepetitionTime"])
        except (KeyError, ValueError, TypeError):
            pass
    zooms = img.header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    tr = tr / 1000.0 if unit == "msec" else tr / 1e6 if unit == "usec" else tr
    if not tr > 0:
        raise ShardError(str(path), "the image header holds no repetition time; pass --tr SECONDS")
    return tr


@lru_cache(maxsize=4)
def _atlas(atlas: str, labels_file: str | None, background: float):
    """Label image, [(label value, parcel name)], centroids [P, 3] in metres, frame name."""
    img = _load(Path(atlas))
    lab = np.rint(np.asarray(img.dataobj, dtype=np.float64)).astype(np.int64)
    if lab.ndim == 4:
        lab = lab[..., 0]
    values = [int(v) for v in np.unique(lab) if v != int(background)]
    if not values:
        raise ShardError(atlas, "the atlas holds no labels other than the background")
    names = [f"parcel-{v}" for v in values]
    if labels_file:
        lines = [ln.strip() for ln in Path(labels_file).read_text().splitlines() if ln.strip()]
        if len(lines) != len(values):
            raise ShardError(labels_file, f"has {len(lines)} names for {len(values)} parcels in {atlas}")
        names = lines
    cents = np.zeros((len(values), 3))
    for i, v in enumerate(values):
        ijk = np.argwhere(lab == v).mean(axis=0)
        cents[i] = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    return lab, list(zip(values, names, strict=True)), cents / 1000.0, "atlas"


def _on_grid(labels: np.ndarray, atlas: str, img) -> np.ndarray:
    """The atlas labels on the fMRI voxel grid (nearest neighbour) when the grids differ."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    atlas_img = _load(Path(atlas))
    if labels.shape == img.shape[:3] and np.allclose(atlas_img.affine, img.affine, atol=1e-3):
        return labels
    lab_img = nib.Nifti1Image(labels.astype(np.int32), atlas_img.affine)
    return np.asarray(resample_from_to(lab_img, (img.shape[:3], img.affine), order=0).dataobj).astype(
        np.int64
    )


def _normalise_fmri(series: np.ndarray, how: str) -> tuple[np.ndarray, str]:
    mean = series.mean(axis=1, keepdims=True)
    if how == "zscore":
        std = series.std(axis=1, keepdims=True)
        return np.where(std > 0, (series - mean) / np.where(std > 0, std, 1), 0).astype(np.float32), how
    if how == "psc":
        return np.where(mean != 0, 100 * (series - mean) / np.where(mean != 0, mean, 1), 0).astype(
            np.float32
        ), how
    return series, "none"
