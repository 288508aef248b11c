"""``neurotrain evaluate --protocol rsa``: which image-model layer shares the brain's geometry, when.

    neurotrain evaluate --config align_image --protocol rsa --layers layer1 layer3 pre_logits \\
        --image-weights resnet18.safetensors --rsa-windows 4 --rsa-method spearman --out eval/rsa

For each subject, the epoch (the config's ``tmin``..``tmax``) is cut into ``--rsa-windows``
equal time windows; each window's patterns (channels × samples in the window, one per image and
repeat) give the data RDMs, each layer's features a model RDM (`rsa.rsa_table`, rsatoolbox), and
the table holds their comparison (``--rsa-method``: Spearman, Kendall's τ_A or Pearson) layer ×
time window, with each window's noise ceiling from the repeats. Nothing is fitted: RSA compares
geometries, so there is nothing to tune on the scored data.

Outputs in ``--out``: ``results.json``, ``results.md`` (a layer × window table per subject, the
best layer of each window), ``rsa_<subject>.png`` (the table as a heat map) and, unless W&B is
disabled, the tables and plots in an ``evaluate-rsa`` run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from neurotrain.datamodules.io.files import atomic_write_json, atomic_write_text
from neurotrain.train.evaluation.brain_image_inputs import (
    BrainImageError,
    BrainImageInputs,
    load_inputs,
    log_to_wandb,
    plan,
)
from neurotrain.train.evaluation.rsa import plot_rsa_table, rsa_table, time_windows
from neurotrain.train.evaluation.stimulus_responses import kept

PROTOCOL = "rsa"


def run_from_args(args: argparse.Namespace) -> int:
    """``neurotrain evaluate --protocol rsa ...``: exit status 0, or 2 with the reason."""
    try:
        inputs = load_inputs(
            args.config, list(args.extra or []), args.image_model, args.image_weights, args.layers
        )
        evaluate_rsa(inputs, Path(args.out), args)
    except BrainImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def windows_of(times: np.ndarray, n: int, sfreq: float) -> dict[str, tuple[float, float]]:
    """``n`` equal windows over the epoch, named by their span in ms (``"0-125ms"``)."""
    edges = np.linspace(times[0], times[-1] + 1.0 / sfreq, n + 1)
    return {
        f"{a * 1000:.0f}-{b * 1000:.0f}ms": (float(a), float(b))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    }


def evaluate_rsa(inputs: BrainImageInputs, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One layer × window table per subject; write the results and plots into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    r = inputs.responses
    windows = windows_of(r.times, args.rsa_windows, r.sfreq)
    tables = {}
    for sub, resp in r.subjects.items():
        keep = kept(resp)
        brain = time_windows(resp.epochs[keep], r.times, windows)  # name -> [n, n_repeats, C * samples]
        layers = {k: v[keep] for k, v in inputs.features.items()}
        table = rsa_table(layers, brain, method=args.rsa_method)
        tables[sub] = table
        fig = plot_rsa_table(table)
        fig.suptitle(f"sub-{sub}: {args.rsa_method}, layer x time window")
        path = out / f"rsa_{sub}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        plt.close(fig)
        tmp.replace(path)
    results = {
        "protocol": PROTOCOL,
        "command": shlex.join(sys.argv),
        **plan(args, inputs),
        "method": args.rsa_method,
        "windows": windows,
        "tables": {
            sub: {
                "layers": t.layers,
                "windows": t.regions,
                "values": t.values.tolist(),
                "ceiling_lower": t.lower.tolist(),
                "ceiling_upper": t.upper.tolist(),
                "best_layer": {w: t.best_layer(w) for w in t.regions},
            }
            for sub, t in tables.items()
        },
    }
    text = markdown(results, tables)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", text)
    print(text)
    _log_wandb(results, out, args.wandb_project)
    return results


def markdown(results: dict[str, Any], tables: dict[str, Any]) -> str:
    """Per subject: the layer × window table with the ceilings, and the best layer per window."""
    lines = [
        "# RSA evaluation",
        "",
        f"{results['image_model']} layers vs brain RDMs per time window ({results['method']}; "
        "correlation-distance RDMs, one per repeat; noise ceiling [lower, upper] from the repeats).",
    ]
    for sub, table in tables.items():
        best = results["tables"][sub]["best_layer"]
        lines += [
            "",
            f"## sub-{sub}",
            "",
            *table.lines(),
            "",
            "best layer: " + ", ".join(f"{w}: {b}" for w, b in best.items()),
        ]
    return "\n".join(lines) + "\n"


def _log_wandb(results: dict[str, Any], out: Path, project: str) -> None:
    """The tables and plots in one ``evaluate-rsa`` W&B run."""

    def logged(wandb: Any) -> dict[str, Any]:
        out_: dict[str, Any] = {}
        for sub, t in results["tables"].items():
            rows = [[layer, *vals] for layer, vals in zip(t["layers"], t["values"], strict=True)]
            out_[f"evaluate/rsa_{sub}"] = wandb.Table(columns=["layer", *t["windows"]], data=rows)
            out_[f"plots/rsa_{sub}"] = wandb.Image(str(out / f"rsa_{sub}.png"))
        return out_

    config = {k: results[k] for k in ("config", "image_model", "layers", "method")}
    log_to_wandb(out, project, PROTOCOL, config, logged)
