"""Linear-probe epochs with and without the token cache: the frozen encoder runs once, or every epoch.

The same ``ClassifierModule`` (frozen ``eeg_probe.yaml`` encoder, virtual-channel pooling) trains
its head for ``--epochs`` passes over the same synthetic windows (128 channels × 0.75 s at 256 Hz,
the example EEG's shape) through ``pytorch_lightning.Trainer.fit``, once with
``probe_cache_gb=0`` (the encoder runs on every batch of every epoch) and once with the cache.
Both runs see identical batches in identical order, so the final heads must be equal: the script
checks that too, because a cache that changed the result would be no speed-up at all.

    python benchmarks/probe_cache.py [--epochs 10] [--windows 512]

Figures: seconds per run, ``speedup`` = t_uncached / t_cached, windows/s of each, and the
cache's size. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time


def run(epochs: int, windows: int, cache_gb: float) -> tuple[float, dict, int]:
    """Seconds to fit the probe, its head's final weights, and bytes held by the cache."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader

    from neurotrain.models.modules import ClassifierModule
    from neurotrain.models.synthetic import synthetic_signal_batch

    torch.manual_seed(0)
    model = ClassifierModule(
        num_classes=2,
        encoder={"size": "tiny", "dim": 128, "depth": 4, "heads": 4, "patch_size": 64},
        linear_probe=True,
        pooling="virtual",
        optimizer={"lr": 1e-2},
        probe_cache_gb=cache_gb,
    )
    batches = []
    for i in range(windows // 32):
        b = synthetic_signal_batch(32, channels=128, samples=192, sfreq=256.0, labels="class", seed=i)
        b["sample_id"] = [f"bench@{i}:{j}" for j in range(32)]
        batches.append(b)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    t0 = time.perf_counter()
    trainer.fit(model, DataLoader(batches, batch_size=None))
    seconds = time.perf_counter() - t0
    held = model.token_cache.bytes if model.token_cache is not None else 0
    return seconds, {k: v.clone() for k, v in model.head.state_dict().items()}, held


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--windows", type=int, default=512)
    args = p.parse_args()
    t_plain, head_plain, _ = run(args.epochs, args.windows, 0.0)
    t_cached, head_cached, held = run(args.epochs, args.windows, 2.0)
    for key, value in head_plain.items():
        torch.testing.assert_close(head_cached[key], value, rtol=0, atol=0)
    n = args.epochs * (args.windows // 32) * 32
    result = {
        "epochs": args.epochs,
        "windows": args.windows,
        "uncached_s": round(t_plain, 2),
        "cached_s": round(t_cached, 2),
        "uncached_windows_per_s": round(n / t_plain, 1),
        "cached_windows_per_s": round(n / t_cached, 1),
        "speedup": round(t_plain / t_cached, 2),
        "cache_mb": round(held / 2**20, 1),
        "same_head": True,
    }
    print(
        f"{args.epochs} probe epochs over {args.windows} windows: {t_plain:.1f} s without the cache, "
        f"{t_cached:.1f} s with it ({result['speedup']}x; {result['cache_mb']} MB held); heads identical"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
