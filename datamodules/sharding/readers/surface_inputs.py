"""Which file holds which hemisphere, and the surface atlas and mesh files of surface fMRI.

Hemispheres are read from file names (BIDS ``hemi-L``/``hemi-R``, FreeSurfer ``lh.``/``rh.``,
HCP ``.L.``/``.R.``). ``--surface-atlas`` and ``--surface-mesh`` give one file per hemisphere
(named, or left then right) or one path with ``{hemi}`` (``lh``/``rh``, else ``L``/``R``). Atlases:
FreeSurfer ``.annot`` (``nibabel.freesurfer.read_annot``; ``-1``: in no label), ``.label.gii``
(its label table names the parcels) or a per-vertex ``.npy`` (names ``parcel-<value>``). Meshes:
nilearn's shipped fsaverage5 (pial), another fsaverage from a FreeSurfer subjects folder, or
files read by ``nilearn.surface.load_surf_mesh`` (``lh.pial``, ``*.surf.gii``). Every mismatch of
vertex counts is an error naming the run file and both counts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError, ShardOptions

HEMIS = ("left", "right")
SHORT = {"left": ("lh", "L"), "right": ("rh", "R")}
# a hemisphere in a file name: BIDS hemi-L, FreeSurfer lh. (or .lh. / _lh), HCP .L.
_NAME_HEMI = [
    (re.compile(r"(?:^|[_.])hemi-([LR])(?=[_.]|$)"), {"L": "left", "R": "right"}),
    (re.compile(r"(?:^|[_.])(lh|rh)(?=[_.]|$)"), {"lh": "left", "rh": "right"}),
    (re.compile(r"\.([LR])(?=\.)"), {"L": "left", "R": "right"}),
]
# nilearn ships this mesh in its wheel; the others come from a FreeSurfer subjects folder
_SHIPPED = "fsaverage5"
_FSAVERAGE_VERTICES = {
    642: "fsaverage3",
    2562: "fsaverage4",
    10242: "fsaverage5",
    40962: "fsaverage6",
    163842: "fsaverage",
}


@dataclass
class Hemisphere:
    """One hemisphere of a run: its file and ``data`` [vertices, time] float32."""

    hemi: str
    path: Path
    data: np.ndarray
    tr_ms: float | None  # from the file's own metadata


def hemisphere_of(name: str) -> str:
    """``left``/``right`` from a file name (``hemi-L``, ``lh.``, ``.L.``), ``""`` when it does not say."""
    for rx, table in _NAME_HEMI:
        if m := rx.search(name):
            return table[m.group(1)]
    return ""


def without_hemisphere(stem: str) -> str:
    """``stem`` without its hemisphere token, so both hemispheres of a run share one recording id."""
    for rx, _ in _NAME_HEMI:
        if m := rx.search(stem):
            start, end = m.span()
            if start == 0 and end < len(stem):  # "lh.run" -> "run"
                return stem[end + 1 :]
            return stem[:start] + stem[end:]
    return stem


# -- the atlas ----------------------------------------------------------------------------------


def atlas_for(h: Hemisphere, options: ShardOptions) -> tuple[np.ndarray, dict[int, str], str]:
    """(per-vertex values [V], value -> name, atlas path) for hemisphere ``h``, checked against it."""
    path = per_hemisphere(options.surface_atlas, "--surface-atlas", h, options.surface_atlas)
    values, names = _load_atlas(path)
    if values.shape[0] != h.data.shape[0]:
        raise ShardError(
            str(h.path),
            f"{h.data.shape[0]} vertices, but the {h.hemi}-hemisphere surface atlas {path} has "
            f"{values.shape[0]}: the run and the atlas must be on the same mesh",
        )
    return values, names, path


def per_hemisphere(given: list[str], flag: str, h: Hemisphere, shown: list[str]) -> str:
    """The file of ``given`` (two files, one, or one path with ``{hemi}``) for ``h``'s hemisphere."""
    if len(given) == 1 and "{hemi}" in given[0]:
        tried = [given[0].replace("{hemi}", short) for short in SHORT[h.hemi]]
        for path in tried:
            if Path(path).expanduser().is_file():
                return str(Path(path).expanduser())
        raise ShardError(
            str(h.path), f"no {h.hemi}-hemisphere file for {flag} {given[0]}: tried {', '.join(tried)}"
        )
    named = {hemisphere_of(Path(p).name): p for p in given}
    if h.hemi in named:
        path = named[h.hemi]
    elif len(given) == 2 and "" in named:  # the names do not say: left then right
        path = given[HEMIS.index(h.hemi)]
    elif len(given) == 1 and "" in named and h.hemi == "left":
        path = given[0]
    else:
        raise ShardError(
            str(h.path),
            f"no {h.hemi}-hemisphere file in {flag} {' '.join(shown)}: give one per hemisphere "
            f"(lh./rh. or hemi-L/hemi-R in the names, or left then right, or one path with {{hemi}})",
        )
    if not Path(path).expanduser().is_file():
        raise ShardError(path, f"no such file ({flag})")
    return str(Path(path).expanduser())


@lru_cache(maxsize=8)
def _load_atlas(path: str) -> tuple[np.ndarray, dict[int, str]]:
    """Per-vertex label values [V] (int64; -1: in no label) and value -> parcel name."""
    import nibabel as nib

    name = path.lower()
    try:
        if name.endswith(".annot"):
            values, _, names = nib.freesurfer.read_annot(path)
            table = {i: n.decode() if isinstance(n, bytes) else str(n) for i, n in enumerate(names)}
            return np.asarray(values, dtype=np.int64), table
        if name.endswith(".gii"):
            img = nib.load(path)
            values = np.asarray(img.darrays[0].data).reshape(-1)
            return np.rint(values).astype(np.int64), {
                int(k): str(v) for k, v in img.labeltable.get_labels_as_dict().items()
            }
        if name.endswith(".npy"):
            values = np.load(path, allow_pickle=False).reshape(-1)
            return np.rint(values).astype(np.int64), {}
    except ShardError:
        raise
    except Exception as exc:  # nibabel and numpy raise several types for bad files
        raise ShardError(path, f"cannot be read as a surface atlas: {exc}") from exc
    raise ShardError(
        path, "unsupported surface atlas: give a FreeSurfer .annot, a .label.gii or a per-vertex .npy"
    )


# -- the mesh -----------------------------------------------------------------------------------


def meshes_for(hemis: list[Hemisphere], options: ShardOptions):
    """{hemisphere: nilearn mesh}, the mesh's name and the positions' frame; vertex counts checked."""
    from nilearn.surface import load_surf_mesh

    given = options.surface_mesh
    n = hemis[0].data.shape[0]
    name = given[0] if len(given) == 1 and "{hemi}" not in given[0] and not Path(given[0]).exists() else None
    if name is not None and not re.fullmatch(r"fsaverage\d?", name):
        raise ShardError(name, "--surface-mesh: no such file, and no mesh name (fsaverage5, fsaverage, ...)")
    if not given:
        name = _FSAVERAGE_VERTICES.get(n)
        if name is None:
            raise ShardError(
                str(hemis[0].path),
                f"{n} vertices: no fsaverage mesh has that many (fs_LR 32k has 32492); give the surface "
                "files with --surface-mesh (lh.pial rh.pial, *.surf.gii, or one path with {hemi})",
            )
    if name is not None:
        meshes = {h.hemi: _named_mesh(name, h) for h in hemis}
        label, frame = name, "fsaverage"
    else:
        meshes, paths = {}, {}
        for h in hemis:
            paths[h.hemi] = per_hemisphere(given, "--surface-mesh", h, given)
            try:
                meshes[h.hemi] = load_surf_mesh(paths[h.hemi])
            except Exception as exc:  # nilearn raises ValueError, nibabel several types
                raise ShardError(paths[h.hemi], f"cannot be read as a surface mesh: {exc}") from exc
        label = {h: Path(p).name for h, p in paths.items()}
        frame = "fsaverage" if all("fsaverage" in p for p in paths.values()) else "mesh"
    for h in hemis:
        if meshes[h.hemi].n_vertices != h.data.shape[0]:
            raise ShardError(
                str(h.path),
                f"{h.data.shape[0]} vertices, but the {h.hemi}-hemisphere mesh ({label if isinstance(label, str) else label[h.hemi]}) "
                f"has {meshes[h.hemi].n_vertices}: the run and the mesh must match (--surface-mesh)",
            )
    return meshes, label, frame


def _named_mesh(name: str, h: Hemisphere):
    """fsaverage5 from nilearn's wheel (pial); another fsaverage from a FreeSurfer subjects folder."""
    from nilearn.surface import load_surf_mesh

    if name == _SHIPPED:
        return _fsaverage5()[h.hemi]
    folders = [
        os.environ.get("SUBJECTS_DIR"),
        os.environ.get("FREESURFER_HOME") and f"{os.environ['FREESURFER_HOME']}/subjects",
    ]
    for folder in filter(None, folders):
        path = Path(folder) / name / "surf" / f"{SHORT[h.hemi][0]}.pial"
        if path.is_file():
            return load_surf_mesh(str(path))
    raise ShardError(
        str(h.path),
        f"the {name} mesh ({h.data.shape[0]} vertices) does not ship with nilearn (only {_SHIPPED} does) and "
        f"is not in $SUBJECTS_DIR or $FREESURFER_HOME/subjects: give its files, --surface-mesh "
        f"{name}/surf/lh.pial {name}/surf/rh.pial",
    )


@lru_cache(maxsize=1)
def _fsaverage5() -> dict:
    from nilearn.datasets import load_fsaverage

    pial = load_fsaverage(_SHIPPED)["pial"]
    return {hemi: pial.parts[hemi].loaded() for hemi in HEMIS}
