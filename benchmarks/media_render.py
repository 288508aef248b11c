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
import sys
from pathlib import Path

from timing import best_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' synthetic reconstruction


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
    from fixtures_media import fake_reconstruction

    f = fake_reconstruction()
    batch, masked, target, recon, error, s = (
        f[k] for k in ("batch", "masked", "target", "recon", "error", "patch")
    )
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
