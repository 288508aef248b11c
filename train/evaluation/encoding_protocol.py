"""``neurotrain evaluate --protocol encoding``: image features -> brain responses, with ceilings.

    neurotrain evaluate --config align_image --protocol encoding --layers layer3 pre_logits \\
        --image-weights resnet18.safetensors --time-bins 4 --folds 5 --out eval/encoding

For each subject and each layer, `encoding.encode` fits a cross-validated ridge (himalaya, an
alpha per target chosen by inner folds over the training images only) from the layer's features
of each image to the subject's responses (channels × ``--time-bins`` spans of the epoch, repeats
averaged), with outer folds over images (``--folds``, seeded by ``--split-seed``), so no image is
scored by a model that saw it. Beside each score: the shuffled-feature control (feature rows
permuted across images, same folds) and the noise ceiling from the repeated presentations
(NCSNR; the score divided by it is the normalised score). Nothing is fitted before: the features
come from the image model as loaded. A config whose model is a learned readout
(``encode_factorised``, ``encode_attention``) is trained and scored on held-out images instead
(``encoding_learned.py``), with the same outputs.

Outputs in ``--out``: ``results.json`` (every target's r, control r, ceiling, alphas),
``results.md`` (median over targets per subject × layer), ``r_map_<subject>_<layer>.png`` (per-
channel r, mean over time bins: a scalp topomap for EEG/MEG, a glass brain of parcel centroids for
fMRI parcels, bars for iEEG and channels without positions) and, with
W&B not disabled, the table and maps in an ``evaluate-encoding`` run.
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
from neurotrain.train.evaluation.encoding import encode
from neurotrain.train.evaluation.stimulus_responses import SubjectResponses, kept

PROTOCOL = "encoding"
SENSOR_TYPES = ("eeg", "mag", "grad")


def run_from_args(args: argparse.Namespace) -> int:
    """``neurotrain evaluate --protocol encoding ...``: exit status 0, or 2 with the reason.

    A config whose model is a learned readout (`EncodingReadoutModule`: ``encode_factorised``,
    ``encode_attention``) is fitted and scored on held-out images (``encoding_learned.py``);
    any other config gives the epochs and the image model of the ridge encoding here."""
    from neurotrain.train.evaluation import encoding_learned

    if encoding_learned.is_learned(args.config, list(args.extra or [])):
        return encoding_learned.run_from_args(args)
    try:
        inputs = load_inputs(
            args.config, list(args.extra or []), args.image_model, args.image_weights, args.layers
        )
        evaluate_encoding(inputs, Path(args.out), args)
    except BrainImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def evaluate_encoding(inputs: BrainImageInputs, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Score every subject × layer; write the results and maps into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows, detail = [], {}
    for sub, resp in inputs.responses.subjects.items():
        keep = kept(resp)
        y = resp.binned(args.time_bins)[keep]  # [n_stimuli, n_repeats, C * bins]
        if y.shape[0] < 2 * args.folds:
            raise BrainImageError(f"subject {sub}: {y.shape[0]} images for {args.folds} folds")
        for layer, x in inputs.features.items():
            res = encode(x[keep], y, n_folds=args.folds, seed=args.split_seed, control=True)
            per_channel = res.r.reshape(-1, args.time_bins).mean(axis=1)  # [C]
            row = {
                "subject": sub,
                "layer": layer,
                "images": int(y.shape[0]),
                "repeats": int(y.shape[1]),
                "targets": int(y.shape[2]),
                **res.summary(),
                "median_ceiling": None if res.ceiling is None else float(np.median(res.ceiling)),
            }
            rows.append(row)
            detail[f"{sub}/{layer}"] = {
                "r": res.r.tolist(),
                "control_r": None if res.control_r is None else res.control_r.tolist(),
                "ceiling": None if res.ceiling is None else res.ceiling.tolist(),
                "alphas": res.alphas.tolist(),
                "per_channel_r": per_channel.tolist(),
            }
            r_map(per_channel, resp, out / f"r_map_{sub}_{layer}.png", f"sub-{sub}, {layer}")
    results = {
        "protocol": PROTOCOL,
        "command": shlex.join(sys.argv),
        **plan(args, inputs),
        "folds": args.folds,
        "split_seed": args.split_seed,
        "time_bins": args.time_bins,
        "rows": rows,
        "targets": detail,
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))
    print(markdown(results))
    log_encoding_wandb(
        results, out, args.wandb_project, ("config", "image_model", "layers", "folds", "time_bins")
    )
    return results


def markdown(results: dict[str, Any]) -> str:
    """Median over targets per subject × layer, with the control and the ceiling beside."""
    intro = (
        f"{results['image_model']} features -> responses ({results['time_bins']} time bins per channel), "
        f"ridge with a per-target alpha (himalaya), {results['folds']} outer folds over images; "
        "median over targets; r = Pearson r on held-out images, repeats averaged."
    )
    keys = [("subject", "subject"), ("layer", "layer")]
    return score_table("# encoding evaluation", intro, keys, "control r (shuffled features)", results["rows"])


def score_table(
    title: str,
    intro: str,
    keys: list[tuple[str, str]],
    control: str,
    rows: list[dict[str, Any]],
    extra: tuple[str, str] | None = None,
) -> str:
    """An encoding results table: the ``keys`` columns ((header, row key), the first left-aligned,
    the rest too when not numbers), images, repeats, median r, the ``control`` column, ``extra``
    (one more score column, (header, row key)), the noise ceiling and r / ceiling; one line per row."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    scores = [
        ("images", "images"),
        ("repeats", "repeats"),
        ("median r", "median_r"),
        (control, "median_control_r"),
    ]
    scores += [extra] if extra else []
    scores += [("noise ceiling r", "median_ceiling"), ("r / ceiling", "median_normalised")]
    numeric = [not isinstance(rows[0].get(k) if rows else "", str) for _, k in keys]
    align = ["---:" if n and i else "---" for i, n in enumerate(numeric)] + ["---:"] * len(scores)
    lines = [title, "", intro, "", "| " + " | ".join(h for h, _ in keys + scores) + " |"]
    lines.append("| " + " | ".join(align) + " |")
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(k)) for _, k in keys + scores) + " |")
    return "\n".join(lines) + "\n"


def r_map(values: np.ndarray, resp: SubjectResponses, path: Path, title: str) -> str:
    """Per-channel r as a picture, by what the channels are; returns which picture it drew.

    ``"topomap"``: EEG/MEG sensors with positions, a scalp map (MNE); ``"parcels"``: fMRI parcels
    (``bold``) with centroids, a glass brain with one marker per parcel centroid (nilearn's
    ``plot_markers``; the centroids are in the atlas' world space, MNI for the shipped atlases);
    ``"bars"``: anything else (iEEG contacts, parcels without positions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    located = len(resp.positions) == len(values) and np.isfinite(resp.positions).all()
    kind = "bars"
    if located and all(t in SENSOR_TYPES for t in resp.types):
        kind = "topomap"
    elif located and all(t == "bold" for t in resp.types):
        kind = "parcels"
    if kind == "parcels":
        from nilearn import plotting

        fig = plt.figure(figsize=(8, 3))
        plotting.plot_markers(
            values,
            resp.positions * 1000.0,  # metres -> mm
            node_cmap="RdBu_r",
            node_vmin=-1.0,
            node_vmax=1.0,
            node_size=30,
            display_mode="lzry",
            figure=fig,
            title=title,
            colorbar=True,
        )
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4) if kind == "topomap" else (max(4.0, 0.25 * len(values)), 3))
        if kind == "topomap":
            import mne

            names = [f"ch{i}" for i in range(len(values))]
            info = mne.create_info(names, 100.0, "eeg")
            montage = mne.channels.make_dig_montage(
                dict(zip(names, resp.positions, strict=True)), coord_frame="head"
            )
            info.set_montage(montage, verbose="error")
            im, _ = mne.viz.plot_topomap(values, info, axes=ax, show=False, cmap="RdBu_r", vlim=(-1, 1))
            fig.colorbar(im, ax=ax, shrink=0.7, label="Pearson r")
        else:
            ax.bar(np.arange(len(values)), values)
            ax.set_xlabel("channel / parcel")
            ax.set_ylabel("Pearson r")
        ax.set_title(title)
        fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return kind


def log_encoding_wandb(
    results: dict[str, Any], out: Path, project: str, config_keys: tuple[str, ...]
) -> None:
    """The table and the maps in one ``evaluate-encoding`` W&B run (``config_keys`` of the results
    become the run's config)."""
    columns = ["subject", "layer", "median_r", "median_control_r", "median_ceiling"]
    rows = [[r.get(c) for c in columns] for r in results["rows"]]

    def logged(wandb: Any) -> dict[str, Any]:
        maps = {p.stem: wandb.Image(str(p)) for p in sorted(out.glob("r_map_*.png"))}
        return {
            "evaluate/encoding": wandb.Table(columns=columns, data=rows),
            **{f"maps/{k}": v for k, v in maps.items()},
        }

    log_to_wandb(out, project, results["protocol"], {k: results[k] for k in config_keys}, logged)
