"""How fast `neurotrain shard` turns volume fMRI runs into parcel shards, against nilearn's masker alone.

Data: a synthetic BIDS fMRI dataset written here with nibabel (``tests/synthetic_bids_fmri.py``
writes the same layout, but on a fixed 8 x 8 x 6 grid): ``--subjects`` runs (default 4) of
``--grid`` voxels (default 40 x 48 x 40 at 3 mm) x ``--trs`` volumes (default 200, TR 2 s),
float32 ``.nii.gz``, each with its sidecar, ``events.tsv`` and fMRIPrep-style
``*_desc-confounds_timeseries.tsv`` (six motion columns + ``trans_x_derivative1``); a label atlas
of ``--parcels`` (default 50) Voronoi parcels of the brain ellipsoid on the runs' grid beside the
root. Written once into the cache (``$NEUROTRAIN_CACHE/bench/``) and reused.

Baseline, measured in the same run: per run, ``NiftiLabelsMasker(...).fit_transform(run,
confounds=...)`` with exactly the arguments ``readers/volumes.py`` gives it at the shard defaults
(``background_label=0``, ``resampling_target="data"``, ``standardize="zscore_sample"``, no
detrend or filters, ``t_r`` from the sidecar, ``keep_masked_labels=False``), the confounds read
from the table beside the run (the same columns, ``n/a`` -> 0). For reference, ``nibabel_load_s``
is decompressing the runs alone (``np.asarray(nib.load(run).dataobj)``). Then
``shard_dataset([root], out, atlas=atlas)`` (1 worker, and 2 workers for reference) on the same
root: discovery, the same masker, events, statistics, float16 ``.npy``, tar writing, sha256,
manifest. Each timing is the best of ``--repeats`` warm runs.

    python benchmarks/fmri_shard.py                        # ~1-2 minutes on 2 cores (first run
                                                           # also writes the data, ~30 s)
    python benchmarks/fmri_shard.py --scale 2 --repeats 5  # twice the subjects
    python benchmarks/fmri_shard.py --profile 25           # + top 25 functions of a shard run

``ratio_vs_nilearn`` is shard time (1 worker) / masker time (aim <= 1.5). The last line printed is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from timing import best_of

TR = 2.0
VOXEL_MM = 3.0
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


@dataclass(frozen=True)
class FmriData:
    root: Path  # BIDS root
    atlas: Path
    runs: list[Path]
    grid: tuple[int, int, int]
    trs: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--scale", type=int, default=1, help="multiply --subjects")
    parser.add_argument("--grid", type=int, nargs=3, default=(40, 48, 40), metavar=("X", "Y", "Z"))
    parser.add_argument("--trs", type=int, default=200, help="volumes per run")
    parser.add_argument("--parcels", type=int, default=50)
    parser.add_argument("--no-2-workers", action="store_true", help="skip the 2-worker reference")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the top N of a profiled shard run"
    )
    args = parser.parse_args()

    from neurotrain.datamodules.sharding import shard_dataset

    data = ensure_fmri_dataset(args.subjects * args.scale, tuple(args.grid), args.trs, args.parcels)
    nbytes = sum(int(np.prod(data.grid)) * data.trs * 4 for _ in data.runs)  # float32 voxels
    mb = nbytes / 1e6

    def load_all() -> None:
        import nibabel as nib

        for run in data.runs:
            np.asarray(nib.load(run).dataobj)

    def masker_all() -> None:
        for run in data.runs:
            masker_series(run, data.atlas)

    def shard(workers: int):
        def run() -> None:
            out = Path(tempfile.mkdtemp(prefix="nt-bench-fmri-"))
            try:
                shard_dataset([data.root], out, atlas=str(data.atlas), workers=workers)
            finally:
                shutil.rmtree(out)

        return run

    masker_all()  # warm the page cache and the imports
    check_same_series(data)  # also a warm shard run
    t_load = best_of(args.repeats, load_all)
    t_masker = best_of(args.repeats, masker_all)
    t_shard1 = best_of(args.repeats, shard(1))
    t_shard2 = None if args.no_2_workers else best_of(args.repeats, shard(2))
    result = {
        "runs": len(data.runs),
        "grid": list(data.grid),
        "trs": data.trs,
        "parcels": args.parcels,
        "voxels_mb_float32": round(mb, 1),
        "repeats": args.repeats,
        "nibabel_load_s": round(t_load, 3),
        "masker_s": round(t_masker, 3),
        "shard_1_worker_s": round(t_shard1, 3),
        "ratio_vs_nilearn": round(t_shard1 / t_masker, 3),
        "load_share_of_masker": round(t_load / t_masker, 3),
    }
    print(f"{len(data.runs)} runs of {data.grid} x {data.trs} TRs ({mb:.0f} MB), {args.parcels} parcels")
    print(f"nibabel load (decompress) alone:     {t_load:.2f} s")
    print(f"NiftiLabelsMasker.fit_transform:     {t_masker:.2f} s (baseline)")
    print(f"neurotrain shard, 1 worker:          {t_shard1:.2f} s, ratio {t_shard1 / t_masker:.2f}")
    if t_shard2 is not None:
        result["shard_2_workers_s"] = round(t_shard2, 3)
        result["ratio_vs_nilearn_2_workers"] = round(t_shard2 / t_masker, 3)
        print(f"neurotrain shard, 2 workers:         {t_shard2:.2f} s, ratio {t_shard2 / t_masker:.2f}")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(shard(1))
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.profile)
        print(text.getvalue(), file=sys.stderr)
    print(json.dumps(result))


# ----------------------------------------------------------------------------- the baseline
def read_confounds(run: Path) -> np.ndarray | None:
    """The table beside the run, the columns sharding regresses by default (motion + their
    ``_derivative1`` where present), ``n/a`` -> 0: what a user passes to the masker."""
    import pandas as pd

    table_path = run.with_name(run.name.split("_bold")[0] + "_desc-confounds_timeseries.tsv")
    if not table_path.is_file():
        return None
    table = pd.read_csv(table_path, sep="\t", na_values=["n/a"])
    columns = [c for c in MOTION if c in table.columns]
    columns += [f"{c}_derivative1" for c in list(columns) if f"{c}_derivative1" in table.columns]
    return np.nan_to_num(table[columns].to_numpy(dtype=np.float64))


def masker_series(run: Path, atlas: Path) -> np.ndarray:
    """``[T, P]``: the run through ``NiftiLabelsMasker`` with the shard defaults' arguments."""
    from nilearn.maskers import NiftiLabelsMasker

    tr = float(json.loads(run.with_name(run.name.replace(".nii.gz", ".json")).read_text())["RepetitionTime"])
    masker = NiftiLabelsMasker(
        labels_img=str(atlas),
        background_label=0.0,
        resampling_target="data",
        standardize="zscore_sample",
        detrend=False,
        high_pass=None,
        low_pass=None,
        t_r=tr,
        keep_masked_labels=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return masker.fit_transform(str(run), confounds=read_confounds(run))


def check_same_series(data: FmriData) -> None:
    """The shards hold what the baseline computes (float16-rounded), so both do the same work."""
    import webdataset as wds

    from neurotrain.datamodules.sharding import shard_dataset

    out = Path(tempfile.mkdtemp(prefix="nt-bench-fmri-check-"))
    try:
        shard_dataset([data.root], out, atlas=str(data.atlas), split_ratios=(1.0, 0.0, 0.0))
        urls = sorted(str(p) for p in out.glob("*.tar"))
        first = next(iter(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()))
        run = next(r for r in data.runs if r.name.startswith(first["meta.json"]["recording"]))
        ours = first["signal.npy"].astype(np.float32)  # [P, T]
        theirs = masker_series(run, data.atlas).T.astype(np.float32)
        assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
        err = float(np.abs(ours - theirs).max())
        assert err < 1e-2, f"shard series differ from the masker's by {err}"
    finally:
        shutil.rmtree(out)


# ----------------------------------------------------------------------------- the data
def ensure_fmri_dataset(
    subjects: int, grid: tuple[int, int, int] = (40, 48, 40), trs: int = 200, parcels: int = 50
) -> FmriData:
    """The synthetic dataset for these sizes, written into the cache once."""
    from neurotrain.datamodules.io.cache import cache_root

    base = Path(cache_root()) / "bench" / f"fmri-{subjects}x{'x'.join(map(str, grid))}x{trs}-p{parcels}"
    root, atlas = base / "bids", base / "atlas.nii.gz"
    if not (base / "done").is_file():
        shutil.rmtree(base, ignore_errors=True)
        write_fmri_dataset(root, atlas, subjects, grid, trs, parcels)
        (base / "done").write_text("ok\n")
    runs = sorted(root.glob("sub-*/func/*_bold.nii.gz"))
    return FmriData(root, atlas, runs, grid, trs)


def brain_mask(grid: tuple[int, int, int]) -> np.ndarray:
    """An ellipsoid filling ~80 % of each axis: the 'brain' the parcels cover."""
    idx = np.indices(grid).astype(np.float32)
    centre = (np.array(grid, np.float32) - 1)[:, None, None, None] / 2
    radii = (np.array(grid, np.float32) * 0.4)[:, None, None, None]
    return (((idx - centre) / radii) ** 2).sum(0) <= 1.0


def affine_of(grid: tuple[int, int, int]) -> np.ndarray:
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -VOXEL_MM * (np.array(grid) - 1) / 2  # origin at the centre of the grid
    return affine


def write_atlas(path: Path, grid: tuple[int, int, int], parcels: int, seed: int = 1) -> np.ndarray:
    """Labels 1..parcels: the brain split by nearest of ``parcels`` random seed voxels (0 outside)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    mask = brain_mask(grid)
    voxels = np.argwhere(mask).astype(np.float32)
    seeds = voxels[rng.choice(len(voxels), parcels, replace=False)]
    nearest = np.argmin(((voxels[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
    labels = np.zeros(grid, np.int16)
    labels[mask] = nearest + 1
    nib.save(nib.Nifti1Image(labels, affine_of(grid)), path)
    return labels


def write_fmri_dataset(
    root: Path, atlas: Path, subjects: int, grid: tuple[int, int, int], trs: int, parcels: int, seed: int = 0
) -> None:
    """BIDS runs with per-parcel signals, voxel noise, a motion confound in every brain voxel and
    task blocks in two parcels; the layout of ``tests/synthetic_bids_fmri.py`` on a bigger grid."""
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    labels = write_atlas(atlas, grid, parcels)
    inside = labels > 0
    rng = np.random.default_rng(seed)
    t = np.arange(trs) * TR
    task = ((t // 20.0).astype(int) % 2 == 1).astype(np.float32)
    rows = ["participant_id\tage\tgroup"]
    for i in range(subjects):
        sub = f"{i + 1:02d}"
        rows.append(f"sub-{sub}\t{20 + i}\t{'patient' if i % 2 else 'control'}")
        trans_x = np.cumsum(rng.standard_normal(trs)) * 0.1
        parcel_signal = np.cumsum(rng.standard_normal((parcels + 1, trs)), axis=1).astype(np.float32) * 0.3
        parcel_signal[0] = 0
        parcel_signal[1:3] += 3.0 * task
        data = rng.standard_normal((*grid, trs), dtype=np.float32) * 2.0  # background noise
        data[inside] += 100.0 + parcel_signal[labels[inside]] + (5.0 * trans_x).astype(np.float32)
        func = root / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{sub}_task-blocks"
        img = nib.Nifti1Image(data, affine_of(grid))
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = TR
        nib.save(img, func / f"{stem}_bold.nii.gz")
        (func / f"{stem}_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": "blocks"}))
        ev = ["onset\tduration\ttrial_type"] + [
            f"{o:g}\t20\t{'task' if k % 2 else 'rest'}" for k, o in enumerate(np.arange(0.0, trs * TR, 20.0))
        ]
        (func / f"{stem}_events.tsv").write_text("\n".join(ev) + "\n")
        motion = rng.standard_normal((trs, 5)) * 0.05
        deriv = np.r_[np.nan, np.diff(trans_x)]
        conf = ["\t".join([*MOTION, "trans_x_derivative1"])]
        for k in range(trs):
            d = "n/a" if np.isnan(deriv[k]) else f"{deriv[k]:.6f}"
            conf.append("\t".join([f"{trans_x[k]:.6f}", *(f"{v:.6f}" for v in motion[k]), d]))
        (func / f"{stem}_desc-confounds_timeseries.tsv").write_text("\n".join(conf) + "\n")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "blocks", "BIDSVersion": "1.9.0"}))


if __name__ == "__main__":
    main()
