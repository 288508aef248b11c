"""How `neurotrain shard`, the manifest, the loader's set-up and `inspect --verify` grow with the corpus.

The corpus comes from ``benchmarks/scale_corpus.py`` (seeded EDF recordings, 32 channels at
128 Hz, 2.25–3 min each); the first ``--small`` recordings and all ``--large`` are sharded into two
datasets, and for each one this measures, in the same run:

- ``shard_s``: ``shard_dataset(..., workers=--workers)`` wall time, against the EDF bytes read;
- ``manifest_load_s``: ``load_manifest`` (best of 5);
- ``setup_s``: ``ShardDataModule.setup("fit")``, which indexes every shard (reads tar headers);
- ``loader_peak_rss_mb``: peak resident memory of a fresh process that sets the loader up and
  draws ``--batches`` training batches (flat memory: it must not grow with the corpus);
- ``verify_s``: ``verify_shards`` (every shard re-hashed) with 1 worker and with ``--workers``.

Growth exponents are ``log(t_large / t_small) / log(bytes_large / bytes_small)``: 1 is linear in
the data. The last line printed is one JSON object with every figure.

    python benchmarks/scale.py --corpus /tmp/scale-corpus --out /tmp/scale-shards   # ~3 GB, ~15 min
    python benchmarks/scale.py --small 20 --large 200 ...                           # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from timing import best_of

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args()
    if args.loader_child:
        print(json.dumps(loader_memory(Path(args.loader_child), args.batches)))
        return
    sys.path.insert(0, str(HERE))
    from scale_corpus import write_corpus

    corpus_bytes, gen_s = write_corpus(args.corpus, args.large)
    print(
        f"corpus: {args.large} recordings, {corpus_bytes / 1e9:.2f} GB ({gen_s:.0f} s to write)", flush=True
    )
    results = {}
    for n in (args.small, args.large):
        results[n] = measure(args, n)
        print(f"{n:5d} recordings: {json.dumps(results[n])}", flush=True)
    small, large = results[args.small], results[args.large]
    growth = {
        key: round(math.log(large[key] / small[key]) / math.log(large["edf_bytes"] / small["edf_bytes"]), 2)
        for key in ("shard_s", "manifest_load_s", "setup_s", "verify_s_1_worker", "verify_s_parallel")
    }
    summary = {
        "recordings": [args.small, args.large],
        "workers": args.workers,
        "by_size": {str(n): r for n, r in results.items()},
        "growth_exponent_vs_bytes": growth,
        "shard_mb_per_s": {str(n): round(r["edf_bytes"] / r["shard_s"] / 1e6, 1) for n, r in results.items()},
        "verify_speedup_parallel": {
            str(n): round(r["verify_s_1_worker"] / r["verify_s_parallel"], 2) for n, r in results.items()
        },
        "loader_memory_ratio_large_vs_small": round(
            large["loader_peak_rss_mb"] / small["loader_peak_rss_mb"], 3
        ),
    }
    print(json.dumps(summary))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path("/tmp/neurotrain-scale-corpus"))
    p.add_argument("--out", type=Path, default=Path("/tmp/neurotrain-scale-shards"))
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--large", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=100, help="training batches drawn in the memory run")
    p.add_argument("--loader-child", help=argparse.SUPPRESS)
    return p.parse_args()


def measure(args: argparse.Namespace, n: int) -> dict[str, Any]:
    from neurotrain.datamodules.format.manifest import load_manifest
    from neurotrain.datamodules.loading.datamodule import ShardDataModule
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.inspection import verify_shards

    files = sorted(args.corpus.glob("sub-*_eeg.edf"))[:n]
    source = args.out / f"corpus-{n}"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for f in files:  # the first n recordings, as one folder
        os.symlink(f, source / f.name)
    out = args.out / f"shards-{n}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = shard_dataset([source], out, workers=args.workers, progress=False)
    shard_s = time.perf_counter() - t0
    load_s = best_of(5, lambda: load_manifest(out))

    def setup() -> None:
        ShardDataModule([str(out)], window_seconds=2.0, batch_size=64).setup("fit")

    setup_s = best_of(3, setup)
    verify_1 = best_of(1, lambda: verify_shards(out, workers=1))
    verify_n = best_of(1, lambda: verify_shards(out, workers=args.workers))
    child = subprocess.run(
        [sys.executable, __file__, "--loader-child", str(out), "--batches", str(args.batches)],
        capture_output=True,
        text=True,
        check=True,
    )
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "edf_bytes": sum(f.stat().st_size for f in files),
        "shard_bytes": manifest["totals"]["bytes"],
        "samples": manifest["totals"]["samples"],
        "shard_s": round(shard_s, 2),
        "manifest_bytes": (out / "manifest.json").stat().st_size,
        "manifest_load_s": round(load_s, 4),
        "setup_s": round(setup_s, 3),
        "verify_s_1_worker": round(verify_1, 2),
        "verify_s_parallel": round(verify_n, 2),
        **memory,
    }


def loader_memory(shards: Path, batches: int) -> dict[str, Any]:
    """Peak RSS of a process that sets the loader up and draws ``batches`` training batches."""
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

    dm = ShardDataModule([str(shards)], window_seconds=2.0, batch_size=64, num_workers=2)
    dm.setup("fit")
    drawn = 0
    while drawn < batches:
        for _ in dm.train_dataloader():
            drawn += 1
            if drawn >= batches:
                break
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    return {"loader_peak_rss_mb": round(hwm, 1), "batches": drawn}


if __name__ == "__main__":
    main()
