"""How fast `neurotrain shard` turns the example EEG into shards, against MNE merely reading it.

Baseline, measured in the same run: ``mne.io.read_raw_edf(preload=True)`` of each EDF file
(the least any converter must do), and, for reference, ``mne_bids.read_raw_bids`` + load (what
reading a BIDS recording with its events, channels and electrodes sidecars costs through
mne-bids). Then ``shard_dataset`` on the same BIDS folder with 1 and 2 workers (it applies the
BIDS sidecars, decodes the EDF, checks, segments, computes statistics, writes float16 tar shards
and hashes them). Each timing is the best of ``--repeats`` warm runs.

    python benchmarks/shard_throughput.py [--repeats 3] [--profile 30]

The last line printed is one JSON object; ``ratio_vs_mne_read`` is sharding time (1 worker)
divided by MNE read time, ``ratio_vs_mne_read_2_workers`` the same with 2 workers. With
``--profile N``, one more 1-worker run goes through ``cProfile`` and its N functions of most
own time are printed (to stderr) before the JSON line; that run is not timed.
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
from pathlib import Path

import mne
from timing import best_of

from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.datamodules.sharding.examples import fetch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the top N of a profiled run"
    )
    args = parser.parse_args()

    root = fetch("eeg")
    edfs = sorted(root.glob("sub-*/eeg/*_eeg.edf"))
    n_values = 0
    for f in edfs:
        raw = mne.io.read_raw_edf(f, preload=False, verbose="error")
        n_values += len(raw.ch_names) * raw.n_times
    mb = n_values * 4 / 1e6  # recording size as float32

    def read_all() -> None:
        for f in edfs:
            mne.io.read_raw_edf(f, preload=True, verbose="error")

    def read_bids() -> None:
        import mne_bids

        for f in edfs:
            bp = mne_bids.get_bids_path_from_fname(f)
            bp.update(root=root)
            mne_bids.read_raw_bids(bp, verbose="error").load_data(verbose="error")

    def shard(workers: int):
        def run() -> None:
            out = Path(tempfile.mkdtemp(prefix="nt-bench-"))
            try:
                shard_dataset([root], out, workers=workers)
            finally:
                shutil.rmtree(out)

        return run

    read_all()  # warm the page cache
    t_read = best_of(args.repeats, read_all)
    t_bids = best_of(args.repeats, read_bids)
    t_shard1 = best_of(args.repeats, shard(1))
    t_shard2 = best_of(args.repeats, shard(2))
    result = {
        "recording_mb_float32": round(mb, 1),
        "mne_read_s": round(t_read, 3),
        "mne_read_mb_per_s": round(mb / t_read, 1),
        "mne_bids_read_s": round(t_bids, 3),
        "shard_1_worker_s": round(t_shard1, 3),
        "shard_1_worker_mb_per_s": round(mb / t_shard1, 1),
        "shard_2_workers_s": round(t_shard2, 3),
        "shard_2_workers_mb_per_s": round(mb / t_shard2, 1),
        "ratio_vs_mne_read": round(t_shard1 / t_read, 3),
        "ratio_vs_mne_read_2_workers": round(t_shard2 / t_read, 3),
        "ratio_vs_mne_bids_read": round(t_shard1 / t_bids, 3),
    }
    print(f"MNE read_raw_edf(preload=True): {t_read:.2f} s for {mb:.0f} MB ({mb / t_read:.0f} MB/s)")
    print(
        f"neurotrain shard, 1 worker:     {t_shard1:.2f} s ({mb / t_shard1:.0f} MB/s), ratio {t_shard1 / t_read:.2f}"
    )
    print(
        f"neurotrain shard, 2 workers:    {t_shard2:.2f} s ({mb / t_shard2:.0f} MB/s), ratio {t_shard2 / t_read:.2f}"
    )
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(shard(1))
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.profile)
        print(text.getvalue(), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
