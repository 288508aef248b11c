"""Training speed of the learned encoding readouts (`EncodingReadoutModule`), images per second.

The same batches (synthetic: 64 px images, 16-channel epochs of 50 samples, 2 subjects; seeded)
through four set-ups, each for ``--steps`` optimizer steps after ``--warmup`` steps:

- ``plain_factorised``: a plain PyTorch loop over the module's own ``compute_loss`` with AdamW on
  the trainable parameters — the baseline;
- ``lightning_factorised``: `pytorch_lightning.Trainer.fit` of the same module on the same batches
  (CPU, no logger, no checkpoint): what ``neurotrain fit --config encode_factorised`` adds;
- ``plain_attention``: the attention readout in the plain loop;
- ``plain_unfrozen``: the factorised readout with the image network trained too
  (``freeze_backbone: false``).

    python benchmarks/readout_training.py [--steps 40] [--batch 32] [--layer layer2]

Figures: images/s of each, and each over ``plain_factorised``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def batches(n: int, batch: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randn(batch, 3, 64, 64, generator=g),
            "signal": torch.randn(batch, 16, 50, generator=g),
            "channel_mask": torch.ones(batch, 16, dtype=torch.bool),
            "subject": ["01" if i % 2 else "02" for i in range(batch)],
        }
        for _ in range(n)
    ]


def module(readout: str, layer: str, freeze: bool):
    from neurotrain.models.modules import EncodingReadoutModule

    torch.manual_seed(0)
    return EncodingReadoutModule(
        image_weights="random",
        layer=layer,
        readout=readout,
        freeze_backbone=freeze,
        subjects=["01", "02"],
        channel_slots=16,
        input_size=64,
    )


def plain(readout: str, layer: str, freeze: bool, data: list[dict], warmup: int) -> float:
    """Images/s of a plain loop: compute_loss, backward, AdamW step."""
    m = module(readout, layer, freeze).train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    for i, b in enumerate(data):
        if i == warmup:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        m.compute_loss(b, shuffle=False)["loss"].backward()
        opt.step()
    return sum(len(b["subject"]) for b in data[warmup:]) / (time.perf_counter() - t0)


def lightning(readout: str, layer: str, data: list[dict], warmup: int) -> float:
    """Images/s of Trainer.fit over the same batches (timed from the first step after warmup)."""
    import pytorch_lightning as pl

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.t1 = time.perf_counter()

    clock = Clock()
    m = module(readout, layer, True)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        num_sanity_val_steps=0,
    )
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(m, train_dataloaders=loader)
    return sum(len(b["subject"]) for b in data[warmup:]) / (clock.t1 - clock.t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--layer", default="layer2")
    args = p.parse_args()
    data = batches(args.warmup + args.steps, args.batch)
    print(f"{args.steps} steps of {args.batch} images (64 px), resnet18 {args.layer}; {os.cpu_count()} CPUs")
    ips = {
        "plain_factorised": plain("factorised", args.layer, True, data, args.warmup),
        "lightning_factorised": lightning("factorised", args.layer, data, args.warmup),
        "plain_attention": plain("attention", args.layer, True, data, args.warmup),
        "plain_unfrozen": plain("factorised", args.layer, False, data, args.warmup),
    }
    for name, v in ips.items():
        print(f"{name}: {v:.0f} images/s ({v / ips['plain_factorised']:.2f}x plain_factorised)")
    print(
        json.dumps(
            {
                "steps": args.steps,
                "batch": args.batch,
                "layer": args.layer,
                "cpus": os.cpu_count(),
                "images_per_s": {k: round(v, 1) for k, v in ips.items()},
                "over_plain_factorised": {k: round(v / ips["plain_factorised"], 3) for k, v in ips.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
