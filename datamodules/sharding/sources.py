"""Find the recordings behind the SOURCE arguments of ``neurotrain shard``.

A SOURCE is a BIDS root (it holds ``dataset_description.json``), a plain folder (searched
recursively for supported files), one file, or ``example:NAME`` for an example dataset of
``neurotrain.datamodules.sharding.examples`` (fetched into the cache on first use). Each recording found becomes a ``SourceItem``
with its format, its kind (``signal`` read through MNE, ``fmri``/``anat`` read through
nibabel: ``--modality fmri|anat`` when given, else the BIDS datatype, else the image's shape;
on a BIDS root ``--modality anat`` keeps only its ``anat/*_T1w`` images and ``fmri`` its runs),
the BIDS-style identifiers we can recover, and a stable recording id used to name
its shards. The list is sorted, so the same inputs always give the same shards.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from neurotrain.datamodules.sharding.options import ShardError, ShardOptions

SIGNAL_FORMATS: dict[str, str] = {
    ".edf": "edf",
    ".bdf": "bdf",
    ".gdf": "gdf",
    ".fif": "fif",
    ".fif.gz": "fif",
    ".vhdr": "brainvision",
    ".set": "eeglab",
    ".nwb": "nwb",
}
VOLUME_FORMATS: dict[str, str] = {".nii": "nifti", ".nii.gz": "nifti", ".mgz": "mgz", ".mgh": "mgz"}
# surface fMRI (and .mgz/.mgh of shape V x 1 x 1 x T)
SURFACE_FORMATS: dict[str, str] = {".func.gii": "gifti"}
VOLUME_MODALITIES = ("fmri", "anat")  # --modality values read through nibabel; the others through MNE

# FIF files that hold something other than a continuous recording (MNE naming conventions).
_NON_RAW_FIF = re.compile(r"[-_](ica|epo|ave|cov|fwd|inv|trans|sol|src|bem|proj|tfr)\.fif(\.gz)?$")
# Volumes that are labels or masks, not images to learn from (only skipped in folder scans).
_LABEL_VOLUME = re.compile(r"(mask|atlas|label|aseg|aparc|dseg|probseg)", re.IGNORECASE)
EXAMPLE_PREFIX = "example:"
_ENTITY = {k: re.compile(rf"(?:^|[_/]){k}-([A-Za-z0-9]+)") for k in ("sub", "ses", "task", "run")}


@dataclass(frozen=True)
class SourceItem:
    """One recording to shard."""

    path: Path  # absolute path of the file
    source: str  # path relative to the SOURCE it came from (recorded in the shards)
    fmt: str  # "edf", "fif", "nifti", ...
    kind: str  # "signal" | "fmri" | "anat"
    recording_id: str
    subject: str
    session: str | None
    task: str | None
    run: str | None
    dataset: str
    bids_root: Path | None = None  # set when the file lives in a BIDS dataset
    bids_datatype: str | None = None  # "eeg" | "meg" | "ieeg" | "func" | "anat"
    # a surface fMRI run: (hemisphere, file) pairs, ("left", lh file) then ("right", rh file), one
    # sample (readers/fmri_surface); hemisphere "" when the name does not say it. Empty otherwise.
    hemispheres: tuple[tuple[str, Path], ...] = ()


def file_format(path: Path) -> str | None:
    """Format name from the file extension, or None when unsupported."""
    name = path.name.lower()
    for table in (SIGNAL_FORMATS, VOLUME_FORMATS, SURFACE_FORMATS):
        for ext in sorted(table, key=len, reverse=True):
            if name.endswith(ext):
                return table[ext]
    return None


def discover(sources: list[str | Path], options: ShardOptions) -> list[SourceItem]:
    """All recordings under ``sources``, sorted by recording id (ids are made unique)."""
    items: list[SourceItem] = []
    forced = options.modality if options.modality in VOLUME_MODALITIES else None
    for src in sources:
        if str(src).startswith(EXAMPLE_PREFIX):  # "example:eeg" -> the fetched example dataset
            from neurotrain.datamodules.sharding.examples import fetch

            src = fetch(str(src)[len(EXAMPLE_PREFIX) :])
        path = Path(src).expanduser().resolve()
        if not path.exists():
            raise ShardError(str(src), "no such file or folder")
        if path.is_dir() and (path / "dataset_description.json").exists():
            items += _bids_items(path, forced)
        elif path.is_dir():
            items += _folder_items(path, forced)
        else:
            if file_format(path) is None:
                formats = set(SIGNAL_FORMATS) | set(VOLUME_FORMATS) | set(SURFACE_FORMATS)
                supported = ", ".join(sorted(formats))
                raise ShardError(str(path), f"unsupported file type; supported: {supported}")
            items.append(_make_item(path, path.parent, path.parent.name, None, None, forced))
    from neurotrain.datamodules.sharding.readers.fmri_surface import pair_hemispheres

    items = pair_hemispheres(items)  # the lh and rh files of a surface run: one item
    return _unique_ids(sorted(items, key=lambda it: (it.recording_id, str(it.path))))


def volume_kind(path: Path) -> str:
    """``fmri`` for a 4-D image (time last), ``anat`` for a 3-D one (reads the header only)."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:  # nibabel raises several types for bad headers
        raise ShardError(str(path), f"cannot be read as a NIfTI/MGZ image: {exc}") from exc
    if len(shape) == 4 and shape[3] > 1:
        return "fmri"
    if len(shape) in (3, 4):
        return "anat"
    raise ShardError(str(path), f"image has shape {shape}; expected 3-D (anatomy) or 4-D (fMRI)")


def _bids_items(root: Path, forced: str | None) -> list[SourceItem]:
    import mne_bids

    name = _bids_name(root)
    items = []
    paths = mne_bids.find_matching_paths(
        root,
        datatypes=["eeg", "meg", "ieeg"],
        suffixes=["eeg", "meg", "ieeg"],
        extensions=[".edf", ".bdf", ".gdf", ".fif", ".vhdr", ".set"],
    )
    for bp in paths:
        fpath = Path(bp.fpath)
        if _in_derivatives(fpath, root) or forced in VOLUME_MODALITIES:  # --modality fmri|anat: images only
            continue
        items.append(_make_item(fpath, root, name, root, bp.datatype, forced))
    for pattern, datatype in (
        ("func/*_bold.nii*", "func"),
        ("func/*_bold.func.gii", "func"),
        ("anat/*_T1w.nii*", "anat"),
    ):
        if forced in VOLUME_MODALITIES and forced != {"func": "fmri", "anat": "anat"}[datatype]:
            continue  # a BIDS root with both: --modality anat shards its T1s, fmri its runs
        for fpath in sorted(root.glob(f"sub-*/{pattern}")) + sorted(root.glob(f"sub-*/ses-*/{pattern}")):
            items.append(_make_item(fpath, root, name, root, datatype, forced))
    return items


def _folder_items(folder: Path, forced: str | None) -> list[SourceItem]:
    items = []
    for fpath in sorted(p for p in folder.rglob("*") if p.is_file()):
        fmt = file_format(fpath)
        if fmt is None or _NON_RAW_FIF.search(fpath.name.lower()):
            continue
        if fmt in ("nifti", "mgz") and _LABEL_VOLUME.search(fpath.name):
            continue
        items.append(_make_item(fpath, folder, folder.name, None, None, forced))
    return items


def _make_item(
    fpath: Path,
    root: Path,
    dataset: str,
    bids_root: Path | None,
    datatype: str | None,
    forced: str | None = None,
) -> SourceItem:
    from neurotrain.datamodules.sharding.readers.fmri_surface import is_surface_overlay
    from neurotrain.datamodules.sharding.readers.surface_inputs import hemisphere_of, without_hemisphere

    fmt = file_format(fpath) or "unknown"
    rel = fpath.relative_to(root).as_posix() if fpath.is_relative_to(root) else fpath.name
    ents = {k: (m.group(1) if (m := rx.search(rel)) else None) for k, rx in _ENTITY.items()}
    stem = _strip_ext(fpath.name)
    kind, hemispheres = "signal", ()
    if fmt == "gifti" or (fmt == "mgz" and is_surface_overlay(fpath)):
        kind, hemispheres, stem = "fmri", ((hemisphere_of(fpath.name), fpath),), without_hemisphere(stem)
    elif fmt in ("nifti", "mgz"):  # a forced modality wins; the reader refuses an image of the wrong shape
        kind = forced or {"func": "fmri", "anat": "anat"}.get(datatype or "", "") or volume_kind(fpath)
    return SourceItem(
        path=fpath,
        source=rel,
        fmt=fmt,
        kind=kind,
        recording_id=re.sub(r"[^A-Za-z0-9_-]+", "_", stem),
        subject=ents["sub"] or stem,
        session=ents["ses"],
        task=ents["task"],
        run=ents["run"],
        dataset=dataset,
        bids_root=bids_root,
        bids_datatype=datatype,
        hemispheres=hemispheres,
    )


def _unique_ids(items: list[SourceItem]) -> list[SourceItem]:
    """Append a short hash of the path to ids that collide (same file name in two folders)."""
    counts: dict[str, int] = {}
    for it in items:
        counts[it.recording_id] = counts.get(it.recording_id, 0) + 1
    out = []
    for it in items:
        if counts[it.recording_id] > 1:
            digest = hashlib.sha256(f"{it.dataset}/{it.source}".encode()).hexdigest()[:8]
            it = SourceItem(**{**it.__dict__, "recording_id": f"{it.recording_id}-{digest}"})
        out.append(it)
    return sorted(out, key=lambda it: it.recording_id)


def _strip_ext(name: str) -> str:
    for ext in (".nii.gz", ".fif.gz", ".func.gii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name.rsplit(".", 1)[0]


def _bids_name(root: Path) -> str:
    try:
        name = json.loads((root / "dataset_description.json").read_text()).get("Name")
    except (OSError, ValueError, AttributeError):
        return root.name
    return name.strip() if isinstance(name, str) and name.strip() else root.name


def _in_derivatives(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(p in ("derivatives", "sourcedata", "code") for p in parts)
