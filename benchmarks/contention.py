"""A pretraining fit on a busy machine: neurotrain's OpenMP wait policy against OpenMP's default.

The same short ``neurotrain fit`` (``eeg_pretrain`` on the example EEG shards, its 2 loader
workers) runs four times, each in a fresh process: as the ``neurotrain`` command runs it
(``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported, `train/run/threads.py`) and with
OpenMP's default wait (torch imported before the command's ``main``, so the variable is never
read: what the command did before), each on a quiet machine and beside ``--load`` busy-loop
processes (a competing job: by default one per core). Wall seconds of the whole command.

    python benchmarks/contention.py                 # ~8 minutes on 2 cores
    python benchmarks/contention.py --steps 20      # quicker

Figures: ``wall_s`` per (wait policy, condition), ``slowdown`` = loaded / quiet per policy (the
aim: <= 2), and ``openmp_default_vs_passive`` = wall(OpenMP default) / wall(passive) per condition
(> 1: the passive wait is faster). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loader_throughput import ensure_shards  # noqa: E402

from neurotrain.train.run.threads import WAIT_POLICY  # noqa: E402

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # left out: PyTorch sizes its own pool

BUSY = "while True:\n    pass\n"


# torch (and with it OpenMP, which reads OMP_WAIT_POLICY once as it loads) before the command's main
OPENMP_DEFAULT = "import sys, torch; from neurotrain.train.cli import main; sys.exit(main(sys.argv[1:]))"


def fit_seconds(
    shards: Path, steps: int, threads: int | None, root: Path, name: str, openmp_default: bool = False
) -> float:
    """Wall seconds of one ``neurotrain fit`` of ``steps`` pretraining steps in a fresh process."""
    entry = ["-c", OPENMP_DEFAULT] if openmp_default else ["-m", "neurotrain.train.cli"]
    argv = [sys.executable, *entry, "fit", "--config", "eeg_pretrain"]
    argv += [f"--data.datasets=[{shards}]", f"--trainer.max_steps={steps}"]
    argv += ["--trainer.limit_val_batches=2", f"--trainer.default_root_dir={root}", "--run_name", name]
    argv += ["--media_every_n_val", "0", "--progress_every_s", "0"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_VARIABLES, WAIT_POLICY)}
    env["WANDB_MODE"] = "disabled"
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"fit {name} failed:\n{out.stderr[-3000:]}")
    return wall


def with_load(n: int):
    """``n`` busy-loop processes, started now; call the result to stop them."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    time.sleep(1.0)

    def stop() -> None:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()

    return stop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="pretraining steps per fit")
    p.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy-loop processes")
    p.add_argument("--shards", help="shard folder of the example EEG (default: shard it into the cache)")
    args = p.parse_args()
    shards = Path(args.shards) if args.shards else ensure_shards()
    choices = {"passive": False, "openmp_default": True}
    wall: dict[str, dict[str, float]] = {k: {} for k in choices}
    with tempfile.TemporaryDirectory() as tmp:
        for condition in ("quiet", "loaded"):
            for label, openmp_default in choices.items():
                stop = with_load(args.load) if condition == "loaded" else None
                try:
                    s = fit_seconds(
                        shards, args.steps, None, Path(tmp), f"{label}-{condition}", openmp_default
                    )
                finally:
                    if stop:
                        stop()
                wall[label][condition] = round(s, 1)
                print(f"{label:>14} wait, {condition:>6}: {s:6.1f} s", flush=True)
    figures = {
        "cores": os.cpu_count(),
        "loader_workers": 2,
        "load_processes": args.load,
        "steps": args.steps,
        "wall_s": wall,
        "slowdown": {k: round(v["loaded"] / v["quiet"], 2) for k, v in wall.items()},
        "openmp_default_vs_passive": {
            c: round(wall["openmp_default"][c] / wall["passive"][c], 2) for c in ("quiet", "loaded")
        },
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
