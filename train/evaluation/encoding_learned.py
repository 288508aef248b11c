"""``neurotrain evaluate --protocol encoding`` for a learned readout (`EncodingReadoutModule`).

    neurotrain evaluate --config encode_factorised --protocol encoding --out eval/factorised \\
        --model.image_weights=resnet18.safetensors

When the config's model is an `EncodingReadoutModule` (``encode_factorised``, ``encode_attention``)
the encoding protocol does not fit a ridge per fold: the readout is trained, so it is fitted once
per training seed (``--seeds``) on the train split's images, validated on the val split's, and
scored on the test split's, which no training epoch showed (the shards must be split by stimulus;
checked before any fit, as retrieval does). Beside each model the **control**: the same config
with ``shuffle_pairing: true`` (each batch's images permuted before the network, in training and
validation), fitted with the same seed and scored the same way on the true pairs: it sees the same
responses and images, only their pairing is broken, so it should score near 0.

Scores per subject (targets = channels × the model's ``time_bins``, channel-major like the ridge
protocol): per-target Pearson r over the held-out images between the prediction for an image and
the mean of its repeated presentations; the noise ceiling on r from those repeats (NCSNR:
``sqrt(ncsnr² / (ncsnr² + 1/n_repeats))``) and r divided by it. ``results.json``, ``results.md``,
``r_map_<subject>_<readout>.png`` and the W&B run are those of the ridge protocol, one row per
subject × seed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import Namespace

from neurotrain.datamodules.io.files import atomic_write_json, atomic_write_text
from neurotrain.train.evaluation.encoding import ceiling_and_normalised, fit_ridge, pearson_r, to_numpy
from neurotrain.train.evaluation.encoding_protocol import log_encoding_wandb, r_map, score_table
from neurotrain.train.evaluation.retrieval import (
    RetrievalError,
    check_held_out,
    claim_folder,
    load_fitted,
    stage_datamodule,
)
from neurotrain.train.evaluation.stimulus_responses import StimulusResponses, collect, kept
from neurotrain.train.run.fit_once import fit_once, say, seeded_run_config

PROTOCOL = "encoding"
VARIANTS = {"model": False, "control": True}  # run name prefix -> shuffle_pairing


def is_learned(config: str | Path, overrides: list[str]) -> bool:
    """Whether ``config`` (with the overrides) names an `EncodingReadoutModule`."""
    from neurotrain.models.modules import EncodingReadoutModule
    from neurotrain.train.run.lightning_cli import load_config, model_class

    try:
        cls = model_class(load_config(["--config", str(config), *overrides]))
    except Exception:  # the ridge path reports a config that does not parse
        return False
    return cls is not None and issubclass(cls, EncodingReadoutModule)


def run_from_args(args: argparse.Namespace) -> int:
    """``neurotrain evaluate --protocol encoding --config <learned readout>``: 0, or 2 with the reason."""
    try:
        evaluate_learned(args.config, Path(args.out), args.seeds, list(args.extra or []), args.wandb_project)
    except (RetrievalError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def evaluate_learned(
    config: str | Path,
    out: Path,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    wandb_project: str = "neurotrain",
) -> dict[str, Any]:
    """Fit the readout and its shuffled-pairing control per seed; score both on held-out images."""
    seeds, overrides = list(seeds or [0]), list(overrides or [])
    cfg = _check_config(config, overrides)
    held_out = check_held_out(stage_datamodule(cfg), PROTOCOL)  # before any fit
    claim_folder(out, {"protocol": PROTOCOL, "config": str(config), "overrides": overrides})
    init = cfg["model.init_args"]
    readout, bins = str(init["readout"]), int(init["time_bins"])
    rows, detail = [], {}
    ridge: dict[str, dict[str, np.ndarray]] | None = None
    plain = stage_datamodule(_without_images(cfg))  # the responses, as every fit read them
    responses = collect(plain, "test")
    for seed in seeds:
        predictions = {}
        for variant, shuffle in VARIANTS.items():
            run_cfg = seeded_run_config(
                cfg, seed, PROTOCOL, variant, **{"model.init_args.shuffle_pairing": shuffle}
            )
            say(f"encoding: seed {seed}: fit the {readout} readout{' (shuffled pairing)' * shuffle}")
            last = fit_once(out / "runs", f"{variant}_seed{seed}", run_cfg)
            model, dm = load_fitted(run_cfg, last)
            predictions[variant] = predict_images(model, dm, "test")
        if ridge is None:
            say(f"encoding: ridge on the mean-pooled {init['layer']} features, same train and test images")
            ridge = ridge_on_split(dm, plain, responses, init, bins)
        for sub, resp in responses.subjects.items():
            keep = kept(resp)
            names = [n for n, k in zip(responses.names, keep, strict=True) if k]
            y = resp.binned(bins)[keep]  # [n_images, n_repeats, C * bins]
            scored = {v: _stack(predictions[v][sub], names) for v in VARIANTS}  # [n_images, C * bins]
            r = pearson_r(y.mean(1), scored["model"])
            control_r = pearson_r(y.mean(1), scored["control"])
            ridge_r = pearson_r(y.mean(1), _stack(ridge[sub], names))
            ceiling, normalised = ceiling_and_normalised(y, r)
            per_channel = r.reshape(-1, bins).mean(axis=1)  # [C]
            rows.append(
                {
                    "subject": sub,
                    "layer": f"{readout} readout of {init['layer']}",
                    "seed": seed,
                    "images": int(y.shape[0]),
                    "repeats": int(y.shape[1]),
                    "targets": int(y.shape[2]),
                    "median_r": float(np.median(r)),
                    "median_control_r": float(np.median(control_r)),
                    "median_ridge_r": float(np.median(ridge_r)),
                    "median_ceiling": None if ceiling is None else float(np.median(ceiling)),
                    **({} if normalised is None else {"median_normalised": float(np.nanmedian(normalised))}),
                }
            )
            detail[f"{sub}/seed{seed}"] = {
                "r": r.tolist(),
                "control_r": control_r.tolist(),
                "ridge_r": ridge_r.tolist(),
                "ceiling": None if ceiling is None else ceiling.tolist(),
                "per_channel_r": per_channel.tolist(),
                "images": names,
            }
            r_map(per_channel, resp, out / f"r_map_{sub}_{readout}_seed{seed}.png", f"sub-{sub}, {readout}")
    results = {
        "protocol": PROTOCOL,
        "model": "learned readout",
        "config": str(config),
        "command": shlex.join(sys.argv),
        "overrides": overrides,
        "image_model": str(init["image_model"]),
        "image_weights": str(init["image_weights"]),
        "layers": [str(init["layer"])],
        "readout": readout,
        "time_bins": bins,
        "seeds": seeds,
        **held_out,
        "rows": rows,
        "targets": detail,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))
    print(markdown(results))
    log_encoding_wandb(
        results, out, wandb_project, ("config", "image_model", "layers", "readout", "time_bins")
    )
    return results


@torch.no_grad()
def predict_images(model: Any, dm: Any, stage: str = "test") -> dict[str, dict[str, np.ndarray]]:
    """``{subject: {image: prediction [C_real * bins]}}`` for every (subject, image) of ``stage``:
    the model's response to the image, its real channels only (channel-major), once per pair."""
    of = dm.epoch_stimuli(stage)
    model.eval()
    out: dict[str, dict[str, np.ndarray]] = {}
    for batch in dm.eval_dataloader(stage):
        pred = model(batch).double().numpy()  # [B, C, bins]
        mask = batch["channel_mask"].numpy()
        for j, (sub, sid) in enumerate(zip(batch["subject"], batch["sample_id"], strict=True)):
            name = of.get(sid)
            if name is not None:
                out.setdefault(sub, {}).setdefault(name, pred[j][mask[j]].reshape(-1))
    return out


def ridge_on_split(
    image_dm: Any, plain_dm: Any, test: StimulusResponses, init: Any, bins: int
) -> dict[str, dict[str, np.ndarray]]:
    """The ridge baseline on identical inputs: ``{subject: {test image: prediction [C * bins]}}``
    from himalaya ridge (`encoding.fit_ridge`, an alpha per target chosen by inner folds over the
    train images only) on the readout's layer, mean-pooled, of the image network as loaded (the
    same tensors the readout read: the data module's images), fitted on the train split's images
    (repeats averaged) and applied to the test split's."""
    from neurotrain.models.image_features import ImageFeatureExtractor

    fx = ImageFeatureExtractor(str(init["image_model"]), init["image_weights"], [init["layer"]], "mean")
    feats: dict[str, np.ndarray] = {}
    for stage in ("train", "test"):
        of = image_dm.epoch_stimuli(stage)
        for batch in image_dm.eval_dataloader(stage):
            todo = [j for j, sid in enumerate(batch["sample_id"]) if of.get(sid) and of[sid] not in feats]
            if todo:
                pooled = fx.forward(batch["image"][todo])[init["layer"]].double().numpy()  # [b, K]
                for j, f in zip(todo, pooled, strict=True):
                    feats.setdefault(of[batch["sample_id"][j]], f)
    train = collect(plain_dm, "train")
    out: dict[str, dict[str, np.ndarray]] = {}
    for sub in test.subjects:
        tr = train.subjects.get(sub)
        if tr is None:
            raise ValueError(f"subject {sub} has test epochs but no training epochs")
        keep = kept(tr)
        x_tr = np.stack([feats[n] for n, k in zip(train.names, keep, strict=True) if k])  # [n, K]
        y_tr = tr.binned(bins)[keep].mean(1)  # [n, C * bins]
        x_te = np.stack([feats[n] for n in test.names])
        mean, sd = x_tr.mean(0), np.where(x_tr.std(0) > 0, x_tr.std(0), 1.0)
        model = fit_ridge([(x_tr - mean) / sd], y_tr, inner_folds=min(5, len(x_tr) // 2))
        pred = to_numpy(model.predict((x_te - mean) / sd))
        out[sub] = dict(zip(test.names, pred, strict=True))
    return out


def markdown(results: dict[str, Any]) -> str:
    """One row per subject × seed: the model, its shuffled-pairing control, the ridge, the ceiling."""
    intro = (
        f"{results['image_model']} layer {results['layers'][0]} -> {results['readout']} readout -> "
        f"responses ({results['time_bins']} time bins per channel); fitted on the train images, scored "
        f"on {len(results['test_images'])} held-out test images (none in a training epoch); median over "
        "targets; r = Pearson r over the test images, repeats averaged. Control: the same config "
        "fitted with the image-response pairing shuffled. Ridge: himalaya ridge (an alpha per target "
        "by inner folds over the train images) on the same layer mean-pooled, fitted on the same "
        "train images and scored on the same test images."
    )
    return score_table(
        "# encoding evaluation (learned readout)",
        intro,
        [("subject", "subject"), ("seed", "seed")],
        "control r (shuffled pairing)",
        results["rows"],
        extra=("ridge r (pooled layer)", "median_ridge_r"),
    )


def _stack(by_image: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in by_image]
    if missing:
        raise ValueError(f"no prediction for test image {missing[0]} (its epochs have no image?)")
    return np.stack([by_image[n] for n in names])


def _check_config(config: str | Path, overrides: list[str]) -> Namespace:
    """The config with the overrides, its data section and its model checked."""
    from neurotrain.train.run.lightning_cli import load_config, model_class

    cfg = load_config(["--config", str(config), "--media_every_n_val=0", *overrides])
    if cfg["data.mode"] != "epochs" or not cfg["data.images"]:
        raise ValueError(
            "a learned readout reads each epoch's image: set data.mode: epochs and data.images: true"
        )
    init = cfg["model.init_args"]
    try:  # the image model, its weights file and the layer, checked before anything is fitted or written
        model_class(cfg)(**(init.as_dict() if isinstance(init, Namespace) else dict(init)))
    except (ValueError, FileNotFoundError, TypeError) as exc:
        raise ValueError(f"model: {exc}") from exc
    return cfg


def _without_images(cfg: Namespace) -> Namespace:
    plain = cfg.clone()
    plain["data.images"] = False
    return plain
