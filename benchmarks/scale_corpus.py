"""Write a synthetic EEG corpus of many recordings for the scale benchmark (``benchmarks/scale.py``).

Each recording is one EDF file (written by edfio, the library MNE exports EDF with) named with
BIDS entities, ``sub-<NNNN>_task-rest_run-<R>_eeg.edf``, so ``neurotrain shard`` finds the subject
and run from the name. The signal is seeded noise plus a 10 Hz rhythm with a few events, on
standard 10-20 channel names (positions from the standard montage); recordings alternate between
two durations so the corpus is not one size repeated. The same arguments always write the same
bytes.

    python benchmarks/scale_corpus.py --out /tmp/corpus --recordings 2000      # ~3 GB
    python benchmarks/scale_corpus.py --out /tmp/corpus --recordings 200 --channels 16

The last line printed is one JSON object: recordings, bytes, seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CHANNELS = [
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "FC5",
    "FC1",
    "FC2",
    "FC6",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "CP5",
    "CP1",
    "CP2",
    "CP6",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "POz",
    "O1",
    "Oz",
    "O2",
    "AF3",
    "AF4",
    "FCz",
]
RECORDINGS_PER_SUBJECT = 2


def write_recording(path: Path, index: int, channels: int, sfreq: int, seconds: float) -> int:
    """One seeded EDF recording; returns its size in bytes."""
    from edfio import Edf, EdfAnnotation, EdfSignal

    rng = np.random.default_rng(index)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    rhythm = 10.0 * np.sin(2 * np.pi * 10.0 * t)  # µV
    signals = [
        EdfSignal(
            20.0 * rng.standard_normal(n) + rhythm,
            sampling_frequency=sfreq,
            label=name,
            physical_dimension="uV",
            physical_range=(-500.0, 500.0),
        )
        for name in CHANNELS[:channels]
    ]
    onsets = np.arange(5.0, seconds - 5.0, 10.0)
    annotations = [EdfAnnotation(float(o), None, "open" if k % 2 else "closed") for k, o in enumerate(onsets)]
    Edf(signals, annotations=annotations).write(path)
    return path.stat().st_size


def write_corpus(
    out: Path, recordings: int, channels: int = 32, sfreq: int = 128, minutes: float = 3.0
) -> tuple[int, float]:
    """Write ``recordings`` files into ``out`` (kept when already there); (bytes, seconds)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = 0
    for i in range(recordings):
        subject, run = divmod(i, RECORDINGS_PER_SUBJECT)
        path = out / f"sub-{subject:04d}_task-rest_run-{run + 1}_eeg.edf"
        if path.is_file():
            total += path.stat().st_size
            continue
        seconds = 60.0 * minutes * (1.0 if i % 2 == 0 else 0.75)
        tmp = path.with_name(f".{path.name}.tmp")
        size = write_recording(tmp, i, channels, sfreq, seconds)
        tmp.replace(path)
        total += size
    return total, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recordings", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=32, choices=range(1, len(CHANNELS) + 1))
    parser.add_argument("--sfreq", type=int, default=128)
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    nbytes, seconds = write_corpus(args.out, args.recordings, args.channels, args.sfreq, args.minutes)
    print(f"{args.recordings} recordings, {nbytes / 1e9:.2f} GB in {args.out} ({seconds:.0f} s)")
    print(json.dumps({"recordings": args.recordings, "bytes": nbytes, "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
