"""Surface fMRI fixtures on the real fsaverage5 mesh (nilearn's wheel), with a known planted signal.

nilearn 0.14 ships the fsaverage5 meshes (``nilearn/datasets/data/fsaverage5``) but no surface
parcellation (Destrieux and the others are downloads), so the atlas is a k-means of the pial
vertex coordinates (scikit-learn, seeded): ``N_PARCELS`` compact parcels per hemisphere, values
1..N, written as FreeSurfer ``.annot`` (names ``parcel01``...), ``.label.gii`` or ``.npy``.

A run is white noise per vertex (sd 1) plus, in the parcels of ``PLANTED``, a known slow signal
(sd ``AMPLITUDE``) added to every vertex of the parcel, so the parcel mean recovers it (~500
vertices a parcel: the noise in the mean has sd ~0.05).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

N_PARCELS = 20  # per hemisphere
PLANTED = {("left", 3): 0, ("right", 7): 1}  # (hemisphere, parcel value) -> planted signal index
AMPLITUDE = 0.5
TR = 1.5  # s


@lru_cache(maxsize=1)
def fsaverage5() -> dict[str, np.ndarray]:
    """Pial vertex coordinates [10242, 3] (mm) of each hemisphere, from nilearn's wheel."""
    from nilearn.datasets import load_fsaverage

    pial = load_fsaverage("fsaverage5")["pial"]
    return {h: np.asarray(pial.parts[h].coordinates, dtype=np.float64) for h in ("left", "right")}


@lru_cache(maxsize=1)
def kmeans_labels() -> dict[str, np.ndarray]:
    """Per-vertex parcel values 1..N_PARCELS [10242] of each hemisphere (k-means of coordinates)."""
    from sklearn.cluster import KMeans

    out = {}
    for h, xyz in fsaverage5().items():
        km = KMeans(n_clusters=N_PARCELS, n_init=1, random_state=0).fit(xyz)
        # order the parcels by centroid y, then x, so the values do not depend on k-means' order
        order = np.lexsort((km.cluster_centers_[:, 0], km.cluster_centers_[:, 1]))
        rank = np.empty(N_PARCELS, dtype=np.int64)
        rank[order] = np.arange(N_PARCELS)
        out[h] = rank[km.labels_] + 1
    return out


def planted_signals(n_times: int, seed: int = 0) -> np.ndarray:
    """The planted signals [len(PLANTED), T]: smoothed noise, z-scored."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((2, n_times + 8))
    kernel = np.hanning(9) / np.hanning(9).sum()
    s = np.stack([np.convolve(r, kernel, mode="valid") for r in raw])[:, :n_times]
    return (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)


def vertex_series(hemi: str, n_times: int, seed: int = 0) -> np.ndarray:
    """[10242, T] float32: noise plus the planted signal in the planted parcels of ``hemi``."""
    labels = kmeans_labels()[hemi]
    rng = np.random.default_rng(seed + (0 if hemi == "left" else 1))
    data = rng.standard_normal((labels.size, n_times))
    signals = planted_signals(n_times, seed)
    for (h, value), k in PLANTED.items():
        if h == hemi:
            data[labels == value] += AMPLITUDE * signals[k]
    return data.astype(np.float32)


def write_atlas(folder: Path, kind: str = "annot", names: list[str] | None = None) -> list[Path]:
    """The k-means atlas as ``lh.kmeans.<kind>``/``rh.kmeans.<kind>`` (annot, label.gii or npy)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for h, short in (("left", "lh"), ("right", "rh")):
        labels = kmeans_labels()[h]
        parcel_names = names or [f"parcel{v:02d}" for v in range(1, N_PARCELS + 1)]
        path = folder / f"{short}.kmeans.{kind}"
        if kind == "annot":  # index 0 "unknown" (the background), then the parcels
            rng = np.random.default_rng(1)
            ctab = np.zeros((N_PARCELS + 1, 5), dtype=np.int32)
            ctab[:, :3] = rng.integers(0, 255, (N_PARCELS + 1, 3))
            ctab[:, 4] = ctab[:, 0] + ctab[:, 1] * 256 + ctab[:, 2] * 65536
            nib.freesurfer.write_annot(str(path), labels.astype(np.int32), ctab, ["unknown", *parcel_names])
        elif kind == "label.gii":
            table = nib.gifti.GiftiLabelTable()
            for key, name in enumerate(["???", *parcel_names]):
                lab = nib.gifti.GiftiLabel(key=key, red=0.5, green=0.5, blue=0.5, alpha=1.0)
                lab.label = name
                table.labels.append(lab)
            arr = nib.gifti.GiftiDataArray(
                labels.astype(np.int32), intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32"
            )
            nib.save(nib.gifti.GiftiImage(darrays=[arr], labeltable=table), str(path))
        elif kind == "npy":
            np.save(path, labels.astype(np.int32))
        else:
            raise ValueError(kind)
        out.append(path)
    return out


def write_gifti_run(
    path: Path,
    data: np.ndarray,
    tr: float | None = TR,
    one_array: bool = False,
    hemi_meta: str | None = None,
) -> Path:
    """``data`` [V, T] as a GIfTI time series: one array per time point (or one 2-D array), TimeStep in ms."""
    import nibabel as nib

    meta = {"TimeStep": f"{tr * 1000:g}"} if tr is not None else {}
    if hemi_meta:
        meta["AnatomicalStructurePrimary"] = hemi_meta
    if one_array:
        arrays = [
            nib.gifti.GiftiDataArray(
                data, intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32", meta=meta
            )
        ]
    else:
        arrays = [
            nib.gifti.GiftiDataArray(
                np.ascontiguousarray(data[:, t]),
                intent="NIFTI_INTENT_TIME_SERIES",
                datatype="NIFTI_TYPE_FLOAT32",
                meta=meta,
            )
            for t in range(data.shape[1])
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.gifti.GiftiImage(darrays=arrays), str(path))
    return path


def write_mgh_run(path: Path, data: np.ndarray, tr: float | None = TR) -> Path:
    """``data`` [V, T] as a FreeSurfer surface overlay ``V x 1 x 1 x T`` (TR in the header, ms)."""
    import nibabel as nib

    img = nib.MGHImage(data[:, None, None, :].astype(np.float32), np.eye(4))
    if tr is not None:
        img.header["tr"] = tr * 1000.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_bids_surface_run(
    root: Path,
    subject: str = "01",
    n_times: int = 60,
    hemis: tuple[str, ...] = ("left", "right"),
    tr: float | None = TR,
    sidecar_tr: float | None = None,
    seed: int = 0,
) -> list[Path]:
    """fMRIPrep-style ``sub-XX_task-rest_hemi-L_space-fsaverage5_bold.func.gii`` files under ``root``."""
    func = root / f"sub-{subject}" / "func"
    out = []
    for h in hemis:
        name = f"sub-{subject}_task-rest_hemi-{h[0].upper()}_space-fsaverage5_bold.func.gii"
        out.append(write_gifti_run(func / name, vertex_series(h, n_times, seed), tr=tr))
    if sidecar_tr is not None:
        sidecar = func / f"sub-{subject}_task-rest_space-fsaverage5_bold.json"
        sidecar.write_text(json.dumps({"RepetitionTime": sidecar_tr}))
    return out
