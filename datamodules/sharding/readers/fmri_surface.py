"""Read cortical-surface fMRI runs: parcel means over a surface atlas, through nilearn's surface API.

A surface run is a time series per mesh vertex: GIfTI ``*.func.gii`` (one data array per time
point, or one 2-D ``[vertices, time]`` array) or FreeSurfer ``.mgz``/``.mgh`` (nibabel; shape
``vertices x 1 x 1 x time``), on a mesh such as fsaverage5 (10242 vertices per hemisphere),
fsaverage (163842) or fs_LR 32k (32492). The two hemispheres of one run (``hemi-L``/``hemi-R``,
``lh.``/``rh.`` in the names) are ONE sample: the left parcels then the right ones, names prefixed
``L_``/``R_`` unless the atlas's names already say the hemisphere. A run with one hemisphere is
sharded with what it has, and a warning says so.

The parcellation is ``--surface-atlas``: one file per hemisphere (FreeSurfer ``.annot`` through
``nibabel.freesurfer.read_annot``, a ``.label.gii``, or a per-vertex ``.npy``), or one path holding
``{hemi}`` (``lh``/``rh``, else ``L``/``R``). ``--atlas-background`` (0) is not a parcel, nor is an
annotation's ``-1`` (vertices in no label). Parcel means come from
``nilearn.maskers.SurfaceLabelsMasker`` on a ``nilearn.surface.SurfaceImage``. The masker pools a
label value across both hemispheres (one ``labels_img`` for the whole ``PolyMesh``), and left and
right atlases reuse the same values (``1`` is a left and a right parcel), so each hemisphere's
parcels get their own codes in the label image we give it. Parcel centroids are the same masker's
means of the mesh's vertex coordinates (the same vertices as the series, by construction), in
metres; the mesh is ``--surface-mesh`` or, for 10242 vertices, nilearn's shipped fsaverage5 pial.
Which file serves which hemisphere, and reading the atlas and mesh files: ``surface_inputs``.

TR: ``--tr``, else a BIDS sidecar (``RepetitionTime``, s), else the file (GIfTI ``TimeStep`` in
ms, MGH ``tr`` in ms); none is an error naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.surface_inputs import (
    HEMIS,
    SHORT,
    Hemisphere,
    atlas_for,
    meshes_for,
    without_hemisphere,
)
from neurotrain.datamodules.sharding.readers.volumes import ParcelSeries, _normalise_fmri
from neurotrain.datamodules.sharding.sources import SourceItem

# a parcel name that says its hemisphere: L_V1_ROI, lh.bankssts, 7Networks_LH_Vis_1, Left-...
_PARCEL_HEMI = re.compile(r"(?:^|[_.\- ])(L|R|lh|rh|LH|RH|Left|Right|left|right)(?=[_.\- ]|$)")


def read_surface_fmri(item: SourceItem, options: ShardOptions) -> ParcelSeries:
    """Parcel means of one surface run, left parcels then right; ``ShardError`` names the file.

    Returns ``ParcelSeries`` (``data`` [parcels, time], ``positions`` [parcels, 3] in metres).
    """
    from nilearn.maskers import SurfaceLabelsMasker
    from nilearn.surface import PolyMesh, SurfaceImage

    hemis = [_read_run(path, hemi) for hemi, path in item.hemispheres]
    if not options.surface_atlas:
        raise ShardError(
            str(hemis[0].path),
            "surface fMRI needs a surface parcellation: pass --surface-atlas lh.ATLAS.annot rh.ATLAS.annot "
            "(or .label.gii / per-vertex .npy files, or one path with {hemi})",
        )
    if len(hemis) == 2 and hemis[0].data.shape[1] != hemis[1].data.shape[1]:
        raise ShardError(
            str(hemis[1].path),
            f"{hemis[1].data.shape[1]} time points, but the other hemisphere {hemis[0].path.name} has "
            f"{hemis[0].data.shape[1]}: the two hemispheres of a run must hold the same time points",
        )
    tr = _repetition_time(hemis, options)
    atlases = {h.hemi: atlas_for(h, options) for h in hemis}
    meshes, mesh_name, frame = meshes_for(hemis, options)
    codes: dict[str, np.ndarray] = {}
    parcels: list[tuple[str, int, str]] = []  # (hemisphere, atlas value, name) of code k + 1
    for h in hemis:
        values, names, atlas_path = atlases[h.hemi]
        code = np.zeros(values.shape, dtype=np.int32)
        for value in np.unique(values[values >= 0]):
            if value == int(options.atlas_background):
                continue
            parcels.append((h.hemi, int(value), names.get(int(value), f"parcel-{int(value)}")))
            code[values == value] = len(parcels)
        if not code.any():
            raise ShardError(atlas_path, "the surface atlas holds no parcel other than the background")
        codes[h.hemi] = code
    mesh = PolyMesh(**{h.hemi: meshes[h.hemi] for h in hemis})
    masker = SurfaceLabelsMasker(
        labels_img=SurfaceImage(mesh=mesh, data=codes), background_label=0, standardize=None
    ).fit()
    run = SurfaceImage(mesh=mesh, data={h.hemi: h.data for h in hemis})
    series = np.asarray(masker.transform(run), dtype=np.float32).T  # [P, T]
    xyz = {h.hemi: np.asarray(meshes[h.hemi].coordinates, dtype=np.float64) for h in hemis}
    centroids = np.asarray(masker.transform(SurfaceImage(mesh=mesh, data=xyz))).T / 1000.0  # [P, 3] m
    order = [int(masker.region_ids_[k]) - 1 for k in range(series.shape[0])]  # column -> parcel
    series, how = _normalise_fmri(series, options.fmri_normalize)
    chosen = [parcels[k] for k in order]
    preprocessing: dict = {
        "parcellation": {h: Path(atlases[h][2]).name for h in atlases},
        "surface_mesh": mesh_name,
        "hemispheres": [h.hemi for h in hemis],
        "surface_files": {h.hemi: h.path.name for h in hemis},
        "normalisation": how,
    }
    if len(hemis) == 1:
        preprocessing["warnings"] = [
            f"only the {hemis[0].hemi} hemisphere: no {_other(hemis[0].hemi)}-hemisphere file of this run "
            "was found, its parcels are missing from the sample"
        ]
    return ParcelSeries(
        data=series,
        tr=tr,
        names=_parcel_names(chosen, {h: atlases[h][2] for h in atlases}),
        positions=centroids.astype(np.float32),
        position_frame=frame,
        preprocessing=preprocessing,
    )


# -- discovery: called by sources ---------------------------------------------------------------


def is_surface_overlay(path: Path) -> bool:
    """Whether a ``.mgz``/``.mgh`` holds surface data (``vertices x 1 x 1 [x time]``; header only)."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception:  # an unreadable file is reported by the volume reader
        return False
    return len(shape) >= 3 and shape[0] > 1 and shape[1] == 1 and shape[2] == 1


def pair_hemispheres(items: list[SourceItem]) -> list[SourceItem]:
    """The left and right files of one surface run (same folder, same id) as one item, left first."""
    groups: dict[tuple, list[SourceItem]] = {}
    out: list[SourceItem] = []
    for it in items:
        if it.hemispheres and it.hemispheres[0][0]:
            groups.setdefault((it.dataset, str(it.path.parent), it.recording_id, it.fmt), []).append(it)
        else:
            out.append(it)
    for group in groups.values():
        by_hemi = {it.hemispheres[0][0]: it for it in group}
        if len(group) != 2 or len(by_hemi) != 2:
            out += group
            continue
        left, right = by_hemi["left"], by_hemi["right"]
        pairs = (left.hemispheres[0], right.hemispheres[0])
        out.append(SourceItem(**{**left.__dict__, "hemispheres": pairs}))
    return out


# -- the run ------------------------------------------------------------------------------------


def _read_run(path: Path, hemi: str) -> Hemisphere:
    """One hemisphere's file as [vertices, time]; checks it is a time series."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, ExpatError, OSError ...
        raise ShardError(str(path), f"cannot be read as a GIfTI/MGH surface file: {exc}") from exc
    tr_ms = None
    if isinstance(img, nib.gifti.GiftiImage):
        if not img.darrays:
            raise ShardError(str(path), "the GIfTI holds no data array")
        arrays = [np.asarray(d.data) for d in img.darrays]
        if len(arrays) == 1:
            data = arrays[0].reshape(arrays[0].shape[0], -1)  # one [V] or [V, T] array
        elif len({a.shape for a in arrays}) == 1 and arrays[0].ndim == 1:
            data = np.stack(arrays, axis=1)  # one [V] array per time point
        else:
            raise ShardError(str(path), "the GIfTI data arrays are not one time series (shapes differ)")
        for meta in [img.darrays[0].meta, img.meta]:
            if meta and meta.get("TimeStep"):
                tr_ms = _number(meta.get("TimeStep"))
                break
        hemi = hemi or _gifti_hemisphere(img)
    else:
        shape = img.shape
        if not (len(shape) >= 3 and shape[1] == 1 and shape[2] == 1):
            raise ShardError(str(path), f"shape {shape} is not surface data (vertices x 1 x 1 x time)")
        data = np.asarray(img.dataobj).reshape(shape[0], -1)
        tr = float(img.header["tr"]) if "tr" in img.header else 0.0
        tr_ms = tr if tr > 0 else None
    if not hemi:
        raise ShardError(
            str(path),
            "cannot tell which hemisphere this surface file holds: name it with hemi-L/hemi-R (BIDS) or "
            "lh./rh. (FreeSurfer)",
        )
    if data.shape[1] < 2:
        raise ShardError(
            str(path),
            f"{data.shape[1]} time point ({data.shape[0]} vertices): a surface fMRI run needs at least 2 "
            "(a single map, such as a contrast or a thickness, is no time series)",
        )
    return Hemisphere(hemi, path, data.astype(np.float32), tr_ms)


def _gifti_hemisphere(img) -> str:
    """``AnatomicalStructurePrimary`` (CortexLeft / CortexRight) of a GIfTI, ``""`` without it."""
    for meta in [img.meta] + [d.meta for d in img.darrays[:1]]:
        value = str((meta or {}).get("AnatomicalStructurePrimary", "")).lower()
        if "left" in value or "right" in value:
            return "left" if "left" in value else "right"
    return ""


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def _repetition_time(hemis: list[Hemisphere], options: ShardOptions) -> float:
    """``--tr``, else the BIDS sidecar's ``RepetitionTime``, else the file's own (ms); the same in both."""
    if options.tr is not None:
        return float(options.tr)
    found = []
    for h in hemis:
        tr = _sidecar_tr(h.path)
        tr = tr if tr is not None else (h.tr_ms / 1000.0 if h.tr_ms else None)
        if tr is None:
            raise ShardError(
                str(h.path),
                "no repetition time: no GIfTI TimeStep / MGH tr in the file and no BIDS sidecar "
                f"({_sidecars(h.path)[0].name}) with RepetitionTime; pass --tr SECONDS",
            )
        found.append(tr)
    if len(found) == 2 and not np.isclose(found[0], found[1]):
        raise ShardError(str(hemis[1].path), f"TR {found[1]} s, but {hemis[0].path.name} says {found[0]} s")
    return found[0]


def _sidecars(path: Path) -> list[Path]:
    stem = re.sub(r"(\.func)?\.(gii|mgz|mgh)$", "", path.name)
    return [path.with_name(s + ".json") for s in dict.fromkeys([stem, without_hemisphere(stem)])]


def _sidecar_tr(path: Path) -> float | None:
    for sidecar in _sidecars(path):
        if sidecar.is_file():
            try:
                return _number(json.loads(sidecar.read_text())["RepetitionTime"])
            except (KeyError, ValueError, TypeError) as exc:
                raise ShardError(str(sidecar), f"holds no usable RepetitionTime: {exc}") from exc
    return None


def _parcel_names(parcels: list[tuple[str, int, str]], atlas_paths: dict[str, str]) -> list[str]:
    """Parcel names, ``L_``/``R_`` prefixed unless the atlas names say the hemisphere (and are unique)."""
    out = []
    for hemi, _, name in parcels:
        says = {"l": "left", "lh": "left", "left": "left", "r": "right", "rh": "right", "right": "right"}
        m = _PARCEL_HEMI.search(name)
        if m and says[m.group(1).lower()] != hemi:
            raise ShardError(
                atlas_paths[hemi],
                f"parcel {name!r} names the {says[m.group(1).lower()]} hemisphere, but this atlas is used "
                f"for the {hemi} one: are the left and right atlas files swapped?",
            )
        out.append(name if m else f"{SHORT[hemi][1]}_{name}")
    if len(set(out)) != len(out):  # names that say the hemisphere but repeat: prefix them all
        out = [
            n if n.startswith(("L_", "R_")) else f"{SHORT[h][1]}_{n}"
            for n, (h, _, _) in zip(out, parcels, strict=True)
        ]
    return out


def _other(hemi: str) -> str:
    return HEMIS[1 - HEMIS.index(hemi)]
