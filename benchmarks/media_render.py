"""Validation media cost: the reconstruction, topomap and confusion figures one validation draws.

A pretraining validation draws a reconstruction figure and an error topomap, a classifier's a
confusion matrix. This times the three (warm: MNE's topomap imports done once before) against a
baseline measured in the same run, one plain matplotlib line plot of the same reconstruction
target saved at the same dpi, so the figure says how many plain plots a validation's media cost.

    python benchmarks/media_render.py [--repeats 5]

The last line is one JSON object: seconds (best of ``--repeats``) and ``ratio_vs_plain_plot``.
"""

from __future__ import annotations

import argparse
import io
import json
import time


def fake_batch(n: int = 4, c: int = 32, p: int = 8, s: int = 64, seed: int = 0):
    """A reconstruction of ``n`` windows, ``c`` EEG channels on a ring, ``p`` patches of ``s`` samples."""
    import numpy as np
    import torch

    from neurotrain.datamodules.format.channel_types import TYPE_INDEX

    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, c, endpoint=False)
    elev = np.where(np.arange(c) % 2, 0.4, 1.0)
    pos = 0.09 * np.stack([np.cos(theta) * np.cos(elev), np.sin(theta) * np.cos(elev), np.sin(elev)], -1)
    batch = {
        "channel_mask": torch.ones(n, c, dtype=torch.bool),
        "position_mask": torch.ones(n, c, dtype=torch.bool),
        "channel_types": torch.full((n, c), TYPE_INDEX["eeg"]),
        "positions": torch.tensor(pos, dtype=torch.float32).expand(n, c, 3).clone(),
    }
    masked = rng.random((n, c, p)) < 0.5
    target = rng.standard_normal((n, c, p * s)).astype(np.float32)
    recon = np.where(np.repeat(masked, s, -1), target + 0.3 * rng.standard_normal(target.shape), target)
    error = rng.random((n, c)).astype(np.float32) * masked.any(-1)
    return batch, masked, target, recon, error, s


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from neurotrain.train.run.media import (
        confusion_figure,
        reconstruction_figure,
        topomap_figure,
        topomap_values,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    batch, masked, target, recon, error, s = fake_batch()
    real = batch["channel_mask"].numpy()

    def save(fig) -> None:
        fig.savefig(io.BytesIO(), dpi=72)
        plt.close(fig)

    def plain() -> None:
        fig, ax = plt.subplots()
        ax.plot(target[0].T[:, :6])
        save(fig)

    def media() -> None:
        save(reconstruction_figure(target, recon, masked, real, 256.0, s, 2, 3))
        save(topomap_figure(*topomap_values(batch, masked, error)))
        save(confusion_figure(np.array([[5, 1], [2, 7]]), ["face", "house"]))

    media()  # warm: imports and MNE's caches
    plain_s, media_s = best_of(args.repeats, plain), best_of(args.repeats, media)
    result = {
        "plain_plot_s": round(plain_s, 4),
        "validation_media_s": round(media_s, 4),
        "ratio_vs_plain_plot": round(media_s / plain_s, 2),
    }
    print(
        f"validation media {media_s:.3f} s, a plain plot {plain_s:.3f} s ({result['ratio_vs_plain_plot']}x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
