"""Training-step throughput of the signal encoder: Lightning vs a plain PyTorch loop, same work.

For each size, the same ``PretrainModule`` (masked reconstruction) runs the same number of
optimizer steps on the same synthetic batches twice, each in its own process: once through
``pytorch_lightning.Trainer.fit`` (no logger, no checkpointing, no progress bar: what
Lightning itself costs) and once in a hand-written loop (forward, backward, AdamW step,
scheduler step). Tokens are (real channel, time patch) pairs.

    python benchmarks/train_throughput.py [--steps 30] [--sizes tiny small]

Figures: tokens/s per size and mode, ``lightning_overhead`` = (t_lightning - t_plain) / t_plain
per size, and the peak resident memory of each process. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# (batch, channels, samples, patch) per size: small enough to run on 2 CPU cores in seconds
SHAPES = {"tiny": (16, 64, 512, 64), "small": (4, 32, 256, 64), "base": (8, 128, 1024, 64)}
WARMUP = 3


def batches(size: str, n: int, seed: int = 0) -> list[dict]:
    from neurotrain.models.synthetic import synthetic_signal_batch

    b, c, t, _ = SHAPES[size]
    return [synthetic_signal_batch(batch_size=b, channels=c, samples=t, seed=seed + i) for i in range(n)]


def run_one(size: str, mode: str, steps: int) -> dict:
    import pytorch_lightning as pl
    import torch

    from neurotrain.models.modules import PretrainModule

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    patch = SHAPES[size][3]
    module = PretrainModule(encoder={"size": size, "patch_size": patch}, optimizer={"lr": 1e-4})
    data = batches(size, steps + WARMUP)
    tokens = sum(int(b["channel_mask"].sum()) * (b["signal"].shape[-1] // patch) for b in data[WARMUP:])

    if mode == "plain":
        opt_cfg = module.configure_optimizers()
        optimizer, scheduler = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
        module.train()
        t0 = 0.0
        for i, batch in enumerate(data):
            if i == WARMUP:
                t0 = time.perf_counter()
            loss = module.compute_loss(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        elapsed = time.perf_counter() - t0
    else:

        class Timer(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == WARMUP:
                    self.t0 = time.perf_counter()

            def on_train_end(self, trainer, pl_module):
                self.elapsed = time.perf_counter() - self.t0

        timer = Timer()
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps + WARMUP,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            limit_val_batches=0,
        )
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
        elapsed = timer.elapsed
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_params = sum(p.numel() for p in module.parameters())
    return {
        "size": size,
        "mode": mode,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "peak_mb": peak_mb,
        "params": n_params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=sorted(SHAPES))
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per mode; the best counts")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker[0], args.worker[1], args.steps)))
        return

    result: dict = {"steps": args.steps, "tokens_per_s": {}, "lightning_overhead": {}, "peak_mb": {}}
    for size in args.sizes:
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for mode in ("plain", "lightning"):  # alternate so drift on a shared machine hits both
                cmd = [sys.executable, __file__, "--steps", str(args.steps), "--worker", size, mode]
                out = json.loads(
                    subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
                )
                if mode not in best or out["seconds"] < best[mode]["seconds"]:
                    best[mode] = out
        plain, light = best["plain"], best["lightning"]
        overhead = (light["seconds"] - plain["seconds"]) / plain["seconds"]
        print(
            f"{size:>5} ({plain['params'] / 1e6:.2f} M params): plain {plain['tokens_per_s']:,.0f} tokens/s, "
            f"Lightning {light['tokens_per_s']:,.0f} tokens/s, overhead {overhead:+.1%}, "
            f"peak RSS {plain['peak_mb']:.0f} / {light['peak_mb']:.0f} MB"
        )
        result["tokens_per_s"][size] = {
            "plain": round(plain["tokens_per_s"]),
            "lightning": round(light["tokens_per_s"]),
        }
        result["lightning_overhead"][size] = round(overhead, 4)
        result["peak_mb"][size] = {"plain": round(plain["peak_mb"]), "lightning": round(light["peak_mb"])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
