"""Read volume fMRI runs (nibabel + nilearn), and the checks every volume reader shares.

fMRI becomes parcel-mean time series ``[parcels, time]`` over a label atlas, parcellated and
cleaned by nilearn's ``NiftiLabelsMasker`` (`read_fmri`: confounds, detrending, filtering,
standardisation), with each parcel's centroid (world coordinates of the atlas, in metres) as its
position, so parcels enter the same channel-agnostic batch layout as sensors. Structural images:
``anat.py``; surface runs: ``fmri_surface.py``.

The image's shape is checked against what it is sharded as before anything else: fMRI needs a
4-D image (x, y, z, time) of at least two volumes, anatomy one 3-D volume — a 4-D run given as
``--modality anat`` is refused with its shape rather than reduced to one of its volumes or their
mean (an EPI average is no structural image, and nothing would say it had been made). A
truncated image is reported as truncated (`checks.volume_data_problem`), before "fMRI needs a
parcellation" and instead of a decoder's message.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.checks import volume_data_problem
from neurotrain.datamodules.sharding.readers.fmri_confounds import run_confounds
from neurotrain.datamodules.sharding.sources import SourceItem

logger = logging.getLogger(__name__)


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
    """Parcel series of one 4-D run through ``nilearn.maskers.NiftiLabelsMasker``.

    Confounds (``--confounds`` or the BIDS ``*_desc-confounds_timeseries.tsv`` beside the run),
    ``--detrend``, ``--high-pass``/``--low-pass`` and ``--fmri-normalize`` are nilearn's
    ``signal.clean`` steps; an atlas on another grid is resampled to the run (nearest neighbour,
    ``resampling_target="data"``) with a warning. Positions are the present centroid code
    (label-voxel mean through the atlas affine, metres). ``ShardError`` names the file.
    """
    from nilearn.maskers import NiftiLabelsMasker

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
    notes: list[str] = []
    tr = _repetition_time(item.path, img, options, notes)
    labels, names, centroids, frame = _atlas(options.atlas, options.atlas_labels, options.atlas_background)
    atlas_img = _load(Path(options.atlas))
    resampled = labels.shape != img.shape[:3] or not np.allclose(atlas_img.affine, img.affine, atol=1e-3)
    if resampled:
        msg = (
            f"atlas {Path(options.atlas).name} is on another grid ({_shape_text(labels.shape)}) than the "
            f"run ({_shape_text(img.shape[:3])}): resampled to the run (nearest neighbour)"
        )
        logger.warning("%s: %s", item.path, msg)
        notes.append(msg)
    found = run_confounds(item.path, int(img.shape[3]), options)
    confounds = found.values if found is not None else None
    confound_info = {"file": found.path.name, "columns": found.columns} if found else None
    normalize = {"zscore": "zscore_sample", "psc": "psc", "none": False}[options.fmri_normalize]
    masker = NiftiLabelsMasker(
        labels_img=atlas_img,
        background_label=options.atlas_background,
        resampling_target="data",
        standardize=normalize,
        detrend=options.detrend == "linear",
        high_pass=options.high_pass,
        low_pass=options.low_pass,
        t_r=tr,
        keep_masked_labels=False,
    )
    try:
        # Decompressed once, here: given the file's proxy image, nilearn's fit reads (and for a
        # .nii.gz decompresses) the start of the file a second time (benchmarks/fmri_shard.py).
        loaded = type(img)(np.asanyarray(img.dataobj), img.affine, img.header)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            series = masker.fit_transform(loaded, confounds=confounds)  # [T, P]
    except (OSError, EOFError) as exc:
        raise _data_error(item.path, img, exc) from exc
    except ValueError as exc:
        raise _data_error(item.path, img, exc) from exc
    present_values = [
        int(v) for v in masker.region_ids_.values() if v != "background" and v != options.atlas_background
    ]
    index = {v[0]: k for k, v in enumerate(names)}
    present = [index[v] for v in present_values if v in index]
    if not present:
        raise ShardError(str(item.path), f"the atlas {options.atlas} has no parcel inside this image")
    series = np.asarray(series, dtype=np.float32).T[: len(present)]  # [P, T]
    prep: dict[str, Any] = {
        "parcellation": Path(options.atlas).name,
        "normalisation": options.fmri_normalize,
        "parcellation_method": "nilearn.maskers.NiftiLabelsMasker (mean)",
        "atlas_resampled": resampled,
        "standardize": normalize or "none",
        "detrend": options.detrend,
        "high_pass_hz": options.high_pass,
        "low_pass_hz": options.low_pass,
        "confounds": confound_info,
        "positions": "label-voxel centroids in atlas space (m)",
    }
    if notes:
        prep["warnings"] = notes
    return ParcelSeries(
        data=series,
        tr=tr,
        names=[names[k][1] for k in present],
        positions=centroids[present].astype(np.float32),
        position_frame=frame,
        preprocessing=prep,
    )


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(int(v)) for v in shape)


def _voxel_text(img) -> str:
    """``"3 x 3 x 3 mm"``: the voxel size of an image's first three axes."""
    return " x ".join(f"{float(v):g}" for v in img.header.get_zooms()[:3]) + " mm"


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


def _repetition_time(path: Path, img, options: ShardOptions, notes: list[str] | None = None) -> float:
    """TR from ``--tr``, else the BIDS sidecar, else the header; a disagreeing header is noted."""
    zooms = img.header.get_zooms()
    header = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    header = header / 1000.0 if unit == "msec" else header / 1e6 if unit == "usec" else header
    if options.tr is not None:
        return float(options.tr)
    sidecar = Path(str(path).replace(".nii.gz", ".json").replace(".nii", ".json"))
    if sidecar.exists():
        try:
            tr = float(json.loads(sidecar.read_text())["RepetitionTime"])
        except (KeyError, ValueError, TypeError):
            tr = 0.0
        if tr > 0:
            if header > 0 and abs(header - tr) > 1e-3 and notes is not None:
                msg = (
                    f"the header's TR {header:g} s disagrees with the sidecar RepetitionTime "
                    f"{tr:g} s: the sidecar's is used"
                )
                logger.warning("%s: %s", path, msg)
                notes.append(msg)
            return tr
    if not header > 0:
        raise ShardError(str(path), "the image header holds no repetition time; pass --tr SECONDS")
    return header


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
