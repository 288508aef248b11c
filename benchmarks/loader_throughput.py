"""Loader throughput and memory on the real example EEG (128 channels, 256 Hz, 2 recordings).

Windows of ``--window-samples`` (default 256 = 1 s) x 128 channels in batches of ``--batch-size``
with ``--workers`` DataLoader workers everywhere, delivered as float32 tensors by:

    (a) raw       reading the tar files in 1 MiB chunks (``cat``-like): the upper bound
    (b) wds       ``WebDataset(urls).decode()`` + a generator cutting the same random crops and
                  normalising them + shuffle buffer + default collate + DataLoader: what a user
                  would write first
    (c) ours      ``ShardDataModule.train_dataloader()`` (``--worker-mode``, default threads), and
        ours_proc the same with ``worker_mode: processes`` (DataLoader worker processes)
    (d) bd_pre    braindecode ``create_fixed_length_windows`` on the EDF files, preloaded
        bd_lazy   the same with ``preload=False`` (reads from the EDF per window)
    (e) mixed     (c) over the four corpora of ``mixed_pretrain.yaml``, weights 0.25 each and
                  ``sfreq: 256``: the example EEG (256 Hz, read as stored), a 4-channel EEG
                  without positions (250 Hz, MNE-written EDF), the real iEEG example (1000 Hz)
                  and MNE-simulated MEG (200 Hz, Neuromag-306 + 12 EEG; magnetometers kept by
                  the config's ``channel_types``), all resampled to 256 Hz as they are read
        mixed_cold the same with the resampled-segment cache off: every read resamples again
                  (what a corpus too large for the 256 MB cache pays)

Every loader delivers the same thing: float32 windows of all 128 channels in µV, centred and
scaled per channel type with the dataset's robust statistics (the manifest's median/IQR, what
(c) applies), in shuffled batches. The baselines' DataLoaders are built once with
``persistent_workers=True``, so their worker start-up is paid once, as (c)'s threads are.

Each measurement runs in its own process for ``--seconds`` (epochs repeat until then; the clock
starts at the first batch), reporting windows/s, MB/s and its peak resident memory (the
process's own, and the sum over its DataLoader worker processes, which share some pages). Every
loader is measured again on 8x the data (``--replicas``: the recordings replicated), for
throughput and memory.

    python benchmarks/loader_throughput.py                 # ~3 minutes on 2 cores
    python benchmarks/loader_throughput.py --seconds 3     # quicker, noisier

MB/s: (a) tar bytes read; the others float32 signal bytes delivered. ``fraction_of_raw_read`` is
(c) windows/s over the windows/s (a) could feed at the shards' stored bytes per window.
``mixed_vs_single`` is (e) over (c): windows/s (aim >= 0.7) and peak resident memory; both
deliver ``[B, 128, T]`` batches (the mix's widest kept sample is the EEG's 128 channels).
``--runs ours mixed mixed_cold --replicas 1`` measures only those.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

RUNS = ("raw", "wds", "ours", "ours_proc", "bd_pre", "bd_lazy", "mixed", "mixed_cold")
SCALED = ("wds", "ours", "ours_proc", "bd_pre", "bd_lazy")  # also measured at --replicas x data


def main() -> None:
    args = parse_args()
    if args.run:
        print(json.dumps(measure(args)), flush=True)
        return
    shards = Path(args.shards) if args.shards else ensure_shards()
    runs = [r for r in RUNS if r in (args.runs or RUNS)]
    if {"mixed", "mixed_cold"} & set(runs) and not args.mixed:
        args.mixed = str(ensure_mixed_shards(shards))
    results: dict[str, Any] = {}
    for run in runs:
        results[run] = child(args, run, shards, 1)
        print(f"{run:8s} 1x {fmt(results[run])}", flush=True)
    for run in [r for r in SCALED if r in runs] if args.replicas > 1 else []:
        results[f"{run}_x{args.replicas}"] = r = child(args, run, shards, args.replicas)
        print(f"{run:8s} {args.replicas}x {fmt(r)}", flush=True)

    def speedups(suffix: str) -> dict[str, float]:
        mine = results[f"ours{suffix}"]["windows_per_s"]
        return {
            "vs_webdataset": round(mine / results[f"wds{suffix}"]["windows_per_s"], 2),
            "vs_braindecode_lazy": round(mine / results[f"bd_lazy{suffix}"]["windows_per_s"], 2),
            "vs_braindecode_preloaded": round(mine / results[f"bd_pre{suffix}"]["windows_per_s"], 2),
            "processes_vs_threads": round(results[f"ours_proc{suffix}"]["windows_per_s"] / mine, 2),
        }

    summary: dict[str, Any] = {
        "window": [128, args.window_samples],
        "batch_size": args.batch_size,
        "workers": args.workers,
        "worker_mode": args.worker_mode,
        "seconds": args.seconds,
        "replicas": args.replicas,
        "windows_per_s": {k: round(v["windows_per_s"]) for k, v in results.items()},
        "mb_per_s": {k: round(v["mb_per_s"], 1) for k, v in results.items()},
    }
    if set(RUNS[:6]) <= set(runs):  # every single-dataset loader: the comparison table
        one = speedups("")
        summary.update(
            {
                "speedup_vs_webdataset": one["vs_webdataset"],
                "speedup_vs_braindecode_lazy": one["vs_braindecode_lazy"],
                "speedup_vs_braindecode_preloaded": one["vs_braindecode_preloaded"],
                "speedups_1x": one,
                "fraction_of_raw_read": round(
                    results["ours"]["windows_per_s"] / results["raw"]["windows_per_s"], 3
                ),
            }
        )
        if args.replicas > 1:
            summary[f"speedups_{args.replicas}x"] = speedups(f"_x{args.replicas}")
    if "ours" in results and "mixed" in results:
        ours, mixed = results["ours"], results["mixed"]
        summary["mixed_vs_single"] = {
            "windows_per_s": round(mixed["windows_per_s"] / ours["windows_per_s"], 3),
            "peak_rss_main": round(mixed["maxrss_mb"] / ours["maxrss_mb"], 3),
        }
        if "mixed_cold" in results:
            cold = results["mixed_cold"]
            summary["mixed_vs_single"]["windows_per_s_uncached"] = round(
                cold["windows_per_s"] / ours["windows_per_s"], 3
            )
    summary["peak_rss_mb"] = {
        key: {"main": r["maxrss_mb"], "workers": r["worker_maxrss_mb"]}
        for key, r in results.items()
        if key != "raw"
    }
    print(json.dumps(summary))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="shard folder of the example EEG (default: shard it into the cache)")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time per loader")
    p.add_argument("--window-samples", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--replicas", type=int, default=8, help="data multiple for the memory runs")
    p.add_argument("--worker-mode", choices=("threads", "processes"), default="threads", help="for (c)")
    p.add_argument("--runs", nargs="+", choices=RUNS, help="measure only these (default: all)")
    p.add_argument("--mixed", help="folder with the mixed corpus' eeg4/ieeg/meg shards (default: the cache)")
    p.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    p.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    return p.parse_args()


def fmt(r: dict[str, Any]) -> str:
    return (
        f"{r['windows_per_s']:9.0f} windows/s {r['mb_per_s']:8.1f} MB/s  "
        f"peak RSS {r['maxrss_mb']:6.0f} MB (+ workers {r['worker_maxrss_mb']:.0f} MB)"
    )


def child(args: argparse.Namespace, run: str, shards: Path, scale: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--run", run, "--scale", str(scale), "--shards", str(shards)]
    for flag in ("seconds", "window_samples", "batch_size", "workers", "worker_mode"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.mixed:
        cmd += ["--mixed", args.mixed]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise RuntimeError(f"{run} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_shards() -> Path:
    from neurotrain.datamodules.io.cache import cache_root
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.examples import fetch

    out = Path(cache_root()) / "bench" / "eeg-shards"
    if not (out / "manifest.json").is_file():
        shard_dataset([fetch("eeg")], out, workers=2)
    return out


def ensure_mixed_shards(eeg: Path) -> Path:
    """The three other corpora of the mix, sharded once into the cache (``eeg`` is the 4th).

    ``eeg4``: a 4-channel EEG without positions, 10 minutes at 250 Hz (``tests/mixed_corpus.py``,
    written by MNE); ``ieeg``: the real example (``neurotrain fetch ieeg``, 1000 Hz, 19 s);
    ``meg``: 2 minutes of MNE-simulated Neuromag-306 + 12 EEG at 200 Hz (``tests/synthetic.py``).
    """
    from neurotrain.datamodules.io.cache import cache_root
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.examples import fetch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' generators
    import mixed_corpus
    import synthetic

    out = Path(cache_root()) / "bench" / "mixed"
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    sources = {
        "eeg4": lambda: mixed_corpus.write_four_channel_edf(raw / "sub-01_eeg.edf", seconds=600.0),
        "ieeg": lambda: fetch("ieeg"),
        "meg": lambda: synthetic.write_meg_fif(raw / "sim_meg_raw.fif", seconds=120.0, sfreq=200.0),
    }
    for name, make in sources.items():
        if not (out / name / "manifest.json").is_file():
            shard_dataset([make()], out / name, split_ratios=(1.0, 0.0, 0.0), noisy_threshold=0.0)
    (out / "eeg").unlink(missing_ok=True)
    (out / "eeg").symlink_to(eeg.resolve(), target_is_directory=True)
    return out


def edf_files() -> list[Path]:
    from neurotrain.datamodules.sharding.examples import fetch

    return sorted(Path(fetch("eeg")).glob("sub-*/eeg/*_eeg.edf"))


# ----------------------------------------------------------------------------- one measurement
def measure(args: argparse.Namespace) -> dict[str, Any]:
    global MEMORY
    MEMORY = PeakMemory()
    shards = Path(args.shards)
    if args.scale > 1:
        shards = replicate(shards, args.scale)
    T, C = args.window_samples, 128
    if args.run == "raw":
        return timed_raw(sorted(shards.glob("*.tar")), args.seconds, bytes_per_window=C * T * 2)
    if args.run == "wds":
        make = wds_loader(shards, args)
    elif args.run in ("ours", "ours_proc"):
        make = our_loader(shards, args, "processes" if args.run == "ours_proc" else args.worker_mode)
    elif args.run in ("mixed", "mixed_cold"):
        make = mixed_loader(Path(args.mixed), args, cache=args.run == "mixed")
    else:
        make = braindecode_loader(shards, args, preload=args.run == "bd_pre")
    return timed_loader(make, args.seconds, bytes_per_window=C * T * 4)


class PeakMemory:
    """Peak resident memory of this process and of its live children (DataLoader workers).

    This process: ``VmHWM`` (``ru_maxrss`` would also count the parent's memory before ``exec``).
    Workers: their summed RSS sampled every 50 ms (``ru_maxrss`` of children would count short
    helper processes that were forked from a large parent and then ``exec``'d).
    """

    def __init__(self) -> None:
        self.children_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            total = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            self.children_peak = max(self.children_peak, total / 2**20)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
        hwm = [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
        main = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return round(main, 1), round(self.children_peak, 1)


MEMORY: PeakMemory | None = None


def rss() -> tuple[float, float]:
    assert MEMORY is not None
    return MEMORY.stop()


def timed_raw(files: list[Path], seconds: float, bytes_per_window: int) -> dict[str, Any]:
    buf = bytearray(1 << 20)
    total, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for f in files:
            with open(f, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    total += n
    dt = time.perf_counter() - t0
    main, worker = rss()
    return {
        "windows_per_s": total / bytes_per_window / dt,
        "mb_per_s": total / dt / 1e6,
        "maxrss_mb": main,
        "worker_maxrss_mb": worker,
    }


def timed_loader(make, seconds: float, bytes_per_window: int) -> dict[str, Any]:
    windows, t0 = 0, None
    while t0 is None or time.perf_counter() - t0 < seconds:
        for batch in make():
            x = batch["signal"] if isinstance(batch, dict) else batch[0]
            assert x.dtype.is_floating_point and x.dtype.itemsize == 4
            if t0 is None:
                t0 = time.perf_counter()  # worker start-up of the first epoch is not measured
                continue
            windows += x.shape[0]
            if time.perf_counter() - t0 >= seconds:
                break
    dt = time.perf_counter() - t0
    main, worker = rss()
    return {
        "windows_per_s": windows / dt,
        "mb_per_s": windows * bytes_per_window / dt / 1e6,
        "maxrss_mb": main,
        "worker_maxrss_mb": worker,
    }


def robust_stats(shards: Path) -> tuple[float, float]:
    """(median, IQR) in µV of the EEG channel type: the statistics (c) normalises with."""
    from neurotrain.datamodules.format.manifest import load_manifest
    from neurotrain.datamodules.loading.normalize import normalization_from_manifest, type_table

    center, scale = type_table(normalization_from_manifest(load_manifest(shards)))["eeg"]
    return float(center), float(scale)


def our_loader(shards: Path, args: argparse.Namespace, worker_mode: str):
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

    dm = ShardDataModule(
        [str(shards)],
        window_seconds=args.window_samples / 256,
        batch_size=args.batch_size,
        num_workers=args.workers,
        worker_mode=worker_mode,
        train_split="all",
        drop_bad_channels=False,  # all 128 channels, as the other loaders deliver
    )
    dm.setup("fit")
    return dm.train_dataloader


def mixed_loader(folder: Path, args: argparse.Namespace, cache: bool = True):
    """(e): (c) over the four corpora, with the data options of ``mixed_pretrain.yaml``."""
    import yaml

    from neurotrain.datamodules.loading import streaming
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

    if not cache:
        streaming._RESAMPLED.max_bytes = 0  # nothing is kept: every read resamples

    config = Path(__file__).resolve().parents[1] / "train" / "configs" / "mixed_pretrain.yaml"
    data = yaml.safe_load(config.read_text())["data"]
    dm = ShardDataModule(
        [str(folder / name) for name in ("eeg", "eeg4", "ieeg", "meg")],
        weights=data["weights"],
        sfreq=data["sfreq"],
        channel_types=data["channel_types"],
        window_seconds=args.window_samples / 256,
        batch_size=args.batch_size,
        num_workers=args.workers,
        worker_mode=args.worker_mode,
        train_split="all",
        drop_bad_channels=False,  # as (c)
    )
    dm.setup("fit")
    assert dm.c_max == 128 and dm.sfreq == data["sfreq"], (dm.c_max, dm.sfreq)
    return dm.train_dataloader


def wds_loader(shards: Path, args: argparse.Namespace):
    import numpy as np
    import torch
    import webdataset as wds

    T = args.window_samples
    urls = sorted(str(p) for p in shards.glob("*.tar"))
    center, scale = robust_stats(shards)

    def crops(samples):
        rng = np.random.default_rng()
        for s in samples:
            x = s["signal.npy"]  # [C, T_segment] float16 µV
            for start in rng.integers(0, x.shape[1] - T + 1, size=x.shape[1] // T):
                window = (x[:, start : start + T].astype(np.float32) - center) / scale
                yield {"signal": torch.from_numpy(window)}

    ds = wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=None, empty_check=False)
    ds = ds.decode().compose(crops).shuffle(1024)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, num_workers=args.workers, persistent_workers=args.workers > 0
    )
    return lambda: loader


class Normalised:
    """A map-style dataset's windows in µV, centred and scaled like (c): ``(1e6 x - median) / IQR``."""

    def __init__(self, windows, center: float, scale: float) -> None:
        self.windows, self.center, self.scale = windows, center, scale

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        import numpy as np

        x, *_ = self.windows[i]  # [C, T] volts, float32
        return ((np.asarray(x, dtype=np.float32) * 1e6 - self.center) / self.scale,)


def braindecode_loader(shards: Path, args: argparse.Namespace, preload: bool):
    import mne
    import torch
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import create_fixed_length_windows

    raws = [
        RawDataset(mne.io.read_raw_edf(f, preload=preload, verbose="error"), target_name=None)
        for _ in range(args.scale)
        for f in edf_files()
    ]
    windows = create_fixed_length_windows(
        BaseConcatDataset(raws),
        window_size_samples=args.window_samples,
        window_stride_samples=args.window_samples,
        drop_last_window=True,
        preload=preload,
    )

    center, scale = robust_stats(shards)
    loader = torch.utils.data.DataLoader(
        Normalised(windows, center, scale),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    return lambda: loader


def replicate(shards: Path, k: int) -> Path:
    """A dataset with every recording ``k`` times (tar hard links under new names, one manifest).

    Hard links, not symlinks: the loader refuses a shard whose path resolves outside its dataset
    folder. The temporary folder sits beside the shards, on their filesystem.
    """
    out = Path(tempfile.mkdtemp(prefix=f".neurotrain-x{k}-", dir=shards.parent))
    atexit.register(shutil.rmtree, out, ignore_errors=True)  # the links only; the shards stay
    m = json.loads((shards / "manifest.json").read_text())
    entries = []
    for i in range(k):
        for e in m["shards"]:
            name = f"r{i}-{e['name']}"
            os.link((shards / e["name"]).resolve(), out / name)
            entries.append({**e, "name": name, "recording": f"r{i}-{e['recording']}"})
    m["shards"] = entries
    (out / "manifest.json").write_text(json.dumps(m))
    return out


if __name__ == "__main__":
    main()
