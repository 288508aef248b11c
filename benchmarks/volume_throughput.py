"""T1 volumes and fMRI windows delivered as training batches: ``ShardDataModule`` vs a plain nibabel pipeline.

Data, written once into the cache (``$NEUROTRAIN_CACHE/bench/``) and sharded there with the
shard defaults:

- T1: ``--t1-subjects`` (default 16) synthetic heads (nested ellipsoids: scalp, skull, CSF, grey
  and white matter, noise; head size and position vary per subject) on a ``--t1-size``^3 grid
  (default 96) of 1 mm voxels in LAS orientation, int16 ``sub-XX/anat/sub-XX_T1w.nii.gz``;
  sharded with the default ``voxel_size`` (2 mm) and ``volume_shape`` (96 x 112 x 96).
- fMRI: the runs of ``benchmarks/fmri_shard.py`` (``--fmri-subjects``, default 4; 40 x 48 x 40
  voxels, 200 TRs of 2 s, 50 parcels, confounds beside each run), sharded with ``--atlas``.

Loaders, each with batch size ``--t1-batch`` / ``--fmri-batch`` and ``--workers`` workers:

    t1_ours     ``ShardDataModule([t1 shards], batch_size, num_workers).train_dataloader()``
                (threads, the default worker mode): ``volume`` float32 [B, 96, 112, 96]
    t1_plain    a torch ``Dataset`` whose ``__getitem__`` does what ``readers/anat.py`` does at
                shard time: ``nib.load``, ``nib.as_closest_canonical``,
                ``nibabel.processing.resample_to_output`` (2 mm, linear), crop/pad to 96 x 112 x 96
                around the foreground, the foreground's percentile clip when the shards record
                ``clip_percentiles``, z-score over the foreground (numpy, ``PlainT1``); shuffled
                ``DataLoader`` with ``num_workers`` worker processes (``persistent_workers=True``,
                ``drop_last``)
    fmri_ours   ``ShardDataModule([fmri shards], window_seconds=--window-trs x TR, ...)``: random
                windows of ``--window-trs`` TRs, ``signal`` float32 [B, 50, T] normalised with the
                manifest's robust statistics
    fmri_plain  a ``Dataset`` of the same number of windows per run whose ``__getitem__`` loads the
                run's NIfTI and its confounds, applies ``NiftiLabelsMasker`` with the shard
                defaults' arguments (``fmri_shard.masker_series``), cuts a random window and
                normalises it with the same statistics; same ``DataLoader`` settings as t1_plain

Before timing, one item of each plain pipeline is checked against the shards (same values up to
float16 rounding), so both sides deliver the same thing. Each measurement runs in its own
process for ``--seconds`` (epochs repeat until then; the clock starts at the first batch; the
plain loaders run at least ``--min-batches`` timed batches), reporting items/s and peak resident
memory (``VmHWM`` of the process, and the summed RSS of its DataLoader workers, sampled). The
datamodule is measured again on ``--replicas`` x the data (default 8: every shard hard-linked
under ``--replicas`` names, one manifest: 8 x the subjects) for memory. ``--shuffle-buffer N``
sets the datamodules' ``shuffle_buffer`` (items read and permuted together; for volumes a block of
N whole volumes is read at once, and one block ahead), default the library's.

    python benchmarks/volume_throughput.py                # ~2-3 minutes on 2 cores (first run
                                                          # also writes and shards the data)
    python benchmarks/volume_throughput.py --seconds 4    # quicker, noisier
    python benchmarks/volume_throughput.py --scale 2      # twice the subjects of both datasets
    python benchmarks/volume_throughput.py --reshard      # shards are cached: after a reader change

Figures: ``t1_ratio_vs_plain`` and ``fmri_ratio_vs_plain`` (datamodule items/s / plain items/s,
aim >= 3), ``peak_rss_mb_1x`` and ``peak_rss_mb_8x`` (the T1 datamodule process at 1x and 8x data;
``fmri_peak_rss_mb_1x`` / ``_8x`` the same for fMRI). The last line printed is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = ("t1_ours", "t1_plain", "fmri_ours", "fmri_plain")
SCALED = ("t1_ours", "fmri_ours")  # also measured at --replicas x data
FORWARDED = ("seconds", "min_batches", "workers", "t1_batch", "fmri_batch", "window_trs", "shuffle_buffer")


def main() -> None:
    args = parse_args()
    if args.run:
        print(json.dumps(measure(args)), flush=True)
        return
    t1_root, t1_shards = ensure_t1(args.t1_subjects * args.scale, args.t1_size, args.reshard)
    fmri, fmri_shards = ensure_fmri(args.fmri_subjects * args.scale, args.reshard)
    t1_err = check_t1_plain(t1_root, t1_shards)
    fmri_err = check_fmri_plain(fmri, fmri_shards)
    print(
        f"T1: {args.t1_subjects * args.scale} volumes {args.t1_size}^3 -> {tuple(T1_SHAPE)}; "
        f"fMRI: {len(fmri.runs)} runs {fmri.grid} x {fmri.trs} TRs; windows of {args.window_trs} TRs",
        flush=True,
    )
    paths = {"t1": (t1_root, t1_shards), "fmri": (fmri.root, fmri_shards)}
    results: dict[str, Any] = {}
    for run in RUNS:
        results[run] = child(args, run, paths, 1)
        print(f"{run:10s} 1x {fmt(results[run])}", flush=True)
    for run in SCALED if args.replicas > 1 else ():
        results[f"{run}_x{args.replicas}"] = r = child(args, run, paths, args.replicas)
        print(f"{run:10s} {args.replicas}x {fmt(r)}", flush=True)
    k = args.replicas
    summary: dict[str, Any] = {
        "t1_volumes": args.t1_subjects * args.scale,
        "t1_input": [args.t1_size] * 3,
        "t1_shape": list(T1_SHAPE),
        "fmri_runs": len(fmri.runs),
        "fmri_window_trs": args.window_trs,
        "t1_batch": args.t1_batch,
        "fmri_batch": args.fmri_batch,
        "workers": args.workers,
        "seconds": args.seconds,
        "replicas": k,
        "shuffle_buffer": args.shuffle_buffer or "default",
        "items_per_s": {key: round(v["items_per_s"], 2) for key, v in results.items()},
        "t1_ratio_vs_plain": round(results["t1_ours"]["items_per_s"] / results["t1_plain"]["items_per_s"], 2),
        "fmri_ratio_vs_plain": round(
            results["fmri_ours"]["items_per_s"] / results["fmri_plain"]["items_per_s"], 2
        ),
        "t1_plain_max_abs_diff": round(t1_err, 5),
        "fmri_plain_max_abs_diff": round(fmri_err, 5),
        "peak_rss_mb_1x": results["t1_ours"]["maxrss_mb"],
        "fmri_peak_rss_mb_1x": results["fmri_ours"]["maxrss_mb"],
    }
    if k > 1:
        summary[f"peak_rss_mb_{k}x"] = results[f"t1_ours_x{k}"]["maxrss_mb"]
        summary[f"fmri_peak_rss_mb_{k}x"] = results[f"fmri_ours_x{k}"]["maxrss_mb"]
    summary["peak_rss_mb"] = {
        key: {"main": r["maxrss_mb"], "workers": r["worker_maxrss_mb"]} for key, r in results.items()
    }
    print(json.dumps(summary))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time per loader")
    p.add_argument("--min-batches", type=int, default=2, help="timed batches at least (plain loaders)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--t1-subjects", type=int, default=16)
    p.add_argument("--t1-size", type=int, default=96, help="T1 grid side (1 mm voxels)")
    p.add_argument("--t1-batch", type=int, default=4)
    p.add_argument("--fmri-subjects", type=int, default=4)
    p.add_argument("--fmri-batch", type=int, default=8)
    p.add_argument("--window-trs", type=int, default=32, help="fMRI window length (TRs)")
    p.add_argument(
        "--shuffle-buffer", type=int, help="the datamodules' shuffle_buffer (default: the library's)"
    )
    p.add_argument("--scale", type=int, default=1, help="multiply the subjects of both datasets")
    p.add_argument("--replicas", type=int, default=8, help="data multiple for the memory runs")
    p.add_argument("--reshard", action="store_true", help="shard the cached data again (code changed)")
    p.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--shards", help=argparse.SUPPRESS)
    p.add_argument("--factor", type=int, default=1, help=argparse.SUPPRESS)
    return p.parse_args()


def fmt(r: dict[str, Any]) -> str:
    return (
        f"{r['items_per_s']:9.1f} items/s ({r['batches']} batches in {r['seconds']:.1f} s)  "
        f"peak RSS {r['maxrss_mb']:6.0f} MB (+ workers {r['worker_maxrss_mb']:.0f} MB)"
    )


def child(args: argparse.Namespace, run: str, paths: dict[str, tuple[Path, Path]], factor: int) -> dict:
    root, shards = paths[run.split("_")[0]]
    cmd = [sys.executable, __file__, "--run", run, "--root", str(root), "--shards", str(shards)]
    cmd += ["--factor", str(factor)]
    for flag in FORWARDED:
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise RuntimeError(f"{run} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- data
T1_VOXEL = 2.0  # ShardOptions.voxel_size default
T1_SHAPE = (96, 112, 96)  # ShardOptions.volume_shape default


def ensure_t1(subjects: int, size: int, reshard: bool = False) -> tuple[Path, Path]:
    """The synthetic T1 BIDS root and its shards (shard defaults), in the cache."""
    from neurotrain.datamodules.io.cache import cache_root
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.options import ShardOptions

    opts = ShardOptions()
    assert (opts.voxel_size, opts.volume_shape) == (T1_VOXEL, T1_SHAPE), "shard defaults changed"
    base = Path(cache_root()) / "bench" / f"t1-{subjects}x{size}"
    root, shards = base / "bids", base / "shards"
    if not (base / "done").is_file():
        shutil.rmtree(base, ignore_errors=True)
        write_t1_dataset(root, subjects, size)
        (base / "done").write_text("ok\n")
    if reshard:
        shutil.rmtree(shards, ignore_errors=True)
    if not (shards / "manifest.json").is_file():
        shard_dataset([root], shards)
    return root, shards


def ensure_fmri(subjects: int, reshard: bool = False):
    """The runs of ``fmri_shard.py`` and their shards (``--atlas``, shard defaults), in the cache."""
    sys.path.insert(0, str(HERE))
    from fmri_shard import ensure_fmri_dataset

    from neurotrain.datamodules.sharding import shard_dataset

    data = ensure_fmri_dataset(subjects)
    shards = data.root.parent / "shards"
    if reshard:
        shutil.rmtree(shards, ignore_errors=True)
    if not (shards / "manifest.json").is_file():
        shard_dataset([data.root], shards, atlas=str(data.atlas))
    return data, shards


def write_t1_dataset(root: Path, subjects: int, size: int, seed: int = 0) -> None:
    """``sub-XX/anat/sub-XX_T1w.nii.gz``: int16 heads of 1 mm voxels, LAS, varying size and place."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    grid = (size, size, size)
    idx = np.indices(grid).astype(np.float32)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS: reorientation has work to do
    affine[:3, 3] = [(size - 1) / 2, -(size - 1) / 2, -(size - 1) / 2]
    rows = ["participant_id\tage"]
    for i in range(subjects):
        sub = f"{i + 1:02d}"
        centre = (np.array(grid) - 1) / 2 + rng.uniform(-4, 4, 3)
        radii = np.array(grid) * rng.uniform(0.38, 0.46, 3)
        r = np.sqrt(sum(((idx[k] - centre[k]) / radii[k]) ** 2 for k in range(3)))
        data = np.abs(rng.normal(0, 8, grid))  # background noise
        for edge, value in ((1.0, 300), (0.93, 60), (0.88, 150), (0.82, 600), (0.6, 900)):
            data[r < edge] = value  # scalp, skull, CSF, grey, white matter
        data += rng.normal(0, 25, grid) * (r < 1.0)
        anat = root / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(np.clip(data, 0, 32767).astype(np.int16), affine)
        img.header.set_xyzt_units("mm")
        nib.save(img, anat / f"sub-{sub}_T1w.nii.gz")
        rows.append(f"sub-{sub}\t{20 + i}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t1", "BIDSVersion": "1.9.0"}))


def first_sample(shards: Path) -> dict:
    """The first sample of the first shard, decoded."""
    import webdataset as wds

    urls = sorted(str(p) for p in shards.glob("*.tar"))
    return next(iter(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()))


def check_t1_plain(root: Path, shards: Path) -> float:
    """Max abs difference of the plain pipeline's volume of a subject from the shard's (float16:
    ~5e-4); warns above 0.02 (the shards' preprocessing changed in a way not mirrored here)."""
    s = first_sample(shards)
    path = next(root.glob(f"sub-{s['meta.json']['subject']}/anat/*_T1w.nii.gz"))
    plain = PlainT1([path], t1_clip(shards))[0].numpy()
    ours = s["volume.npy"].astype(np.float32)
    assert plain.shape == ours.shape, (plain.shape, ours.shape)
    err = float(np.abs(plain - ours).max())
    if err > 0.02:
        print(f"warning: plain T1 differs from the shard by up to {err:.3f} (z units)", file=sys.stderr)
    return err


def check_fmri_plain(data, shards: Path) -> float:
    """Max abs difference of the plain pipeline's parcel series of a run from the shard's
    (float16-rounded); must be below 0.01."""
    from fmri_shard import masker_series

    s = first_sample(shards)
    run = next(r for r in data.runs if r.name.startswith(s["meta.json"]["recording"]))
    err = float(np.abs(masker_series(run, data.atlas).T - s["signal.npy"].astype(np.float32)).max())
    assert err < 1e-2, err
    return err


# ----------------------------------------------------------------------------- the plain pipelines
def crop_or_pad(data: np.ndarray, fg: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``data`` cropped or zero-padded to ``shape``, centred on the foreground's bounding box."""
    idx = np.argwhere(fg)
    centre = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
    start = np.floor(centre - np.array(shape) / 2.0).astype(int)
    out = np.zeros(shape, dtype=np.float32)
    lo, hi = np.maximum(start, 0), np.minimum(start + np.array(shape), data.shape)
    dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
    out[dst] = data[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    return out


class PlainT1:
    """``__getitem__``: load, RAS, resample to 2 mm, crop/pad, z-score over the foreground.

    ``clip``: the shards' recorded ``clip_percentiles`` (``meta.json`` preprocessing), when they
    have them: the foreground's percentile range is clipped before the z-score (the foreground
    mask is then the pre-crop one, cropped, and the std the n - 1 one, as TorchIO computes them);
    without it, the foreground is thresholded again after the crop (``readers/anat.py`` before it
    clipped). Either way the same work as the shards' preprocessing, in numpy.
    """

    def __init__(self, paths: list[Path], clip: tuple[float, float] | None = None) -> None:
        self.paths, self.clip = paths, clip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import nibabel as nib
        import torch
        from nibabel.processing import resample_to_output

        img = nib.as_closest_canonical(nib.load(self.paths[i]))
        img = resample_to_output(img, voxel_sizes=T1_VOXEL, order=1)
        data = np.asarray(img.dataobj, dtype=np.float32)
        fg = data > 0.1 * np.percentile(data, 99)
        if self.clip is None:
            data = crop_or_pad(data, fg, T1_SHAPE)
            fg = data > 0.1 * np.percentile(data, 99)
            data = (data - data[fg].mean()) / (data[fg].std() or 1.0)
        else:
            data, fg = crop_or_pad(data, fg, T1_SHAPE), crop_or_pad(fg.astype(np.float32), fg, T1_SHAPE) > 0
            data = np.clip(data, *np.percentile(data[fg], self.clip))
            data = (data - data[fg].mean()) / (data[fg].std(ddof=1) or 1.0)
        return torch.from_numpy(data.astype(np.float32, copy=False))


def t1_clip(shards: Path) -> tuple[float, float] | None:
    """The ``clip_percentiles`` the T1 shards were made with (None: not clipped)."""
    from neurotrain.datamodules.format.manifest import load_manifest

    prep = load_manifest(shards)["recordings"][0].get("preprocessing") or {}
    if "clip_percentiles" not in prep:  # older manifests: ask a sample
        prep = first_sample(shards)["meta.json"].get("preprocessing") or {}
    clip = prep.get("clip_percentiles")
    return (float(clip[0]), float(clip[1])) if clip else None


class PlainFmriWindows:
    """``n_times // T`` windows per run; ``__getitem__``: load, masker, a random window, normalise."""

    def __init__(self, runs: list[Path], atlas: Path, trs: int, T: int, center: float, scale: float) -> None:
        self.items = [run for run in runs for _ in range(trs // T)]
        self.atlas, self.T, self.center, self.scale = atlas, T, center, scale

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch
        from fmri_shard import masker_series

        series = masker_series(self.items[i], self.atlas)  # [n_times, P]
        start = int(np.random.default_rng().integers(0, series.shape[0] - self.T + 1))
        x = (series[start : start + self.T].T.astype(np.float32) - self.center) / self.scale
        return torch.from_numpy(x)


def bold_stats(shards: Path) -> tuple[float, float]:
    """(center, scale) of the ``bold`` type the datamodule normalises with (manifest statistics)."""
    from neurotrain.datamodules.format.manifest import load_manifest
    from neurotrain.datamodules.loading.normalize import normalization_from_manifest, type_table

    center, scale = type_table(normalization_from_manifest(load_manifest(shards)))["bold"]
    return float(center), float(scale)


def plain_loader(dataset, batch_size: int, workers: int):
    import torch

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return lambda: loader


def our_loader(shards: Path, args: argparse.Namespace, fmri: bool):
    from neurotrain.datamodules import ShardDataModule

    kwargs: dict[str, Any] = {"batch_size": args.t1_batch}
    if fmri:
        tr = 1.0 / float(json.loads((shards / "manifest.json").read_text())["recordings"][0]["sfreq"])
        kwargs = {"batch_size": args.fmri_batch, "window_seconds": args.window_trs * tr}
    if args.shuffle_buffer is not None:
        kwargs["shuffle_buffer"] = args.shuffle_buffer
    dm = ShardDataModule([str(shards)], num_workers=args.workers, train_split="all", **kwargs)
    dm.setup("fit")
    return dm.train_dataloader


# ----------------------------------------------------------------------------- one measurement
def measure(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from loader_throughput import PeakMemory, replicate

    memory = PeakMemory()
    root, shards = Path(args.root), Path(args.shards)
    if args.factor > 1:
        shards = replicate(shards, args.factor)
    key = "volume" if args.run.startswith("t1") else "signal"
    min_batches = args.min_batches if args.run.endswith("plain") else 1
    if args.run == "t1_ours":
        make = our_loader(shards, args, fmri=False)
    elif args.run == "fmri_ours":
        make = our_loader(shards, args, fmri=True)
    elif args.run == "t1_plain":
        paths = sorted(root.glob("sub-*/anat/*_T1w.nii.gz"))
        make = plain_loader(PlainT1(paths, t1_clip(shards)), args.t1_batch, args.workers)
    else:
        runs = sorted(root.glob("sub-*/func/*_bold.nii.gz"))
        rec = json.loads((shards / "manifest.json").read_text())["recordings"][0]
        trs = int(round(rec["duration_s"] * rec["sfreq"]))
        center, scale = bold_stats(shards)
        atlas = root.parent / "atlas.nii.gz"
        dataset = PlainFmriWindows(runs, atlas, trs, args.window_trs, center, scale)
        make = plain_loader(dataset, args.fmri_batch, args.workers)
    items, batches, t0 = 0, 0, None
    while t0 is None or time.perf_counter() - t0 < args.seconds or batches < min_batches:
        for batch in make():
            x = batch[key] if isinstance(batch, dict) else batch
            assert x.dtype.is_floating_point and x.dtype.itemsize == 4, x.dtype
            if t0 is None:
                t0 = time.perf_counter()  # worker start-up of the first epoch is not measured
                continue
            items, batches = items + x.shape[0], batches + 1
            if time.perf_counter() - t0 >= args.seconds and batches >= min_batches:
                break
    dt = time.perf_counter() - t0
    main, workers = memory.stop()
    return {
        "items_per_s": items / dt,
        "items": items,
        "batches": batches,
        "seconds": dt,
        "maxrss_mb": main,
        "worker_maxrss_mb": workers,
    }


if __name__ == "__main__":
    main()
